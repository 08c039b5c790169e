#include "tools/data_dir.hpp"

#include "persistence/store_holder.hpp"
#include "tools/commands.hpp"

#include <filesystem>
#include <iostream>
#include <system_error>
#include <unistd.h>

namespace troupe::tools {

namespace {

bool contains(const std::string& text, const char* part) {
  return text.find(part) != std::string::npos;
}

/// Who holds a data dir, in words: "a node (`troupe node start`, pid 12,
/// control 127.0.0.1:7400)".
std::string describe(const std::optional<persistence::store_holder>& h) {
  if (!h)
    return "another troupe process";
  auto pid = "pid " + std::to_string(h->pid);
  if (h->command == "node start")
    return "a node (`troupe node start`, " + pid
           + (h->address.empty() ? "" : ", control " + h->address) + ")";
  if (h->command == "run")
    return "`troupe run` (" + pid + ")";
  if (h->command.empty())
    return "another troupe process (" + pid + ")";
  return "`troupe " + h->command + "` (" + pid + ")";
}

/// What `command` can do instead, given who holds its data dir.
std::string hint(const std::string& command,
                 const std::optional<persistence::store_holder>& h) {
  bool node = h && h->command == "node start";
  bool run = h && h->command == "run";
  auto at = node && !h->address.empty() ? h->address : "HOST:PORT";
  if (!h) {
    // An older troupe, or one killed before it could say who it was.
    if (command == "run" || command == "node start")
      return "stop it, or give another --data-dir";
    return "if a node runs on it, ask the node instead (--node HOST:PORT, "
           "without --data-dir); if a `troupe run`, wait for it to end";
  }
  if (!node && !run)
    return "it lets go of it when it ends; try again";
  if (command == "node start")
    return node ? "stop that node first, or give this one another --data-dir"
                : "wait for it to end (this node then resumes its unfinished "
                  "runs), or give another --data-dir";
  if (command == "run")
    return node ? "submit to that node instead: troupe --node " + at
                    + " submit FILE --wait (or give another --data-dir)"
                : "wait for it to end, or give another --data-dir";
  if (run) {
    if (command == "cancel")
      return "an embedded node takes no commands; stop it with Ctrl-C (its "
             "runs resume later). Cancelling a run in a running node needs a "
             "node daemon (troupe node start) with a control port";
    if (command == "gc")
      return "collect once it has ended";
    return "it takes no commands: wait for it to end, or stop it with Ctrl-C "
           "(its runs resume later)";
  }
  if (command == "gc")
    return "the node deletes finished runs by itself (every "
           "storage.gc_interval); to collect now, ask it: troupe gc --node "
           + at + ", without --data-dir";
  if (command == "breakers")
    return "the node shows its breakers: troupe --node " + at
           + " shell -c actors";
  return "ask the node instead: troupe --node " + at + " " + command
         + " ..., without --data-dir";
}

} // namespace

int report_open_failure(const std::string& command, const std::string& dir,
                        const std::string& error) {
  if (!contains(error, "in use by another troupe process")) {
    std::cerr << "troupe: " << command << ": " << error << "\n";
    return exit_bad_input;
  }
  auto holder = persistence::read_store_holder(dir);
  std::cerr << "troupe: " << command << ": data dir '" << dir
            << "' is in use by " << describe(holder)
            << ", and only one process may hold it; " << hint(command, holder)
            << "\n";
  return exit_unreachable;
}

std::unique_ptr<persistence::journal_store>
open_data_dir(const std::string& command,
              persistence::journal_store::options so, int& rc) {
  so.create_if_missing = false;
  so.holder.command = command;
  std::error_code ec;
  if (!std::filesystem::exists(so.path, ec) && !ec) {
    // Most often a typo: say so rather than read an empty store.
    std::cerr << "troupe: " << command << ": data dir '" << so.path
              << "' does not exist\n";
    rc = exit_bad_input;
    return nullptr;
  }
  std::string error;
  auto store = persistence::journal_store::open(so, error);
  if (!store)
    rc = report_open_failure(command, so.path, error);
  return store;
}

} // namespace troupe::tools
