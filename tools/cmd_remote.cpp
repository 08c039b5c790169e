// The commands that drive a node over the control protocol: submit, status,
// list, watch, result, history, cancel, pause, resume, logs. status, list,
// history and logs also read a data dir directly (--data-dir), for a node
// that is not running.

#include "cluster/node/run_views.hpp"
#include "persistence/journal_store.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/data_dir.hpp"
#include "tools/node_setup.hpp"
#include "tools/progress/progress_view.hpp"

#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>
#include <unistd.h>

namespace troupe::tools {

using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string dump(const json& v, int indent = -1) {
  return v.dump(indent, ' ', false, json::error_handler_t::replace);
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Local "YYYY-MM-DD HH:MM:SS".
std::string date_time(int64_t ns) {
  auto secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  localtime_r(&secs, &tm);
  std::ostringstream out;
  out << std::put_time(&tm, "%Y-%m-%d %H:%M:%S");
  return out.str();
}

/// "in 1.5s" / "1.5s ago" for a point in time.
std::string relative(int64_t at_ns) {
  auto d = at_ns - wall_ns();
  std::ostringstream out;
  out << std::fixed << std::setprecision(1)
      << static_cast<double>(d < 0 ? -d : d) / 1e9 << "s";
  return d >= 0 ? "in " + out.str() : out.str() + " ago";
}

std::string pad(std::string s, size_t width) {
  if (s.size() < width)
    s.append(width - s.size(), ' ');
  return s;
}

// -- printing
// ------------------------------------------------------------------

void print_status(const json& s) {
  std::cout << "run " << s.value("run_id", "") << " of workflow '"
            << s.value("workflow", "") << "': " << s.value("state", "") << "\n";
  std::cout << "  created " << date_time(s.value("created_at_ns", int64_t{0}))
            << ", updated " << date_time(s.value("updated_at_ns", int64_t{0}))
            << ", " << s.value("events", 0) << " journal events\n";
  if (auto r = s.value("reason", std::string{}); !r.empty())
    std::cout << "  reason: " << r << "\n";
  auto& nodes = s["nodes"];
  if (!nodes.is_array() || nodes.empty())
    return;
  size_t w = 4;
  for (auto& n : nodes)
    w = std::max(w, n.value("id", std::string{}).size());
  std::cout << "  " << pad("NODE", w + 2) << pad("KIND", 10) << pad("STATE", 15)
            << pad("ATTEMPT", 9) << "NOTE\n";
  for (auto& n : nodes) {
    std::string note;
    if (n.contains("next_retry_ns"))
      note = "next attempt " + relative(n["next_retry_ns"].get<int64_t>());
    if (n.contains("timer_deadline_ns"))
      note = "timer fires " + relative(n["timer_deadline_ns"].get<int64_t>());
    if (n.contains("items"))
      note += (note.empty() ? "" : "; ")
              + std::to_string(n["items"].get<size_t>()) + " items";
    if (n.contains("last_error"))
      note += (note.empty() ? "" : "; ") + std::string{"last error "}
              + n.value("last_error_kind", "") + ": "
              + n.value("last_error", "").substr(0, 100);
    std::cout << "  " << pad(n.value("id", ""), w + 2)
              << pad(n.value("kind", ""), 10) << pad(n.value("state", ""), 15)
              << pad(std::to_string(n.value("attempt", 0)), 9) << note << "\n";
  }
}

/// `s` as one word of a shell command: as it is when that is safe, else in
/// single quotes.
std::string shell_word(const std::string& s) {
  bool plain = !s.empty();
  for (unsigned char c : s)
    if (!std::isalnum(c) && !std::strchr("_.,:/@%+=-", c))
      plain = false;
  if (plain)
    return s;
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

/// The command that lists the page after `next`, with the node or data dir,
/// filters and page size `o` listed this one with.
std::string next_page_command(const global_options& g, const remote_options& o,
                              const std::string& next) {
  std::string cmd = "troupe";
  if (o.data_dir.empty() && !g.node.empty())
    cmd += " --node " + shell_word(g.node);
  cmd += " list";
  if (!o.data_dir.empty())
    cmd += " --data-dir " + shell_word(o.data_dir);
  if (!o.state.empty())
    cmd += " --state " + shell_word(o.state);
  if (!o.workflow.empty())
    cmd += " --workflow " + shell_word(o.workflow);
  if (o.limit != remote_options{}.limit)
    cmd += " --limit " + std::to_string(o.limit);
  return cmd + " --after " + shell_word(next);
}

void print_list(const json& page, const global_options& g,
                const remote_options& o) {
  auto& runs = page["runs"];
  if (runs.empty()) {
    std::cout << "no runs\n";
  } else {
    size_t w = 8;
    for (auto& r : runs)
      w = std::max(w, r.value("workflow", std::string{}).size());
    std::cout << pad("RUN", 23) << pad("WORKFLOW", w + 2) << pad("STATE", 11)
              << "CREATED\n";
    for (auto& r : runs)
      std::cout << pad(r.value("run_id", ""), 23)
                << pad(r.value("workflow", ""), w + 2)
                << pad(r.value("state", ""), 11)
                << date_time(r.value("created_at_ns", int64_t{0})) << "\n";
  }
  if (auto next = page.value("next", std::string{}); !next.empty())
    std::cerr << "more runs: " << next_page_command(g, o, next) << "\n";
}

void print_logs(const json& body) {
  auto& attempts = body["attempts"];
  if (attempts.empty()) {
    std::cout << "no attempt has ended yet\n";
    return;
  }
  for (auto& a : attempts) {
    std::cout << "== " << a.value("node", "") << ", attempt "
              << a.value("attempt", 0) << ": " << a.value("outcome", "")
              << " at " << clock_time(a.value("at_ns", int64_t{0})) << "\n";
    if (a.contains("message"))
      std::cout << a["message"].get<std::string>() << "\n";
    for (auto stream : {"stdout", "stderr"}) {
      auto text = a.value(stream, std::string{});
      if (text.empty())
        continue;
      std::cout << "-- " << stream << ":\n" << text;
      if (text.back() != '\n')
        std::cout << "\n";
    }
  }
  if (body.value("truncated", false))
    std::cout << "(more attempts than fit in one answer; use --node)\n";
}

/// Prints how a run ended; returns the exit code.
int print_end(const global_options& g, const json& end) {
  auto state = end.value("state", std::string{});
  if (g.json) {
    std::cout << dump(end) << "\n";
  } else if (state == "completed") {
    std::cout << dump(end.value("outputs", json::object()), 2) << "\n";
  } else {
    std::cerr << "run " << end.value("run_id", "") << " ("
              << end.value("workflow", "") << ") " << state << ": "
              << end.value("reason", "") << "\n";
    if (end.contains("compensation"))
      std::cerr << "compensation: " << dump(end["compensation"]) << "\n";
  }
  return state == "completed" ? exit_ok : exit_failed;
}

/// The progress view's account of an event of the watch stream.
progress::event progress_event(const json& e, const std::string& run_id) {
  progress::event out;
  out.run_id = e.value("run_id", run_id);
  out.node = e.value("node", std::string{});
  out.type = e.value("type", std::string{});
  out.attempt = e.value("attempt", int32_t{0});
  out.deadline_ns = e.value("deadline_ns", int64_t{0});
  out.message = e.value("message", std::string{});
  out.at_ns = e.value("at_ns", int64_t{0});
  out.items = e.value("items", int64_t{0});
  return out;
}

/// Follows run `run_id` until it ends; returns the exit code.
int follow(const global_options& g, control_client& client,
           const std::string& run_id) {
  auto id = client.start(json{{"t", "watch"}, {"run_id", run_id}});
  // In a cluster the run's leader may be lost while it is watched: the
  // watch ends with owner_unavailable, and is made again (at most for 30s)
  // through the same member, which forwards it to the new leader once one
  // took the run over. Events seen already are not shown again.
  int64_t last_seq = 0;
  bool rewatched = false;
  auto lost_since = std::chrono::steady_clock::time_point{};
  auto rewatch = [&](const client_error& e) {
    auto now = std::chrono::steady_clock::now();
    if (e.code != "owner_unavailable"
        || (lost_since != decltype(lost_since){}
            && now - lost_since > std::chrono::seconds{30}))
      throw e;
    if (lost_since == decltype(lost_since){})
      lost_since = now;
    std::this_thread::sleep_for(std::chrono::milliseconds{250});
    id = client.start(json{{"t", "watch"}, {"run_id", run_id}});
    rewatched = true;
  };
  progress::view::options vo{progress::view::mode_for_stderr(g.json)};
  vo.prefix = [](const progress::event& e) {
    return clock_time(e.at_ns != 0 ? e.at_ns : wall_ns());
  };
  progress::view view{std::move(vo)};
  // The node sends keepalives while the watch is open (answered inside
  // next_alive(), where each counts as a sign of life, however long the run
  // is quiet); silence past the limit means it hangs or the path is gone.
  auto quiet = client.quiet_limit();
  for (int turn = 0; turn < 100'000'000; ++turn) {
    std::optional<json> msg;
    try {
      msg = quiet.count() > 0 ? client.next_alive(quiet)
                              : client.next(std::chrono::hours{1});
    } catch (const client_error& e) {
      rewatch(e);
      continue;
    }
    if (!msg && quiet.count() > 0)
      throw client_error(exit_unreachable,
                         "lost the connection to the node: nothing from it for "
                           + std::to_string(quiet.count() / 1000)
                           + "s, not even a keepalive");
    if (!msg)
      continue;
    if (msg->value("id", uint64_t{0}) != id)
      continue;
    auto t = msg->value("t", std::string{});
    auto body = msg->value("body", json::object());
    if (t == "event") {
      auto seq = body.value("seq", int64_t{0});
      if (seq > 0 && seq <= last_seq)
        continue; // replayed by a watch made again
      if (seq > 0) {
        last_seq = seq;
        lost_since = {};
      }
      if (rewatched && body.value("type", "") == "watching") {
        if (!g.json)
          view.print(std::cerr, "the run's leader was lost; following it at "
                                "its new leader\n");
        continue;
      }
    }
    if (t == "event" && g.json) {
      std::cout << dump(body) << "\n" << std::flush;
    } else if (t == "event" && body.value("type", "") == "watching") {
      view.print(std::cerr, "watching run " + body.value("run_id", "") + " ("
                              + body.value("workflow", "") + "), "
                              + body.value("state", "") + "\n");
    } else if (t == "event") {
      view.on(progress_event(body, run_id));
    } else if (t == "end") {
      view.end();
      return print_end(g, body);
    }
  }
  throw client_error(exit_failed,
                     "the watch of run " + run_id + " never ended");
}

/// status, list, history and logs read straight from a data dir.
int run_local(const global_options& g, const std::string& command,
              const remote_options& o, const config::settings& settings) {
  auto dir = settings.get_string("node.data_dir");
  persistence::journal_store::options so;
  so.path = dir;
  int rc = exit_ok;
  auto store = open_data_dir(command, so, rc);
  if (!store)
    return rc;
  auto missing = [&] {
    std::cerr << "troupe: " << command << ": "
              << cluster::missing_run(*store, o.run_id) << " in " << dir
              << "\n";
    return exit_failed;
  };
  if (command == "status") {
    actors::spec_cache specs;
    auto s = cluster::status_view(*store, specs, o.run_id);
    if (!s)
      return missing();
    if (g.json)
      std::cout << dump(*s, 2) << "\n";
    else
      print_status(*s);
    return exit_ok;
  }
  if (command == "list") {
    cluster::list_filter f;
    if (!o.state.empty() && !(f.state = cluster::parse_run_state(o.state))) {
      std::cerr << "troupe: list: --state " << o.state
                << ": expected running, paused, completed, failed or "
                   "cancelled\n";
      return exit_bad_input;
    }
    f.workflow = o.workflow;
    f.after = o.after;
    f.limit = o.limit;
    if (auto bad = cluster::bad_list_cursor(*store, f.after); !bad.empty()) {
      std::cerr << "troupe: list: --after " << bad << "\n";
      return exit_bad_input;
    }
    auto page = cluster::list_view(*store, f);
    if (g.json)
      std::cout << dump(page, 2) << "\n";
    else
      print_list(page, g, o);
    return exit_ok;
  }
  if (command == "logs") {
    std::string error;
    auto body
      = cluster::logs_view(*store, o.run_id, o.node_id, 64 << 20, error);
    if (!body) {
      if (error.empty())
        return missing();
      std::cerr << "troupe: logs: " << error << "\n";
      return exit_failed;
    }
    if (g.json)
      std::cout << dump(*body, 2) << "\n";
    else
      print_logs(*body);
    return exit_ok;
  }
  std::cerr << "troupe: " << command
            << " needs a running node; --data-dir works with status, list, "
               "history and logs\n";
  return exit_bad_input;
}

/// Asks before a bulk cancel; true when confirmed.
bool confirm(size_t count) {
  if (!isatty(STDIN_FILENO))
    return false;
  std::cerr << "cancel " << count << " run(s)? [y/N] " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  return answer == "y" || answer == "Y" || answer == "yes";
}

int remote(const global_options& g, const std::string& command,
           const remote_options& o, const config::settings& settings) {
  // Check what can be checked before reaching out.
  std::optional<runtime::workflow_spec> spec;
  json inputs;
  std::string source;
  if (command == "submit") {
    auto outcome = runtime::load_workflow_file(o.file);
    if (!outcome.ok()) {
      for (auto& d : outcome.errors)
        std::cerr << d.to_string(o.file) << "\n";
      return exit_bad_input;
    }
    spec = std::move(outcome.workflow);
    std::vector<std::string> errors;
    auto bound = bind_cli_inputs(*spec, o.inputs, o.inputs_file, errors);
    if (!bound) {
      for (auto& e : errors)
        std::cerr << "troupe: submit: " << e << "\n";
      return exit_bad_input;
    }
    inputs = std::move(*bound);
    std::ifstream in{o.file, std::ios::binary};
    source.assign(std::istreambuf_iterator<char>{in}, {});
  }
  if (command == "list" && !o.state.empty()
      && !cluster::parse_run_state(o.state)) {
    std::cerr << "troupe: list: --state " << o.state
              << ": expected running, paused, completed, failed or "
                 "cancelled\n";
    return exit_bad_input;
  }
  bool bulk = command == "cancel" && o.run_id.empty();
  if (bulk && o.state.empty()) {
    std::cerr << "troupe: cancel: give a RUN, or --state running|paused "
                 "(and --workflow NAME) to cancel in bulk\n";
    return exit_bad_input;
  }

  control_client client;
  client.connect(client_options(g, settings));

  if (command == "submit") {
    json req = {{"t", "submit"},
                {"workflow", source},
                {"file", std::filesystem::path{o.file}.filename().string()},
                {"inputs", inputs}};
    if (!o.idempotency_key.empty())
      req["idempotency_key"] = o.idempotency_key;
    json body;
    try {
      body = client.call(req);
    } catch (const client_error& e) {
      // The key is another run's, of another workflow or inputs: the
      // request was wrong, not the node.
      if (e.code == "conflict")
        throw client_error(exit_bad_input, e.what(), e.code);
      throw;
    }
    auto run_id = body.value("run_id", std::string{});
    if (g.json && !o.wait)
      std::cout << dump(body) << "\n";
    else if (!g.json)
      std::cout << run_id << "\n" << std::flush;
    if (body.value("existing", false) && !g.json)
      std::cerr << "idempotency key '" << o.idempotency_key << "' is run "
                << run_id << "; no new run started\n";
    if (!o.wait)
      return exit_ok;
    return follow(g, client, run_id);
  }
  if (command == "watch")
    return follow(g, client, o.run_id);
  if (command == "status") {
    auto body = client.call({{"t", "status"}, {"run_id", o.run_id}});
    if (g.json)
      std::cout << dump(body, 2) << "\n";
    else
      print_status(body);
    return exit_ok;
  }
  if (command == "list") {
    json req = {{"t", "list"}, {"limit", o.limit}};
    if (!o.state.empty())
      req["state"] = o.state;
    if (!o.workflow.empty())
      req["workflow"] = o.workflow;
    if (!o.after.empty())
      req["after"] = o.after;
    auto body = client.call(req);
    if (g.json)
      std::cout << dump(body, 2) << "\n";
    else
      print_list(body, g, o);
    // A member of a cluster merges every member's runs: say whose are
    // missing rather than pass over them.
    for (auto& m : body.value("missing_members", json::array()))
      std::cerr << "warning: member " << m.value("member", "?") << " ("
                << m.value("state", "?")
                << ") did not answer: " << m.value("reason", "")
                << "; its runs are not listed\n";
    return exit_ok;
  }
  if (command == "result")
    return print_end(g, client.call({{"t", "result"}, {"run_id", o.run_id}}));
  if (command == "history") {
    json all = json::array();
    json head;
    uint64_t after = 0;
    for (int page = 0; page < 100'000; ++page) {
      auto body = client.call(
        {{"t", "history"}, {"run_id", o.run_id}, {"after", after}});
      for (auto& e : body["events"])
        all.push_back(std::move(e));
      head = std::move(body);
      after = head.value("next", uint64_t{0});
      if (after == 0)
        break;
    }
    std::vector<persistence::event_record> events;
    for (auto& e : all)
      events.push_back(event_from_json(e));
    if (g.json) {
      json out = json::array();
      for (auto& e : events)
        out.push_back(event_to_json(e));
      json report = {{"run_id", o.run_id},
                     {"workflow", head.value("workflow", "")},
                     {"state", head.value("state", "")},
                     {"events", out}};
      std::cout << dump(report, 2) << "\n";
    } else {
      std::cout << "run " << o.run_id << " of workflow '"
                << head.value("workflow", "")
                << "': " << head.value("state", "") << "\n";
      int64_t start = events.empty() ? 0 : events.front().at_ns;
      for (auto& e : events)
        std::cout << "  " << describe_event(e, start) << "\n";
    }
    return exit_ok;
  }
  if (command == "logs") {
    json req = {{"t", "logs"}, {"run_id", o.run_id}};
    if (!o.node_id.empty())
      req["node"] = o.node_id;
    auto body = client.call(req);
    if (g.json)
      std::cout << dump(body, 2) << "\n";
    else
      print_logs(body);
    return exit_ok;
  }
  if (bulk) {
    json req = {{"t", "cancel_many"}, {"dry_run", true}};
    if (!o.workflow.empty())
      req["workflow"] = o.workflow;
    if (!o.state.empty())
      req["state"] = o.state;
    if (!o.reason.empty())
      req["reason"] = o.reason;
    auto preview = client.call(req);
    auto count = preview.value("count", size_t{0});
    if (count == 0) {
      std::cerr << "no unfinished run matches\n";
      return exit_ok;
    }
    if (!o.yes && !confirm(count)) {
      std::cerr << "troupe: cancel: " << count
                << " run(s) match; not cancelled (confirm on a terminal, or "
                   "add --yes)\n";
      return exit_bad_input;
    }
    req["dry_run"] = false;
    auto body = client.call(req);
    if (g.json)
      std::cout << dump(body) << "\n";
    else
      std::cout << "cancelling " << body.value("count", size_t{0})
                << " run(s)\n";
    // On a cluster every member cancels the runs of the partitions it
    // leads: one that could not be asked is named.
    auto failed = body.value("failed_members", json::array());
    if (!g.json)
      for (auto& m : failed)
        std::cerr
          << "troupe: cancel: member " << m.value("member", "?") << " ("
          << m.value("state", "?")
          << ") did not answer: " << m.value("reason", "")
          << "; the runs of the partitions it leads are not cancelled\n";
    return failed.empty() ? exit_ok : exit_unreachable;
  }
  // cancel, pause, resume of one run.
  json req = {{"t", command}, {"run_id", o.run_id}};
  if (!o.reason.empty())
    req["reason"] = o.reason;
  auto body = client.call(req);
  if (g.json)
    std::cout << dump(body) << "\n";
  else
    std::cerr << command << " of run " << o.run_id << " requested\n";
  return exit_ok;
}

} // namespace

int run_remote(const global_options& g, const std::string& command,
               const remote_options& o) {
  config::settings settings;
  if (!load_data_dir_config(g, o.data_dir, settings))
    return exit_bad_input;
  if (o.limit == 0 || o.limit > 1000) {
    std::cerr << "troupe: " << command << ": --limit must be from 1 to 1000\n";
    return exit_bad_input;
  }
  if (!o.data_dir.empty() && command == "history")
    return run_history(g, o.run_id, o.data_dir);
  if (!o.data_dir.empty() && command == "cancel")
    return run_cancel(g, o.run_id, o.data_dir);
  if (!o.data_dir.empty())
    return run_local(g, command, o, settings);
  try {
    return remote(g, command, o, settings);
  } catch (const client_error& e) {
    // The node's messages may name the request ("list: ...") as this line
    // names the command: once is enough.
    std::string what = e.what();
    if (what.starts_with(command + ": "))
      what.erase(0, command.size() + 2);
    std::cerr << "troupe: " << command << ": " << what << "\n";
    if (e.exit_code == exit_unreachable && (command == "watch" || o.wait))
      std::cerr << "the run goes on in the node; `troupe watch "
                << (o.run_id.empty() ? std::string{"RUN"} : o.run_id)
                << "` follows it again\n";
    return e.exit_code;
  }
}

} // namespace troupe::tools
