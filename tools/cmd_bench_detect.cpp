// `troupe bench cluster-detect`: how fast a cluster sees a member die. It
// starts an etcd (from PATH) and three members on free loopback ports, then
// five times kills a member with SIGKILL and five times stops one with
// SIGSTOP, and measures the time until every other member lists it down.
// `troupe bench cluster-fan`: on the same cluster, exec steps spread over
// the members, against the same workload on an embedded node.
// `troupe bench --cluster N`: both on one cluster of N members, in one
// report.

#include "runtime/auth/token.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
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
#include <sstream>
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

std::string read_file(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

/// A child process with its output in a file; killed by its PID.
struct child {
  pid_t pid = -1;
  fs::path log;

  static child spawn(const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& env,
                     const fs::path& log) {
    child c;
    c.log = log;
    c.pid = ::fork();
    if (c.pid == 0) {
      sigset_t none;
      sigemptyset(&none);
      pthread_sigmask(SIG_SETMASK, &none, nullptr);
      for (auto& [k, v] : env)
        ::setenv(k.c_str(), v.c_str(), 1);
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      std::vector<char*> args;
      for (auto& a : argv)
        args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
    return c;
  }

  bool alive() const {
    return pid > 0 && ::waitpid(pid, nullptr, WNOHANG) == 0;
  }

  /// SIGTERM, then SIGKILL after `grace`; reaps it.
  void stop(std::chrono::milliseconds grace = 5s) {
    if (pid <= 0)
      return;
    ::kill(pid, SIGCONT);
    ::kill(pid, SIGTERM);
    auto until = steady::now() + grace;
    while (steady::now() < until) {
      if (::waitpid(pid, nullptr, WNOHANG) != 0) {
        pid = -1;
        return;
      }
      std::this_thread::sleep_for(10ms);
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    pid = -1;
  }
};

template<class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit,
              std::chrono::milliseconds step = 2ms) {
  auto until = steady::now() + limit;
  for (;;) {
    if (pred())
      return true;
    if (steady::now() >= until)
      return false;
    std::this_thread::sleep_for(step);
  }
}

struct bench_cluster {
  fs::path dir;
  std::string self_exe;
  std::string etcd_url;
  std::map<std::string, std::string> env;
  std::string token;
  child etcd;
  std::map<std::string, child> members;
  std::map<std::string, uint16_t> ports;
  std::map<std::string, std::unique_ptr<control_client>> clients;
  int restarts = 0;
  /// Added to every member's command line.
  std::vector<std::string> member_args;
  /// Set on a failure: the logs stay, and their folder is named.
  bool keep = false;

  ~bench_cluster() {
    clients.clear();
    for (auto& [name, m] : members)
      m.stop();
    etcd.stop();
    std::error_code ec;
    if (keep)
      std::cerr << "troupe: bench: logs kept in " << dir.string() << "\n";
    else
      fs::remove_all(dir, ec);
  }

  std::string start_etcd(const std::string& binary) {
    auto client = free_loopback_port();
    auto peer = free_loopback_port();
    etcd_url = "http://127.0.0.1:" + std::to_string(client);
    auto peer_url = "http://127.0.0.1:" + std::to_string(peer);
    etcd = child::spawn({binary,
                         "--name",
                         "bench",
                         "--data-dir",
                         (dir / "etcd").string(),
                         "--listen-client-urls",
                         etcd_url,
                         "--advertise-client-urls",
                         etcd_url,
                         "--listen-peer-urls",
                         peer_url,
                         "--initial-advertise-peer-urls",
                         peer_url,
                         "--initial-cluster",
                         "bench=" + peer_url,
                         "--heartbeat-interval",
                         "50",
                         "--election-timeout",
                         "500",
                         "--log-level",
                         "error"},
                        {}, dir / "etcd.log");
    // Up when a member can join: the first member start waits for that.
    return {};
  }

  /// Starts member `name` and waits until it is ready; "" or why not.
  std::string start_member(const std::string& name) {
    auto log = dir / (name + "-" + std::to_string(restarts++) + ".log");
    std::vector<std::string> argv{
      self_exe,   "node",        "start",  "--data-dir", (dir / name).string(),
      "--listen", "127.0.0.1:0", "--http", "",           "--cluster",
      "bench",    "--etcd",      etcd_url, "--member",   name};
    argv.insert(argv.end(), member_args.begin(), member_args.end());
    members[name] = child::spawn(argv, env, log);
    std::smatch match;
    std::regex listening{"listening on 127.0.0.1:(\\d+)"};
    std::string text;
    bool ready = wait_for(
      [&] {
        text = read_file(log);
        return text.find("ready: resumed") != std::string::npos
               || !members[name].alive();
      },
      30s, 20ms);
    if (!ready || !std::regex_search(text, match, listening))
      return "member " + name + " did not start:\n" + text;
    ports[name] = static_cast<uint16_t>(std::stoi(match[1]));
    clients.erase(name);
    return {};
  }

  /// `viewer`'s members list, or null when it does not answer.
  json view(const std::string& viewer) {
    try {
      auto& c = clients[viewer];
      if (!c) {
        c = std::make_unique<control_client>();
        control_client::options o;
        o.address = "127.0.0.1:" + std::to_string(ports[viewer]);
        o.token = token;
        o.connect_timeout = 1s;
        o.wait_ready = 0ms;
        c->connect(o);
      }
      return c->call({{"t", "members"}}, 1s);
    } catch (const std::exception&) {
      clients.erase(viewer);
      return nullptr;
    }
  }

  /// What `viewer` lists about `about`, or null.
  json entry(const std::string& viewer, const std::string& about) {
    auto v = view(viewer);
    if (v.is_object())
      for (auto& m : v.value("members", json::array()))
        if (m.value("name", "") == about)
          return m;
    return nullptr;
  }

  bool all_linked() {
    for (auto& [a, ca] : members)
      for (auto& [b, cb] : members) {
        if (a == b)
          continue;
        auto e = entry(a, b);
        if (!e.is_object() || e.value("state", "") != "up"
            || e.value("link", "") != "connected")
          return false;
      }
    return true;
  }

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

std::string fixed(double v, int digits) {
  std::ostringstream o;
  o.precision(digits);
  o << std::fixed << v;
  return o.str();
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
  (void)c.start_etcd(etcd);
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

/// fanexec10 (exec steps placed with `spread`) submitted to m1, then the
/// same workload on an embedded node, each by a `troupe bench fanexec10
/// --json` of its own, sized by --n or --quick. Gives {"cluster",
/// "embedded", "ratio"} (steps/s over 3 members against embedded), or null
/// (the cause said) on a failure.
json measure_fan(const bench_options& b, bench_cluster& c) {
  c.clients.clear();
  std::vector<std::string> sizing;
  if (b.n_set)
    sizing = {"--n", std::to_string(b.n)};
  else if (b.quick)
    sizing = {"--quick"};
  auto measure = [&](const std::string& what, std::vector<std::string> argv,
                     std::map<std::string, std::string> env) -> json {
    argv.insert(argv.end(), sizing.begin(), sizing.end());
    auto log = c.dir / ("bench-" + what + ".out");
    auto p = child::spawn(argv, env, log);
    int status = 0;
    ::waitpid(p.pid, &status, 0);
    auto text = read_file(log);
    json found;
    std::istringstream lines{text};
    std::string line;
    while (std::getline(lines, line))
      if (auto j = json::parse(line, nullptr, false);
          j.is_object() && j.contains("steps_per_s"))
        found = j;
    if (found.is_null() || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::cerr << "troupe: bench: fanexec10 " << what << " failed:\n"
                << text << "\n";
      c.keep = true;
    }
    return found;
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
  auto cs = cluster.value("steps_per_s", 0.0);
  auto es = embedded.value("steps_per_s", 0.0);
  return json{{"cluster", cluster},
              {"embedded", embedded},
              {"ratio", es > 0 ? cs / es : 0.0}};
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

int run_bench_cluster(const global_options& g, const bench_options& b) {
  std::string why;
  auto n = parse_bench_cluster_size(b.cluster, why);
  if (!n) {
    std::cerr << "troupe: bench: " << why << "\n";
    return exit_bad_input;
  }
  if (!b.workloads.empty()) {
    std::cerr << "troupe: bench: --cluster runs its own workloads (fanexec10 "
                 "and failure detection): leave out '"
              << b.workloads.front() << "'\n";
    return exit_bad_input;
  }
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
  const size_t trials = 5;
  if (!g.json)
    std::cerr << "bench: cluster: etcd (" << etcd << ") and " << *n
              << " members on 127.0.0.1, default timings (heartbeat 200ms, "
                 "connection timeout 1s, lease TTL 5s); fanexec10 (10 exec "
                 "steps of /bin/true with placement: spread, joined by a "
                 "noop) submitted to m1, then on an embedded node; then "
              << trials << " x kill -9 and " << trials << " x SIGSTOP ...\n";
  if (auto e = start_bench_cluster(c, etcd, member_names(*n)); !e.empty()) {
    std::cerr << "troupe: bench: " << e << "\n";
    return exit_failed;
  }
  auto f = measure_fan(b, c);
  if (f.is_null())
    return exit_failed;
  if (!g.json)
    std::cerr << "  " << describe_fan(f, *n) << "\n";
  auto d = measure_detect(g, c, trials);
  if (d.is_null())
    return exit_failed;
  json r{{"workload", "cluster"}, {"members", *n}, {"fan", f}, {"detect", d}};
  if (g.json) {
    std::cout << r.dump() << std::endl;
  } else {
    std::cout << "cluster of " << *n << " members (etcd and members on "
              << "127.0.0.1, one run):\n  " << describe_fan(f, *n) << "\n"
              << describe_detect(d, "  ") << std::flush;
  }
  return exit_ok;
}

} // namespace troupe::tools
