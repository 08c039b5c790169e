// Steps across real `troupe node start --cluster` members with their own
// etcd on free loopback ports: attempts on a member that etcd declares down
// while its mesh link stays up, load reported between members and the
// capacity that bounds every attempt, the `leaving` state of a member that
// drains, and the cluster's metrics.

#include "cluster/etcd/client.hpp"
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
#include <regex>
#include <set>
#include <thread>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace auth = troupe::runtime::auth;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

struct ClusterSteps : troupe::test::troupe_fixture {
  static constexpr const char* secret
    = "test-secret-0123456789abcdef-0123456789";

  std::unique_ptr<troupe::test::etcd_process> etcd;

  struct member {
    std::unique_ptr<background_process> proc;
    uint16_t port = 0;
    uint16_t http = 0;
  };
  std::map<std::string, member> members;
  std::string ledger = (dir.path() / "ledger").string();

  troupe::test::process_options opts() override {
    auto o = troupe_fixture::opts();
    o.env["TROUPE_AUTH_SECRET"] = std::string{secret};
    o.env["TROUPE_CLUSTER_SECRET"]
      = std::string{"cluster-secret-0123456789abcdef"};
    o.env["TROUPE_NODE"] = std::nullopt;
    o.env["TROUPE_TOKEN"] = std::nullopt;
    return o;
  }

  void start_etcd() {
    etcd = std::make_unique<troupe::test::etcd_process>();
    ASSERT_TRUE(etcd->ok()) << etcd->error();
  }

  /// Starts member `name` (with an HTTP endpoint, and `extra` --set
  /// options) and waits until it joined and is ready.
  void join(const std::string& name, std::vector<std::string> extra = {}) {
    auto& m = members[name];
    std::vector<std::string> a{
      "node",      "start",       "--data-dir", (dir.path() / name).string(),
      "--listen",  "127.0.0.1:0", "--http",     "127.0.0.1:0",
      "--cluster", "c1",          "--etcd",     etcd->url(),
      "--member",  name,          "--set",      "cluster.lease_ttl=2s"};
    for (auto& e : extra) {
      a.push_back("--set");
      a.push_back(e);
    }
    m.proc = start(a);
    std::smatch match, http;
    ASSERT_TRUE(wait_until(
      [&] {
        auto err = m.proc->err();
        return contains(err, "ready: resumed")
               && std::regex_search(err, match,
                                    std::regex{"listening on 127.0.0.1:(\\d+)"})
               && std::regex_search(
                 err, http, std::regex{"http://127.0.0.1:(\\d+)/metrics"});
      },
      20s))
      << m.proc->err();
    m.port = static_cast<uint16_t>(std::stoi(match[1]));
    m.http = static_cast<uint16_t>(std::stoi(http[1]));
  }

  /// Runs the CLI against member `name` as an admin.
  troupe::test::process_result cli(const std::string& name,
                                   std::vector<std::string> rest) {
    auto o = opts();
    o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members[name].port);
    o.env["TROUPE_TOKEN"] = auth::issue_token(
      secret, auth::role::admin, "tester", 1h, auth::token_clock::now());
    return troupe::test::run_process(args(std::move(rest)), o);
  }

  json members_of(const std::string& name) {
    auto r = cli(name, {"members", "--json"});
    auto j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  /// What `name` lists about `about`, or null.
  json entry(const std::string& name, const std::string& about) {
    for (auto& m : members_of(name).value("members", json::array()))
      if (m.value("name", "") == about)
        return m;
    return nullptr;
  }

  bool all_linked(const std::vector<std::string>& names) {
    for (auto& a : names)
      for (auto& b : names) {
        if (a == b)
          continue;
        auto e = entry(a, b);
        if (!e.is_object() || e.value("link", "") != "connected"
            || e.value("state", "") != "up")
          return false;
      }
    return true;
  }

  void linked(const std::vector<std::string>& names,
              std::vector<std::string> extra = {}) {
    start_etcd();
    for (auto& name : names)
      join(name, extra);
    ASSERT_TRUE(wait_until([&] { return all_linked(names); }, 15s))
      << all_logs();
  }

  std::string all_logs() {
    std::string out;
    for (auto& [name, m] : members)
      if (m.proc)
        out += "== " + name + "\n" + m.proc->err();
    return out;
  }

  /// A workflow of `n` exec nodes, each appending "$TROUPE_MEMBER
  /// $TROUPE_NODE_ID $TROUPE_ATTEMPT" to the ledger and then running
  /// `then`; `extra` is added to every node.
  std::string fan_out(int n, const std::string& extra,
                      const std::string& then = "true") {
    auto path = (dir.path() / "fan.yaml").string();
    std::ofstream out{path};
    out << "name: fan\nnodes:\n";
    for (int i = 0; i < n; ++i)
      out << "  s" << i << ":\n    kind: exec\n"
          << extra
          << "    command: [\"sh\", \"-c\", \"echo $TROUPE_MEMBER "
             "$TROUPE_NODE_ID $TROUPE_ATTEMPT >> "
          << ledger << "; " << then << "\"]\n";
    return path;
  }

  std::vector<std::array<std::string, 3>> ledger_lines() {
    std::vector<std::array<std::string, 3>> out;
    std::ifstream in{ledger};
    std::string m, n, a;
    while (in >> m >> n >> a)
      out.push_back({m, n, a});
    return out;
  }

  std::string run_id(const std::string& out) {
    std::smatch id;
    EXPECT_TRUE(
      std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
      << out;
    return id.empty() ? std::string{} : id[0].str();
  }

  /// Waits (at most `limit`) until `run` on `owner` ended; returns its
  /// status.
  json wait_ended(const std::string& owner, const std::string& run,
                  std::chrono::milliseconds limit) {
    json status;
    wait_until(
      [&] {
        status = json::parse(cli(owner, {"--json", "status", run}).out, nullptr,
                             false);
        return !status.is_discarded() && status.value("state", "") != "running";
      },
      limit);
    return status;
  }

  json history(const std::string& owner, const std::string& run) {
    auto h
      = json::parse(cli(owner, {"--json", "history", run}).out, nullptr, false);
    return h.is_discarded() ? json::array() : h.value("events", json::array());
  }

  void TearDown() override {
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->signal(SIGTERM);
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->wait(15s);
  }
};

} // namespace

// etcd declares m2 down (its key deleted, as `etcdctl del` does) while its
// process and its mesh links live on: the attempts m1 placed there fail at
// once as member_down and run elsewhere; none completes twice.
TEST_F(ClusterSteps, AttemptsOnAMemberWhoseKeyIsDeletedFailAsMemberDown) {
  linked({"m1", "m2", "m3"});
  // m2's first attempts hang (60 s timeout): only member_down ends them
  // early. Every other attempt is quick.
  auto wf = fan_out(6,
                    "    placement: spread\n    timeout: 60s\n"
                    "    retry: {max_attempts: 3, initial_backoff: 10ms}\n",
                    "if [ $TROUPE_MEMBER = m2 ] && [ $TROUPE_ATTEMPT = 1 ]; "
                    "then sleep 30; fi");
  auto submitted = cli("m1", {"submit", wf});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  auto run = run_id(submitted.out);
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& l : ledger_lines())
        if (l[0] == "m2")
          return true;
      return false;
    },
    10s))
    << all_logs();

  troupe::cluster::etcd::client_options co;
  co.endpoints = {etcd->url()};
  troupe::cluster::etcd::client c{co};
  auto deleted_at = wall_ns();
  auto removed = c.remove("/troupe/c1/members/m2");
  ASSERT_TRUE(removed && *removed == 1) << removed.err.message;

  auto status = wait_ended("m1", run, 15s);
  EXPECT_EQ(status.value("state", ""), "completed") << status << all_logs();
  std::map<std::string, int> completed;
  int member_down = 0;
  for (auto& e : history("m1", run)) {
    if (e["type"] == "node_completed")
      ++completed[e["node"].get<std::string>()];
    if (e["type"] == "attempt_failed" && e["error_kind"] == "member_down") {
      ++member_down;
      EXPECT_EQ(e.value("member", ""), "m2") << e;
      EXPECT_TRUE(contains(e.value("message", ""), "declared down")) << e;
      // Within a second of the deletion.
      EXPECT_LT(e.value("at_ns", int64_t{0}) - deleted_at, 1'000'000'000) << e;
    }
  }
  EXPECT_GE(member_down, 1) << all_logs();
  EXPECT_EQ(completed.size(), 6u);
  for (auto& [node, n] : completed)
    EXPECT_EQ(n, 1) << node;
  // Nothing dropped a link: m2's process lived on, and registered again.
  EXPECT_FALSE(contains(members["m1"].proc->err(), "is suspect"))
    << members["m1"].proc->err();
  EXPECT_TRUE(contains(members["m2"].proc->err(), "joined cluster 'c1' again"))
    << members["m2"].proc->err();
}
