#include "tools/chaos/scenario.hpp"

#include "config/schema.hpp"
#include "runtime/spec/document.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>
#include <tuple>

namespace troupe::chaos {

namespace {

using json = nlohmann::json;

constexpr std::pair<action, std::string_view> action_names[] = {
  {action::kill, "kill"},
  {action::stop, "stop"},
  {action::cont, "cont"},
  {action::partition, "partition"},
  {action::slow_disk, "slow_disk"},
  {action::fail_disk, "fail_disk"},
  {action::crash_actor, "crash_actor"},
  {action::kill_etcd, "kill_etcd"},
  {action::clock_jump, "clock_jump"},
};

/// Longest span a scenario may name: a day.
constexpr duration max_span = std::chrono::hours{24};

std::string action_list() {
  std::string out;
  for (auto& [a, name] : action_names)
    out.append(out.empty() ? "" : ", ").append(name);
  return out;
}

/// Walks a parsed scenario document, collecting every problem.
class checker {
 public:
  checker(const runtime::document& doc, std::filesystem::path base)
      : doc_(doc), base_(std::move(base)) {}

  scenario_outcome run() {
    scenario s;
    auto& root = doc_.root;
    if (!root.is_object()) {
      error("", "wrong_type", "a scenario is a map of fields");
      return finish(std::move(s));
    }
    fields(
      root, "",
      {"name", "description", "cluster", "workload", "faults", "deadline"});
    if (auto* v = find(root, "name"))
      s.name = text(*v, "name");
    if (auto* v = find(root, "description"))
      s.description = text(*v, "description");
    if (auto* v = find(root, "cluster"))
      read_cluster(*v, s.cluster);
    if (auto* v = find(root, "workload"))
      read_workload(*v, s.workload);
    else
      error("workload", "missing_field", "a scenario needs a workload");
    if (auto* v = find(root, "deadline"))
      s.deadline = span(*v, "deadline").value_or(duration{0});
    else
      error("deadline", "missing_field",
            "a scenario needs a deadline by which every run has ended");
    if (auto* v = find(root, "faults"))
      read_faults(*v, s);
    check_times(s);
    return finish(std::move(s));
  }

 private:
  scenario_outcome finish(scenario s) {
    // In the order they stand in the file, as an editor would list them.
    std::stable_sort(
      errors_.begin(), errors_.end(),
      [](const runtime::diagnostic& a, const runtime::diagnostic& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
      });
    scenario_outcome out;
    if (errors_.empty())
      out.value = std::move(s);
    out.errors = std::move(errors_);
    return out;
  }

  void error(const std::string& path, std::string code, std::string message) {
    auto m = doc_.find_mark(path);
    errors_.push_back(runtime::diagnostic{path, m.line, m.column,
                                          std::move(code), std::move(message)});
  }

  static const json* find(const json& obj, const char* key) {
    auto i = obj.find(key);
    return i == obj.end() ? nullptr : &*i;
  }

  /// Reports every field of `obj` not in `known`.
  void fields(const json& obj, const std::string& path,
              std::initializer_list<std::string_view> known) {
    for (auto& [key, value] : obj.items()) {
      if (std::find(known.begin(), known.end(), key) != known.end())
        continue;
      std::string names;
      for (auto k : known)
        names.append(names.empty() ? "" : ", ").append(k);
      error(runtime::join_path(path, key), "unknown_field",
            "unknown field '" + key + "' (known: " + names + ")");
    }
  }

  bool is_map(const json& v, const std::string& path) {
    if (v.is_object())
      return true;
    error(path, "wrong_type", "must be a map");
    return false;
  }

  std::string text(const json& v, const std::string& path) {
    if (v.is_string())
      return v.get<std::string>();
    error(path, "wrong_type", "must be a string");
    return {};
  }

  std::optional<int64_t> integer(const json& v, const std::string& path,
                                 int64_t min, int64_t max) {
    if (!v.is_number_integer()) {
      error(path, "wrong_type", "must be a whole number");
      return std::nullopt;
    }
    auto n = v.get<int64_t>();
    if (n < min || n > max) {
      error(path, "out_of_range",
            "must be between " + std::to_string(min) + " and "
              + std::to_string(max) + ", not " + std::to_string(n));
      return std::nullopt;
    }
    return n;
  }

  /// A span of time such as `5s`: positive (or zero when `zero_ok`), at
  /// most a day.
  std::optional<duration> span(const json& v, const std::string& path,
                               bool zero_ok = false) {
    if (!v.is_string()) {
      error(path, "wrong_type", "must be a duration such as 5s or 250ms");
      return std::nullopt;
    }
    std::string why;
    auto d = config::parse_duration(v.get<std::string>(), &why);
    if (!d) {
      error(path, "bad_duration", why);
      return std::nullopt;
    }
    if (*d == duration{0} && !zero_ok) {
      error(path, "out_of_range", "must be longer than 0");
      return std::nullopt;
    }
    if (*d > max_span) {
      error(path, "out_of_range", "must be at most 24h");
      return std::nullopt;
    }
    return d;
  }

  void read_cluster(const json& v, cluster_spec& c) {
    if (!is_map(v, "cluster"))
      return;
    fields(v, "cluster",
           {"members", "etcd_members", "replication", "min_insync", "config"});
    if (auto* x = find(v, "members"))
      c.members = static_cast<int>(
        integer(*x, "cluster.members", 1, max_members).value_or(c.members));
    if (auto* x = find(v, "etcd_members")) {
      auto n = integer(*x, "cluster.etcd_members", 1, 5);
      if (n && *n % 2 == 0)
        error("cluster.etcd_members", "out_of_range",
              "must be odd (1, 3 or 5) so etcd keeps a majority");
      else if (n)
        c.etcd_members = static_cast<int>(*n);
    }
    // Replication defaults to the members, up to three.
    c.replication = std::min(c.members, 3);
    c.min_insync = std::min(c.replication, 2);
    bool replication_ok = true;
    if (auto* x = find(v, "replication")) {
      auto n = integer(*x, "cluster.replication", 1, max_members);
      replication_ok = n.has_value();
      if (n && *n > c.members) {
        error("cluster.replication", "out_of_range",
              "must be at most the members (" + std::to_string(c.members)
                + "), not " + std::to_string(*n));
        replication_ok = false;
      } else if (n) {
        c.replication = static_cast<int>(*n);
        c.min_insync = std::min(c.replication, 2);
      }
    }
    if (auto* x = find(v, "min_insync")) {
      auto n = integer(*x, "cluster.min_insync", 1, max_members);
      if (n && replication_ok && *n > c.replication)
        error("cluster.min_insync", "out_of_range",
              "must be at most the replication ("
                + std::to_string(c.replication) + "), not "
                + std::to_string(*n));
      else if (n)
        c.min_insync = static_cast<int>(*n);
    }
    if (auto* x = find(v, "config"))
      read_config(*x, c);
  }

  void read_config(const json& v, cluster_spec& c) {
    if (!is_map(v, "cluster.config"))
      return;
    for (auto& [key, value] : v.items()) {
      auto path = runtime::join_path("cluster.config", key);
      auto dot = key.find('.');
      const config::key_spec* spec
        = dot == std::string::npos
            ? nullptr
            : config::find_key(std::string_view{key}.substr(0, dot),
                               std::string_view{key}.substr(dot + 1));
      if (!spec) {
        error(path, "unknown_key",
              "unknown config key '" + key
                + "' (`troupe config keys` lists them)");
        continue;
      }
      if (key == "cluster.replication" || key == "cluster.min_insync"
          || key == "cluster.etcd" || key == "cluster.member") {
        error(path, "reserved_key",
              "'" + key + "' is set by the scenario's cluster fields");
        continue;
      }
      std::string value_text;
      if (value.is_string())
        value_text = value.get<std::string>();
      else if (value.is_boolean() || value.is_number())
        value_text = value.dump();
      else if (value.is_array()
               && spec->kind == config::value_kind::string_list) {
        for (auto& item : value) {
          if (!item.is_string()) {
            value_text.clear();
            break;
          }
          value_text.append(value_text.empty() ? "" : ",")
            .append(item.get<std::string>());
        }
      }
      if (value_text.empty() && !value.is_string()) {
        error(path, "wrong_type",
              "must be " + std::string{describe(spec->kind)});
        continue;
      }
      std::string why;
      auto parsed = config::parse_text(*spec, value_text, why);
      if (!parsed) {
        error(path, "bad_value", why);
        continue;
      }
      if (key == "cluster.partitions")
        if (auto* n = std::get_if<int64_t>(&*parsed))
          c.partitions = *n;
      c.config[key] = value_text;
    }
  }

  void read_workload(const json& v, workload_spec& w) {
    if (!is_map(v, "workload"))
      return;
    fields(v, "workload",
           {"workflows", "inputs", "runs_per_second", "count", "duration"});
    if (auto* x = find(v, "workflows"))
      read_workflows(*x, w);
    else
      error("workload.workflows", "missing_field",
            "a workload needs at least one workflow file");
    if (auto* x = find(v, "inputs")) {
      if (is_map(*x, "workload.inputs"))
        w.inputs = *x;
    }
    if (auto* x = find(v, "runs_per_second")) {
      if (!x->is_number() || !std::isfinite(x->get<double>())
          || x->get<double>() <= 0 || x->get<double>() > 10'000)
        error("workload.runs_per_second", "out_of_range",
              "must be a number above 0 and at most 10000");
      else
        w.runs_per_second = x->get<double>();
    }
    auto* count = find(v, "count");
    auto* length = find(v, "duration");
    if (count && length)
      error("workload.duration", "conflict",
            "give either count or duration, not both");
    else if (!count && !length)
      error("workload", "missing_field",
            "a workload needs a count of runs or a duration");
    else if (count)
      w.count = integer(*count, "workload.count", 1, 1'000'000);
    else
      w.length = span(*length, "workload.duration");
    // A count at a slow rate could last longer than a duration may.
    if (w.count
        && static_cast<double>(*w.count) / w.runs_per_second
             > std::chrono::duration<double>{max_span}.count()) {
      error("workload.count", "out_of_range",
            "the runs would take longer than 24h at "
              + nlohmann::json(w.runs_per_second).dump() + " per second");
      w.count.reset();
    }
  }

  void read_workflows(const json& v, workload_spec& w) {
    const std::string path = "workload.workflows";
    if (!v.is_array() || v.empty()) {
      error(path, "wrong_type", "must be a list of workflow files");
      return;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      auto item_path = runtime::index_path(path, i);
      auto name = text(v[i], item_path);
      if (name.empty())
        continue;
      auto file = base_ / name;
      std::error_code ec;
      if (!std::filesystem::is_regular_file(file, ec)) {
        error(item_path, "missing_file",
              "workflow file '" + file.string() + "' does not exist");
        continue;
      }
      auto loaded = runtime::load_workflow_file(file);
      for (auto& d : loaded.errors)
        error(item_path, "bad_workflow", d.to_string(file.string()));
      if (loaded.ok())
        w.workflows.push_back(file);
    }
  }

  void read_faults(const json& v, scenario& s) {
    if (!v.is_array()) {
      error("faults", "wrong_type", "must be a list of faults");
      return;
    }
    if (v.size() > max_faults) {
      error("faults", "out_of_range",
            "at most " + std::to_string(max_faults) + " faults");
      return;
    }
    for (size_t i = 0; i < v.size(); ++i)
      read_fault(v[i], runtime::index_path("faults", i), s);
  }

  void read_fault(const json& v, const std::string& path, scenario& s) {
    if (!is_map(v, path))
      return;
    fault_spec f;
    auto* act = find(v, "action");
    std::optional<action> a;
    if (!act)
      error(runtime::join_path(path, "action"), "missing_field",
            "a fault needs an action (" + action_list() + ")");
    else if (!act->is_string() || !(a = parse_action(act->get<std::string>())))
      error(runtime::join_path(path, "action"), "unknown_action",
            "unknown action " + act->dump() + " (known: " + action_list()
              + ")");
    // The fields each action takes beyond at, every, action and target.
    std::vector<std::string_view> known{"at", "every", "action", "target"};
    if (a) {
      f.action = *a;
      switch (*a) {
      case action::kill:
      case action::kill_etcd: known.push_back("restart_after"); break;
      case action::stop: known.push_back("duration"); break;
      case action::partition:
        known.insert(known.end(), {"duration", "members"});
        break;
      case action::slow_disk:
        known.insert(known.end(), {"duration", "delay"});
        break;
      case action::fail_disk:
        known.insert(known.end(), {"duration", "error"});
        break;
      case action::clock_jump: known.push_back("offset"); break;
      case action::cont:
      case action::crash_actor: break;
      }
      for (auto& [key, value] : v.items())
        if (std::find(known.begin(), known.end(), key) == known.end())
          error(runtime::join_path(path, key), "unknown_field",
                "unknown field '" + key + "' for action "
                  + std::string{to_string(*a)});
    } else {
      fields(v, path,
             {"at", "every", "action", "target", "restart_after", "duration",
              "delay", "error", "offset", "members"});
    }

    auto* at = find(v, "at");
    auto* every = find(v, "every");
    if (at && every)
      error(runtime::join_path(path, "every"), "conflict",
            "give either at or every, not both");
    else if (!at && !every)
      error(path, "missing_field", "a fault needs `at` or `every`");
    else if (at)
      f.at = span(*at, runtime::join_path(path, "at"), true);
    else
      f.every = span(*every, runtime::join_path(path, "every"));

    if (a) {
      read_params(v, path, f, s.cluster);
      read_target(v, path, f, s);
    }
    s.faults.push_back(std::move(f));
  }

  void read_params(const json& v, const std::string& path, fault_spec& f,
                   const cluster_spec& c) {
    auto p = [&](const char* key) { return runtime::join_path(path, key); };
    auto required = [&](const char* key, const char* why) -> const json* {
      auto* x = find(v, key);
      if (!x)
        error(p(key), "missing_field",
              std::string{to_string(f.action)} + " needs `" + key + "` (" + why
                + ")");
      return x;
    };
    switch (f.action) {
    case action::kill:
    case action::kill_etcd:
      f.restart_after = std::chrono::seconds{2};
      if (auto* x = find(v, "restart_after"))
        f.restart_after = span(*x, p("restart_after"), true);
      break;
    case action::stop:
      if (auto* x = find(v, "duration"))
        f.lasts = span(*x, p("duration"));
      break;
    case action::partition:
      if (auto* x = required("duration", "when the partition heals"))
        f.lasts = span(*x, p("duration"));
      if (auto* x = find(v, "members"))
        read_sets(*x, p("members"), f, c);
      break;
    case action::slow_disk:
      if (auto* x = required("duration", "how long writes stay slow"))
        f.lasts = span(*x, p("duration"));
      if (auto* x = required("delay", "the delay added to each write"))
        f.delay = span(*x, p("delay"));
      break;
    case action::fail_disk:
      if (auto* x = required("duration", "how long writes fail"))
        f.lasts = span(*x, p("duration"));
      if (auto* x = required("error", "io_error or no_space")) {
        f.error = text(*x, p("error"));
        if (x->is_string() && f.error != "io_error" && f.error != "no_space")
          error(p("error"), "bad_value",
                "must be io_error or no_space, not '" + f.error + "'");
      }
      break;
    case action::clock_jump:
      if (auto* x = required("offset", "the shift, such as 30s or -5s"))
        read_offset(*x, p("offset"), f);
      break;
    case action::cont:
    case action::crash_actor: break;
    }
  }

  void read_offset(const json& v, const std::string& path, fault_spec& f) {
    if (!v.is_string()) {
      error(path, "wrong_type", "must be a duration such as 30s or -5s");
      return;
    }
    auto t = v.get<std::string>();
    bool negative = !t.empty() && t[0] == '-';
    if (!t.empty() && (t[0] == '-' || t[0] == '+'))
      t.erase(0, 1);
    if (auto d = span(json(t), path))
      f.offset = negative ? -*d : *d;
  }

  void read_sets(const json& v, const std::string& path, fault_spec& f,
                 const cluster_spec& c) {
    if (!v.is_array() || v.size() < 2) {
      error(path, "wrong_type",
            "must be a list of two or more sets of members, e.g. "
            "[[m1], [m2, m3, etcd]]");
      return;
    }
    auto names = c.member_names();
    std::set<std::string> seen;
    for (size_t i = 0; i < v.size(); ++i) {
      auto set_path = runtime::index_path(path, i);
      if (!v[i].is_array() || v[i].empty()) {
        error(set_path, "wrong_type", "must be a non-empty list of members");
        continue;
      }
      std::vector<std::string> set;
      for (size_t j = 0; j < v[i].size(); ++j) {
        auto item_path = runtime::index_path(set_path, j);
        auto name = text(v[i][j], item_path);
        if (name.empty())
          continue;
        if (name != "etcd"
            && std::find(names.begin(), names.end(), name) == names.end()) {
          error(item_path, "unknown_member",
                "no member '" + name + "' (members: " + join(names)
                  + ", or etcd)");
          continue;
        }
        if (!seen.insert(name).second) {
          error(item_path, "duplicate_member",
                "'" + name + "' is in more than one set");
          continue;
        }
        set.push_back(name);
      }
      f.members.push_back(std::move(set));
    }
  }

  static std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (auto& n : names)
      out.append(out.empty() ? "" : ", ").append(n);
    return out;
  }

  void read_target(const json& v, const std::string& path, fault_spec& f,
                   const scenario& s) {
    auto tpath = runtime::join_path(path, "target");
    auto* t = find(v, "target");
    if (f.action == action::partition) {
      bool has_sets = find(v, "members") != nullptr;
      if (t && has_sets) {
        error(tpath, "conflict",
              "a partition takes a target (cut from all others) or "
              "members (sets), not both");
        return;
      }
      if (!t && !has_sets) {
        error(tpath, "missing_field",
              "a partition needs a target (cut from all others) or members "
              "(sets cut from each other)");
        return;
      }
      if (!t)
        return;
    } else if (!t) {
      error(tpath, "missing_field",
            "a fault needs a target: a member name, random, leader_of: P "
            "or owner_of: N");
      return;
    }
    bool etcd = f.action == action::kill_etcd;
    auto names = etcd ? s.cluster.etcd_names() : s.cluster.member_names();
    if (t->is_string()) {
      auto name = t->get<std::string>();
      if (name == "random") {
        f.target.what = target::kind::random;
      } else if (std::find(names.begin(), names.end(), name) != names.end()) {
        f.target = {target::kind::member, name, 0};
      } else {
        error(tpath, "unknown_member",
              "no " + std::string{etcd ? "etcd member" : "member"} + " '" + name
                + "' (" + join(names)
                + ", random, leader_of: P or owner_of: N)");
      }
      return;
    }
    if (t->is_object() && t->size() == 1 && !etcd) {
      auto first = t->begin();
      const std::string key = first.key();
      const json& value = first.value();
      auto kpath = runtime::join_path(tpath, key);
      if (key == "leader_of") {
        if (auto n = integer(value, kpath, 0, s.cluster.partitions - 1))
          f.target = {target::kind::leader_of, "", *n};
        return;
      }
      if (key == "owner_of") {
        auto runs = s.workload.total_runs();
        if (auto n = integer(value, kpath, 1, std::max<int64_t>(runs, 1)))
          f.target = {target::kind::owner_of, "", *n};
        return;
      }
      error(kpath, "unknown_field",
            "unknown target '" + key + "' (leader_of or owner_of)");
      return;
    }
    error(tpath, "wrong_type",
          etcd ? "must be an etcd member name (" + join(names) + ") or random"
               : "must be a member name, random, {leader_of: P} or "
                 "{owner_of: N}");
  }

  /// Checks the times against each other: the deadline comes after the
  /// workload, and every fault fires before the deadline.
  void check_times(const scenario& s) {
    auto end = s.workload.end();
    if (s.deadline > duration{0} && (s.workload.count || s.workload.length)
        && s.deadline < end)
      error("deadline", "out_of_range",
            "must be at least the workload's end ("
              + config::format_duration(end) + ")");
    for (size_t i = 0; i < s.faults.size(); ++i) {
      auto& f = s.faults[i];
      if (f.at && s.deadline > duration{0} && *f.at >= s.deadline)
        error(runtime::join_path(runtime::index_path("faults", i), "at"),
              "out_of_range",
              "must be before the deadline ("
                + config::format_duration(s.deadline) + ")");
    }
  }

  const runtime::document& doc_;
  std::filesystem::path base_;
  runtime::diagnostics errors_;
};

} // namespace

std::string_view to_string(action a) {
  for (auto& [x, name] : action_names)
    if (x == a)
      return name;
  return "?";
}

std::optional<action> parse_action(std::string_view name) {
  for (auto& [x, n] : action_names)
    if (n == name)
      return x;
  return std::nullopt;
}

std::string target::to_string() const {
  switch (what) {
  case kind::none: return "-";
  case kind::member: return name;
  case kind::random: return "random";
  case kind::leader_of: return "leader_of: " + std::to_string(number);
  case kind::owner_of: return "owner_of: " + std::to_string(number);
  }
  return "?";
}

std::vector<std::string> cluster_spec::member_names() const {
  std::vector<std::string> out;
  for (int i = 1; i <= members; ++i)
    out.push_back("m" + std::to_string(i));
  return out;
}

std::vector<std::string> cluster_spec::etcd_names() const {
  std::vector<std::string> out;
  for (int i = 1; i <= etcd_members; ++i)
    out.push_back("etcd" + std::to_string(i));
  return out;
}

duration workload_spec::end() const {
  if (length)
    return *length;
  if (count) {
    auto seconds = static_cast<double>(*count) / runs_per_second;
    return std::chrono::duration_cast<duration>(
      std::chrono::duration<double>{seconds});
  }
  return duration{0};
}

int64_t workload_spec::total_runs() const {
  if (count)
    return *count;
  if (length) {
    auto seconds = std::chrono::duration<double>{*length}.count();
    return static_cast<int64_t>(std::floor(seconds * runs_per_second));
  }
  return 0;
}

scenario_outcome parse_scenario(std::string_view text,
                                const std::filesystem::path& base) {
  scenario_outcome out;
  auto doc = runtime::parse_document(text, out.errors);
  for (auto& d : out.errors)
    if (d.code == "empty")
      d.message = "the file is empty; expected a scenario with a workload, "
                  "faults and a deadline";
  if (!doc)
    return out;
  return checker{*doc, base}.run();
}

scenario_outcome load_scenario_file(const std::filesystem::path& file) {
  scenario_outcome out;
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  std::ifstream in{file, std::ios::binary};
  if (ec || !in || std::filesystem::is_directory(file, ec)) {
    out.errors.push_back({"", 0, 0, "unreadable",
                          "cannot read scenario file '" + file.string() + "'"});
    return out;
  }
  if (size > runtime::max_workflow_bytes) {
    out.errors.push_back(
      {"", 0, 0, "too_large", "scenario file is larger than 10 MiB"});
    return out;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_scenario(text.str(), file.parent_path());
}

} // namespace troupe::chaos
