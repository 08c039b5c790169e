// Replicated partitions with real members: a leader killed with SIGKILL in
// the middle of its runs, whose runs resume on the members that held
// copies of their journals, losing none and running no completed node
// again; the copies end identical. Then the same checks around a follower
// killed and restarted, both followers down (new runs refused), a leader
// stopped past its TTL, a drain and a rolling restart under load, a member
// back with a wiped disk (from the stream, and from snapshots once the logs
// were trimmed), etcd losing its quorum, and members joining under load, who
// get their replicas and then their leaderships (from snapshots too). Last,
// with members, etcd and the CLI in network namespaces (as root): a leader cut
// off from etcd but not from its peers, and one cut off from its peers but not
// from etcd.

#include "cluster/membership/partition_map.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/netns.hpp"
#include "tests/support/replicated_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
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

  /// Whether every partition `via` lists is at its rendezvous target over
  /// `up` (R=3): led by the first, replicated and in sync on the first
  /// three, said to be its target, and nothing about it is moving; `count`
  /// records at least.
  bool balanced(const std::string& via, const std::vector<std::string>& up,
                size_t count) {
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions")
        || body["partitions"].size() < count)
      return false;
    for (auto& p : body["partitions"]) {
      auto t = troupe::cluster::partition_map::rank(
        up, p.value("partition", uint32_t{0}));
      t.resize(std::min<size_t>(3, t.size()));
      std::set<std::string> want{t.begin(), t.end()};
      auto names = [&](const char* field) {
        std::set<std::string> out;
        for (auto& m : p.value(field, json::array()))
          out.insert(m.get<std::string>());
        return out;
      };
      if (p.value("leader", "") != t[0] || names("replicas") != want
          || names("isr") != want || p.value("state", "") != "ok"
          || p.contains("moving") || p.value("target", json::array()) != t)
        return false;
    }
    return true;
  }

  /// Submits `n` runs of `wf` through `via`, each tried again (at most 30
  /// times) while it is refused: a partition moving between members may
  /// refuse a submission for a moment. Their ids; `refusals` counts the
  /// refusals.
  std::vector<std::string> submit_retrying(const std::string& via,
                                           const std::string& wf, int n,
                                           int& refusals) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i)
      for (int attempt = 0; attempt < 30; ++attempt) {
        auto r = cli(via, {"--wait-ready", "1s", "submit", wf});
        if (r.exit_code == 0) {
          out.push_back(run_id(r.out));
          break;
        }
        ++refusals;
        std::cerr << via << " refused a submission: " << r.err;
        std::this_thread::sleep_for(100ms);
      }
    return out;
  }
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

// Five members, R=3: a killed leader's partitions are led again and
// replicated back to three copies on the members left; then a second
// leader is killed under load. Nothing accepted is lost, no completed node
// runs again, and the members left agree on every partition they share.
TEST_F(Failover, FiveMembersLoseTwoLeadersOneAfterTheOtherLosingNothing) {
  const std::vector<std::string> five{"m1", "m2", "m3", "m4", "m5"};
  linked(five);
  if (HasFatalFailure())
    return;
  ASSERT_TRUE(wait_until([&] { return isr_full("m3"); }, 30s))
    << partitions("m3").dump();
  auto wf = chain(5, "0.2");
  // Runs without a key live in partitions their member leads.
  auto runs = submit("m1", wf, 4);
  for (auto& id : submit("m2", wf, 3))
    runs.push_back(id);
  ASSERT_EQ(runs.size(), 7u) << all_logs();
  ASSERT_NO_FATAL_FAILURE(until_started(8));
  kill("m1");
  // m1's partitions are led by others and have three in-sync copies again
  // on the four members left.
  ASSERT_TRUE(
    wait_until([&] { return leads_none("m3", "m1") && isr_full("m3"); }, 45s))
    << partitions("m3").dump() << all_logs();
  for (auto& id : submit("m2", wf, 3))
    runs.push_back(id);
  ASSERT_NO_FATAL_FAILURE(until_started(lines().size() + 2));
  kill("m2");
  all_done_once_and_agree("m4", runs, 5, {"m3", "m4", "m5"}, 60s);
  // m2's partitions moved too.
  EXPECT_TRUE(wait_until([&] { return leads_none("m4", "m2"); }, 20s))
    << partitions("m4").dump();
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

TEST_F(Failover, AWipedMemberRejoiningAfterTheLogsWereTrimmedGetsSnapshots) {
  // Each log keeps one record below what every replica that counts holds:
  // while m3 is away, the leaders trim what it would need to catch up
  // from the stream.
  extra_args = {"--set", "cluster.log_retain_records=1"};
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
  all_complete("m1", runs);
  EXPECT_EQ(metric("m1", "troupe_snapshots_sent_total")
              + metric("m2", "troupe_snapshots_sent_total"),
            0.0);
  // Back with nothing: its partitions' leaders send it snapshots of their
  // state, then the stream, and it joins every ISR again.
  restart("m3");
  if (HasFatalFailure())
    return;
  auto installed = metric("m3", "troupe_snapshots_installed_total");
  EXPECT_GE(installed, 1.0);
  std::cerr << "m3 installed " << installed << " snapshot(s)\n";
  EXPECT_GE(metric("m1", "troupe_snapshots_sent_total")
              + metric("m2", "troupe_snapshots_sent_total"),
            1.0);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  // Its copies, from snapshots and the stream, equal the others'.
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

namespace {

/// The Failover cluster with every member, etcd and the CLI in network
/// namespaces of their own (tests/support/netns.hpp): m1, m2 and m3 at
/// .1-3 of the lab's subnet, etcd at .100, the CLI on the switch (.253),
/// which reaches them all. Steps run on their run's owner (cluster.placement =
/// local), so the ledger's member is the member that started the attempt.
struct SplitBrain : Failover {
  std::unique_ptr<troupe::test::netns_lab> lab;

  void SetUp() override {
    if (auto why = troupe::test::netns_lab::unavailable(); !why.empty())
      GTEST_SKIP() << why;
    ASSERT_TRUE(troupe::test::netns_lab::no_nft().empty())
      << troupe::test::netns_lab::no_nft();
    lab = std::make_unique<troupe::test::netns_lab>();
    if (!lab->ok())
      GTEST_SKIP() << "cannot make network namespaces here: " << lab->error();
    int n = 0;
    for (auto name : {"m1", "m2", "m3"})
      ASSERT_FALSE(lab->add(name, ++n).empty()) << lab->error();
    ASSERT_FALSE(lab->add("etcd", 100).empty()) << lab->error();
    http.clear();
    extra_args = {"--set", "cluster.placement=local"};
  }

  std::string host_of(const std::string& name) override {
    return lab->address(name);
  }
  std::vector<std::string> prefix_of(const std::string& name) override {
    return lab->prefix(name);
  }
  std::vector<std::string> cli_prefix() override {
    return lab->prefix("switch");
  }

  /// etcd in its namespace, and members `names` linked.
  void start(const std::vector<std::string>& names) {
    troupe::test::etcd_options o;
    o.host = lab->address("etcd");
    o.prefix = lab->prefix("etcd");
    start_etcd(o);
    if (HasFatalFailure())
      return;
    join_linked(names);
  }

  void TearDown() override {
    if (!lab)
      return;
    // Healed first, so the members leave as usual; gone before their
    // namespaces are.
    for (auto name : {"m1", "m2", "m3"})
      lab->heal(name);
    Failover::TearDown();
    for (auto& [name, m] : members)
      m.proc.reset();
    etcd.reset();
    lab.reset();
  }

  /// The partitions `body` (`troupe partitions --json`) lists led by `who`.
  static std::vector<json> led_by(const json& body, const std::string& who) {
    std::vector<json> out;
    if (body.is_discarded() || !body.contains("partitions"))
      return out;
    for (auto& p : body["partitions"])
      if (p.value("leader", "") == who)
        out.push_back(p);
    return out;
  }
};

} // namespace

// A leader that cannot reach etcd but still reaches its followers: it
// fences itself before its lease can have expired, its partitions fail
// over to its in-sync followers, which refuse its writes at the old epoch;
// healed, it registers again and follows.
TEST_F(SplitBrain, ALeaderCutOffFromEtcdButNotItsPeersFencesItselfAndFollows) {
  start({"m1", "m2", "m3"});
  if (HasFatalFailure())
    return;
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(6, "0.3");
  // Runs submitted to m1 without a key go to partitions m1 leads.
  auto runs = submit("m1", wf, 4);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 6; }, 20s))
    << all_logs();
  // What m1 says of itself (ping's cluster.joined), asked every 20 ms
  // over one connection from a thread of the test's in the switch's
  // namespace: when each ask was sent, and the answer.
  using steady = std::chrono::steady_clock;
  std::vector<std::pair<steady::time_point, bool>> pings;
  std::atomic<bool> pinging{true};
  // How many pings were answered, or -1 once pinging failed (ping_error
  // says why); pings and ping_error are read once the thread has ended.
  std::atomic<int> answered{0};
  std::string ping_error;
  std::thread pinger{
    [&, port = members["m1"].port, host = lab->address("m1"), tok = viewer()] {
      if (!lab->enter("switch")) {
        ping_error = "cannot enter the switch's namespace";
        answered = -1;
        return;
      }
      troupe::test::frame_client c{port, host};
      if (!c.connected() || !c.hello(tok)) {
        ping_error = "cannot say hello to m1";
        answered = -1;
        return;
      }
      for (uint64_t id = 1; pinging && id < 10'000; ++id) {
        auto asked = steady::now();
        auto pong = c.call({{"t", "ping"}}, id, 2s);
        if (!pong) {
          ping_error = "m1 did not answer a ping";
          answered = -1;
          return;
        }
        pings.emplace_back(asked,
                           (*pong)["body"]["cluster"].value("joined", true));
        ++answered;
        std::this_thread::sleep_for(20ms);
      }
    }};
  auto stop_pinging = [&] {
    pinging = false;
    if (pinger.joinable())
      pinger.join();
  };
  wait_until([&] { return answered >= 2 || answered < 0; }, 5s);
  auto cut_at = wall_ns();
  auto cut_steady = steady::now();
  if (!lab->cut("m1", {"etcd"})) {
    stop_pinging();
    FAIL() << lab->error();
  }

  // It fences itself within its TTL of the cut, by its monotonic clock (a
  // renewal asked after the cut cannot succeed, so by then the last one
  // that did is a TTL old: its lease may expire): every ping sent from a
  // TTL after the cut on finds it not joined.
  const auto ttl = 2s;
  const int64_t ttl_ns = 2'000'000'000;
  wait_until([&] { return steady::now() > cut_steady + ttl + 1s; }, 5s);
  stop_pinging();
  ASSERT_TRUE(ping_error.empty()) << ping_error;
  std::optional<steady::duration> fenced_after;
  size_t after_ttl = 0;
  for (auto& [asked, joined] : pings) {
    if (!joined && asked > cut_steady && !fenced_after)
      fenced_after = asked - cut_steady;
    if (asked >= cut_steady + ttl) {
      ++after_ttl;
      EXPECT_FALSE(joined)
        << "m1 still counted itself joined "
        << std::chrono::duration<double>(asked - cut_steady).count()
        << " s after it was cut off from etcd (lease TTL 2 s)";
    }
  }
  EXPECT_GT(after_ttl, 0u) << "no ping after the TTL";
  ASSERT_TRUE(fenced_after.has_value()) << all_logs();
  EXPECT_TRUE(
    troupe::test::contains(members["m1"].proc->err(), "lost its registration"))
    << all_logs();
  // Its partitions fail over to m2 and m3.
  ASSERT_TRUE(wait_until([&] { return leads_none("m2", "m1"); }, 20s))
    << partitions("m2").dump() << all_logs();
  auto moved_after = std::chrono::steady_clock::now() - cut_steady;
  // A submission to it now is not taken behind the new leaders' backs:
  // refused, or taken by a partition it can still write (then it is a
  // run like the others, which must finish).
  cli_limit = 15s;
  auto probe = cli("m1", {"--wait-ready", "1s", "submit", wf});
  cli_limit = 60s;
  if (probe.exit_code == 0)
    runs.push_back(run_id(probe.out));
  // Its runs finish on the new leaders while it is still cut off.
  all_complete("m2", runs, 60s);
  // It learnt that a newer epoch deposed it: its followers refused it.
  EXPECT_TRUE(wait_until(
    [&] {
      return troupe::test::contains(members["m1"].proc->err(),
                                    "was deposed as leader");
    },
    10s))
    << members["m1"].proc->err();
  auto healed_at = wall_ns();
  ASSERT_TRUE(lab->heal("m1")) << lab->error();

  // Fenced, it started no attempt after its lease may have expired (a TTL
  // after the cut; 300 ms for an attempt started just before to write its
  // line), until it was healed.
  for (auto& l : lines()) {
    auto at = std::stoll(l[4]);
    EXPECT_FALSE(l[3] == "m1" && at > cut_at + ttl_ns + 300'000'000
                 && at < healed_at)
      << l[0] << " " << l[1] << " started on m1 " << (at - cut_at) / 1'000'000
      << " ms after it was cut off from etcd";
  }
  // Healed, it joins again, catches up and is in every ISR.
  ASSERT_TRUE(wait_until([&] { return all_linked(); }, 30s)) << all_logs();
  ASSERT_TRUE(wait_until([&] { return isr_full("m2"); }, 30s))
    << partitions("m2").dump() << all_logs();
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  all_complete("m1", runs);
  each_node_once("m1", runs, 6);
  copies_agree({"m1", "m2", "m3"});
  std::cerr << "m1 fenced "
            << std::chrono::duration<double>(*fenced_after).count()
            << " s after the cut; its partitions were seen moved "
            << std::chrono::duration<double>(moved_after).count()
            << " s after it; a submission to it meanwhile exited "
            << probe.exit_code << ": " << probe.err << "\n";
}

// A leader that reaches etcd but not its followers: it drops them from the
// ISR after cluster.replica_lag, and then, below cluster.min_insync, takes
// no writes and says why; the followers' own partitions go on without it.
// It still says why once it has lost its registration for a while and
// been installed again at a new epoch, its runs not resumed. Healed, the
// ISR grows back and everything finishes, once. The mesh's connection
// timeout is longer than the cut here, so the failure detector
// does not revoke m1 first (which would fail its partitions over, as when
// it is cut off from etcd).
TEST_F(SplitBrain, ALeaderCutOffFromItsPeersButNotEtcdShrinksItsIsrAndStops) {
  extra_args.insert(extra_args.end(),
                    {"--set", "cluster.connection_timeout=60s"});
  start({"m1", "m2", "m3"});
  if (HasFatalFailure())
    return;
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(6, "0.3");
  auto runs = submit("m1", wf, 4);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 6; }, 20s))
    << all_logs();
  auto cut_steady = std::chrono::steady_clock::now();
  ASSERT_TRUE(lab->cut("m1", {"m2", "m3"})) << lab->error();

  // m1 drops m2 and m3 from the ISR of the partitions it leads, and they
  // drop m1 from theirs.
  ASSERT_TRUE(wait_until(
    [&] {
      auto body = partitions("m1");
      if (body.is_discarded() || !body.contains("partitions")
          || led_by(body, "m1").empty())
        return false;
      for (auto& p : body["partitions"]) {
        auto isr = p.value("isr", json::array());
        bool alone = isr.size() == 1 && isr[0] == "m1";
        bool without = std::find(isr.begin(), isr.end(), "m1") == isr.end();
        if (p.value("leader", "") == "m1" ? !alone : !without)
          return false;
      }
      return true;
    },
    20s))
    << partitions("m1").dump() << all_logs();
  auto shrunk_after = std::chrono::steady_clock::now() - cut_steady;
  auto shrunk_at = wall_ns();
  EXPECT_GE(shrunk_after, 1500ms) << "the ISR shrank before replica_lag";
  // Below min_insync, it refuses new runs and says why.
  auto refused = cli("m1", {"--wait-ready", "1s", "submit", wf});
  if (refused.exit_code == 0)
    runs.push_back(run_id(refused.out));
  EXPECT_EQ(refused.exit_code, 3) << refused.out << refused.err;
  EXPECT_TRUE(troupe::test::contains(refused.err, "min_insync")) << refused.err;
  // m2 and m3 still take runs, and finish them.
  auto theirs = submit("m2", wf, 2);
  all_complete("m3", theirs);
  // Cut off from etcd too for a while, m1 loses its registration; its
  // partitions stay with it (only it is in sync: no unclean election).
  // Back on etcd, it registers again and the controller installs it again
  // at a new epoch, where it cannot resume their runs (nothing commits
  // below min_insync): it still refuses new runs, saying why.
  ASSERT_TRUE(lab->cut("m1", {"etcd"})) << lab->error();
  ASSERT_TRUE(wait_until(
    [&] {
      return troupe::test::contains(members["m1"].proc->err(),
                                    "lost its registration");
    },
    15s))
    << all_logs();
  ASSERT_TRUE(lab->heal("m1", {"etcd"})) << lab->error();
  ASSERT_TRUE(wait_until(
    [&] {
      return troupe::test::contains(all_logs(), "leader 'm1' registered "
                                                "again: installed again");
    },
    15s))
    << all_logs();
  auto refused_again = cli("m1", {"--wait-ready", "1s", "submit", wf});
  if (refused_again.exit_code == 0)
    runs.push_back(run_id(refused_again.out));
  EXPECT_EQ(refused_again.exit_code, 3)
    << refused_again.out << refused_again.err;
  EXPECT_TRUE(troupe::test::contains(refused_again.err, "min_insync"))
    << refused_again.err;
  auto healed_at = wall_ns();
  ASSERT_TRUE(lab->heal("m1")) << lab->error();
  // Below min_insync, m1 started no attempt (its runs waited for copies;
  // 300 ms for one started just before to write its line).
  for (auto& l : lines()) {
    auto at = std::stoll(l[4]);
    EXPECT_FALSE(l[3] == "m1" && at > shrunk_at + 300'000'000 && at < healed_at)
      << l[0] << " " << l[1] << " started on m1 below min_insync";
  }
  for (auto& id : theirs)
    runs.push_back(id);
  // Healed: the ISR grows back, m1's runs go on, nothing is lost or run
  // twice, and the copies agree.
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump() << all_logs();
  all_complete("m1", runs, 60s);
  each_node_once("m1", runs, 6);
  copies_agree({"m1", "m2", "m3"});
  auto later = cli("m1", {"submit", wf});
  EXPECT_EQ(later.exit_code, 0) << later.err;
  std::cerr << "the ISRs shrank "
            << std::chrono::duration<double>(shrunk_after).count()
            << " s after the cut\n";
}

TEST_F(Failover, JoiningMembersGetTheirReplicasThenTheirLeadershipsUnderLoad) {
  // Eight partitions, all made by m1 (it joins first, alone): without
  // rebalancing m1 would lead them all, and m4 would hold nothing, since
  // every partition already has its three replicas when it joins.
  extra_args = {"--set", "cluster.partitions=8"};
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until(
    [&] {
      return balanced("m1", {"m1", "m2", "m3"}, 8);
    },
    30s))
    << partitions("m1").dump(1) << all_logs();
  // Load on every member's partitions, m3's in particular: m4 is to take
  // the lead of one of them.
  auto wf = chain(6, "0.4");
  auto runs = submit("m3", wf, 4);
  for (auto name : {"m1", "m2"})
    for (auto& id : submit(name, wf, 2))
      runs.push_back(id);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 6; }, 20s))
    << all_logs();
  auto joined_at = std::chrono::steady_clock::now();
  join("m4");
  if (HasFatalFailure())
    return;
  // More load while partitions move: submissions through m3, whose
  // partitions move, until every partition is where it belongs (at most
  // 40).
  int refusals = 0;
  std::atomic<bool> done{false};
  std::vector<std::string> during;
  std::thread load{[&] {
    for (int i = 0; i < 40 && !done.load(); ++i)
      for (auto& id : submit_retrying("m3", wf, 1, refusals))
        during.push_back(id);
  }};
  std::vector<std::string> four{"m1", "m2", "m3", "m4"};
  bool there = wait_until([&] { return balanced("m2", four, 8); }, 40s);
  done = true;
  load.join();
  ASSERT_TRUE(there) << partitions("m2").dump(1) << all_logs();
  runs.insert(runs.end(), during.begin(), during.end());
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - joined_at);
  // m4 leads the partitions it ranks first in and holds a replica of those
  // whose first three it is in, as every member sees it.
  size_t leads = 0, holds = 0;
  for (uint32_t p = 0; p < 8; ++p) {
    auto t = troupe::cluster::partition_map::rank(four, p);
    leads += t[0] == "m4";
    holds += t[0] == "m4" || t[1] == "m4" || t[2] == "m4";
  }
  ASSERT_GE(leads, 1u);
  ASSERT_GE(holds, 2u);
  auto mine = [&](const json& body, const char* field) {
    size_t n = 0;
    for (auto& p : body.value("partitions", json::array()))
      if (field == std::string{"leader"})
        n += p.value("leader", "") == "m4";
      else
        for (auto& m : p.value(field, json::array()))
          n += m == "m4";
    return n;
  };
  for (auto& name : four) {
    auto body = partitions(name);
    EXPECT_EQ(mine(body, "leader"), leads) << name << body.dump(1);
    EXPECT_EQ(mine(body, "replicas"), holds) << name << body.dump(1);
  }
  EXPECT_EQ(partitions("m4").value("partitions", json::array()).size(), 8u);
  // Step by step, through the controller's records: a replica added, then
  // leadership moved, then the replica no longer wanted removed.
  auto logs = all_logs();
  EXPECT_TRUE(troupe::test::contains(logs, "rebalance: replica 'm4' added"))
    << logs;
  EXPECT_TRUE(
    troupe::test::contains(logs, "to its preferred leader: 'm4' leads"))
    << logs;
  EXPECT_TRUE(troupe::test::contains(logs, "rebalance: replica 'm3' removed"))
    << logs;
  double moved = 0;
  for (auto& name : four)
    moved += metric(
      name, "troupe_partition_leader_moves_total{reason=\"rebalance\"}");
  EXPECT_GE(moved, static_cast<double>(leads));
  // Every run accepted finishes, no completed node ran again, and the
  // copies agree, m4's included.
  all_complete("m4", runs, 60s);
  each_node_once("m4", runs, 6);
  copies_agree(four);
  for (auto& name : four) {
    auto listed = cli_json(name, {"list", "--limit", "1000"});
    std::map<std::string, std::string> state_of;
    for (auto& r : listed.value("runs", json::array()))
      state_of[r.value("run_id", "")] = r.value("state", "");
    for (auto& id : runs)
      EXPECT_EQ(state_of[id], "completed") << name << " lists " << id;
  }
  std::cerr << "m4 joined: balanced " << took.count() << " ms later; it leads "
            << leads << " and holds " << holds << " of 8 partitions; "
            << during.size() << " run(s) submitted meanwhile, " << refusals
            << " refusal(s); " << moved
            << " leadership move(s) for balance in all\n";
}

TEST_F(Failover, AJoiningMemberCatchesUpFromSnapshotsWhereTheLogsWereTrimmed) {
  // Eight partitions, logs that keep one record below what every replica
  // holds: the new replicas rebalancing gives m4 lack trimmed records.
  extra_args = {"--set", "cluster.partitions=8", "--set",
                "cluster.log_retain_records=1"};
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until(
    [&] {
      return balanced("m1", {"m1", "m2", "m3"}, 8);
    },
    30s))
    << partitions("m1").dump(1) << all_logs();
  auto wf = chain(3, "0.1");
  std::vector<std::string> runs;
  for (auto name : {"m1", "m2", "m3"})
    for (auto& id : submit(name, wf, 3))
      runs.push_back(id);
  all_complete("m1", runs);
  join("m4");
  if (HasFatalFailure())
    return;
  std::vector<std::string> four{"m1", "m2", "m3", "m4"};
  ASSERT_TRUE(wait_until([&] { return balanced("m2", four, 8); }, 40s))
    << partitions("m2").dump(1) << all_logs();
  auto installed = metric("m4", "troupe_snapshots_installed_total");
  EXPECT_GE(installed, 1.0) << all_logs();
  std::cerr << "m4 installed " << installed << " snapshot(s)\n";
  // Runs go on, led by m4 where it leads, from the state it installed.
  for (auto& id : submit("m4", wf, 2))
    runs.push_back(id);
  all_complete("m4", runs, 60s);
  each_node_once("m4", runs, 3);
  copies_agree(four);
}
