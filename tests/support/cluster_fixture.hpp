#pragma once

// A test fixture for end-to-end tests of a cluster: real `troupe node start
// --cluster c1` members on 127.0.0.1 with their own etcd on free ports, the
// CLI against any member, what each member lists about the others, a
// ledger that exec steps append to, and /metrics. Members are stopped with
// SIGTERM when the test ends. Also a fixture for `troupe cluster
// start-local`. The target defines TROUPE_BINARY.

#include "runtime/auth/token.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace troupe::test {

/// Whether `needle` occurs in `haystack`.
inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct cluster_fixture : troupe_fixture {
  using json = nlohmann::json;

  /// The secret tokens are signed with (TROUPE_AUTH_SECRET).
  static constexpr const char* secret
    = "test-secret-0123456789abcdef-0123456789";

  std::unique_ptr<etcd_process> etcd;

  struct member {
    std::unique_ptr<background_process> proc;
    /// Its control port.
    uint16_t port = 0;
    /// Its HTTP port; 0 when it has no HTTP endpoint.
    uint16_t http = 0;
  };
  std::map<std::string, member> members;

  // How members started from now on are started (tests change these).

  /// The cluster secret (TROUPE_CLUSTER_SECRET); none when unset.
  std::optional<std::string> cluster_secret
    = std::string{"cluster-secret-0123456789abcdef"};
  /// The HTTP endpoint; empty: none. With one, joining waits for its port.
  std::string http;
  /// Replicas per partition and the in-sync replicas a partition needs
  /// (cluster.replication, cluster.min_insync). One by default here: the
  /// suites of part 1 test a run staying with the member that took it.
  int replication = 1;
  int min_insync = 1;
  /// The lease TTL (cluster.lease_ttl).
  std::string lease_ttl = "2s";
  /// Whether each member gets the label zone=z-<its name>.
  bool zone_labels = false;
  /// The etcd endpoints; empty: those of `etcd`.
  std::string etcd_urls;
  /// More arguments, after the others.
  std::vector<std::string> extra_args;
  /// The time limit of each CLI call.
  std::chrono::milliseconds cli_limit = std::chrono::seconds{60};
  /// Whether members_of() expects every `troupe members` to exit 0.
  bool members_must_answer = false;

  /// The address member `name` listens on (its control port, the mesh's
  /// and HTTP's when `http` is "HOST:0"), and the CLI reaches it at.
  virtual std::string host_of(const std::string& /*name*/) {
    return "127.0.0.1";
  }

  /// What member `name` runs under, before its argv (`ip netns exec NS`,
  /// say); nothing by default.
  virtual std::vector<std::string> prefix_of(const std::string& /*name*/) {
    return {};
  }

  /// What the CLI runs under, before its argv; nothing by default.
  virtual std::vector<std::string> cli_prefix() { return {}; }

  /// The file fan_out() workflows append to.
  std::string ledger = (dir.path() / "ledger").string();

  process_options opts() override {
    auto o = troupe_fixture::opts();
    o.env["TROUPE_AUTH_SECRET"] = std::string{secret};
    o.env["TROUPE_CLUSTER_SECRET"] = cluster_secret;
    o.env["TROUPE_NODE"] = std::nullopt;
    o.env["TROUPE_TOKEN"] = std::nullopt;
    return o;
  }

  void start_etcd(etcd_options o = {}) {
    etcd = std::make_unique<etcd_process>(o);
    ASSERT_TRUE(etcd->ok()) << etcd->error();
  }

  /// `troupe node start --cluster c1` as `name` against `etcd_url`, control
  /// port picked by the node, as the fields above say, then `extra`.
  std::vector<std::string> member_args(const std::string& name,
                                       const std::string& etcd_url,
                                       std::vector<std::string> extra = {}) {
    std::vector<std::string> a
      = {"node",       "start",
         "--data-dir", (dir.path() / ("data-" + name)).string(),
         "--listen",   host_of(name) + ":0",
         "--http",     http,
         "--cluster",  "c1",
         "--etcd",     etcd_url,
         "--member",   name,
         "--set",      "cluster.lease_ttl=" + lease_ttl,
         "--set",      "cluster.replication=" + std::to_string(replication),
         "--set",      "cluster.min_insync=" + std::to_string(min_insync)};
    if (zone_labels) {
      a.push_back("--set");
      a.push_back("cluster.labels=zone=z-" + name);
    }
    a.insert(a.end(), extra_args.begin(), extra_args.end());
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  /// Starts member `name` (with `extra` arguments) and waits until it
  /// joined and is ready, for its control port and its HTTP port if any.
  void join(const std::string& name, std::vector<std::string> extra = {}) {
    launch(name,
           member_args(name, etcd_urls.empty() ? etcd->url() : etcd_urls,
                       std::move(extra)),
           !http.empty());
    if (HasFatalFailure())
      return;
    auto& m = members[name];
    ASSERT_TRUE(
      contains(m.proc->err(), "joined cluster 'c1' as member '" + name + "'"))
      << m.proc->err();
  }

  /// Starts `troupe` with `args` as `name` (a member or a node alone) and
  /// waits until it is ready, noting its control port and, with `with_http`,
  /// its HTTP port.
  void launch(const std::string& name, std::vector<std::string> args,
              bool with_http = false) {
    using namespace std::chrono_literals;
    auto& m = members[name];
    m.proc = start(std::move(args), prefix_of(name));
    auto host = std::regex_replace(host_of(name), std::regex{"\\."}, "\\.");
    std::smatch port, http_port;
    ASSERT_TRUE(wait_until(
      [&] {
        auto err = m.proc->err();
        return contains(err, "ready: resumed")
               && std::regex_search(
                 err, port, std::regex{"listening on " + host + ":(\\d+)"})
               && (!with_http
                   || std::regex_search(err, http_port,
                                        std::regex{"metrics on http://" + host
                                                   + ":(\\d+)/metrics"}));
      },
      20s))
      << m.proc->err();
    m.port = static_cast<uint16_t>(std::stoi(port[1]));
    m.http = with_http ? static_cast<uint16_t>(std::stoi(http_port[1])) : 0;
  }

  /// Starts members `names` (with `extra` arguments) and waits until all
  /// are linked.
  void join_linked(const std::vector<std::string>& names,
                   std::vector<std::string> extra = {}) {
    using namespace std::chrono_literals;
    for (auto& name : names) {
      join(name, extra);
      if (HasFatalFailure())
        return;
    }
    ASSERT_TRUE(wait_until([&] { return all_linked(names); }, 15s))
      << all_logs();
  }

  /// Starts etcd and members `names`, and waits until all are linked.
  void linked(const std::vector<std::string>& names,
              std::vector<std::string> extra = {}) {
    start_etcd();
    if (HasFatalFailure())
      return;
    join_linked(names, std::move(extra));
  }

  /// Etcd and members m1, m2 and m3, all linked.
  void three_linked() { linked({"m1", "m2", "m3"}); }

  std::string token(runtime::auth::role r = runtime::auth::role::admin) {
    using namespace std::chrono_literals;
    return runtime::auth::issue_token(secret, r, "tester", 1h,
                                      runtime::auth::token_clock::now());
  }

  std::string viewer() { return token(runtime::auth::role::viewer); }

  /// Runs the CLI against member `name` (as an admin unless `r` says).
  process_result cli(const std::string& name, std::vector<std::string> rest,
                     runtime::auth::role r = runtime::auth::role::admin) {
    auto o = opts();
    o.env["TROUPE_NODE"]
      = host_of(name) + ":" + std::to_string(members[name].port);
    o.env["TROUPE_TOKEN"] = token(r);
    o.time_limit = cli_limit;
    auto argv = args(std::move(rest));
    auto prefix = cli_prefix();
    argv.insert(argv.begin(), prefix.begin(), prefix.end());
    return run_process(argv, o);
  }

  /// The CLI's answer with --json; when it is no JSON, its exit code and
  /// error output.
  json cli_json(const std::string& name, std::vector<std::string> rest) {
    rest.insert(rest.begin(), "--json");
    auto r = cli(name, std::move(rest));
    auto j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json{{"exit_code", r.exit_code}, {"err", r.err}}
                            : j;
  }

  /// `troupe members --json` on `name` as a viewer; an empty object when it
  /// fails.
  json members_of(const std::string& name) {
    auto r = cli(name, {"members", "--json"}, runtime::auth::role::viewer);
    if (members_must_answer) {
      EXPECT_EQ(r.exit_code, 0) << r.err;
    }
    auto j = json::parse(r.out, nullptr, false);
    return r.exit_code == 0 && j.is_object() ? j : json::object();
  }

  /// The member names `name` lists (not those shown down for a while).
  std::set<std::string> seen_by(const std::string& name) {
    std::set<std::string> out;
    for (auto& m : members_of(name).value("members", json::array()))
      if (m.value("state", "") != "down")
        out.insert(m.value("name", ""));
    return out;
  }

  /// What `viewer` lists about `about`, or null.
  json entry(const std::string& viewer, const std::string& about) {
    for (auto& m : members_of(viewer).value("members", json::array()))
      if (m.value("name", "") == about)
        return m;
    return nullptr;
  }

  /// Whether every member in `names` lists every other one as up and
  /// connected.
  bool all_linked(const std::vector<std::string>& names) {
    for (auto& a : names) {
      auto listed = members_of(a).value("members", json::array());
      for (auto& b : names) {
        if (a == b)
          continue;
        bool up = false;
        for (auto& e : listed)
          up
            = up
              || (e.value("name", "") == b && e.value("link", "") == "connected"
                  && e.value("state", "") == "up");
        if (!up)
          return false;
      }
    }
    return true;
  }

  /// Whether every member started lists every other one as up and
  /// connected.
  bool all_linked() {
    std::vector<std::string> names;
    for (auto& [name, m] : members)
      names.push_back(name);
    return all_linked(names);
  }

  /// Every member's error output, each under its name.
  std::string all_logs() {
    std::string out;
    for (auto& [name, m] : members)
      if (m.proc)
        out += "== " + name + "\n" + m.proc->err();
    return out;
  }

  /// Writes workflow `name` of `n` exec nodes, each with `extra`,
  /// appending `line` (expanded by the shell) to the ledger and then
  /// running `then`; returns its path.
  std::string write_fan_out(const std::string& name, int n,
                            const std::string& extra, const std::string& then,
                            const std::string& line) {
    auto path = (dir.path() / (name + ".yaml")).string();
    std::ofstream out{path};
    out << "name: " << name << "\nnodes:\n";
    for (int i = 0; i < n; ++i)
      out << "  s" << i << ":\n    kind: exec\n"
          << extra << "    command: [\"sh\", \"-c\", \"echo " << line << " >> "
          << ledger << "; " << then << "\"]\n";
    return path;
  }

  /// A workflow of `n` exec nodes, each appending "$TROUPE_MEMBER
  /// $TROUPE_NODE_ID $TROUPE_ATTEMPT" to the ledger and then running
  /// `then`; `extra` is added to every node.
  std::string fan_out(int n, const std::string& extra,
                      const std::string& then = "true") {
    return write_fan_out("fan", n, extra, then,
                         "$TROUPE_MEMBER $TROUPE_NODE_ID $TROUPE_ATTEMPT");
  }

  /// The ledger's lines, `N` words each (for fan_out(): member, node id,
  /// attempt).
  template<size_t N = 3>
  std::vector<std::array<std::string, N>> ledger_lines() {
    std::vector<std::array<std::string, N>> out;
    std::ifstream in{ledger};
    std::array<std::string, N> words;
    for (int i = 0; i < 1'000'000; ++i) {
      for (auto& w : words)
        in >> w;
      if (!in)
        break;
      out.push_back(words);
    }
    return out;
  }

  /// The run id in `out` (what submit and run print), or "" (a failure).
  std::string run_id(const std::string& out) {
    std::smatch id;
    EXPECT_TRUE(
      std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
      << out;
    return id.empty() ? std::string{} : id[0].str();
  }

  /// The value of `series` (a family with exactly these labels) on member
  /// `name`'s /metrics (0 when absent).
  double metric(const std::string& name, const std::string& series) {
    auto body = http_get(members[name].http, "/metrics").second;
    std::istringstream in{body};
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(series + " ", 0) == 0)
        return std::stod(line.substr(series.size() + 1));
    return 0;
  }

  void TearDown() override {
    using namespace std::chrono_literals;
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->signal(SIGTERM);
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->wait(15s);
  }
};

/// A fixture for `troupe cluster start-local`: the process in `local`,
/// stopped with SIGTERM (continued first, should a test have stopped it)
/// when the test ends.
struct local_cluster_fixture : troupe_fixture {
  std::unique_ptr<background_process> local;

  process_options opts() override {
    auto o = troupe_fixture::opts();
    // Nothing of the caller's environment may reach the members or the CLI.
    for (auto name : {"TROUPE_NODE", "TROUPE_TOKEN", "TROUPE_AUTH_SECRET",
                      "TROUPE_CLUSTER_SECRET"})
      o.env[name] = std::nullopt;
    return o;
  }

  /// The variables `d/env` exports.
  static std::map<std::string, std::string>
  read_env_file(const std::filesystem::path& d) {
    std::map<std::string, std::string> out;
    std::ifstream in{d / "env"};
    std::regex line{"^export ([A-Z_]+)='([^']*)'$"};
    std::smatch m;
    for (std::string l; std::getline(in, l);)
      if (std::regex_match(l, m, line))
        out[m[1]] = m[2];
    return out;
  }

  /// Waits until start-local says the cluster of `nodes` members is up
  /// (or it exited).
  void wait_until_up(int nodes) {
    using namespace std::chrono_literals;
    ASSERT_TRUE(wait_until(
      [&] {
        return contains(local->out(), "Ctrl-C stops")
               || local->wait(0ms).has_value();
      },
      60s))
      << local->out() << local->err();
    ASSERT_TRUE(contains(local->out(), "is up: " + std::to_string(nodes)))
      << local->out() << local->err();
  }

  void TearDown() override {
    using namespace std::chrono_literals;
    // start-local stops what it started; its children get SIGTERM should it
    // be killed instead.
    if (local && !local->wait(0ms)) {
      local->signal(SIGCONT);
      local->signal(SIGTERM);
      local->wait(40s);
    }
  }
};

} // namespace troupe::test
