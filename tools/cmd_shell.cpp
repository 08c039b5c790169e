// `troupe shell`: look inside a running node. Every answer comes from the
// node's actors over the control protocol; the shell never opens the store.

#include "config/suggest.hpp"
#include "runtime/query/query.hpp"
#include "runtime/query/query_error.hpp"
#include "runtime/query/schema.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/shell/line_editor.hpp"

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <poll.h>
#include <set>
#include <sstream>
#include <unistd.h>

namespace troupe::tools {

using json = nlohmann::json;
namespace query = runtime::query;

namespace {

std::string dump(const json& v, int indent = -1) {
  return v.dump(indent, ' ', false, json::error_handler_t::replace);
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// "in 59m59s" / "3.2s ago".
std::string relative(int64_t at_ns) {
  auto d = at_ns - wall_ns();
  auto ms = std::chrono::milliseconds{(d < 0 ? -d : d) / 1'000'000};
  auto text = config::format_duration(
    ms >= std::chrono::seconds{10}
      ? std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::round<std::chrono::seconds>(ms))
      : ms);
  return d >= 0 ? "in " + text : text + " ago";
}

/// A span for people: whole seconds from 10s on.
std::string human(int64_t ms) {
  std::chrono::milliseconds d{ms};
  if (d >= std::chrono::seconds{10})
    d = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::round<std::chrono::seconds>(d));
  return config::format_duration(d);
}

std::string pad(std::string s, size_t w) {
  if (s.size() < w)
    s.append(w - s.size(), ' ');
  return s;
}

/// A field's name for people: "runs_live" -> "runs live", "opened_at_ns" ->
/// "opened at", "backoff_ms" -> "backoff".
std::string show_key(std::string key) {
  for (auto* unit : {"_ns", "_ms"})
    if (key.size() > 3 && key.ends_with(unit))
      key.resize(key.size() - 3);
  for (auto& c : key)
    if (c == '_')
      c = ' ';
  return key;
}

/// A field's value for people: instants relative to now, spans in units,
/// lists joined, yes and no.
std::string show_value(const std::string& key, const json& v) {
  if (key.ends_with("_ns") && v.is_number_integer())
    return v.get<int64_t>() == 0 ? "-" : relative(v.get<int64_t>());
  if (key.ends_with("_ms") && v.is_number_integer())
    return human(v.get<int64_t>());
  if (v.is_boolean())
    return v.get<bool>() ? "yes" : "no";
  if (v.is_string())
    return v.get<std::string>().empty() ? "-" : v.get<std::string>();
  if (v.is_null())
    return "-";
  if (v.is_array()) {
    if (v.empty())
      return "none";
    std::string text;
    for (auto& x : v) {
      if (!text.empty())
        text += ", ";
      text += x.is_string() ? x.get<std::string>() : dump(x);
    }
    return text;
  }
  return dump(v);
}

/// Prints the fields of `obj` but `skip`, one a line, names and values in
/// two aligned columns.
void print_fields(const json& obj, const std::set<std::string>& skip = {}) {
  size_t width = 0;
  for (auto& [k, _] : obj.items())
    if (!skip.contains(k))
      width = std::max(width, show_key(k).size());
  for (auto& [k, v] : obj.items())
    if (!skip.contains(k))
      std::cout << "  " << pad(show_key(k), width + 2) << show_value(k, v)
                << "\n";
}

/// Prints `rows` under `header`, each column as wide as its widest cell
/// (up to `max_width`: a wider cell is not cut, it pushes the rest of its
/// row along) and two blanks apart.
void print_table(const std::vector<std::string>& header,
                 const std::vector<std::vector<std::string>>& rows,
                 size_t max_width = 40) {
  std::vector<size_t> width(header.size());
  for (size_t i = 0; i < header.size(); ++i)
    width[i] = header[i].size();
  for (auto& r : rows)
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      if (r[i].size() <= max_width)
        width[i] = std::max(width[i], r[i].size());
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < cells.size() && i < width.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size())
        text.append(
          std::max(width[i] + 2, cells[i].size() + 2) - cells[i].size(), ' ');
    }
    std::cout << text << "\n";
  };
  line(header);
  for (auto& r : rows)
    line(r);
}

struct command_spec {
  std::string name;
  std::string usage;
  std::string help;
};

const std::vector<command_spec>& commands() {
  static const std::vector<command_spec> all = {
    {"actors", "actors [--tree]",
     "live actors: kind, id, state, mailbox (--tree: a member shows its "
     "cluster first)"},
    {"inspect",
     "inspect run RUN | node RUN/NODE | actor ID | breaker KEY | limits | "
     "partition P",
     "one actor's own account of its state, or a partition's replicas"},
    {"history", "history RUN [--follow]", "a run's journal; --follow: live"},
    {"runs", "runs [--state S] [--workflow W] [--limit N]", "list runs"},
    {"select", "select runs|nodes [where ...] [order by C [desc]] [limit N]",
     "query runs or live nodes"},
    {"stats", "stats", "actors, runs, watches, readiness"},
    {"config", "config", "the node's effective configuration (masked)"},
    {"top", "top [N]", "the busiest live runs, refreshed until Enter"},
    {"cancel", "cancel RUN", "cancel a run (operator)"},
    {"pause", "pause RUN", "start no new attempts (operator)"},
    {"resume", "resume RUN", "resume a paused run (operator)"},
    {"retry", "retry RUN/NODE", "retry a node now, skipping its backoff"},
    {"breaker", "breaker reset KEY", "close a circuit breaker (operator)"},
    {"crash", "crash actor ID",
     "crash a run actor to watch it restart (admin)"},
    {"help", "help", "this list"},
    {"quit", "quit", "leave the shell"},
  };
  return all;
}

const std::vector<query::table>& schema() {
  using query::column_type;
  static const std::vector<query::table> tables = {
    {"runs",
     {{"run_id", column_type::text, ""},
      {"workflow", column_type::text, ""},
      {"state", column_type::text, ""},
      {"age", column_type::duration, "since submission"},
      {"created_at", column_type::time, ""},
      {"updated_at", column_type::time, ""},
      {"reason", column_type::text, ""}}},
    {"nodes",
     {{"run", column_type::text, "run id"},
      {"workflow", column_type::text, ""},
      {"id", column_type::text, "node id"},
      {"kind", column_type::text, ""},
      {"state", column_type::text, ""},
      {"attempts", column_type::number, "attempts so far"},
      {"next_retry", column_type::time, ""},
      {"backoff", column_type::duration, "until the next retry"},
      {"last_error_kind", column_type::text, ""},
      {"last_error", column_type::text, ""}}},
  };
  return tables;
}

class shell_session {
 public:
  shell_session(const global_options& g, control_client::options co)
      : g_(g), co_(std::move(co)) {}

  /// Runs one command line; returns false on quit.
  bool run(const std::string& line) {
    std::string error;
    auto words = tokenize_line(line, error);
    if (!error.empty()) {
      fail(exit_bad_input, error);
      return true;
    }
    if (words.empty())
      return true;
    auto& cmd = words[0];
    if (cmd == "quit" || cmd == "exit")
      return false;
    try {
      dispatch(words, line);
    } catch (const client_error& e) {
      if (e.exit_code == exit_unreachable) {
        client_.reset();
        fail(e.exit_code,
             std::string{e.what()} + "; reconnecting on the next command");
      } else {
        fail(e.exit_code, e.what());
      }
    }
    return true;
  }

  int status() const { return status_; }

  std::vector<std::string> complete(const std::string& before,
                                    const std::string&) {
    auto words = tools::shell::words_before(before);
    std::vector<std::string> out;
    if (words.empty()) {
      for (auto& c : commands())
        out.push_back(c.name);
      return out;
    }
    auto& cmd = words[0];
    if (cmd == "inspect" && words.size() == 1)
      return {"run", "node", "actor", "breaker", "limits", "partition"};
    if (cmd == "breaker" && words.size() == 1)
      return {"reset"};
    if (cmd == "crash" && words.size() == 1)
      return {"actor"};
    if (cmd == "select" && words.size() == 1)
      return {"runs", "nodes"};
    if ((cmd == "inspect" && words.size() == 2 && words[1] == "actor")
        || (cmd == "crash" && words.size() == 2))
      return {known_actors_.begin(), known_actors_.end()};
    if ((cmd == "inspect" && words.size() == 2 && words[1] == "node")
        || (cmd == "retry" && words.size() == 1))
      return {known_nodes_.begin(), known_nodes_.end()};
    if ((cmd == "inspect" && words.size() == 2 && words[1] == "run")
        || ((cmd == "history" || cmd == "cancel" || cmd == "pause"
             || cmd == "resume")
            && words.size() == 1))
      return {known_runs_.begin(), known_runs_.end()};
    return out;
  }

  /// Learns ids for completion from the node (quietly).
  void learn() {
    try {
      auto tree = call({{"t", "inspect"}, {"what", "actors"}, {"limit", 500}});
      remember(tree);
    } catch (const std::exception&) {}
  }

  std::string prompt() {
    return "troupe(" + (node_.empty() ? co_.address : node_) + ")> ";
  }

 private:
  static std::vector<std::string> tokenize_line(const std::string& line,
                                                std::string& error) {
    return tools::shell::tokenize(line, error);
  }

  void fail(int code, const std::string& message) {
    status_ = code;
    if (g_.json)
      std::cout << dump(json{{"error", message}, {"exit_code", code}}) << "\n";
    else
      std::cerr << "error: " << message << "\n";
  }

  control_client& client() {
    if (!client_) {
      client_ = std::make_unique<control_client>();
      try {
        client_->connect(co_);
      } catch (...) {
        client_.reset();
        throw;
      }
      node_ = client_->node_name();
    }
    return *client_;
  }

  json call(json req) { return client().call(std::move(req)); }

  void out(const json& body, const std::function<void()>& text) {
    if (g_.json)
      std::cout << dump(body) << "\n";
    else
      text();
    std::cout << std::flush;
  }

  void remember(const json& tree) {
    for (auto& s : tree["supervisors"]) {
      known_actors_.insert(std::to_string(s.value("actor_id", 0)));
      for (auto& r : s["children"]) {
        known_actors_.insert(std::to_string(r.value("actor_id", 0)));
        auto id = r.value("run_id", std::string{});
        known_runs_.insert(id);
        for (auto& n : r["nodes"])
          known_nodes_.insert(id + "/" + n.value("id", std::string{}));
      }
    }
    for (auto* group : {"breakers", "limiters"})
      for (auto& a : tree[group])
        known_actors_.insert(std::to_string(a.value("actor_id", 0)));
  }

  static std::string age(int64_t since_ns) {
    return since_ns == 0 ? std::string{"-"} : relative(since_ns).substr(0, 20);
  }

  /// How long ago `since_ns` was, as a span: "12s".
  static std::string age_of(int64_t since_ns) {
    return since_ns == 0
             ? std::string{"-"}
             : human(std::max<int64_t>(0, wall_ns() - since_ns) / 1'000'000);
  }

  /// The members of the node's cluster: name, state and link.
  void print_members(const json& body) {
    std::cout << "cluster " << body.value("cluster", std::string{})
              << ", this member: " << body.value("member", std::string{})
              << "\n"
              << pad("MEMBER", 20) << pad("STATE", 10) << pad("LINK", 12)
              << "NOTE\n";
    for (auto& m : body.value("members", json::array()))
      std::cout << pad(m.value("name", std::string{}), 20)
                << pad(m.value("state", std::string{}), 10)
                << pad(m.value("link", std::string{"-"}), 12)
                << (m.value("self", false) ? std::string{"this member"}
                                           : m.value("reason", std::string{}))
                << "\n";
    std::cout << "\n";
  }

  void print_actors(const json& tree, bool as_tree) {
    std::cout << "node: " << tree.value("actors_running", 0)
              << " actors running, " << tree.value("runs_live", 0)
              << " live runs\n";
    auto row = [&](int depth, const json& a, const std::string& what,
                   const std::string& state, const std::string& extra) {
      std::string indent = as_tree ? std::string(depth * 2, ' ') : "";
      std::cout << pad(indent + a.value("kind", std::string{}), 14)
                << pad(std::to_string(a.value("actor_id", 0)), 8)
                << pad(what, 30) << pad(state, 15)
                << pad(std::to_string(a.value("mailbox", 0)), 9) << extra
                << "\n";
    };
    std::cout << pad("KIND", 14) << pad("ID", 8) << pad("OF", 30)
              << pad("STATE", 15) << pad("MAILBOX", 9) << "NOTE\n";
    for (auto& s : tree["supervisors"]) {
      row(0, s, "-", "", std::to_string(s.value("runs_live", 0)) + " runs");
      for (auto& r : s["children"]) {
        row(1, r, r.value("run_id", std::string{}),
            r.value("state", std::string{}),
            "restarts " + std::to_string(r.value("restarts", 0)) + ", age "
              + age_of(r.value("created_at_ns", int64_t{0})));
        for (auto& n : r["nodes"])
          if (n.contains("attempt_actor_id")) {
            json a = {{"kind", "attempt"},
                      {"actor_id", n["attempt_actor_id"]},
                      {"mailbox", 0}};
            row(2, a, n.value("id", std::string{}),
                n.value("state", std::string{}),
                "attempt " + std::to_string(n.value("attempt", 0)));
          }
      }
    }
    for (auto& b : tree["breakers"])
      row(0, b, b.value("key", std::string{}), b.value("state", std::string{}),
          std::to_string(b.value("failures_in_window", 0)) + " failures in "
            + b.value("window", std::string{}));
    for (auto& l : tree["limiters"])
      row(0, l, l.value("key", std::string{}), "",
          std::to_string(l["holders"].size()) + "/"
            + std::to_string(l.value("limit", 0)) + " held, "
            + std::to_string(l["queue"].size()) + " waiting");
  }

  void print_node(const json& n) {
    std::cout << "  " << pad(n.value("id", std::string{}), 16)
              << pad(n.value("kind", std::string{}), 8)
              << pad(n.value("state", std::string{}), 15) << "attempt "
              << n.value("attempt", 0);
    if (n.contains("next_retry_ns"))
      std::cout << ", next attempt "
                << relative(n["next_retry_ns"].get<int64_t>()) << " (backoff "
                << human(n.value("backoff_ms", int64_t{0})) << ")";
    if (n.contains("timer_deadline_ns"))
      std::cout << ", timer fires "
                << relative(n["timer_deadline_ns"].get<int64_t>());
    if (n.contains("attempt_actor_id"))
      std::cout << ", actor " << n["attempt_actor_id"].get<uint64_t>();
    std::cout << "\n";
    if (n.contains("last_error"))
      std::cout << "    last error (" << n.value("last_error_kind", "")
                << "): " << n.value("last_error", "") << "\n";
    if (n.contains("params"))
      std::cout << "    params: " << n.value("params", "") << "\n";
  }

  void print_run(const json& r) {
    std::cout << "run " << r.value("run_id", "") << " ("
              << r.value("workflow", "") << "): " << r.value("state", "")
              << ", actor " << r.value("actor_id", 0) << ", mailbox "
              << r.value("mailbox", 0) << ", restarts "
              << r.value("restarts", 0) << ", " << r.value("journal_events", 0)
              << " journal events\n";
    std::cout << "  inputs: " << r.value("inputs", "") << "\n";
    std::cout << "  waiting for: ";
    auto& w = r["waiting_for"];
    if (w.empty())
      std::cout << "nothing";
    for (size_t i = 0; i < w.size(); ++i)
      std::cout << (i ? "; " : "") << w[i].get<std::string>();
    std::cout << "\n";
    for (auto& n : r["nodes"])
      print_node(n);
  }

  /// One actor's own account: a run as `inspect run` shows it, an attempt
  /// as `inspect node`, others (breakers, limiters, supervisors) field by
  /// field.
  void print_actor(const json& a) {
    auto kind = a.value("kind", std::string{});
    if (kind == "run")
      return print_run(a);
    if (kind == "attempt") {
      std::cout << "attempt actor " << a.value("actor_id", uint64_t{0})
                << " of run " << a.value("run_id", "") << " (run actor "
                << a.value("run_actor_id", uint64_t{0}) << ")\n";
      return print_node(a);
    }
    std::cout << (kind.empty() ? std::string{"actor"} : kind);
    if (a.contains("key"))
      std::cout << " '" << a.value("key", "") << "'";
    if (a.contains("actor_id"))
      std::cout << " (actor " << a.value("actor_id", uint64_t{0}) << ")";
    if (a.contains("state"))
      std::cout << ": " << a.value("state", "");
    std::cout << "\n";
    print_fields(a, {"kind", "key", "actor_id", "state", "runs"});
    if (a.contains("runs") && a["runs"].is_array() && !a["runs"].empty()) {
      std::vector<std::vector<std::string>> rows;
      for (auto& r : a["runs"])
        rows.push_back({r.value("run_id", ""), r.value("workflow", ""),
                        std::to_string(r.value("actor_id", uint64_t{0})),
                        std::to_string(r.value("restarts", 0)),
                        age_of(r.value("created_at_ns", int64_t{0}))});
      print_table({"RUN", "WORKFLOW", "ACTOR", "RESTARTS", "AGE"}, rows);
    }
  }

  /// One partition as its leader and replicas stand (`inspect partition`).
  void print_partition(const json& body) {
    if (body.value("cluster", std::string{}).empty()) {
      std::cout << "this node runs alone: it leads every partition, and its "
                   "runs are kept in one copy\n";
      return;
    }
    for (auto& p : body.value("partitions", json::array())) {
      for (auto& [k, v] : p.items())
        std::cout << pad(k, 14)
                  << (v.is_string() ? v.get<std::string>() : dump(v)) << "\n";
    }
  }

  void print_limiters(const json& limiters) {
    if (limiters.empty()) {
      std::cout << "no concurrency limit is held or awaited on this node\n";
      return;
    }
    std::vector<std::vector<std::string>> rows;
    for (auto& l : limiters)
      rows.push_back({l.value("key", ""), std::to_string(l.value("limit", 0)),
                      std::to_string(l["holders"].size()),
                      std::to_string(l["queue"].size()),
                      std::to_string(l.value("actor_id", uint64_t{0})),
                      show_value("holders", l["holders"])});
    print_table({"KEY", "LIMIT", "HELD", "WAITING", "ACTOR", "HOLDERS"}, rows);
  }

  void print_config(const json& c) {
    std::cout << "environment: " << c.value("environment", "") << "\n"
              << "layers, lowest first: " << show_value("", c["layers"])
              << "\n";
    std::vector<std::vector<std::string>> rows;
    for (auto& [key, e] : c["settings"].items()) {
      // As in a config file: ready to copy.
      rows.push_back({key, dump(e["value"]), e.value("source", "")});
    }
    print_table({"KEY", "VALUE", "SOURCE"}, rows);
  }

  void print_rows(const std::vector<json>& rows,
                  const std::vector<std::string>& cols) {
    for (auto& c : cols)
      std::cout << pad(c, c == "run_id" || c == "run" ? 23 : 16);
    std::cout << "\n";
    for (auto& r : rows) {
      for (auto& c : cols) {
        auto& v = r[c];
        std::string text = v.is_string() ? v.get<std::string>()
                           : v.is_null() ? "-"
                                         : v.dump();
        if ((c == "age" || c == "backoff") && v.is_number())
          text = human(v.get<int64_t>());
        if ((c == "created_at" || c == "updated_at" || c == "next_retry")
            && v.is_number())
          text = relative(v.get<int64_t>());
        std::cout << pad(text.substr(0, 60),
                         c == "run_id" || c == "run" ? 23 : 16);
      }
      std::cout << "\n";
    }
    std::cout << rows.size() << " row(s)\n";
  }

  std::vector<json> run_rows() {
    std::vector<json> rows;
    std::string after;
    for (int page = 0; page < 100; ++page) {
      json req = {{"t", "list"}, {"limit", 1000}};
      if (!after.empty())
        req["after"] = after;
      auto body = call(req);
      auto now = wall_ns();
      for (auto& r : body["runs"]) {
        auto created = r.value("created_at_ns", int64_t{0});
        rows.push_back({{"run_id", r["run_id"]},
                        {"workflow", r["workflow"]},
                        {"state", r["state"]},
                        {"age", (now - created) / 1'000'000},
                        {"created_at", created},
                        {"updated_at", r["updated_at_ns"]},
                        {"reason", r["reason"]}});
      }
      after = body.value("next", std::string{});
      if (after.empty())
        break;
    }
    return rows;
  }

  std::vector<json> node_rows() {
    auto tree = call({{"t", "inspect"}, {"what", "actors"}, {"limit", 10'000}});
    remember(tree);
    std::vector<json> rows;
    auto now = wall_ns();
    for (auto& s : tree["supervisors"])
      for (auto& r : s["children"])
        for (auto& n : r["nodes"]) {
          json row = {{"run", r["run_id"]},
                      {"workflow", r["workflow"]},
                      {"id", n["id"]},
                      {"kind", n["kind"]},
                      {"state", n["state"]},
                      {"attempts", n["attempt"]},
                      {"next_retry", nullptr},
                      {"backoff", nullptr},
                      {"last_error_kind", n.value("last_error_kind", json())},
                      {"last_error", n.value("last_error", json())}};
          if (n.contains("next_retry_ns")) {
            row["next_retry"] = n["next_retry_ns"];
            row["backoff"] = std::max<int64_t>(
              0, (n["next_retry_ns"].get<int64_t>() - now) / 1'000'000);
          }
          rows.push_back(std::move(row));
        }
    return rows;
  }

  void select(const std::string& line) {
    query::query_error err;
    auto q = query::parse_query(line, schema(), err);
    if (!q) {
      status_ = exit_bad_input;
      if (g_.json)
        std::cout << dump(json{{"error", err.message},
                               {"column", err.column},
                               {"exit_code", exit_bad_input}})
                  << "\n";
      else
        std::cerr << query::render_error(line, err)
                  << "\nerror: " << query::to_string(err) << "\n";
      return;
    }
    auto rows = q->table() == "runs" ? run_rows() : node_rows();
    auto result = query::run(*q, std::move(rows));
    std::vector<std::string> cols;
    for (auto& c : schema()[q->table() == "runs" ? 0 : 1].columns)
      if (c.name != "created_at" && c.name != "updated_at")
        cols.push_back(c.name);
    if (g_.json) {
      std::cout << dump(result) << "\n";
      return;
    }
    print_rows(result, cols);
  }

  void top(size_t n) {
    bool live = tools::shell::line_editor::interactive() && !g_.json;
    for (int round = 0; round < 100'000; ++round) {
      auto tree = call({{"t", "inspect"}, {"what", "actors"}, {"limit", 5000}});
      remember(tree);
      std::vector<json> runs;
      for (auto& s : tree["supervisors"])
        for (auto& r : s["children"])
          runs.push_back(r);
      auto busy = [](const json& r) {
        size_t running = 0;
        for (auto& x : r["nodes"])
          running += x.value("state", "") == "running";
        return std::make_pair(r.value("mailbox", size_t{0}), running);
      };
      std::stable_sort(runs.begin(), runs.end(),
                       [&](auto& a, auto& b) { return busy(a) > busy(b); });
      if (runs.size() > n)
        runs.resize(n);
      if (g_.json) {
        std::cout << dump(runs) << "\n";
        return;
      }
      if (live)
        std::cout << "\033[H\033[2J";
      std::cout << tree.value("actors_running", 0) << " actors, "
                << tree.value("runs_live", 0) << " live runs"
                << (live ? "  (refreshing; Enter to stop)" : "") << "\n"
                << pad("RUN", 23) << pad("WORKFLOW", 16) << pad("MAILBOX", 9)
                << pad("RUNNING", 9) << "WAITING FOR\n";
      for (auto& r : runs) {
        auto [mailbox, running] = busy(r);
        auto& w = r["waiting_for"];
        std::cout << pad(r.value("run_id", ""), 23)
                  << pad(r.value("workflow", ""), 16)
                  << pad(std::to_string(mailbox), 9)
                  << pad(std::to_string(running), 9)
                  << (w.empty() ? std::string{"-"}
                                : w[0].get<std::string>().substr(0, 60))
                  << "\n";
      }
      std::cout << std::flush;
      if (!live)
        return;
      pollfd p{STDIN_FILENO, POLLIN, 0};
      if (::poll(&p, 1, 2000) > 0) {
        std::string ignored;
        std::getline(std::cin, ignored);
        return;
      }
    }
  }

  void need(const std::vector<std::string>& w, size_t n,
            const std::string& usage) {
    if (w.size() < n)
      throw client_error(exit_bad_input, "usage: " + usage);
  }

  static std::pair<std::string, std::string> split_node(const std::string& s) {
    auto slash = s.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == s.size())
      throw client_error(exit_bad_input, "'" + s
                                           + "': expected RUN/NODE, e.g. "
                                             "01a2b3c4d5e6-0f1e2d3c/fetch");
    return {s.substr(0, slash), s.substr(slash + 1)};
  }

  static uint64_t actor_id(const std::string& s) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || v == 0)
      throw client_error(exit_bad_input,
                         "'" + s + "' is not an actor id (a number)");
    return v;
  }

  void dispatch(const std::vector<std::string>& w, const std::string& line) {
    auto& cmd = w[0];
    if (cmd == "help") {
      // Usages up to this wide share a line with their help; a longer one
      // has its help on the next line, in the same column.
      size_t width = 0;
      for (auto& c : commands())
        if (c.usage.size() <= 44)
          width = std::max(width, c.usage.size());
      for (auto& c : commands()) {
        if (c.usage.size() > width)
          std::cout << "  " << c.usage << "\n  " << pad("", width + 2);
        else
          std::cout << "  " << pad(c.usage, width + 2);
        std::cout << c.help << "\n";
      }
      std::cout << std::flush;
      return;
    }
    if (cmd == "actors") {
      auto tree = call({{"t", "inspect"}, {"what", "actors"}, {"limit", 1000}});
      remember(tree);
      bool as_tree = w.size() > 1 && w[1] == "--tree";
      // A member of a cluster shows the members first: the tree's root.
      json cluster;
      if (as_tree) {
        auto members = call({{"t", "members"}});
        if (!members.value("cluster", std::string{}).empty()) {
          cluster = std::move(members);
          tree["cluster"] = cluster;
        }
      }
      return out(tree, [&] {
        if (cluster.is_object())
          print_members(cluster);
        print_actors(tree, as_tree);
      });
    }
    if (cmd == "inspect") {
      need(w, 2,
           "inspect run RUN | node RUN/NODE | actor ID | breaker KEY | "
           "limits | partition P");
      auto& what = w[1];
      json req = {{"t", "inspect"}, {"what", what}};
      if (what == "partition") {
        need(w, 3, "inspect partition P");
        size_t used = 0;
        long long p = -1;
        try {
          p = std::stoll(w[2], &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != w[2].size() || p < 0)
          throw client_error(exit_bad_input,
                             "inspect partition: P must be a partition's "
                             "number (0, 1, ...), got '"
                               + w[2] + "'");
        auto body = call({{"t", "partitions"}, {"partition", p}});
        return out(body, [&] { print_partition(body); });
      }
      if (what == "run") {
        need(w, 3, "inspect run RUN");
        req["run_id"] = w[2];
      } else if (what == "node") {
        need(w, 3, "inspect node RUN/NODE");
        auto [run, node] = split_node(w[2]);
        req["run_id"] = run;
        req["node"] = node;
      } else if (what == "actor") {
        need(w, 3, "inspect actor ID");
        req["actor_id"] = actor_id(w[2]);
      } else if (what == "breaker") {
        need(w, 3, "inspect breaker KEY");
        req["key"] = w[2];
      } else if (what != "limits") {
        throw client_error(
          exit_bad_input,
          "inspect what? '" + what + "'"
            + config::did_you_mean(
              what, {"run", "node", "actor", "breaker", "limits", "partition"})
            + "; one of run, node, actor, breaker, limits, partition");
      }
      auto body = call(req);
      return out(body, [&] {
        if (what == "run")
          print_run(body);
        else if (what == "node")
          print_node(body);
        else if (what == "limits")
          print_limiters(body["limiters"]);
        else
          print_actor(body);
      });
    }
    if (cmd == "history") {
      need(w, 2, "history RUN [--follow]");
      if (w.size() > 2 && w[2] == "--follow") {
        auto& c = client();
        auto id = c.start(json{{"t", "watch"}, {"run_id", w[1]}});
        for (int i = 0; i < 10'000'000; ++i) {
          auto msg = c.next(std::chrono::seconds{3600});
          if (!msg || msg->value("id", uint64_t{0}) != id)
            continue;
          auto body = msg->value("body", json::object());
          if (g_.json) {
            std::cout << dump(body) << "\n" << std::flush;
          } else if (msg->value("t", "") == "event") {
            std::cout << clock_time(body.value("at_ns", wall_ns())) << "  "
                      << pad(body.value("node", std::string{"(run)"}), 12)
                      << pad(body.value("type", ""), 18)
                      << body.value("message", "") << "\n"
                      << std::flush;
          }
          if (msg->value("t", "") == "end") {
            if (!g_.json)
              std::cout << "run " << body.value("state", "") << "\n";
            return;
          }
        }
        return;
      }
      auto body = call({{"t", "history"}, {"run_id", w[1]}});
      return out(body, [&] {
        auto& events = body["events"];
        int64_t start
          = events.empty() ? 0 : events[0].value("at_ns", int64_t{0});
        for (auto& e : events)
          std::cout << "  " << describe_event(event_from_json(e), start)
                    << "\n";
        if (body.value("next", 0) != 0)
          std::cout << "  (more events; use the CLI's troupe history)\n";
      });
    }
    if (cmd == "runs") {
      json req = {{"t", "list"}, {"limit", 50}};
      for (size_t i = 1; i + 1 < w.size(); i += 2) {
        if (w[i] == "--state")
          req["state"] = w[i + 1];
        else if (w[i] == "--workflow")
          req["workflow"] = w[i + 1];
        else if (w[i] == "--limit")
          req["limit"] = std::atoi(w[i + 1].c_str());
        else
          throw client_error(exit_bad_input, "runs: unknown flag '" + w[i]
                                               + "'; flags: --state, "
                                                 "--workflow, --limit");
      }
      auto body = call(req);
      for (auto& r : body["runs"])
        known_runs_.insert(r.value("run_id", std::string{}));
      return out(body, [&] {
        for (auto& r : body["runs"])
          std::cout << pad(r.value("run_id", ""), 23)
                    << pad(r.value("workflow", ""), 16)
                    << pad(r.value("state", ""), 11)
                    << age(r.value("created_at_ns", int64_t{0})) << "\n";
        std::cout << body["runs"].size() << " run(s)\n";
      });
    }
    if (cmd == "select")
      return select(line);
    if (cmd == "stats" || cmd == "config") {
      auto body = call({{"t", "inspect"}, {"what", cmd}});
      return out(body, [&] {
        if (cmd == "stats")
          print_fields(body);
        else
          print_config(body);
      });
    }
    if (cmd == "top")
      return top(w.size() > 1 ? std::max(1, std::atoi(w[1].c_str())) : 10);
    json req;
    if (cmd == "cancel" || cmd == "pause" || cmd == "resume") {
      need(w, 2, cmd + " RUN");
      req = {{"t", cmd}, {"run_id", w[1]}};
    } else if (cmd == "retry") {
      need(w, 2, "retry RUN/NODE");
      auto [run, node] = split_node(w[1]);
      req = {{"t", "retry"}, {"run_id", run}, {"node", node}};
    } else if (cmd == "breaker") {
      if (w.size() < 3 || w[1] != "reset")
        throw client_error(exit_bad_input, "usage: breaker reset KEY");
      req = {{"t", "breaker_reset"}, {"key", w[2]}};
    } else if (cmd == "crash") {
      if (w.size() < 3 || w[1] != "actor")
        throw client_error(exit_bad_input, "usage: crash actor ID");
      req = {{"t", "crash"}, {"actor_id", actor_id(w[2])}};
    } else {
      std::vector<std::string> names;
      for (auto& c : commands())
        names.push_back(c.name);
      throw client_error(exit_bad_input, "unknown command '" + cmd + "'"
                                           + config::did_you_mean(cmd, names)
                                           + " (help lists them)");
    }
    auto body = call(req);
    out(body, [&] { std::cout << cmd << ": requested\n"; });
  }

  const global_options& g_;
  control_client::options co_;
  std::unique_ptr<control_client> client_;
  std::string node_;
  int status_ = exit_ok;
  std::set<std::string> known_runs_, known_nodes_, known_actors_;
};

} // namespace

int run_shell(const global_options& g, const std::string& commands_text) {
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  auto co = client_options(g, settings);
  shell_session sh{g, co};
  if (!commands_text.empty()) {
    for (auto& c : tools::shell::split_commands(commands_text))
      if (!sh.run(c))
        break;
    return sh.status();
  }
  if (!tools::shell::line_editor::interactive()) {
    // Each command runs as soon as its line is in (a quoted newline or a
    // trailing backslash waits for the next one): a script fed through a
    // pipe gets its answers as it goes, not once its writer is done.
    auto run_all = [&sh](const std::string& text) {
      bool go_on = true;
      for (auto& c : tools::shell::split_commands(text))
        if (!(go_on = sh.run(c)))
          break;
      std::cout << std::flush;
      return go_on;
    };
    std::string pending;
    std::string line;
    for (int i = 0; i < 100'000'000 && std::getline(std::cin, line); ++i) {
      pending += line;
      if (tools::shell::continues_on_next_line(pending)) {
        pending += '\n';
        continue;
      }
      if (!run_all(pending))
        return sh.status();
      pending.clear();
    }
    run_all(pending);
    return sh.status();
  }
  std::string history;
  if (auto* home = std::getenv("HOME"); home && *home)
    history = std::string{home} + "/.troupe_history";
  tools::shell::line_editor::options eo;
  eo.program = "troupe";
  eo.history_file = history;
  eo.complete = [&sh](const std::string& before, const std::string& word) {
    return sh.complete(before, word);
  };
  tools::shell::line_editor editor{eo};
  sh.learn();
  std::cout << "troupe shell: 'help' lists the commands, Tab completes, "
               "Ctrl-D leaves\n";
  for (int i = 0; i < 100'000'000; ++i) {
    editor.set_prompt(sh.prompt());
    auto line = editor.read_line();
    if (!line)
      break;
    bool go_on = true;
    for (auto& c : tools::shell::split_commands(*line))
      if (!(go_on = sh.run(c)))
        break;
    if (!go_on)
      break;
  }
  return exit_ok;
}

} // namespace troupe::tools
