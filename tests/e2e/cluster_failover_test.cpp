// Replicated partitions with real members: a leader killed with SIGKILL in
// the middle of its runs, whose runs resume on the members that held
// copies of their journals, losing none and running no completed node
// again; the copies end identical. Then the same checks around a follower
// killed and restarted, both followers down (new runs refused), a leader
// stopped past its TTL, a drain and a rolling restart under load, a member
// back with a wiped disk, and etcd losing its quorum.

#include "tests/support/replicated_fixture.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;
using troupe::test::wall_ns;

namespace {

/// Three members, R=3, min_insync 2.
struct Failover : troupe::test::replicated_fixture {
  /// A 3-member etcd, for the tests that take its quorum away (in place of
  /// the fixture's single etcd). A member: it outlives TearDown's stop of
  /// the members.
  std::unique_ptr<troupe::test::etcd_cluster> etcd3;
};

} // namespace

TEST_F(Failover, AKilledLeadersRunsResumeElsewhereLosingNothing) {
  linked({"m1", "m2", "m3"});
  // Runs submitted to m1 without a key go to partitions m1 leads.
  auto wf = chain(6, "0.3");
  auto runs = submit("m1", wf, 6);
  ASSERT_EQ(runs.size(), 6u) << all_logs();
  // Mid-flight: some nodes done, most not.
  ASSERT_NO_FATAL_FAILURE(until_started(9));
  kill("m1");

  // Every run completes, found through m2 at their new leaders, each node
  // once: none completed before the kill ran again after it.
  all_complete("m2", runs, 30s);
  each_node_once("m2", runs, 6);
  // The copies of the two members left end identical.
  copies_agree({"m2", "m3"}, 10s);
  // What the new leaders said, for the record.
  for (auto name : {"m2", "m3"}) {
    std::istringstream in{members[name].proc->err()};
    std::string line;
    while (std::getline(in, line))
      if (line.find("took over partition") != std::string::npos)
        std::cerr << "[ " << name << " ] " << line << "\n";
  }
}

TEST_F(Failover, AFollowerKilledMidLoadCatchesUpAndRejoinsTheIsr) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 4);
  ASSERT_NO_FATAL_FAILURE(until_started(4));
  // m3 follows every partition m1 leads (R=3 on three members).
  kill("m3");
  // Load goes on without it, and every partition drops it from its ISR
  // (those written to or not).
  for (auto& id : submit("m1", wf, 3))
    runs.push_back(id);
  EXPECT_TRUE(wait_until(
    [&] {
      auto body = partitions("m1");
      if (body.is_discarded() || !body.contains("partitions"))
        return false;
      for (auto& p : body["partitions"])
        for (auto& m : p.value("isr", json::array()))
          if (m == "m3")
            return false;
      return true;
    },
    20s))
    << partitions("m1").dump();
  all_complete("m1", runs);
  // Back on its data dir, it catches up and is in every ISR again.
  restart("m3");
  if (HasFatalFailure())
    return;
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  all_done_once_and_agree("m3", runs, 4, {"m1", "m2", "m3"});
}

TEST_F(Failover, BothFollowersDownRefusesNewRunsAndLosesNoneAccepted) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 4);
  ASSERT_NO_FATAL_FAILURE(until_started(4));
  for (auto name : {"m2", "m3"})
    members[name].proc->signal(SIGKILL);
  for (auto name : {"m2", "m3"})
    members[name].proc->wait(5s);
  // A submission in the middle of it: taken while its partition still
  // counts the dead members in sync, it waits for copies that cannot be
  // made, or it is refused; either way it says so, and a run it took is
  // not lost.
  auto o = opts();
  o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members["m1"].port);
  o.env["TROUPE_TOKEN"] = token();
  auto pending = std::make_unique<troupe::test::background_process>(
    args({"--wait-ready", "1s", "submit", wf}), o,
    (dir.path() / "out-pending").string(),
    (dir.path() / "err-pending").string());
  // m1 leads every partition, alone in sync: it drops the silent members
  // from the ISR of every partition, written to or not.
  ASSERT_TRUE(wait_until([&] { return isr_full("m1", 1); }, 30s))
    << partitions("m1").dump() << all_logs();
  // Now it refuses new runs, saying why. Submissions accepted before that
  // must finish later like the others.
  troupe::test::process_result refused;
  ASSERT_TRUE(wait_until(
    [&] {
      refused = cli("m1", {"--wait-ready", "1s", "submit", wf});
      if (refused.exit_code == 0)
        runs.push_back(run_id(refused.out));
      return refused.exit_code != 0;
    },
    30s))
    << all_logs();
  EXPECT_EQ(refused.exit_code, 3)
    << refused.out << refused.err << partitions("m1").dump() << all_logs();
  EXPECT_TRUE(troupe::test::contains(refused.err, "min_insync")
              && troupe::test::contains(refused.err, "in-sync replica"))
    << refused.err;
  // Still refused a moment later: it never falls back to one copy.
  auto again = cli("m1", {"--wait-ready", "1s", "submit", wf});
  EXPECT_EQ(again.exit_code, 3) << again.out << again.err;
  if (again.exit_code == 0)
    runs.push_back(run_id(again.out));
  // They come back on their data dirs: nothing accepted is lost.
  for (auto name : {"m2", "m3"}) {
    join(name);
    if (HasFatalFailure())
      return;
  }
  ASSERT_TRUE(wait_until([&] { return all_linked(); }, 30s)) << all_logs();
  auto pending_code = pending->wait(60s);
  ASSERT_TRUE(pending_code.has_value())
    << "a submission in the middle is still waiting: " << pending->err();
  EXPECT_TRUE(*pending_code == 0 || *pending_code == 3) << pending->err();
  if (*pending_code == 0)
    runs.push_back(run_id(pending->out()));
  std::cerr << "the submission in the middle exited " << *pending_code << ": "
            << pending->err() << "\n";
  all_complete("m2", runs, 60s);
  each_node_once("m2", runs, 4);
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  // And new runs are taken again.
  auto later = cli("m1", {"submit", wf});
  EXPECT_EQ(later.exit_code, 0) << later.err;
  copies_agree({"m1", "m2", "m3"});
}

TEST_F(Failover, ALeaderStoppedPastItsTtlIsDeposedAndRejoinsAsAFollower) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(5, "0.2");
  auto runs = submit("m1", wf, 5);
  ASSERT_NO_FATAL_FAILURE(until_started(5));
  members["m1"].proc->signal(SIGSTOP);
  // Its partitions fail over while it is stopped, and its runs finish on
  // the new leaders.
  bool moved = wait_until([&] { return leads_none("m2", "m1"); }, 30s);
  if (!moved)
    members["m1"].proc->signal(SIGCONT);
  ASSERT_TRUE(moved) << partitions("m2").dump() << all_logs();
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  all_complete("m2", runs);
  members["m1"].proc->signal(SIGCONT);
  // It comes back as a follower (restarting itself should it have fenced
  // itself out), catches up, and what it wrote as a deposed leader is
  // refused and truncated: nothing ran twice, and the copies agree.
  bool exited = false;
  if (wait_until([&] { return all_linked(); }, 20s) == false) {
    exited = members["m1"].proc->wait(0ms).has_value();
    ASSERT_TRUE(exited) << "m1 neither rejoined nor exited: " << all_logs();
    restart("m1");
    if (HasFatalFailure())
      return;
  }
  ASSERT_TRUE(wait_until([&] { return isr_full("m2"); }, 30s))
    << partitions("m2").dump() << all_logs();
  for (auto& id : submit("m1", wf, 2))
    runs.push_back(id);
  all_done_once_and_agree("m1", runs, 5, {"m1", "m2", "m3"});
  // Going on, it learnt that newer epochs deposed it.
  if (!exited) {
    EXPECT_TRUE(troupe::test::contains(members["m1"].proc->err(),
                                       "was deposed as leader"))
      << members["m1"].proc->err();
  }
  std::cerr << "m1 " << (exited ? "exited and was restarted" : "went on")
            << " after SIGCONT\n";
}

TEST_F(Failover, ADrainUnderLoadLetsTheMemberLeaveLosingNothing) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(5, "0.2");
  auto runs = submit("m1", wf, 4);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_NO_FATAL_FAILURE(until_started(4));
  auto drained = cli("m2", {"drain", "m1"});
  EXPECT_EQ(drained.exit_code, 0) << drained.out << drained.err << all_logs();
  auto code = members["m1"].proc->wait(60s);
  ASSERT_TRUE(code.has_value()) << all_logs();
  EXPECT_EQ(*code, 0) << members["m1"].proc->err();
  all_done_once_and_agree("m2", runs, 5, {"m2", "m3"});
}

TEST_F(Failover, ARollingRestartUnderLoadLosesNothing) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(4, "0.2");
  std::vector<std::string> runs;
  std::vector<std::string> names{"m1", "m2", "m3"};
  for (size_t i = 0; i < names.size(); ++i) {
    auto& name = names[i];
    auto& other = names[(i + 1) % names.size()];
    for (auto& id : submit(other, wf, 3))
      runs.push_back(id);
    for (auto& id : submit(name, wf, 2))
      runs.push_back(id);
    members[name].proc->signal(SIGTERM);
    auto code = members[name].proc->wait(60s);
    ASSERT_TRUE(code.has_value()) << name << ": " << all_logs();
    restart(name);
    if (HasFatalFailure())
      return;
  }
  all_done_once_and_agree("m1", runs, 4, names);
}

TEST_F(Failover, AMemberRejoiningWithAWipedDiskCatchesUpFromTheStream) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 3);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_NO_FATAL_FAILURE(until_started(4));
  kill("m3");
  std::filesystem::remove_all(dir.path() / "data-m3");
  for (auto& id : submit("m1", wf, 2))
    runs.push_back(id);
  restart("m3");
  if (HasFatalFailure())
    return;
  all_done_once_and_agree("m3", runs, 4, {"m1", "m2", "m3"});
}

TEST_F(Failover, EtcdLosingQuorumFencesMembersWhoResumeOnceItIsBack) {
  etcd3 = std::make_unique<troupe::test::etcd_cluster>();
  ASSERT_TRUE(etcd3->ok()) << etcd3->error();
  etcd_urls = etcd3->urls();
  join_linked({"m1", "m2", "m3"});
  if (HasFatalFailure())
    return;
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(6, "0.3");
  auto runs = submit("m1", wf, 3);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_NO_FATAL_FAILURE(until_started(4));
  // Two of three etcd members stopped: no quorum, no lease renewed.
  auto stopped_at = wall_ns();
  etcd3->signal(0, SIGSTOP);
  etcd3->signal(1, SIGSTOP);
  // Every member gives its registration up, fenced, within its TTL and a
  // margin.
  bool fenced = wait_until(
    [&] {
      for (auto& [name, m] : members)
        if (!troupe::test::contains(m.proc->err(), "lost its registration"))
          return false;
      return true;
    },
    15s);
  auto fenced_at = wall_ns();
  if (!fenced) {
    etcd3->signal(0, SIGCONT);
    etcd3->signal(1, SIGCONT);
  }
  ASSERT_TRUE(fenced) << all_logs();
  // Fenced, they start no step: nothing in the ledger started after the
  // leases may have expired (TTL 2 s after the stop, with a margin for a
  // renewal that succeeded just before it), while etcd stays away 2 s more.
  const int64_t ttl_ns = 2'000'000'000, margin_ns = 1'000'000'000;
  auto until = std::chrono::steady_clock::now() + 2s;
  std::this_thread::sleep_until(until);
  auto continued_at = wall_ns();
  etcd3->signal(0, SIGCONT);
  etcd3->signal(1, SIGCONT);
  for (auto& l : lines()) {
    auto at = std::stoll(l[4]);
    EXPECT_FALSE(at > stopped_at + ttl_ns + margin_ns && at < continued_at)
      << l[0] << " " << l[1] << " started " << (at - stopped_at) / 1'000'000
      << " ms after etcd lost its quorum, while fenced (fenced by "
      << (fenced_at - stopped_at) / 1'000'000 << " ms)";
  }
  // Back: they join again, and every run finishes, once per node.
  ASSERT_TRUE(wait_until([&] { return all_linked(); }, 40s)) << all_logs();
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 40s))
    << partitions("m1").dump() << all_logs();
  for (auto& id : submit("m3", wf, 2))
    runs.push_back(id);
  all_done_once_and_agree("m1", runs, 6, {"m1", "m2", "m3"}, 60s);
}

namespace {

/// Failover whose takeovers can be held back: every member is started with
/// TROUPE_TEST_HOLD_RESUME_FILE, and while that file exists a member that
/// comes to lead a partition finds it not ready to resume its runs (as
/// when its store has not committed what it holds yet), and tries again
/// every second.
struct HeldTakeover : Failover {
  std::filesystem::path hold = dir.path() / "hold";

  troupe::test::process_options opts() override {
    auto o = Failover::opts();
    o.env["TROUPE_TEST_HOLD_RESUME_FILE"] = hold.string();
    return o;
  }

  /// The record of partition `p` as `via` sees it; empty when it has none.
  json record(const std::string& via, int p) {
    auto body = partitions(via);
    if (body.is_object())
      for (auto& r : body.value("partitions", json::array()))
        if (r.value("partition", -1) == p)
          return r;
    return json::object();
  }

  /// The partition a run id names: the two hex digits after its dash,
  /// modulo the cluster's 64.
  static int partition_of(const std::string& run) {
    return static_cast<int>(std::stoul(run.substr(13, 2), nullptr, 16) % 64);
  }
};

} // namespace

TEST_F(HeldTakeover, AKeyedSubmissionIsRefusedUntilItsNewLeaderResumesIt) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  // Keyed runs, each at its key's partition's leader, until one is in a
  // partition m1 leads.
  auto wf = chain(6, "0.3");
  std::vector<std::string> runs;
  std::string key, run;
  int p = -1;
  for (int i = 0; i < 40 && p < 0; ++i) {
    auto k = "order-" + std::to_string(i);
    auto r = cli("m1", {"submit", "--idempotency-key", k, wf});
    ASSERT_EQ(r.exit_code, 0) << r.err << all_logs();
    runs.push_back(run_id(r.out));
    auto in = partition_of(runs.back());
    if (record("m1", in).value("leader", "") == "m1") {
      key = k;
      run = runs.back();
      p = in;
    }
  }
  ASSERT_GE(p, 0) << partitions("m1").dump();
  auto where = "partition " + std::to_string(p);
  // Its copies are in sync, and it is under way.
  ASSERT_TRUE(wait_until([&] { return isr_full("m2"); }, 30s))
    << partitions("m2").dump();
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& l : lines())
        if (l[0] == run)
          return true;
      return false;
    },
    20s))
    << all_logs();

  // Takeovers held; m1 killed. Its partition fails over to m2 or m3,
  // which leads it but waits to resume its runs.
  std::ofstream{hold} << "held\n";
  kill("m1");
  std::string leader;
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto via : {"m2", "m3"}) {
        auto r = record(via, p);
        if (r.value("leader", "") == via
            && r.value("here", json::object()).value("role", "") == "waiting")
          leader = via;
      }
      return !leader.empty();
    },
    20s))
    << partitions("m2").dump() << all_logs();
  // A submission with a key of that partition is refused meanwhile, through
  // either member, saying why; it starts no run.
  for (auto via : {"m2", "m3"}) {
    auto r = cli(
      via, {"--wait-ready", "1s", "submit", "--idempotency-key", key, wf});
    EXPECT_EQ(r.exit_code, 3) << via << ": " << r.out << r.err;
    EXPECT_TRUE(troupe::test::contains(
      r.err, where
               + " of this key is not led here yet (it is being taken "
                 "over); retry shortly"))
      << via << ": " << r.err;
  }
  EXPECT_EQ(record(leader, p).value("here", json::object()).value("role", ""),
            "waiting");

  // Released: the member tries the partition again, resumes its runs, and
  // the key is taken again: it is the same run, not a new one.
  std::filesystem::remove(hold);
  ASSERT_TRUE(wait_until(
    [&] {
      return record(leader, p).value("here", json::object()).value("role", "")
             == "leader";
    },
    10s))
    << partitions(leader).dump() << all_logs();
  auto again = cli("m2", {"submit", "--idempotency-key", key, wf});
  EXPECT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_EQ(run_id(again.out), run) << again.out << again.err;
  all_done_once_and_agree("m2", runs, 6, {"m2", "m3"});
  // The member said it waited, and counts the takeover once it resumed,
  // timed from when m1 was found gone.
  auto log = members[leader].proc->err();
  EXPECT_TRUE(troupe::test::contains(
    log, where + " at epoch "
           + std::to_string(record(leader, p).value("epoch", uint64_t{0}))
           + " is led here but not ready to resume its runs yet"))
    << log;
  EXPECT_TRUE(troupe::test::contains(log, "took over " + where + " at epoch"))
    << log;
  EXPECT_GE(metric(leader, "troupe_partition_failovers_total"), 1.0);
}
