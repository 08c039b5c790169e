// `troupe gc`: deletes finished runs past their retention now, from a data
// dir no node runs on (--data-dir) or through the node that holds it.

#include "config/duration.hpp"
#include "persistence/journal_store.hpp"
#include "persistence/retention.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/data_dir.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <iostream>

namespace troupe::tools {

using json = nlohmann::json;

namespace {

/// What troupe gc says, after the retention, when it keeps every run.
constexpr const char* kept_all_hint
  = "which keeps every run: nothing removed (give --older-than D to remove "
    "runs that finished more than D ago)\n";

std::string plural(uint64_t n, const std::string& what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

/// Prints what a collection removed; `where` names the data dir or node.
void print_report(const global_options& g, json report,
                  const std::string& where_key, const std::string& where) {
  report[where_key] = where;
  if (g.json) {
    std::cout << report.dump() << "\n";
    return;
  }
  auto older = config::format_duration(
    std::chrono::milliseconds{report.value("older_than_ms", int64_t{0})});
  std::cout << "removed " << plural(report.value("runs", uint64_t{0}), "run")
            << " finished more than " << older << " ago ("
            << plural(report.value("events", uint64_t{0}), "journal event")
            << ", "
            << plural(report.value("keys", uint64_t{0}), "idempotency key")
            << ") and "
            << plural(report.value("tombstones", uint64_t{0}),
                      "expired tombstone")
            << " from " << where << "\n";
}

/// Collects a data dir directly.
int gc_local(const global_options& g, const config::settings& settings,
             std::optional<std::chrono::nanoseconds> older_than) {
  auto dir = settings.get_string("node.data_dir");
  auto age = older_than.value_or(settings.get_duration("storage.retention"));
  if (!older_than && age.count() == 0) {
    std::cerr << "troupe: gc: storage.retention is 0s, " << kept_all_hint;
    return exit_ok;
  }
  persistence::journal_store::options so;
  so.path = dir;
  so.sync = settings.get_string("storage.durability") == "machine";
  int rc = exit_ok;
  auto store = open_data_dir("gc", so, rc);
  if (!store)
    return rc;
  auto r = store->collect(persistence::collection_before(
    age, settings.get_duration("storage.tombstone_retention")));
  json report
    = {{"runs", r.runs},
       {"events", r.events},
       {"keys", r.keys},
       {"tombstones", r.tombstones},
       {"older_than_ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(age).count()}};
  if (!r.error.empty()) {
    std::cerr << "troupe: gc: " << dir << ": " << r.error << "\n";
    if (r.runs > 0 || r.tombstones > 0)
      print_report(g, report, "data_dir", dir);
    return exit_failed;
  }
  print_report(g, report, "data_dir", dir);
  return exit_ok;
}

/// Asks the node to collect.
int gc_remote(const global_options& g, const config::settings& settings,
              std::optional<std::chrono::nanoseconds> older_than) {
  json req = {{"t", "gc"}};
  if (older_than)
    req["older_than_ms"]
      = std::chrono::duration_cast<std::chrono::milliseconds>(*older_than)
          .count();
  control_client client;
  try {
    client.connect(client_options(g, settings));
    // A first collection after a long time may delete many runs.
    auto body = client.call(req, std::chrono::minutes{30});
    if (body.value("kept_all", false) && !g.json) {
      std::cerr << "troupe: gc: storage.retention is 0s on "
                << client.node_name() << ", " << kept_all_hint;
      return exit_ok;
    }
    // A cluster member asks every member, each for the partitions it
    // leads: one that could not collect is named.
    auto failed = body.value("failed_members", json::array());
    if (!g.json)
      for (auto& m : failed)
        std::cerr << "troupe: gc: member " << m.value("member", "?") << " ("
                  << m.value("state", "?")
                  << ") did not collect: " << m.value("reason", "")
                  << "; the finished runs of the partitions it leads are "
                     "kept\n";
    auto members = body.value("members", json::array()).size();
    auto where = client.node_name();
    if (members > 1 || !failed.empty())
      where += " and the other members (" + std::to_string(members) + " of "
               + std::to_string(members + failed.size()) + " collected)";
    print_report(g, std::move(body), "node",
                 g.json ? client.node_name() : where);
    return failed.empty() ? exit_ok : exit_unreachable;
  } catch (const client_error& e) {
    std::cerr << "troupe: gc: " << e.what() << "\n";
    if (e.exit_code == exit_unreachable && e.code.empty())
      std::cerr << "troupe: gc: to collect a data dir that no node runs on, "
                   "give --data-dir DIR\n";
    return e.exit_code;
  }
}

} // namespace

int run_gc(const global_options& g, const gc_command_options& o) {
  std::optional<std::chrono::nanoseconds> older_than;
  if (o.older_than_given) {
    std::string error;
    older_than = config::parse_duration(o.older_than, &error);
    if (!older_than) {
      std::cerr << "troupe: gc: --older-than '" << o.older_than
                << "': " << error << "\n";
      return exit_bad_input;
    }
  }
  if (!o.data_dir.empty() && !g.node.empty()) {
    std::cerr << "troupe: gc: give --data-dir (collect a data dir no node runs "
                 "on) or --node (ask that node), not both\n";
    return exit_bad_input;
  }
  config::settings settings;
  if (!load_data_dir_config(g, o.data_dir, settings))
    return exit_bad_input;
  if (!o.data_dir.empty())
    return gc_local(g, settings, older_than);
  return gc_remote(g, settings, older_than);
}

} // namespace troupe::tools
