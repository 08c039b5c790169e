// `troupe bench cluster-detect`: how fast a cluster sees a member die. It
// starts an etcd (from PATH) and three members on free loopback ports, then
// five times kills a member with SIGKILL and five times stops one with
// SIGSTOP, and measures the time until every other member lists it down.
// `troupe bench cluster-fan`: on the same cluster, exec steps spread over
// the members, against the same workload on an embedded node.
// `troupe bench --cluster N`: both on one cluster of N members, in one
// report.

#include "runtime/auth/token.hpp"
#include "runtime/ids/partition.hpp"
#include "tools/bench_common.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/local_cluster.hpp"
#include "tools/local_host.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace troupe::tools {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;
using bench::fixed;

/// The cluster of the benchmarks, and how they watch a member die.
struct bench_cluster : local_cluster {
  /// Whether `viewer` no longer lists `incarnation` of `victim` as a live
  /// member (down, absent, or a new incarnation).
  bool sees_down(const std::string& viewer, const std::string& victim,
                 const std::string& incarnation) {
    auto e = entry(viewer, victim);
    if (e.is_null())
      return view(viewer).is_object();
    return e.value("state", "") == "down"
           || e.value("incarnation", "") != incarnation;
  }

  /// Signals `victim` with `sig` and returns the ms until every other
  /// member lists it down; nothing on a timeout.
  std::optional<double> measure(const std::string& victim, int sig) {
    auto incarnation = entry("m1" == victim ? "m2" : "m1", victim)
                         .value("incarnation", std::string{});
    std::vector<std::string> viewers;
    for (auto& [name, m] : members)
      if (name != victim)
        viewers.push_back(name);
    // Connected before the clock starts.
    for (auto& v : viewers)
      (void)view(v);
    auto t0 = steady::now();
    ::kill(members[victim].pid, sig);
    std::map<std::string, double> seen;
    wait_for(
      [&] {
        for (auto& v : viewers)
          if (!seen.count(v) && sees_down(v, victim, incarnation))
            seen[v]
              = std::chrono::duration<double, std::milli>(steady::now() - t0)
                  .count();
        return seen.size() == viewers.size();
      },
      20s, 1ms);
    if (seen.size() != viewers.size())
      return std::nullopt;
    double worst = 0;
    for (auto& [v, ms] : seen)
      worst = std::max(worst, ms);
    return worst;
  }
};

/// How many members `bench --cluster N` may start.
constexpr size_t bench_cluster_min = 2;
constexpr size_t bench_cluster_max = 9;

struct summary {
  double median = 0;
  double max = 0;
};

summary summarize(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  summary s;
  if (v.empty())
    return s;
  s.median = v.size() % 2 ? v[v.size() / 2]
                          : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  s.max = v.back();
  return s;
}

/// Sets `c` up as both cluster benchmarks start: this program, a scratch
/// folder and the cluster's secrets; gives the etcd found on PATH, or
/// nothing (and `rc` set, the cause said) when something is missing.
std::string prepare_bench_cluster(const bench_options& b,
                                  const std::string& workload, bench_cluster& c,
                                  std::string& auth_secret, int& rc) {
  auto etcd = find_on_path("etcd");
  if (etcd.empty()) {
    std::cerr << "troupe: bench: " << workload
              << " needs etcd on PATH (Debian's etcd-server; "
                 "tools/bootstrap.sh installs it), and found none\n";
    rc = exit_unreachable;
    return {};
  }
  std::error_code ec;
  auto self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) {
    std::cerr << "troupe: bench: cannot find this program: " << ec.message()
              << "\n";
    rc = exit_failed;
    return {};
  }
  fs::path base
    = b.data_dir.empty() ? fs::temp_directory_path() : fs::path{b.data_dir};
  std::string tmpl = (base / ("troupe-bench-" + workload + "-XXXXXX")).string();
  if (!::mkdtemp(tmpl.data())) {
    std::cerr << "troupe: bench: cannot make a scratch folder under " << base
              << ": " << std::strerror(errno) << "\n";
    rc = exit_bad_input;
    return {};
  }
  auth_secret = random_hex(32);
  c.dir = tmpl;
  c.self_exe = self.string();
  c.env = {{"TROUPE_AUTH_SECRET", auth_secret},
           {"TROUPE_CLUSTER_SECRET", random_hex(32)}};
  return etcd;
}

/// The member names of a bench cluster of `n`: m1, m2, ...
std::vector<std::string> member_names(size_t n) {
  std::vector<std::string> out;
  for (size_t i = 1; i <= n; ++i)
    out.push_back("m" + std::to_string(i));
  return out;
}

/// Starts etcd and members `names`, and waits until they are all linked to
/// each other; "" or why not (the logs are then kept).
std::string start_bench_cluster(bench_cluster& c, const std::string& etcd,
                                const std::vector<std::string>& names) {
  c.start_etcd(etcd);
  for (auto& name : names)
    if (auto e = c.start_member(name); !e.empty()) {
      c.keep = true;
      return e;
    }
  if (!wait_for([&] { return c.all_linked(); }, 20s, 20ms)) {
    c.keep = true;
    return "the members did not link to each other";
  }
  return {};
}

/// Kills `trials` members with SIGKILL in turn (each started again), then
/// stops `trials` with SIGSTOP (each continued and rejoined), and times
/// how long every other member takes to list the victim down. Gives
/// {"kill9_down_ms": {median, max}, "sigstop_down_ms": ...}, or null (the
/// cause said) on a failure.
json measure_detect(const global_options& g, bench_cluster& c, size_t trials) {
  auto linked
    = [&] { return wait_for([&] { return c.all_linked(); }, 20s, 20ms); };
  auto names = member_names(c.members.size());
  std::vector<double> killed, stopped;
  for (size_t i = 0; i < trials; ++i) {
    auto victim = names[(i + names.size() - 1) % names.size()];
    auto ms = c.measure(victim, SIGKILL);
    ::waitpid(c.members[victim].pid, nullptr, 0);
    c.members[victim].pid = -1;
    if (!ms) {
      std::cerr << "troupe: bench: kill -9 of " << victim
                << " was not seen within 20s\n";
      c.keep = true;
      return nullptr;
    }
    killed.push_back(*ms);
    if (!g.json)
      std::cerr << "  kill -9 " << victim << ": " << fixed(*ms, 0) << " ms\n";
    if (auto e = c.start_member(victim); !e.empty() || !linked()) {
      std::cerr << "troupe: bench: " << victim << " did not come back " << e
                << "\n";
      c.keep = true;
      return nullptr;
    }
  }
  for (size_t i = 0; i < trials; ++i) {
    auto victim = names[(i + names.size() - 1) % names.size()];
    auto ms = c.measure(victim, SIGSTOP);
    ::kill(c.members[victim].pid, SIGCONT);
    if (!ms) {
      std::cerr << "troupe: bench: SIGSTOP of " << victim
                << " was not seen within 20s\n";
      c.keep = true;
      return nullptr;
    }
    stopped.push_back(*ms);
    if (!g.json)
      std::cerr << "  SIGSTOP " << victim << ": " << fixed(*ms, 0) << " ms\n";
    // It rejoins as a new incarnation and is linked again.
    if (!linked()) {
      for (auto& [name, m] : c.members)
        std::cerr << name << " sees " << c.view(name).dump() << "\n";
      std::cerr << "troupe: bench: " << victim
                << " did not rejoin after SIGCONT\n";
      c.keep = true;
      return nullptr;
    }
  }
  auto k = summarize(killed);
  auto s = summarize(stopped);
  return json{{"trials", trials},
              {"kill9_down_ms", {{"median", k.median}, {"max", k.max}}},
              {"sigstop_down_ms", {{"median", s.median}, {"max", s.max}}},
              {"targets_ms", {{"kill9", 1000}, {"sigstop", 2000}}}};
}

bool partitions_whole(bench_cluster& c, size_t replication);
json child_bench(bench_cluster& c, const std::string& what,
                 const std::string& label, const std::vector<std::string>& argv,
                 const std::map<std::string, std::string>& env);

/// A cluster's figures beside an embedded node's for the same workload:
/// {"cluster", "embedded", "ratio"} (steps/s over the cluster against
/// embedded).
json beside_embedded(json cluster, json embedded) {
  auto cs = cluster.value("steps_per_s", 0.0);
  auto es = embedded.value("steps_per_s", 0.0);
  return json{{"cluster", std::move(cluster)},
              {"embedded", std::move(embedded)},
              {"ratio", es > 0 ? cs / es : 0.0}};
}

/// fanexec10 (exec steps placed with `spread`) submitted to m1, then the
/// same workload on an embedded node, each by a `troupe bench fanexec10
/// --json` of its own, sized by --n or --quick. Gives {"cluster",
/// "embedded", "ratio"} (steps/s over 3 members against embedded), or null
/// (the cause said) on a failure.
json measure_fan(const bench_options& b, bench_cluster& c) {
  c.clients.clear();
  // Members that join one after the other make partitions with fewer
  // copies, which take runs once their replicas have caught up.
  if (!wait_for(
        [&] {
          return partitions_whole(c, std::min<size_t>(3, c.members.size()));
        },
        60s, 50ms)) {
    std::cerr << "troupe: bench: the partitions were not whole within 60 s\n";
    return nullptr;
  }
  std::vector<std::string> sizing;
  if (b.n_set)
    sizing = {"--n", std::to_string(b.n)};
  else if (b.quick)
    sizing = {"--quick"};
  auto measure = [&](const std::string& what, std::vector<std::string> argv,
                     const std::map<std::string, std::string>& env) {
    argv.insert(argv.end(), sizing.begin(), sizing.end());
    return child_bench(c, what, "fanexec10 " + what, argv, env);
  };
  auto cluster = measure("cluster",
                         {c.self_exe, "--json", "--node",
                          "127.0.0.1:" + std::to_string(c.ports["m1"]), "bench",
                          "fanexec10"},
                         {{"TROUPE_TOKEN", c.token}});
  auto embedded
    = measure("embedded",
              {c.self_exe, "--json", "bench", "fanexec10", "--durability",
               "machine", "--data-dir", (c.dir / "embedded").string()},
              {});
  if (cluster.is_null() || embedded.is_null())
    return nullptr;
  return beside_embedded(std::move(cluster), std::move(embedded));
}

/// The fan line of a report, after `label`.
std::string describe_fan(const json& f, size_t members) {
  auto& cl = f["cluster"];
  auto& em = f["embedded"];
  return "fanexec10 (fan10 with spread) over " + std::to_string(members)
         + " members (submitted to m1): "
         + fixed(cl.value("steps_per_s", 0.0), 0) + " steps/s, p50 "
         + fixed(cl.value("p50_ms", 0.0), 0)
         + " ms; embedded, same workload, same run: "
         + fixed(em.value("steps_per_s", 0.0), 0) + " steps/s, p50 "
         + fixed(em.value("p50_ms", 0.0), 0) + " ms; ratio "
         + fixed(f.value("ratio", 0.0), 2);
}

/// The two detection lines of a report, each after `label`.
std::string describe_detect(const json& d, const std::string& label) {
  auto line = [&](const char* what, const char* key, int target) {
    auto& v = d[key];
    return label + what + " -> down at every other member: median "
           + fixed(v.value("median", 0.0), 0) + " ms, max "
           + fixed(v.value("max", 0.0), 0) + " ms of "
           + std::to_string(d.value("trials", size_t{0}))
           + " (target <= " + std::to_string(target) + ")\n";
  };
  return line("kill -9", "kill9_down_ms", 1000)
         + line("SIGSTOP", "sigstop_down_ms", 2000);
}

/// prepare_bench_cluster for submissions: members that take them at any
/// rate (the cluster is measured, not the submission limit), and an op
/// token to submit with.
std::string prepare_fan_cluster(const bench_options& b,
                                const std::string& workload, bench_cluster& c,
                                int& rc) {
  std::string auth_secret;
  auto etcd = prepare_bench_cluster(b, workload, c, auth_secret, rc);
  if (etcd.empty())
    return etcd;
  c.member_args
    = {"--set", "auth.submit_rate=100000", "--set", "auth.submit_burst=100000"};
  c.token = runtime::auth::issue_token(auth_secret, runtime::auth::role::op,
                                       "bench", std::chrono::hours{1},
                                       runtime::auth::token_clock::now());
  return etcd;
}

// ---- replicated seq10 and failover (`bench --cluster N`) ----

/// Calls `request` on member `name` with the cluster's token, through the
/// cached client; null when it does not answer or refuses.
json call_member(bench_cluster& c, const std::string& name, const json& request,
                 std::chrono::milliseconds timeout = 5s) {
  return c.call(name, request, timeout);
}

/// A live member other than `but`, taking turns.
std::string some_member(bench_cluster& c, const std::string& but = {}) {
  static size_t turn = 0;
  std::vector<std::string> alive;
  for (auto& [name, m] : c.members)
    if (name != but && m.pid > 0)
      alive.push_back(name);
  if (alive.empty())
    return {};
  return alive[turn++ % alive.size()];
}

/// The partitions as a live member sees them, or null.
json partition_view(bench_cluster& c, const std::string& but = {}) {
  auto v = call_member(c, some_member(c, but), {{"t", "partitions"}});
  if (!v.is_object() || !v.contains("partitions"))
    return nullptr;
  return v;
}

/// Whether every partition that has a record has a leader and its full set
/// of replicas in sync (and takes runs), as a live member sees them.
bool partitions_whole(bench_cluster& c, size_t replication) {
  auto v = partition_view(c);
  if (v.is_null())
    return false;
  auto& list = v["partitions"];
  if (list.empty())
    return false;
  for (auto& p : list)
    if (p.value("state", "") != "ok"
        || p.value("isr", json::array()).size() != replication
        || p.value("leader", "").empty())
      return false;
  return true;
}

/// Partitions each member leads, by the view `v`.
std::map<std::string, size_t> leaders(const json& v) {
  std::map<std::string, size_t> out;
  for (auto& p : v.value("partitions", json::array()))
    if (p.value("state", "") == "ok")
      ++out[p.value("leader", "")];
  return out;
}

/// The connection options of member `name`.
control_client::options member_options(bench_cluster& c,
                                       const std::string& name) {
  control_client::options o;
  o.address = "127.0.0.1:" + std::to_string(c.ports[name]);
  o.token = c.token;
  o.connect_timeout = 2s;
  o.wait_ready = 0ms;
  return o;
}

/// `submit` (one workload's submission) round-robin over the members, one
/// connection each, `concurrency` runs in flight in all, each run watched
/// on the member that took it, until `n` have ended. Throws on a failure.
bench::load_result runs_over(bench_cluster& c,
                             const std::vector<std::string>& names,
                             const json& submit, size_t n, size_t concurrency) {
  std::vector<bench::load_result> parts(names.size());
  std::vector<std::string> errors(names.size());
  auto began = steady::now();
  std::vector<std::thread> threads;
  for (size_t k = 0; k < names.size(); ++k)
    threads.emplace_back([&, k] {
      auto count = n / names.size() + (k < n % names.size() ? 1 : 0);
      auto in_flight
        = std::max<size_t>(1, concurrency / names.size()
                                + (k < concurrency % names.size() ? 1 : 0));
      try {
        control_client client;
        client.connect(member_options(c, names[k]));
        parts[k]
          = bench::closed_loop(client, submit, count, in_flight, names[k]);
      } catch (const std::exception& e) {
        errors[k] = names[k] + ": " + e.what();
      }
    });
  for (auto& t : threads)
    t.join();
  bench::load_result all;
  all.wall_s = std::chrono::duration<double>(steady::now() - began).count();
  for (size_t k = 0; k < names.size(); ++k) {
    if (!errors[k].empty())
      throw std::runtime_error(errors[k]);
    all.merge(parts[k]);
  }
  all.sort();
  return all;
}

/// Runs `argv` (a `troupe ... bench ... --json`) to its end, its output in
/// bench-WHAT.out, and gives the last JSON line that has steps_per_s, or
/// null (its output said, after `label`).
json child_bench(bench_cluster& c, const std::string& what,
                 const std::string& label, const std::vector<std::string>& argv,
                 const std::map<std::string, std::string>& env) {
  auto log = c.dir / ("bench-" + what + ".out");
  auto p = child::spawn(argv, env, log);
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  auto text = read_text_file(log);
  json found;
  std::istringstream lines{text};
  std::string line;
  while (std::getline(lines, line))
    if (auto j = json::parse(line, nullptr, false);
        j.is_object() && j.contains("steps_per_s"))
      found = j;
  if (found.is_null() || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::cerr << "troupe: bench: " << label << " failed:\n" << text << "\n";
    c.keep = true;
    return nullptr;
  }
  return found;
}

/// Waits until every member leads partitions that take runs; false (the
/// cause said) when that does not come within 60 s.
bool every_member_leads(bench_cluster& c, size_t replication) {
  auto names = member_names(c.members.size());
  if (wait_for(
        [&] {
          if (!partitions_whole(c, replication))
            return false;
          auto led = leaders(partition_view(c));
          for (auto& name : names)
            if (led[name] == 0)
              return false;
          return true;
        },
        60s, 50ms))
    return true;
  std::cerr << "troupe: bench: the partitions did not all get a leader and "
               "their replicas in sync within 60 s: "
            << partition_view(c).dump() << "\n";
  c.keep = true;
  return false;
}

/// One replicated throughput measurement: `workload` (seq10, or http10
/// whose steps call `echo_url`), `n` runs at `concurrency`.
struct replicated_load {
  std::string workload;
  size_t n = 0;
  size_t concurrency = 0;
  std::string echo_url;
};

/// `w` on a node of its own (no cluster, `machine` durability), driven
/// through the same client as the cluster's, after the same warm-up: what
/// replication costs with nothing else different. {ok, failed,
/// steps_per_s, p50_ms, p99_ms}, or null (the cause said).
json alone_run(bench_cluster& c, const json& submit, const replicated_load& w) {
  const std::string name = "alone";
  const std::vector<std::string> args{"--set", "storage.durability=machine",
                                      "--set", "auth.submit_rate=100000",
                                      "--set", "auth.submit_burst=100000"};
  json out;
  if (auto e = c.start_member(name, &args); !e.empty()) {
    std::cerr << "troupe: bench: " << e << "\n";
    c.keep = true;
    return nullptr;
  }
  try {
    (void)runs_over(c, {name}, submit, std::max<size_t>(1, w.n / 10),
                    w.concurrency);
    auto r = runs_over(c, {name}, submit, w.n, w.concurrency);
    out = json{{"ok", r.ok},
               {"failed", r.failed},
               {"steps_per_s", static_cast<double>(r.ok * 10) / r.wall_s},
               {"p50_ms", bench::percentile(r.latencies_ms, 0.5)},
               {"p99_ms", bench::percentile(r.latencies_ms, 0.99)}};
  } catch (const std::exception& e) {
    std::cerr << "troupe: bench: " << w.workload << " on one node: " << e.what()
              << "\n";
    c.keep = true;
    out = nullptr;
  }
  c.clients.erase(name);
  c.members[name].stop();
  c.members.erase(name);
  c.ports.erase(name);
  std::error_code ec;
  fs::remove_all(c.dir / name, ec);
  return out;
}

/// `w` replicated over every member (after a warm-up of a tenth), then the
/// same workload on an embedded node with `machine` durability, sized
/// alike: {"cluster", "embedded", "ratio"}, or null (the cause said).
json measure_replicated(bench_cluster& c, size_t replication,
                        const replicated_load& w) {
  auto names = member_names(c.members.size());
  if (!every_member_leads(c, replication))
    return nullptr;
  auto submit = bench::submit_request(
    w.workload, bench::workflow_source(w.workload, w.echo_url));
  bench::load_result r;
  try {
    (void)runs_over(c, names, submit, std::max<size_t>(names.size(), w.n / 10),
                    w.concurrency);
    r = runs_over(c, names, submit, w.n, w.concurrency);
  } catch (const std::exception& e) {
    std::cerr << "troupe: bench: replicated " << w.workload << ": " << e.what()
              << "\n";
    c.keep = true;
    return nullptr;
  }
  json cluster{{"workload", w.workload},
               {"n", w.n},
               {"concurrency", w.concurrency},
               {"ok", r.ok},
               {"failed", r.failed},
               {"wall_s", r.wall_s},
               {"runs_per_s", static_cast<double>(r.ok) / r.wall_s},
               {"steps_per_s", static_cast<double>(r.ok * 10) / r.wall_s},
               {"p50_ms", bench::percentile(r.latencies_ms, 0.5)},
               {"p99_ms", bench::percentile(r.latencies_ms, 0.99)},
               {"replication", replication}};
  if (!r.first_error.empty())
    cluster["first_error"] = r.first_error;
  std::vector<std::string> argv{c.self_exe,      "--json",
                                "bench",         w.workload,
                                "--durability",  "machine",
                                "--data-dir",    (c.dir / "embedded").string(),
                                "--n",           std::to_string(w.n),
                                "--concurrency", std::to_string(w.concurrency)};
  if (!w.echo_url.empty())
    argv.insert(argv.end(), {"--echo-url", w.echo_url});
  auto embedded = child_bench(c, w.workload + "-embedded",
                              w.workload + "-embedded", argv, {});
  if (embedded.is_null())
    return nullptr;
  auto alone = alone_run(c, submit, w);
  if (alone.is_null())
    return nullptr;
  auto out = beside_embedded(std::move(cluster), std::move(embedded));
  auto as = alone.value("steps_per_s", 0.0);
  out["ratio_alone"]
    = as > 0 ? out["cluster"].value("steps_per_s", 0.0) / as : 0.0;
  out["alone"] = std::move(alone);
  return out;
}

/// The failover workload: `steps` noop steps, each followed by a durable
/// sleep of 50 ms (as the Restate peer's crash test).
std::string failover_source(int steps) {
  std::ostringstream s;
  s << "name: bench-failover\nnodes:\n";
  for (int i = 1; i <= steps; ++i) {
    s << "  s" << i << ":\n    kind: noop\n";
    if (i > 1)
      s << "    after: [z" << i - 1 << "]\n";
    s << "  z" << i << ":\n    kind: sleep\n    duration: 50ms\n    after: [s"
      << i << "]\n";
  }
  return s.str();
}

/// A run's journal through a live member other than `but`, or null.
json run_history(bench_cluster& c, const std::string& run,
                 const std::string& but) {
  json events = json::array();
  uint64_t after = 0;
  std::string state;
  for (int page = 0; page < 1000; ++page) {
    auto body
      = call_member(c, some_member(c, but),
                    {{"t", "history"}, {"run_id", run}, {"after", after}});
    if (!body.is_object())
      return nullptr;
    for (auto& e : body.value("events", json::array()))
      events.push_back(e);
    state = body.value("state", "");
    after = body.value("next", uint64_t{0});
    if (after == 0)
      break;
  }
  return json{{"state", state}, {"events", events}};
}

/// Kills, `trials` times, the member that leads partitions with runs in
/// flight (`runs` runs of failover_source(20) submitted round-robin over
/// the members, killed at about 30% of their steps), then reads every
/// run's journal through the survivors: how soon each run unfinished at
/// the kill wrote again, how soon all were done, runs lost, completed
/// nodes run again. The victim is started again on its data dir, and the
/// partitions are whole again, before the next trial. Null on a failure.
json measure_failover(const global_options& g, bench_cluster& c, size_t trials,
                      size_t runs, size_t replication) {
  auto names = member_names(c.members.size());
  const int steps = 20;
  json submit = {{"t", "submit"},
                 {"workflow", failover_source(steps)},
                 {"file", "bench-failover.yaml"},
                 {"inputs", json::object()}};
  std::vector<double> victim_ms, all_ms, done_ms;
  size_t lost = 0, completed_rerun = 0, attempts_rerun = 0, stalled_total = 0;
  json per_trial = json::array();
  auto fail = [&](const std::string& why) {
    std::cerr << "troupe: bench: failover: " << why << "\n";
    c.keep = true;
    return json(nullptr);
  };
  for (size_t trial = 0; trial < trials; ++trial) {
    if (!wait_for([&] { return c.all_linked(); }, 30s, 20ms)
        || !wait_for([&] { return partitions_whole(c, replication); }, 60s,
                     50ms))
      return fail("the partitions were not whole again within 60 s");
    auto view = partition_view(c);
    auto led = leaders(view);
    std::vector<std::string> writers;
    for (auto& name : names)
      if (led[name] > 0)
        writers.push_back(name);
    if (writers.empty())
      return fail("no member leads a partition");
    // Members take turns, among those that lead partitions.
    auto victim = writers[trial % writers.size()];
    std::map<uint32_t, std::string> leader_of;
    for (auto& p : view["partitions"])
      leader_of[p.value("partition", 0u)] = p.value("leader", "");
    auto count = view.value("count", uint32_t{0});
    // Submit, pipelined on one connection per member.
    std::vector<std::string> ids;
    std::vector<std::string> victim_runs;
    try {
      std::vector<std::unique_ptr<control_client>> cl;
      for (auto& w : writers) {
        cl.push_back(std::make_unique<control_client>());
        cl.back()->connect(member_options(c, w));
      }
      std::vector<size_t> owed(writers.size(), 0);
      for (size_t i = 0; i < runs; ++i) {
        cl[i % writers.size()]->start(submit);
        ++owed[i % writers.size()];
      }
      for (size_t k = 0; k < writers.size(); ++k)
        while (owed[k] > 0) {
          auto msg = cl[k]->next(30s);
          if (!msg)
            return fail("no answer to a submission from " + writers[k]);
          if (msg->value("t", "") != "reply")
            continue;
          --owed[k];
          auto id = (*msg)["body"].value("run_id", std::string{});
          ids.push_back(id);
          if (leader_of[runtime::partition_of_run(id, count)] == victim)
            victim_runs.push_back(id);
        }
    } catch (const std::exception& e) {
      return fail(std::string{"submitting: "} + e.what());
    }
    if (victim_runs.empty())
      return fail("no run went to a partition " + victim + " leads");
    // Kill at about 30% of the steps of a run of the victim's.
    size_t completed = 0;
    wait_for(
      [&] {
        auto h = call_member(c, victim,
                             {{"t", "history"}, {"run_id", victim_runs[0]}});
        completed = 0;
        if (h.is_object())
          for (auto& e : h.value("events", json::array()))
            completed += e.value("type", "") == "node_completed";
        return completed >= static_cast<size_t>(steps * 2 * 3 / 10);
      },
      30s, 10ms);
    auto kill_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    ::kill(c.members[victim].pid, SIGKILL);
    ::waitpid(c.members[victim].pid, nullptr, 0);
    c.members[victim].pid = -1;
    c.clients.erase(victim);
    // Until every run ended, asked through the survivors.
    std::set<std::string> open(ids.begin(), ids.end());
    wait_for(
      [&] {
        for (auto it = open.begin(); it != open.end();) {
          auto s = call_member(c, some_member(c),
                               {{"t", "status"}, {"run_id", *it}});
          auto st = s.is_object() ? s.value("state", "") : "";
          if (st == "completed" || st == "failed" || st == "cancelled")
            it = open.erase(it);
          else
            ++it;
        }
        return open.empty();
      },
      120s, 100ms);
    // Each run's journal, read back.
    double victim_worst = 0, all_worst = 0, done_worst = 0;
    size_t stalled = 0, trial_lost = 0, trial_rerun = 0, trial_attempts = 0;
    for (auto& id : ids) {
      auto h = run_history(c, id, "");
      if (h.is_null() || h.value("state", "") != "completed") {
        ++trial_lost;
        if (!g.json)
          std::cerr << "  run " << id << " did not complete: "
                    << (h.is_null() ? "no history" : h.value("state", ""))
                    << "\n";
        continue;
      }
      std::map<std::string, int> done_nodes, started;
      std::vector<int64_t> after_kill;
      int64_t end_ns = 0;
      for (auto& e : h["events"]) {
        auto type = e.value("type", "");
        auto at = e.value("at_ns", int64_t{0});
        if (type == "node_completed")
          ++done_nodes[e.value("node", "")];
        if (type == "attempt_started")
          ++started[e.value("node", "")];
        if (at > kill_ns)
          after_kill.push_back(at);
        if (type == "run_completed")
          end_ns = at;
      }
      for (auto& [node, k] : done_nodes)
        trial_rerun += static_cast<size_t>(k - 1);
      for (auto& [node, k] : started)
        trial_attempts += static_cast<size_t>(k - 1);
      if (end_ns <= kill_ns || after_kill.empty())
        continue; // finished before the kill
      ++stalled;
      std::sort(after_kill.begin(), after_kill.end());
      // The second event after the kill: a run writes its next event only
      // once the one before is committed on its in-sync replicas, so this
      // one shows the run moving again (a first one may wait uncommitted).
      auto moved = after_kill[std::min<size_t>(1, after_kill.size() - 1)];
      auto ms = static_cast<double>(moved - kill_ns) / 1e6;
      all_worst = std::max(all_worst, ms);
      if (leader_of[runtime::partition_of_run(id, count)] == victim)
        victim_worst = std::max(victim_worst, ms);
      done_worst
        = std::max(done_worst, static_cast<double>(end_ns - kill_ns) / 1e6);
    }
    victim_ms.push_back(victim_worst);
    all_ms.push_back(all_worst);
    done_ms.push_back(done_worst);
    lost += trial_lost;
    completed_rerun += trial_rerun;
    attempts_rerun += trial_attempts;
    stalled_total += stalled;
    per_trial.push_back(json{{"victim", victim},
                             {"runs", ids.size()},
                             {"victim_runs", victim_runs.size()},
                             {"stalled", stalled},
                             {"victim_resumed_ms", victim_worst},
                             {"all_progress_ms", all_worst},
                             {"all_done_ms", done_worst},
                             {"lost", trial_lost},
                             {"completed_rerun", trial_rerun},
                             {"attempts_rerun", trial_attempts}});
    if (!g.json)
      std::cerr << "  kill -9 " << victim << " (leads " << led[victim]
                << " partitions, " << victim_runs.size() << " of " << ids.size()
                << " runs): its runs moving again after "
                << fixed(victim_worst, 0) << " ms, every run after "
                << fixed(all_worst, 0) << " ms, all done after "
                << fixed(done_worst, 0) << " ms; lost " << trial_lost
                << ", completed nodes run again " << trial_rerun << "\n";
    if (auto e = c.start_member(victim); !e.empty())
      return fail(victim + " did not come back: " + e);
  }
  if (!wait_for([&] { return c.all_linked(); }, 30s, 20ms)
      || !wait_for([&] { return partitions_whole(c, replication); }, 60s, 50ms))
    return fail("the partitions were not whole again within 60 s");
  auto v = summarize(victim_ms);
  auto a = summarize(all_ms);
  auto d = summarize(done_ms);
  return json{
    {"trials", trials},
    {"runs", runs},
    {"steps", steps},
    {"stalled", stalled_total},
    {"victim_resumed_ms", {{"median", v.median}, {"max", v.max}}},
    {"all_progress_ms", {{"median", a.median}, {"max", a.max}}},
    {"all_done_ms", {{"median", d.median}, {"max", d.max}}},
    {"lost", lost},
    {"completed_rerun", completed_rerun},
    {"attempts_rerun", attempts_rerun},
    {"per_trial", per_trial},
    {"targets_ms", {{"resumed_median", 1000}, {"resumed_max", 3000}}}};
}

/// The line of a report for a replicated workload (seq10 or http10).
std::string describe_replicated(const json& r, size_t members) {
  auto& cl = r["cluster"];
  auto& em = r["embedded"];
  auto workload = cl.value("workload", std::string{});
  auto line = workload + " replicated (R="
              + std::to_string(cl.value("replication", 0)) + ") over "
              + std::to_string(members) + " members (submitted round-robin): "
              + fixed(cl.value("steps_per_s", 0.0), 0) + " steps/s, p99 "
              + fixed(cl.value("p99_ms", 0.0), 1)
              + " ms; embedded (machine durability), same run: "
              + fixed(em.value("steps_per_s", 0.0), 0) + " steps/s, p99 "
              + fixed(em.value("p99_ms", 0.0), 1) + " ms; ratio "
              + fixed(r.value("ratio", 0.0), 2);
  if (workload == "seq10")
    line += " (target >= 0.50)";
  if (r.contains("alone")) {
    auto& al = r["alone"];
    line += "; one node through the same client (machine durability): "
            + fixed(al.value("steps_per_s", 0.0), 0) + " steps/s, p99 "
            + fixed(al.value("p99_ms", 0.0), 1) + " ms; ratio "
            + fixed(r.value("ratio_alone", 0.0), 2);
  }
  if (workload == "seq10")
    return line;
  // http10: runs that did not complete, and the service its steps called.
  line += "; " + std::to_string(cl.value("failed", size_t{0})) + " runs failed";
  if (r.contains("echo_requests"))
    return line + ", the bench's echo service answered "
           + std::to_string(r.value("echo_requests", uint64_t{0}))
           + " requests";
  return line + ", echo service " + r.value("echo", std::string{});
}

/// The failover lines of a report.
std::string describe_failover(const json& f, const std::string& label) {
  auto mm = [&](const char* key) {
    auto& v = f[key];
    return "median " + fixed(v.value("median", 0.0), 0) + " ms, max "
           + fixed(v.value("max", 0.0), 0) + " ms";
  };
  auto trials = std::to_string(f.value("trials", size_t{0}));
  return label + "kill -9 of a partition leader with runs in flight ("
         + std::to_string(f.value("runs", size_t{0})) + " runs of "
         + std::to_string(f.value("steps", 0))
         + " steps + 50 ms durable sleeps) -> its partitions' runs moving "
           "again: "
         + mm("victim_resumed_ms") + " of " + trials
         + " (target median <= 1000, max <= 3000)\n" + label
         + "  -> every run unfinished at the kill moving again: "
         + mm("all_progress_ms") + "; -> all done: " + mm("all_done_ms") + "\n"
         + label + "  runs lost: " + std::to_string(f.value("lost", size_t{0}))
         + " (must be 0), completed nodes run again: "
         + std::to_string(f.value("completed_rerun", size_t{0}))
         + " (must be 0), in-flight attempts started again: "
         + std::to_string(f.value("attempts_rerun", size_t{0})) + "\n";
}

} // namespace

int run_bench_cluster_detect(const global_options& g, const bench_options& b) {
  int rc = exit_ok;
  std::string auth_secret;
  bench_cluster c;
  auto etcd = prepare_bench_cluster(b, "cluster-detect", c, auth_secret, rc);
  if (etcd.empty())
    return rc;
  size_t trials = b.n_set ? b.n : 5;
  c.token = runtime::auth::issue_token(auth_secret, runtime::auth::role::viewer,
                                       "bench", std::chrono::hours{1},
                                       runtime::auth::token_clock::now());
  if (!g.json)
    std::cerr << "bench: cluster-detect: etcd (" << etcd
              << ") and 3 members on 127.0.0.1, default timings (heartbeat "
                 "200ms, connection timeout 1s, lease TTL 5s); "
              << trials << " x kill -9 and " << trials << " x SIGSTOP ...\n";
  if (auto e = start_bench_cluster(c, etcd, member_names(3)); !e.empty()) {
    std::cerr << "troupe: bench: " << e << "\n";
    return exit_failed;
  }
  auto d = measure_detect(g, c, trials);
  if (d.is_null())
    return exit_failed;
  json r{{"workload", "cluster-detect"}, {"members", 3}};
  r.update(d);
  if (g.json)
    std::cout << r.dump() << std::endl;
  else
    std::cout << describe_detect(d, "cluster-detect: ") << std::flush;
  return exit_ok;
}

int run_bench_cluster_fan(const global_options& g, const bench_options& b) {
  int rc = exit_ok;
  bench_cluster c;
  auto etcd = prepare_fan_cluster(b, "cluster-fan", c, rc);
  if (etcd.empty())
    return rc;
  if (!g.json)
    std::cerr << "bench: cluster-fan: etcd (" << etcd
              << ") and 3 members on 127.0.0.1; fanexec10 (10 exec steps of "
                 "/bin/true with placement: spread, joined by a noop) "
                 "submitted to m1, then on an embedded node ...\n";
  if (auto e = start_bench_cluster(c, etcd, member_names(3)); !e.empty()) {
    std::cerr << "troupe: bench: " << e << "\n";
    return exit_failed;
  }
  auto f = measure_fan(b, c);
  if (f.is_null())
    return exit_failed;
  json r{{"workload", "cluster-fan"}, {"members", 3}};
  r.update(f);
  if (g.json)
    std::cout << r.dump() << std::endl;
  else
    std::cout << "cluster-fan: " << describe_fan(f, 3) << std::endl;
  return exit_ok;
}

/// The N of `--cluster N`, or nothing with `why` set.
static std::optional<size_t> parse_bench_cluster_size(const std::string& text,
                                                      std::string& why) {
  size_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc{} || p != text.data() + text.size()) {
    why = "--cluster takes a number of members from "
          + std::to_string(bench_cluster_min) + " to "
          + std::to_string(bench_cluster_max) + ", not '" + text + "'";
    return std::nullopt;
  }
  if (n < bench_cluster_min || n > bench_cluster_max) {
    why = "--cluster " + text + ": a benchmark cluster has from "
          + std::to_string(bench_cluster_min) + " to "
          + std::to_string(bench_cluster_max)
          + " members (failure detection needs another member to watch)";
    return std::nullopt;
  }
  return n;
}

/// Replicated http10 over `c`, its steps calling --echo-url or an echo
/// service of the bench's own (whose requests it counts); null on failure
/// (the cause said).
json measure_http10(const bench_options& b, bench_cluster& c,
                    size_t replication, size_t concurrency) {
  std::unique_ptr<bench::echo_service> own_echo;
  if (b.echo_url.empty())
    own_echo = std::make_unique<bench::echo_service>();
  auto echo_before = own_echo ? own_echo->requests() : 0;
  auto h = measure_replicated(
    c, replication,
    {"http10", b.n_set ? b.n : (b.quick ? 300 : 2'000), concurrency,
     own_echo ? own_echo->url() : b.echo_url});
  if (h.is_null())
    return h;
  if (own_echo) {
    h["echo"] = "built-in";
    h["echo_requests"] = own_echo->requests() - echo_before;
  } else {
    h["echo"] = b.echo_url;
  }
  return h;
}

int run_bench_cluster(const global_options& g, const bench_options& b) {
  std::string why;
  auto n = parse_bench_cluster_size(b.cluster, why);
  if (!n) {
    std::cerr << "troupe: bench: " << why << "\n";
    return exit_bad_input;
  }
  // The parts to run: every one by default, else those named.
  static const std::vector<std::string> parts{"fanexec10", "seq10", "http10",
                                              "failover", "detect"};
  for (auto& w : b.workloads)
    if (std::find(parts.begin(), parts.end(), w) == parts.end()) {
      std::cerr << "troupe: bench: --cluster runs fanexec10, seq10, http10, "
                   "failover and detect (all by default, else those named): "
                   "leave out '"
                << w << "'\n";
      return exit_bad_input;
    }
  auto wanted = [&](const std::string& part) {
    return b.workloads.empty()
           || std::find(b.workloads.begin(), b.workloads.end(), part)
                != b.workloads.end();
  };
  if (!g.node.empty()) {
    std::cerr << "troupe: bench: --cluster starts its own etcd and members: "
                 "leave out --node\n";
    return exit_bad_input;
  }
  if (b.n_set && b.n == 0) {
    std::cerr << "troupe: bench: --n must be at least 1\n";
    return exit_bad_input;
  }
  int rc = exit_ok;
  bench_cluster c;
  auto etcd = prepare_fan_cluster(b, "cluster", c, rc);
  if (etcd.empty())
    return rc;
  // Each member keeps a copy of every partition (at most 3), two in sync at
  // the least: the cluster survives one member dying and keeps two copies.
  const size_t replication = std::min<size_t>(3, *n);
  const size_t min_insync = std::min<size_t>(2, replication);
  c.member_args.insert(
    c.member_args.end(),
    {"--set", "cluster.replication=" + std::to_string(replication), "--set",
     "cluster.min_insync=" + std::to_string(min_insync)});
  const size_t trials = b.quick ? 2 : 5;
  const size_t failover_runs = b.quick ? 60 : 300;
  if (!g.json)
    std::cerr << "bench: cluster: etcd (" << etcd << ") and " << *n
              << " members on 127.0.0.1, replication " << replication
              << ", min_insync " << min_insync
              << ", default timings (heartbeat 200ms, connection timeout 1s, "
                 "lease TTL 5s); fanexec10 (10 exec steps of /bin/true with "
                 "placement: spread, joined by a noop) submitted to m1, then "
                 "on an embedded node; seq10 and http10 replicated, then "
                 "embedded; "
              << trials << " x kill -9 of a partition leader with "
              << failover_runs << " runs in flight; then " << trials
              << " x kill -9 and " << trials << " x SIGSTOP detection"
              << (b.workloads.empty() ? "" : "; only the parts named")
              << " ...\n";
  if (auto e = start_bench_cluster(c, etcd, member_names(*n)); !e.empty()) {
    std::cerr << "troupe: bench: " << e << "\n";
    return exit_failed;
  }
  json r{{"workload", "cluster"},
         {"members", *n},
         {"replication", replication},
         {"min_insync", min_insync}};
  std::string report;
  if (wanted("fanexec10")) {
    auto f = measure_fan(b, c);
    if (f.is_null())
      return exit_failed;
    if (!g.json)
      std::cerr << "  " << describe_fan(f, *n) << "\n";
    r["fan"] = f;
    report += "  " + describe_fan(f, *n) + "\n";
  }
  size_t concurrency = b.concurrency_set ? b.concurrency : 50;
  if (wanted("seq10")) {
    auto s = measure_replicated(
      c, replication,
      {"seq10", b.n_set ? b.n : (b.quick ? 1'000 : 20'000), concurrency, {}});
    if (s.is_null())
      return exit_failed;
    if (!g.json)
      std::cerr << "  " << describe_replicated(s, *n) << "\n";
    r["seq10"] = s;
    report += "  " + describe_replicated(s, *n) + "\n";
  }
  if (wanted("http10")) {
    auto h = measure_http10(b, c, replication, concurrency);
    if (h.is_null())
      return exit_failed;
    if (!g.json)
      std::cerr << "  " << describe_replicated(h, *n) << "\n";
    r["http10"] = h;
    report += "  " + describe_replicated(h, *n) + "\n";
  }
  json fo;
  if (wanted("failover")) {
    fo = measure_failover(g, c, trials, failover_runs, replication);
    if (fo.is_null())
      return exit_failed;
    r["failover"] = fo;
    report += describe_failover(fo, "  ");
  }
  if (wanted("detect")) {
    auto d = measure_detect(g, c, trials);
    if (d.is_null())
      return exit_failed;
    r["detect"] = d;
    report += describe_detect(d, "  ");
  }
  if (g.json)
    std::cout << r.dump() << std::endl;
  else
    std::cout << "cluster of " << *n << " members (etcd and members on "
              << "127.0.0.1, one run):\n"
              << report << std::flush;
  // A run that was lost or a completed node run again fails the command.
  if (fo.is_object()
      && (fo.value("lost", size_t{0}) > 0
          || fo.value("completed_rerun", size_t{0}) > 0))
    return exit_failed;
  return exit_ok;
}
} // namespace troupe::tools
