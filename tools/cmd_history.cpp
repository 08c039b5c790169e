#include "cluster/node/run_views.hpp"
#include "config/duration.hpp"
#include "persistence/journal_store.hpp"
#include "tools/commands.hpp"
#include "tools/data_dir.hpp"

#include <nlohmann/json.hpp>

#include <ctime>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace troupe::tools {

using json = nlohmann::json;
using persistence::event_record;
using persistence::event_type;

std::string clock_time(int64_t ns) {
  auto secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  std::ostringstream out;
  out << std::put_time(&tm, "%H:%M:%S") << '.' << std::setw(3)
      << std::setfill('0') << (ns / 1'000'000) % 1000;
  return out.str();
}

namespace {

std::string short_json(const std::string& text, size_t limit = 100) {
  return text.size() > limit ? text.substr(0, limit) + "..." : text;
}

} // namespace

std::string describe_event(const event_record& e, int64_t start_ns) {
  std::string what;
  auto in = [&](int64_t at) {
    // Rounded to milliseconds: "9ms", not "9469101ns".
    auto ns = std::chrono::nanoseconds{std::max<int64_t>(0, at - e.at_ns)};
    return config::format_duration(
      std::chrono::round<std::chrono::milliseconds>(ns));
  };
  switch (e.type) {
  case event_type::run_submitted:
    what = "run submitted, inputs " + short_json(e.data2);
    break;
  case event_type::attempt_started:
    what = e.node + ": attempt " + std::to_string(e.attempt) + " started"
           + (e.deadline_ns ? ", times out in " + in(e.deadline_ns) : "");
    break;
  case event_type::timer_set:
    what = e.node + ": timer set, fires in " + in(e.deadline_ns);
    break;
  case event_type::attempt_failed:
    what = e.node + ": attempt " + std::to_string(e.attempt) + " failed ("
           + e.error_kind + "): " + e.message
           + (e.deadline_ns ? "; retry in " + in(e.deadline_ns) : "; no retry");
    break;
  case event_type::node_completed:
    what = e.node + ": completed"
           + (e.message.empty() ? "" : " with the " + e.message) + ", output "
           + short_json(e.data);
    break;
  case event_type::run_compensating:
    what = "run failing (" + e.error_kind + "): " + e.message
           + "; compensating completed nodes";
    break;
  case event_type::node_skipped:
    what = e.node + ": skipped: " + e.message;
    break;
  case event_type::node_fell_back:
    what = e.node + ": FAILED (" + e.error_kind + "): " + e.message
           + "; falling back to '" + e.data + "'";
    break;
  case event_type::node_failed:
    what = e.node + ": FAILED (" + e.error_kind + "): " + e.message;
    break;
  case event_type::node_cancelled:
    what = e.node + ": cancelled: " + e.message;
    break;
  case event_type::run_completed:
    what = "run completed, outputs " + short_json(e.data);
    break;
  case event_type::run_failed: what = "run FAILED: " + e.message; break;
  case event_type::run_cancelled: what = "run cancelled: " + e.message; break;
  case event_type::run_paused: what = "run paused: " + e.message; break;
  case event_type::run_resumed: what = "run resumed: " + e.message; break;
  case event_type::run_restarted:
    what = "run actor restarted (restart " + std::to_string(e.attempt)
           + "): " + e.message;
    break;
  }
  auto offset = static_cast<double>(e.at_ns - start_ns) / 1e9;
  std::ostringstream line;
  line << clock_time(e.at_ns) << "  +" << std::fixed << std::setprecision(3)
       << offset << "s  " << what;
  if (!e.member.empty())
    line << "  (member " << e.member << ")";
  return line.str();
}

json event_to_json(const event_record& e) {
  auto j = json{{"type", persistence::to_string(e.type)},
                {"at_ns", e.at_ns},
                {"node", e.node},
                {"attempt", e.attempt},
                {"deadline_ns", e.deadline_ns},
                {"error_kind", e.error_kind},
                {"message", e.message},
                {"data", e.data},
                {"data2", e.data2}};
  if (!e.member.empty())
    j["member"] = e.member;
  return j;
}

event_record event_from_json(const json& j) {
  event_record e;
  auto type = j.value("type", std::string{});
  for (int t = 1; t <= static_cast<int>(persistence::last_event_type); ++t)
    if (persistence::to_string(static_cast<event_type>(t)) == type)
      e.type = static_cast<event_type>(t);
  e.at_ns = j.value("at_ns", int64_t{0});
  e.node = j.value("node", std::string{});
  e.attempt = j.value("attempt", int32_t{0});
  e.deadline_ns = j.value("deadline_ns", int64_t{0});
  e.error_kind = j.value("error_kind", std::string{});
  e.message = j.value("message", std::string{});
  e.data = j.value("data", std::string{});
  e.data2 = j.value("data2", std::string{});
  e.member = j.value("member", std::string{});
  return e;
}

int run_history(const global_options& g, const std::string& run_id,
                const std::string& data_dir) {
  config::settings settings;
  if (!load_data_dir_config(g, data_dir, settings))
    return exit_bad_input;
  persistence::journal_store::options so;
  so.path = settings.get_string("node.data_dir");
  int rc = exit_ok;
  auto store = open_data_dir("history", so, rc);
  if (!store)
    return rc;
  std::string error;
  auto entry = store->find_run(run_id);
  if (!entry) {
    std::cerr << "troupe: history: " << cluster::missing_run(*store, run_id)
              << " in " << so.path << "\n";
    return exit_failed;
  }
  auto events = store->read_journal(run_id, error);
  if (g.json) {
    json out = json::array();
    for (auto& e : events)
      out.push_back(event_to_json(e));
    json report = {{"run_id", run_id},
                   {"workflow", entry->workflow},
                   {"state", persistence::to_string(entry->state)},
                   {"events", out}};
    if (!error.empty())
      report["error"] = error;
    std::cout << report.dump(2, ' ', false, json::error_handler_t::replace)
              << "\n";
  } else {
    std::cout << "run " << run_id << " of workflow '" << entry->workflow
              << "': " << persistence::to_string(entry->state) << "\n";
    int64_t start = events.empty() ? 0 : events.front().at_ns;
    for (auto& e : events)
      std::cout << "  " << describe_event(e, start) << "\n";
  }
  if (!error.empty()) {
    std::cerr << "troupe: history: " << error << "\n";
    return exit_failed;
  }
  return exit_ok;
}

int run_breakers(const global_options& g, const std::string& data_dir) {
  config::settings settings;
  if (!load_data_dir_config(g, data_dir, settings))
    return exit_bad_input;
  persistence::journal_store::options so;
  so.path = settings.get_string("node.data_dir");
  int rc = exit_ok;
  auto store = open_data_dir("breakers", so, rc);
  if (!store)
    return rc;
  json all = json::array();
  for (auto& [name, value] : store->read_notes("breaker/")) {
    auto v = json::parse(value, nullptr, false);
    if (!v.is_discarded())
      all.push_back(std::move(v));
  }
  if (g.json) {
    std::cout << all.dump(2) << "\n";
    return exit_ok;
  }
  if (all.empty()) {
    std::cout << "no circuit breaker has changed state in "
              << settings.get_string("node.data_dir") << "\n";
    return exit_ok;
  }
  for (auto& b : all)
    std::cout << b.value("key", "?") << "  " << b.value("state", "?")
              << "  since " << clock_time(b.value("since_ns", int64_t{0}))
              << "  (" << b.value("reason", "") << ")\n";
  return exit_ok;
}

int run_cancel(const global_options& g, const std::string& run_id,
               const std::string& data_dir) {
  config::settings settings;
  if (!load_data_dir_config(g, data_dir, settings))
    return exit_bad_input;
  auto dir = settings.get_string("node.data_dir");
  persistence::journal_store::options so;
  so.path = dir;
  int rc = exit_ok;
  auto store = open_data_dir("cancel", so, rc);
  if (!store)
    return rc;
  auto entry = store->find_run(run_id);
  if (!entry) {
    std::cerr << "troupe: cancel: no run '" << run_id << "' in " << dir << "\n";
    return exit_failed;
  }
  if (persistence::is_terminal(entry->state)) {
    std::cerr << "troupe: cancel: run " << run_id << " already ended "
              << persistence::to_string(entry->state) << "\n";
    return exit_failed;
  }
  std::cerr << "troupe: cancel: no node is running on " << dir
            << ", so nothing can carry out the cancellation (its "
               "compensations, stopping its children). Cancelling needs a "
               "running node; an embedded `troupe run` takes no commands.\n";
  return exit_unreachable;
}

} // namespace troupe::tools
