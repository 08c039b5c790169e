// Replicated partitions with real members: a leader killed with SIGKILL in
// the middle of its runs, whose runs resume on the members that held
// copies of their journals, losing none and running no completed node
// again; the copies end identical. Then the same checks around a follower
// killed and restarted, both followers down (new runs refused), a leader
// stopped past its TTL, a drain and a rolling restart under load, a member
// back with a wiped disk, etcd losing its quorum, and members joining under
// load, who get their replicas and then their leaderships.

#include "cluster/membership/partition_map.hpp"
#include "tests/support/cluster_fixture.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;

namespace {

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Three members, R=3, min_insync 2.
struct Failover : troupe::test::cluster_fixture {
  /// A 3-member etcd, for the tests that take its quorum away (in place of
  /// the fixture's single etcd). A member: it outlives TearDown's stop of
  /// the members.
  std::unique_ptr<troupe::test::etcd_cluster> etcd3;
  Failover() {
    http = "127.0.0.1:0";
    replication = 3;
    min_insync = 2;
  }

  std::string run_id(const std::string& out) {
    std::smatch id;
    EXPECT_TRUE(
      std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
      << out;
    return id.empty() ? std::string{} : id[0].str();
  }

  /// A chain of `n` exec nodes, each appending "<run> <node> <attempt>
  /// <member> <ns>" to the ledger, then sleeping `nap` seconds.
  std::string chain(int n, const std::string& nap) {
    auto path = (dir.path() / "chain.yaml").string();
    std::ofstream out{path};
    out << "name: chain\nnodes:\n";
    for (int i = 0; i < n; ++i) {
      out << "  s" << i << ":\n    kind: exec\n";
      if (i > 0)
        out << "    after: [s" << i - 1 << "]\n";
      out << "    command: [\"sh\", \"-c\", \"echo $TROUPE_RUN_ID "
             "$TROUPE_NODE_ID $TROUPE_ATTEMPT $TROUPE_MEMBER $(date +%s%N) >> "
          << ledger << "; sleep " << nap << "\"]\n";
    }
    return path;
  }

  /// The ledger's lines: run, node, attempt, member, ns.
  std::vector<std::array<std::string, 5>> lines() { return ledger_lines<5>(); }

  json status(const std::string& via, const std::string& run) {
    return json::parse(cli(via, {"--json", "status", run}).out, nullptr, false);
  }

  json history(const std::string& via, const std::string& run) {
    auto h
      = json::parse(cli(via, {"--json", "history", run}).out, nullptr, false);
    return h.is_discarded() ? json::array() : h.value("events", json::array());
  }

  /// `troupe partitions --json` on `name`.
  json partitions(const std::string& name) {
    auto r = cli(name, {"--json", "partitions"},
                 troupe::runtime::auth::role::viewer);
    return json::parse(r.out, nullptr, false);
  }

  /// Submits `n` runs of `wf` through `via`; their ids.
  std::vector<std::string> submit(const std::string& via, const std::string& wf,
                                  int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      auto r = cli(via, {"submit", wf});
      EXPECT_EQ(r.exit_code, 0) << via << ": " << r.err;
      if (r.exit_code == 0)
        out.push_back(run_id(r.out));
    }
    return out;
  }

  /// Waits until every run in `runs` completed, asked through `via`.
  void all_complete(const std::string& via,
                    const std::vector<std::string>& runs,
                    std::chrono::seconds limit = 45s) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    for (auto& id : runs) {
      json s;
      EXPECT_TRUE(wait_until(
        [&] {
          s = status(via, id);
          return !s.is_discarded() && s.value("state", "") == "completed";
        },
        std::max<std::chrono::milliseconds>(
          std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now()),
          1s)))
        << id << ": " << s << all_logs();
    }
  }

  /// Each run in `runs` (workflows of `nodes` nodes) completed each node
  /// exactly once, and no node ran again after it completed (no ledger
  /// line of it started after its node_completed).
  void each_node_once(const std::string& via,
                      const std::vector<std::string>& runs, size_t nodes) {
    auto ledger = lines();
    for (auto& id : runs) {
      std::map<std::string, int> completed;
      std::map<std::string, int64_t> completed_at;
      for (auto& e : history(via, id))
        if (e.value("type", "") == "node_completed") {
          ++completed[e.value("node", "")];
          completed_at[e.value("node", "")] = e.value("at_ns", int64_t{0});
        }
      EXPECT_EQ(completed.size(), nodes) << id;
      for (auto& [node, n] : completed)
        EXPECT_EQ(n, 1) << id << " " << node;
      for (auto& l : ledger) {
        if (l[0] == id && completed_at.count(l[1])) {
          EXPECT_LT(std::stoll(l[4]), completed_at[l[1]])
            << id << " " << l[1] << " ran again after it completed";
        }
      }
    }
  }

  /// Whether every partition has a leader and `n` in-sync replicas, as
  /// `via` knows them.
  bool isr_full(const std::string& via, size_t n = 3) {
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions"))
      return false;
    auto& list = body["partitions"];
    if (list.empty())
      return false;
    for (auto& p : list)
      if (p.value("leader", "").empty()
          || p.value("isr", json::array()).size() != n)
        return false;
    return true;
  }

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

  /// Whether no partition is led by `who`, as `via` knows them.
  bool leads_none(const std::string& via, const std::string& who) {
    auto body = partitions(via);
    if (body.is_discarded() || !body.contains("partitions")
        || body["partitions"].empty())
      return false;
    for (auto& p : body["partitions"])
      if (p.value("leader", "") == who || p.value("leader", "").empty())
        return false;
    return true;
  }

  /// Waits until every pair of `names` holds the same copies.
  void copies_agree(const std::vector<std::string>& names,
                    std::chrono::seconds limit = 20s) {
    for (size_t i = 0; i + 1 < names.size(); ++i) {
      std::string why;
      EXPECT_TRUE(wait_until(
        [&] { return same_copies(names[i], names[i + 1], why); }, limit))
        << names[i] << " vs " << names[i + 1] << ": " << why;
    }
  }

  /// Restarts member `name` on its data dir and waits until every member
  /// is linked and every partition's ISR is whole again.
  void restart(const std::string& name) {
    join(name);
    if (HasFatalFailure())
      return;
    ASSERT_TRUE(wait_until([&] { return all_linked(); }, 30s)) << all_logs();
    ASSERT_TRUE(wait_until([&] { return isr_full(name); }, 30s))
      << partitions(name).dump() << all_logs();
  }

  /// Whether, for every partition both `a` and `b` replicate, they have
  /// applied the same records into the same journals (digests, asked
  /// through the control protocol).
  bool same_copies(const std::string& a, const std::string& b,
                   std::string& why) {
    auto da = digests(a);
    auto db = digests(b);
    size_t compared = 0;
    for (auto& [p, d] : da) {
      auto i = db.find(p);
      if (i == db.end())
        continue;
      ++compared;
      if (d != i->second) {
        why = "partition " + std::to_string(p) + ": " + a + " " + d.dump()
              + " vs " + b + " " + i->second.dump();
        return false;
      }
    }
    why = "compared " + std::to_string(compared) + " partition(s)";
    return compared > 0;
  }

  /// Each partition `name` replicates: what it applied.
  std::map<uint32_t, json> digests(const std::string& name) {
    std::map<uint32_t, json> out;
    auto body = json::parse(cli(name, {"--json", "partitions", "--digest"},
                                troupe::runtime::auth::role::viewer)
                              .out,
                            nullptr, false);
    if (body.is_discarded())
      return out;
    for (auto& p : body.value("partitions", json::array())) {
      auto replicas = p.value("replicas", json::array());
      bool mine = false;
      for (auto& r : replicas)
        mine = mine || r == name;
      if (mine && p.contains("digest"))
        out[p["partition"].get<uint32_t>()] = p["digest"];
    }
    return out;
  }
};

} // namespace

TEST_F(Failover, AKilledLeadersRunsResumeElsewhereLosingNothing) {
  linked({"m1", "m2", "m3"});
  // Runs submitted to m1 without a key go to partitions m1 leads.
  auto wf = chain(6, "0.3");
  std::vector<std::string> runs;
  for (int i = 0; i < 6; ++i) {
    auto r = cli("m1", {"submit", wf});
    ASSERT_EQ(r.exit_code, 0) << r.err << all_logs();
    runs.push_back(run_id(r.out));
  }
  // Mid-flight: some nodes done, most not.
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 9; }, 20s))
    << all_logs();
  auto killed_at = wall_ns();
  members["m1"].proc->signal(SIGKILL);
  members["m1"].proc->wait(5s);

  // Every run completes, found through m2 at their new leaders.
  for (auto& id : runs) {
    json s;
    EXPECT_TRUE(wait_until(
      [&] {
        s = status("m2", id);
        return !s.is_discarded() && s.value("state", "") == "completed";
      },
      30s))
      << id << ": " << s << all_logs();
  }
  // No completed node ran again: a node completed before the kill has no
  // ledger line after it, and each node completed exactly once.
  auto ledger = lines();
  for (auto& id : runs) {
    std::map<std::string, int> completed;
    std::map<std::string, int64_t> completed_at;
    for (auto& e : history("m2", id))
      if (e.value("type", "") == "node_completed") {
        ++completed[e.value("node", "")];
        completed_at[e.value("node", "")] = e.value("at_ns", int64_t{0});
      }
    EXPECT_EQ(completed.size(), 6u) << id;
    for (auto& [node, n] : completed)
      EXPECT_EQ(n, 1) << id << " " << node;
    for (auto& l : ledger) {
      if (l[0] == id && completed_at.count(l[1])
          && completed_at[l[1]] < killed_at) {
        EXPECT_LT(std::stoll(l[4]), killed_at)
          << id << " " << l[1] << " ran again after the kill";
      }
    }
  }
  // The copies of the two members left end identical.
  std::string why;
  EXPECT_TRUE(wait_until([&] { return same_copies("m2", "m3", why); }, 10s))
    << why;
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
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 4);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 4; }, 20s))
    << all_logs();
  // m3 follows every partition m1 leads (R=3 on three members).
  members["m3"].proc->signal(SIGKILL);
  members["m3"].proc->wait(5s);
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
  all_complete("m3", runs);
  each_node_once("m3", runs, 4);
  copies_agree({"m1", "m2", "m3"});
}

TEST_F(Failover, BothFollowersDownRefusesNewRunsAndLosesNoneAccepted) {
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 4);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 4; }, 20s))
    << all_logs();
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
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(5, "0.2");
  auto runs = submit("m1", wf, 5);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 5; }, 20s))
    << all_logs();
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
  all_complete("m1", runs);
  each_node_once("m1", runs, 5);
  copies_agree({"m1", "m2", "m3"});
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
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(5, "0.2");
  auto runs = submit("m1", wf, 4);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 4; }, 20s))
    << all_logs();
  auto drained = cli("m2", {"drain", "m1"});
  EXPECT_EQ(drained.exit_code, 0) << drained.out << drained.err << all_logs();
  auto code = members["m1"].proc->wait(60s);
  ASSERT_TRUE(code.has_value()) << all_logs();
  EXPECT_EQ(*code, 0) << members["m1"].proc->err();
  all_complete("m2", runs);
  each_node_once("m2", runs, 5);
  copies_agree({"m2", "m3"});
}

TEST_F(Failover, ARollingRestartUnderLoadLosesNothing) {
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
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
  all_complete("m1", runs);
  each_node_once("m1", runs, 4);
  copies_agree(names);
}

TEST_F(Failover, AMemberRejoiningWithAWipedDiskCatchesUpFromTheStream) {
  linked({"m1", "m2", "m3"});
  ASSERT_TRUE(wait_until([&] { return isr_full("m1"); }, 30s))
    << partitions("m1").dump();
  auto wf = chain(4, "0.2");
  auto runs = submit("m1", wf, 3);
  for (auto& id : submit("m2", wf, 2))
    runs.push_back(id);
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 4; }, 20s))
    << all_logs();
  members["m3"].proc->signal(SIGKILL);
  members["m3"].proc->wait(5s);
  std::filesystem::remove_all(dir.path() / "data-m3");
  for (auto& id : submit("m1", wf, 2))
    runs.push_back(id);
  restart("m3");
  if (HasFatalFailure())
    return;
  all_complete("m3", runs);
  each_node_once("m3", runs, 4);
  copies_agree({"m1", "m2", "m3"});
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
  ASSERT_TRUE(wait_until([&] { return lines().size() >= 4; }, 20s))
    << all_logs();
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
  all_complete("m1", runs, 60s);
  each_node_once("m1", runs, 6);
  copies_agree({"m1", "m2", "m3"});
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
