#include "tools/data_dir.hpp"

#include "tools/commands.hpp"

#include <filesystem>
#include <iostream>
#include <system_error>

namespace troupe::tools {

namespace {

bool contains(const std::string& text, const char* part) {
  return text.find(part) != std::string::npos;
}

} // namespace

int report_open_failure(const std::string& command, const std::string& dir,
                        const std::string& error) {
  if (!contains(error, "in use by another troupe process")) {
    std::cerr << "troupe: " << command << ": " << error << "\n";
    return exit_bad_input;
  }
  if (command == "cancel") {
    std::cerr << "troupe: cancel: the troupe process using " << dir
              << " runs an embedded node, which takes no commands; stop it "
                 "with Ctrl-C (its runs resume later). Cancelling a run in "
                 "a running node needs a node daemon with a control port.\n";
    return exit_unreachable;
  }
  std::cerr << "troupe: " << command << ": " << error;
  if (command == "gc")
    std::cerr << "; the node running on it deletes finished runs by itself "
                 "(every storage.gc_interval); to collect now, ask it: "
                 "troupe gc --node HOST:PORT, without --data-dir";
  else if (command != "history" && command != "breakers")
    std::cerr << " (ask the node instead: drop --data-dir)";
  std::cerr << "\n";
  return command == "history" ? exit_bad_input : exit_unreachable;
}

std::unique_ptr<persistence::journal_store>
open_data_dir(const std::string& command,
              persistence::journal_store::options so, int& rc) {
  so.create_if_missing = false;
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
