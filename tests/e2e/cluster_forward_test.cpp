// Any member answers: three real `troupe node start --cluster` members and
// their etcd on 127.0.0.1. A run owned by one member is read, watched,
// paused, resumed, cancelled and listed through the others; a keyed submit
// goes to the member owning its key's partition; a killed owner's runs say
// so and their watches end, and a killed requester's watches end on the
// owner; a bad forwarded request gets the owner's typed error.

#include "cluster/etcd/client.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>

using namespace std::chrono_literals;
using troupe::test::contains;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

/// Members with an HTTP endpoint for /metrics.
struct ClusterForward : troupe::test::cluster_fixture {
  ClusterForward() { http = "127.0.0.1:0"; }

  /// A workflow file: one exec node running `command` (a shell line).
  std::string workflow(const std::string& name, const std::string& command) {
    auto path = (dir.path() / (name + ".yaml")).string();
    std::ofstream out{path};
    out << "name: " << name << "\nnodes:\n  s:\n    kind: exec\n"
        << "    placement: local\n"
        << "    command: [\"sh\", \"-c\", \"" << command << "\"]\n";
    return path;
  }

  /// Submits `wf` on `name` and returns the run id.
  std::string submit(const std::string& name, const std::string& wf,
                     std::vector<std::string> extra = {}) {
    std::vector<std::string> a{"submit", wf};
    a.insert(a.end(), extra.begin(), extra.end());
    auto j = cli_json(name, a);
    EXPECT_TRUE(j.contains("run_id")) << j << all_logs();
    return j.value("run_id", std::string{});
  }

  static std::string forwarded(const std::string& side, const std::string& type,
                               const std::string& outcome = "ok") {
    return "troupe_forwarded_requests_total{outcome=\"" + outcome + "\",side=\""
           + side + "\",type=\"" + type + "\"}";
  }

  /// A control connection to member `name`, hello said as an admin.
  std::unique_ptr<troupe::test::frame_client> connect(const std::string& name) {
    auto c = std::make_unique<troupe::test::frame_client>(members[name].port);
    EXPECT_TRUE(c->connected());
    auto w = c->hello(token());
    EXPECT_TRUE(w && w->value("t", "") == "welcome") << (w ? w->dump() : "");
    return c;
  }

  /// Reads frames of request `id` until one whose "t" is not "event" (or
  /// nothing within `limit`); events seen go to `events`.
  std::optional<json> until_not_event(troupe::test::frame_client& c,
                                      uint64_t id, std::vector<json>& events,
                                      std::chrono::milliseconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (int i = 0; i < 100'000; ++i) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return std::nullopt;
      auto msg = c.receive(left);
      if (!msg)
        return std::nullopt;
      if (msg->value("id", uint64_t{0}) != id)
        continue;
      if (msg->value("t", "") != "event")
        return msg;
      events.push_back(msg->value("body", json::object()));
    }
    return std::nullopt;
  }
};

} // namespace

TEST_F(ClusterForward,
       ARunOwnedByAnotherMemberIsWatchedAndCancelledThroughAny) {
  three_linked();
  if (HasFatalFailure())
    return;
  // Owned by m2: submitted there without a key.
  auto slow = workflow("slow", "sleep 60");
  auto run = submit("m2", slow);
  ASSERT_FALSE(run.empty());

  // m1 answers for it: status, inspect (in the shell), a watch.
  auto st = cli_json("m1", {"status", run});
  EXPECT_EQ(st.value("run_id", ""), run) << st;
  EXPECT_EQ(st.value("workflow", ""), "slow") << st;
  auto shell = cli("m1", {"shell", "-c", "inspect run " + run});
  EXPECT_EQ(shell.exit_code, 0) << shell.out << shell.err;
  EXPECT_TRUE(contains(shell.out, run)) << shell.out << shell.err;

  auto watcher = connect("m1");
  ASSERT_TRUE(watcher->send(json{{"t", "watch"}, {"id", 7}, {"run_id", run}}));
  std::vector<json> events;
  auto first = watcher->receive(10s);
  ASSERT_TRUE(first) << all_logs();
  ASSERT_EQ(first->value("t", ""), "event") << *first;
  EXPECT_EQ((*first)["body"].value("type", ""), "watching") << *first;
  // A second watch, through m3, ends on m2 when its client goes away.
  {
    auto other = connect("m3");
    ASSERT_TRUE(other->send(json{{"t", "watch"}, {"id", 1}, {"run_id", run}}));
    ASSERT_TRUE(other->receive(10s));
    EXPECT_TRUE(
      wait_until([&] { return metric("m2", "troupe_watches_open") == 2; }, 5s));
  }
  EXPECT_TRUE(
    wait_until([&] { return metric("m2", "troupe_watches_open") == 1; }, 5s))
    << metric("m2", "troupe_watches_open");

  // Pause and resume through m3, cancel through m1.
  auto p = cli("m3", {"pause", run});
  EXPECT_EQ(p.exit_code, 0) << p.out << p.err;
  EXPECT_TRUE(wait_until(
    [&] {
      return cli_json("m1", {"status", run}).value("state", "") == "paused";
    },
    10s));
  auto again = cli("m3", {"pause", run});
  EXPECT_EQ(again.exit_code, 1) << again.err; // the owner's conflict
  EXPECT_TRUE(contains(again.err, "paused already")) << again.err;
  auto r = cli("m1", {"resume", run});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto c = cli("m1", {"cancel", run});
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;

  // The watch sees the run's events until it ends cancelled.
  auto end = until_not_event(*watcher, 7, events, 15s);
  ASSERT_TRUE(end) << all_logs();
  EXPECT_EQ(end->value("t", ""), "end") << *end;
  EXPECT_EQ((*end)["body"].value("state", ""), "cancelled") << *end;
  std::set<std::string> types;
  for (auto& e : events)
    types.insert(e.value("type", ""));
  EXPECT_TRUE(types.count("run_paused") || types.count("paused"))
    << json(events);

  // result, history and logs through m3.
  auto res = cli("m3", {"--json", "result", run});
  EXPECT_EQ(res.exit_code, 1) << res.err; // a cancelled run
  EXPECT_EQ(json::parse(res.out, nullptr, false).value("state", ""),
            "cancelled")
    << res.out;
  auto h = cli_json("m3", {"history", run});
  EXPECT_EQ(h.value("state", ""), "cancelled") << h;
  EXPECT_FALSE(h.value("events", json::array()).empty()) << h;
  auto logs = cli("m3", {"logs", run});
  EXPECT_NE(logs.exit_code, 3) << logs.err;
  EXPECT_FALSE(contains(logs.err, "no run")) << logs.err;

  // A bad forwarded request gets the owner's typed error.
  auto bad = watcher->call(
    json{{"t", "history"}, {"run_id", run}, {"limit", "ten"}}, 8);
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->value("t", ""), "error") << *bad;
  EXPECT_EQ(bad->value("code", ""), "bad_request") << *bad;
  EXPECT_TRUE(contains(bad->value("message", ""), "limit")) << *bad;
  auto ended
    = watcher->call(json{{"t", "retry"}, {"run_id", run}, {"node", "s"}}, 9);
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->value("code", ""), "conflict") << *ended;

  // Counted on both sides.
  EXPECT_GE(metric("m1", forwarded("sent", "status")), 1) << all_logs();
  EXPECT_GE(metric("m2", forwarded("served", "cancel")), 1);
  EXPECT_GE(metric("m2", forwarded("served", "pause", "conflict")), 1);
}

TEST_F(ClusterForward, ListOnAnyMemberMergesEveryMembersRunsPaged) {
  three_linked();
  if (HasFatalFailure())
    return;
  // list on any member merges every member's runs, in id order, paged.
  auto quick = workflow("quick", "true");
  std::set<std::string> submitted;
  for (auto name : {"m1", "m2", "m3", "m1", "m3", "m2", "m2"})
    submitted.insert(submit(name, quick));
  std::vector<std::string> listed;
  std::string after;
  for (int page = 0; page < 20; ++page) {
    std::vector<std::string> a{"list", "--limit", "2"};
    if (!after.empty())
      a.insert(a.end(), {"--after", after});
    auto j = cli_json("m3", a);
    ASSERT_TRUE(j.contains("runs")) << j;
    EXPECT_FALSE(j.contains("missing_members")) << j;
    EXPECT_LE(j["runs"].size(), 2u) << j;
    for (auto& x : j["runs"])
      listed.push_back(x.value("run_id", ""));
    after = j.value("next", "");
    if (after.empty())
      break;
  }
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end())) << json(listed);
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), submitted)
    << json(listed);
  EXPECT_EQ(listed.size(), submitted.size()) << json(listed);
  // A cursor no member knows is refused, as by a node alone.
  auto bogus = cli("m1", {"list", "--after", "0000-nothing"});
  EXPECT_EQ(bogus.exit_code, 2) << bogus.out << bogus.err;
  EXPECT_TRUE(contains(bogus.err, "no member has a run")) << bogus.err;

  // The shell shows the members at the top of the actor tree.
  auto tree = cli("m1", {"shell", "-c", "actors --tree"});
  EXPECT_EQ(tree.exit_code, 0) << tree.err;
  EXPECT_TRUE(contains(tree.out, "cluster c1, this member: m1")) << tree.out;
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_TRUE(contains(tree.out, name)) << tree.out;
  EXPECT_LT(tree.out.find("MEMBER"), tree.out.find("KIND")) << tree.out;
}

TEST_F(ClusterForward, AKeyedSubmitGoesToTheMemberOwningItsKeysPartition) {
  three_linked();
  if (HasFatalFailure())
    return;
  auto quick = workflow("quick", "true");
  // A key that m2 owns: its submission on m2 is not sent anywhere.
  std::string key, run;
  for (int i = 0; i < 40 && key.empty(); ++i) {
    auto k = "order-" + std::to_string(i);
    auto before = metric("m2", forwarded("sent", "submit"));
    auto id = submit("m2", quick, {"--idempotency-key", k});
    if (metric("m2", forwarded("sent", "submit")) == before) {
      key = k;
      run = id;
    }
  }
  ASSERT_FALSE(key.empty()) << all_logs();
  // The same key on m1 and on m3: forwarded to m2, the same run.
  for (auto name : {"m1", "m3"}) {
    auto j = cli_json(name, {"submit", quick, "--idempotency-key", key});
    EXPECT_EQ(j.value("run_id", ""), run) << name << ": " << j;
    EXPECT_TRUE(j.value("existing", false)) << name << ": " << j;
    EXPECT_EQ(metric(name, forwarded("sent", "submit")), 1) << name;
  }
  EXPECT_EQ(metric("m2", forwarded("served", "submit")), 2);
}

TEST_F(ClusterForward, EveryMemberSendsAKeyedSubmitToTheLeaderEtcdRecords) {
  three_linked();
  if (HasFatalFailure())
    return;
  auto quick = workflow("quick", "true");
  troupe::cluster::etcd::client c{{{etcd->url()}}};
  std::set<std::string> leaders_seen;
  for (int i = 0; i < 6; ++i) {
    auto key = "invoice-" + std::to_string(i);
    // Made on first use, through m1.
    auto run = submit("m1", quick, {"--idempotency-key", key});
    ASSERT_FALSE(run.empty());
    auto p = std::stoul(run.substr(13, 2), nullptr, 16) % 64;
    char digits[8];
    std::snprintf(digits, sizeof digits, "%04lu", p);
    auto leader
      = c.get(std::string{"/troupe/c1/partition/"} + digits + "/leader");
    ASSERT_TRUE(leader && leader->has_value()) << p;
    auto owner = (*leader)->value;
    leaders_seen.insert(owner);
    // Every member agrees: the leader serves it itself, the others send it
    // there, and all answer the same run.
    for (auto name : {"m1", "m2", "m3"}) {
      auto sent = metric(name, forwarded("sent", "submit"));
      auto j = cli_json(name, {"submit", quick, "--idempotency-key", key});
      EXPECT_EQ(j.value("run_id", ""), run) << name << ": " << j;
      EXPECT_EQ(metric(name, forwarded("sent", "submit")),
                sent + (name == owner ? 0 : 1))
        << name << " for " << key << " led by " << owner;
    }
  }
  EXPECT_GE(leaders_seen.size(), 2u);
}

TEST_F(ClusterForward, AKilledOwnersRunsSayItIsDownAndTheirWatchesEnd) {
  three_linked();
  if (HasFatalFailure())
    return;
  auto run = submit("m2", workflow("slow", "sleep 60"));
  ASSERT_FALSE(run.empty());
  auto watcher = connect("m1");
  ASSERT_TRUE(watcher->send(json{{"t", "watch"}, {"id", 3}, {"run_id", run}}));
  auto first = watcher->receive(10s);
  ASSERT_TRUE(first && first->value("t", "") == "event") << all_logs();
  // A requester killed with a watch open: the owner drops its watch.
  auto doomed = connect("m3");
  ASSERT_TRUE(doomed->send(json{{"t", "watch"}, {"id", 1}, {"run_id", run}}));
  ASSERT_TRUE(doomed->receive(10s));
  EXPECT_TRUE(
    wait_until([&] { return metric("m2", "troupe_watches_open") == 2; }, 5s));
  members["m3"].proc->signal(SIGKILL);
  members["m3"].proc->wait(5s);
  EXPECT_TRUE(
    wait_until([&] { return metric("m2", "troupe_watches_open") == 1; }, 5s))
    << metric("m2", "troupe_watches_open");

  members["m2"].proc->signal(SIGKILL);
  members["m2"].proc->wait(5s);
  // The watch ends with the typed error at once, not at a timeout.
  std::vector<json> events;
  auto end = until_not_event(*watcher, 3, events, 5s);
  ASSERT_TRUE(end) << all_logs();
  EXPECT_EQ(end->value("t", ""), "error") << *end;
  EXPECT_EQ(end->value("code", ""), "owner_unavailable") << *end;
  EXPECT_EQ(end->value("owner", ""), "m2") << *end;
  EXPECT_EQ(end->value("run_id", ""), run) << *end;

  // status on m1 says who owns the run and that it cannot answer: exit 3.
  troupe::test::process_result st;
  ASSERT_TRUE(wait_until(
    [&] {
      st = cli("m1", {"status", run});
      return st.exit_code == 3;
    },
    5s))
    << st.out << st.err;
  EXPECT_TRUE(contains(st.err, "owned by member m2")) << st.err;
  EXPECT_TRUE(contains(st.err, "wait for m2 to come back")) << st.err;
  // Once m2 is declared down, status says so.
  EXPECT_TRUE(wait_until(
    [&] {
      st = cli("m1", {"status", run});
      return contains(st.err, "which is down");
    },
    10s))
    << st.err;
  // list says whose runs it lacks rather than passing over them.
  auto l = cli("m1", {"list"});
  EXPECT_EQ(l.exit_code, 0) << l.err;
  EXPECT_TRUE(contains(l.err, "member m2")) << l.err;
  auto j = cli_json("m1", {"list"});
  ASSERT_TRUE(j.contains("missing_members")) << j;
  std::set<std::string> missing;
  for (auto& m : j["missing_members"])
    missing.insert(m.value("member", ""));
  EXPECT_TRUE(missing.count("m2")) << j;
}

TEST_F(ClusterForward,
       AMemberOwningNoPartitionSendsItsSubmissionsToOneThatDoes) {
  etcd = std::make_unique<troupe::test::etcd_process>();
  ASSERT_TRUE(etcd->ok()) << etcd->error();
  // Two partitions: m1 claims both when it joins, and m2 finds none free.
  extra_args = {"--set", "cluster.partitions=2"};
  join("m1");
  join("m2");
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_TRUE(wait_until([&] { return all_linked(); }, 15s)) << all_logs();
  EXPECT_TRUE(contains(members["m2"].proc->err(), "this member owns no run"))
    << all_logs();
  auto quick = workflow("quick", "true");
  std::vector<std::string> runs;
  for (int i = 0; i < 3; ++i)
    runs.push_back(submit("m2", quick));
  EXPECT_EQ(metric("m2", forwarded("sent", "submit")), 3);
  EXPECT_EQ(metric("m1", forwarded("served", "submit")), 3);
  // Owned by m1, and answered for on either member.
  for (auto& run : runs)
    for (auto name : {"m1", "m2"})
      EXPECT_TRUE(wait_until(
        [&] {
          return cli_json(name, {"status", run}).value("state", "")
                 == "completed";
        },
        10s))
        << name << " " << run << all_logs();
  // With m1 gone, m2 says it cannot take the submission now (and why).
  members["m1"].proc->signal(SIGKILL);
  members["m1"].proc->wait(10s);
  ASSERT_TRUE(wait_until(
    [&] {
      // The CLI waits for a node not ready: not here.
      auto r = cli("m2", {"--wait-ready", "0s", "submit", quick});
      return r.exit_code == 3
             && contains(r.err, "owns no partition of the cluster's runs");
    },
    10s))
    << all_logs();
}

TEST_F(ClusterForward, AKeyedSubmitWhosePartitionCannotBeClaimedIsNotReady) {
  etcd = std::make_unique<troupe::test::etcd_process>();
  ASSERT_TRUE(etcd->ok()) << etcd->error();
  // One member: it owns 8 of the 64 partitions; a key in any other one
  // must be claimed in etcd first, which cannot be done with etcd gone.
  join("m1");
  ASSERT_FALSE(HasFatalFailure());
  auto quick = workflow("quick", "true");
  etcd->stop();
  std::string said;
  bool refused = false;
  for (int i = 0; i < 20 && !refused; ++i) {
    // The CLI waits for a node not ready: not here.
    auto r = cli("m1", {"--wait-ready", "0s", "submit", quick,
                        "--idempotency-key", "k-" + std::to_string(i)});
    said += r.err;
    refused = r.exit_code == 3 && contains(r.err, "cannot claim partition")
              && contains(r.err, "etcd is out of reach");
  }
  EXPECT_TRUE(refused) << said << all_logs();
}
