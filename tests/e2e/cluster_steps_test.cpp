// Steps across real `troupe node start --cluster` members with their own
// etcd on free loopback ports: attempts on a member that etcd declares down
// while its mesh link stays up, load reported between members and the
// capacity that bounds every attempt, the `leaving` state of a member that
// drains, and the cluster's metrics.

#include "cluster/etcd/client.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

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
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using troupe::test::contains;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Members with an HTTP endpoint and the label zone=z-<name>.
struct ClusterSteps : troupe::test::cluster_fixture {
  ClusterSteps() {
    http = "127.0.0.1:0";
    zone_labels = true;
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
};

} // namespace

namespace {

/// How m2 is declared down by etcd while its process and links live on.
enum class declared_down { key_deleted, lease_revoked };

} // namespace

/// Three members; m1's run has long attempts on m2, which etcd then declares
/// down with its mesh links up: they fail at once as member_down and run
/// elsewhere, and none completes twice.
static void expect_member_down_with_links_up(ClusterSteps& t,
                                             declared_down how) {
  t.linked({"m1", "m2", "m3"});
  // m2's first attempts hang (60 s timeout): only member_down ends them
  // early. Every other attempt is quick.
  auto wf = t.fan_out(6,
                      "    placement: spread\n    timeout: 60s\n"
                      "    retry: {max_attempts: 3, initial_backoff: 10ms}\n",
                      "if [ $TROUPE_MEMBER = m2 ] && [ $TROUPE_ATTEMPT = 1 ]; "
                      "then sleep 30; fi");
  auto submitted = t.cli("m1", {"submit", wf});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  auto run = t.run_id(submitted.out);
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& l : t.ledger_lines())
        if (l[0] == "m2")
          return true;
      return false;
    },
    10s))
    << t.all_logs();

  troupe::cluster::etcd::client_options co;
  co.endpoints = {t.etcd->url()};
  troupe::cluster::etcd::client c{co};
  auto kv = c.get("/troupe/c1/members/m2");
  ASSERT_TRUE(kv && kv->has_value()) << kv.err.message;
  auto down_at = wall_ns();
  if (how == declared_down::key_deleted) {
    // As `etcdctl del` does.
    auto removed = c.remove("/troupe/c1/members/m2");
    ASSERT_TRUE(removed && *removed == 1) << removed.err.message;
  } else {
    // As the detector does on a (here false) suspicion.
    ASSERT_TRUE(c.lease_revoke((*kv)->lease));
  }

  auto status = t.wait_ended("m1", run, 15s);
  EXPECT_EQ(status.value("state", ""), "completed") << status << t.all_logs();
  std::map<std::string, int> completed;
  int member_down = 0;
  for (auto& e : t.history("m1", run)) {
    if (e["type"] == "node_completed")
      ++completed[e["node"].get<std::string>()];
    if (e["type"] == "attempt_failed" && e["error_kind"] == "member_down") {
      ++member_down;
      EXPECT_EQ(e.value("member", ""), "m2") << e;
      EXPECT_TRUE(contains(e.value("message", ""), "declared down")) << e;
      // Within a second.
      EXPECT_LT(e.value("at_ns", int64_t{0}) - down_at, 1'000'000'000) << e;
    }
  }
  EXPECT_GE(member_down, 1) << t.all_logs();
  EXPECT_EQ(completed.size(), 6u);
  for (auto& [node, n] : completed)
    EXPECT_EQ(n, 1) << node;
  // Nothing dropped a link: m2's process lived on, and registered again.
  EXPECT_FALSE(contains(t.members["m1"].proc->err(), "is suspect"))
    << t.members["m1"].proc->err();
  EXPECT_TRUE(
    contains(t.members["m2"].proc->err(), "joined cluster 'c1' again"))
    << t.members["m2"].proc->err();
}

TEST_F(ClusterSteps, AttemptsOnAMemberWhoseKeyIsDeletedFailAsMemberDown) {
  expect_member_down_with_links_up(*this, declared_down::key_deleted);
}

TEST_F(ClusterSteps, AttemptsOnAMemberWhoseLeaseIsRevokedFailAsMemberDown) {
  expect_member_down_with_links_up(*this, declared_down::lease_revoked);
}

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  return std::string{std::istreambuf_iterator<char>{in}, {}};
}

/// An exec node `id` that appends "start|end <member> <id> <ns>" to
/// `ledger` around `sleep_s` seconds of sleep; `extra` is added to it.
std::string timed_node(const std::string& id, const std::string& ledger,
                       double sleep_s, const std::string& extra = "") {
  return "  " + id + ":\n    kind: exec\n    timeout: 60s\n" + extra
         + "    command: [\"sh\", \"-c\", \"echo start $TROUPE_MEMBER "
           "$TROUPE_NODE_ID $(date +%s%N) >> "
         + ledger + "; sleep " + std::to_string(sleep_s) + "; echo end "
         + "$TROUPE_MEMBER $TROUPE_NODE_ID $(date +%s%N) >> " + ledger
         + "\"]\n";
}

struct span {
  std::string member;
  std::string node;
  int64_t from = 0;
  int64_t to = 0;
};

/// The ledger's start/end lines as spans, by node (ended ones only).
std::vector<span> spans_of(const std::string& text) {
  std::map<std::string, span> open;
  std::vector<span> out;
  std::istringstream in{text};
  std::string what, member, node;
  int64_t at = 0;
  while (in >> what >> member >> node >> at) {
    if (what == "start") {
      open[node] = {member, node, at, 0};
    } else if (auto i = open.find(node); i != open.end()) {
      i->second.to = at;
      out.push_back(i->second);
      open.erase(i);
    }
  }
  return out;
}

/// The most spans of `member` that overlap at one time.
int most_at_once(const std::vector<span>& spans, const std::string& member) {
  int most = 0;
  for (auto& a : spans) {
    if (a.member != member)
      continue;
    int n = 0;
    for (auto& b : spans)
      if (b.member == member && b.from <= a.from && a.from < b.to)
        ++n;
    most = std::max(most, n);
  }
  return most;
}

} // namespace

// Every member reports its load (attempts in flight / capacity) and the
// runs it owns to the others, and `troupe members` shows them.
TEST_F(ClusterSteps, MembersSeeEachOthersLoadAndRunsOwned) {
  linked({"m1", "m2"}, {"--set", "cluster.capacity=exec=4"});
  auto path = (dir.path() / "long.yaml").string();
  auto marks = (dir.path() / "marks").string();
  std::ofstream{path} << "name: long\nnodes:\n"
                      << timed_node("a", marks, 6, "    placement: local\n");
  auto s = cli("m2", {"submit", path});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  ASSERT_TRUE(
    wait_until([&] { return contains(read_file(marks), "start m2"); }, 10s))
    << all_logs();
  // m1 learns it from m2's report over the mesh (etcd holds no load).
  json seen;
  ASSERT_TRUE(wait_until(
    [&] {
      seen = entry("m1", "m2");
      return seen.is_object() && seen.contains("load")
             && seen["load"].value("in_flight", -1) == 1
             && seen.value("runs", -1) == 1;
    },
    5s))
    << seen << all_logs();
  EXPECT_EQ(seen["load"]["capacity"], 4) << seen;
  EXPECT_EQ(seen["load"]["kinds"]["exec"]["in_flight"], 1) << seen;
  EXPECT_EQ(seen["load"]["kinds"]["exec"]["capacity"], 4) << seen;
  // m1 itself: nothing in flight, no run.
  auto self = entry("m1", "m1");
  EXPECT_EQ(self["load"].value("in_flight", -1), 0) << self;
  EXPECT_EQ(self.value("runs", -1), 0) << self;
  // The table has LOAD and RUNS columns.
  auto table = cli("m1", {"members"}).out;
  EXPECT_TRUE(contains(table, "LOAD")) << table;
  EXPECT_TRUE(contains(table, "RUNS")) << table;
  EXPECT_TRUE(std::regex_search(table, std::regex{"m2 .* 1/4 +1 "})) << table;
  // Once the run is done, the report says so.
  ASSERT_TRUE(wait_until(
    [&] {
      auto e = entry("m1", "m2");
      return e.is_object() && e["load"].value("in_flight", -1) == 0
             && e.value("runs", -1) == 0;
    },
    15s))
    << entry("m1", "m2");
}

// cluster.capacity bounds every attempt a member runs, its own runs'
// included: m1 (capacity exec=1) runs an attempt for m2's run, and its own
// run's attempt waits for that one to end instead of running beside it.
TEST_F(ClusterSteps, CapacityBoundsAMembersOwnAttemptsToo) {
  linked({"m1", "m2"}, {"--set", "cluster.capacity=exec=1"});
  auto marks = (dir.path() / "marks").string();
  auto theirs = (dir.path() / "theirs.yaml").string();
  std::ofstream{theirs} << "name: theirs\nnodes:\n"
                        << timed_node("t", marks, 3, "    on: {zone: z-m1}\n");
  auto ours = (dir.path() / "ours.yaml").string();
  std::ofstream{ours} << "name: ours\nnodes:\n"
                      << timed_node("o", marks, 0.2, "    placement: local\n");
  auto a = cli("m2", {"submit", theirs});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_TRUE(
    wait_until([&] { return contains(read_file(marks), "start m1 t"); }, 10s))
    << all_logs();
  auto b = cli("m1", {"submit", ours, "--wait"});
  EXPECT_EQ(b.exit_code, 0) << b.out << b.err << all_logs();
  auto spans = spans_of(read_file(marks));
  ASSERT_EQ(spans.size(), 2u) << read_file(marks);
  EXPECT_EQ(most_at_once(spans, "m1"), 1) << read_file(marks);
  // Its own attempt started once the other's ended, and used no retry.
  for (auto& s : spans) {
    if (s.node != "o")
      continue;
    for (auto& o : spans) {
      if (o.node == "t") {
        EXPECT_GE(s.from, o.to) << read_file(marks);
      }
    }
  }
  auto run = run_id(b.out);
  for (auto& e : history("m1", run))
    EXPECT_NE(e["type"], "attempt_failed") << e;
  // It waited for room, and /metrics counted it.
  auto text = troupe::test::http_get(members["m1"].http, "/metrics").second;
  EXPECT_TRUE(contains(text, "troupe_placement_waits_total 1")) << text;
}

// A member stopped with SIGTERM first marks itself leaving: the others
// list it so and place nothing new on it; its attempt in flight finishes;
// then it is down and gone.
TEST_F(ClusterSteps, ADrainedMemberIsLeavingFinishesItsAttemptsThenGoes) {
  linked({"m1", "m2", "m3"});
  auto marks = (dir.path() / "marks").string();
  auto first = (dir.path() / "first.yaml").string();
  std::ofstream{first} << "name: first\nnodes:\n"
                       << timed_node("long", marks, 3,
                                     "    on: {zone: z-m2}\n");
  auto a = cli("m1", {"submit", first});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto first_run = run_id(a.out);
  ASSERT_TRUE(wait_until(
    [&] { return contains(read_file(marks), "start m2 long"); }, 10s))
    << all_logs();
  members["m2"].proc->signal(SIGTERM);
  ASSERT_TRUE(wait_until(
    [&] {
      auto e = entry("m1", "m2");
      return e.is_object() && e.value("state", "") == "leaving";
    },
    3s))
    << entry("m1", "m2") << members["m2"].proc->err();
  // While it leaves, new spread steps run on the others only.
  auto wf = fan_out(6, "    placement: spread\n");
  auto b = cli("m1", {"submit", wf, "--wait"});
  EXPECT_EQ(b.exit_code, 0) << b.out << b.err;
  auto lines = ledger_lines();
  EXPECT_EQ(lines.size(), 6u);
  for (auto& l : lines)
    EXPECT_NE(l[0], "m2") << l[1];
  // Its attempt in flight finished there, and the first run completed
  // with it: no member_down.
  auto status = wait_ended("m1", first_run, 15s);
  EXPECT_EQ(status.value("state", ""), "completed") << status << all_logs();
  EXPECT_TRUE(contains(read_file(marks), "end m2 long")) << read_file(marks);
  for (auto& e : history("m1", first_run)) {
    EXPECT_NE(e["type"], "attempt_failed") << e;
    if (e["type"] == "node_completed") {
      EXPECT_EQ(e.value("member", ""), "m2") << e;
    }
  }
  // Then it is gone.
  EXPECT_TRUE(members["m2"].proc->wait(15s));
  EXPECT_TRUE(wait_until(
    [&] {
      auto e = entry("m1", "m2");
      return e.is_null() || e.value("state", "") == "down";
    },
    5s))
    << entry("m1", "m2");
}

TEST_F(ClusterSteps, DrainThroughAnyMemberAndLeaveEndMembersAsTheyAsk) {
  linked({"m1", "m2", "m3"});
  // An unknown member, a bad wait, and no member at all are refused.
  auto r = cli("m1", {"drain", "ghost"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.err, "no member 'ghost'")) << r.err;
  r = cli("m1", {"drain", "m3", "--wait", "soon"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--wait 'soon'")) << r.err;
  r = cli("m1", {"drain"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  // Only an admin drains.
  r = cli("m1", {"drain", "m3"}, troupe::runtime::auth::role::op);
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_FALSE(members["m3"].proc->wait(0ms));

  // m3, asked through m1, leaves; the CLI waits until it has.
  r = cli("m1", {"drain", "m3", "--wait", "20s"});
  EXPECT_EQ(r.exit_code, 0) << r.err << all_logs();
  EXPECT_TRUE(contains(r.err, "member 'm3' has left")) << r.err;
  auto code = members["m3"].proc->wait(15s);
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(
    contains(members["m3"].proc->err(), "asked to leave the cluster by"))
    << members["m3"].proc->err();
  // m2 leaves itself.
  r = cli("m2", {"leave", "--wait", "20s"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  code = members["m2"].proc->wait(15s);
  ASSERT_TRUE(code);
  EXPECT_EQ(*code, 0);
  EXPECT_TRUE(wait_until(
    [&] {
      auto e = entry("m1", "m2");
      return e.is_null() || e.value("state", "") == "down";
    },
    5s))
    << entry("m1", "m2");
}

namespace {

/// The value of series `name` with (at least) `labels` in a /metrics text,
/// or -1 when it is not there.
double series_value(const std::string& text, const std::string& name,
                    const std::vector<std::string>& labels) {
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with(name + "{"))
      continue;
    bool all = true;
    for (auto& l : labels)
      all = all && contains(line, l);
    if (all)
      return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

} // namespace

// /metrics counts remote attempts by direction and outcome, and etcd's
// calls (latency) and failures by operation.
TEST_F(ClusterSteps, MetricsCountRemoteAttemptsAndEtcdCalls) {
  linked({"m1", "m2"});
  auto metrics = [&](const std::string& name) {
    return troupe::test::http_get(members[name].http, "/metrics").second;
  };
  auto before = metrics("m1");
  EXPECT_TRUE(contains(before, "# TYPE troupe_remote_attempts_total counter"))
    << before;
  EXPECT_TRUE(
    contains(before, "# TYPE troupe_etcd_request_duration_seconds histogram"))
    << before;
  EXPECT_TRUE(contains(before, "# TYPE troupe_etcd_errors_total counter"))
    << before;
  auto wf = fan_out(6, "    placement: spread\n");
  auto r = cli("m1", {"submit", wf, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int on_m2 = 0;
  for (auto& l : ledger_lines())
    on_m2 += l[0] == "m2" ? 1 : 0;
  ASSERT_GE(on_m2, 1);
  auto sent = series_value(metrics("m1"), "troupe_remote_attempts_total",
                           {"direction=\"sent\"", "outcome=\"ok\""});
  EXPECT_EQ(sent, on_m2) << metrics("m1");
  auto served = series_value(metrics("m2"), "troupe_remote_attempts_total",
                             {"direction=\"served\"", "outcome=\"ok\""});
  EXPECT_EQ(served, on_m2) << metrics("m2");
  // Renewals every TTL/4: the keepalive latency count moves.
  auto keepalives = [&] {
    return series_value(metrics("m1"),
                        "troupe_etcd_request_duration_seconds_count",
                        {"op=\"lease_keepalive\""});
  };
  ASSERT_TRUE(wait_until([&] { return keepalives() > 0; }, 10s))
    << metrics("m1");
  auto first = keepalives();
  EXPECT_TRUE(wait_until([&] { return keepalives() > first; }, 10s));
  // etcd gone: the renewals fail, and are counted.
  etcd->stop();
  EXPECT_TRUE(wait_until(
    [&] {
      return series_value(metrics("m1"), "troupe_etcd_errors_total",
                          {"op=\"lease_keepalive\"", "kind=\"unreachable\""})
             > 0;
    },
    10s))
    << metrics("m1");
  ASSERT_TRUE(etcd->restart()) << etcd->log();
}
