// The controller's moves for balance, decided from a view of the records
// and members alone (no etcd): a joining member is added as a replica,
// leads once it is in sync if it is the preferred leader, and the replica
// no longer wanted goes; at most a few partitions move at once; nothing
// moves while a member leaves or a partition is short of copies; a new
// controller goes on from the records where the last one stopped.

#include "cluster/membership/partition_map.hpp"
#include "cluster/membership/rebalance.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

namespace rb = troupe::cluster::rebalance;
using troupe::cluster::partition_map;

namespace {

std::set<std::string> as_set(const std::vector<std::string>& xs) {
  return {xs.begin(), xs.end()};
}

bool has(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

/// A partition at its target over `up`, led by its preferred leader.
rb::partition_view settled(uint32_t p, const std::vector<std::string>& up,
                           uint32_t r) {
  auto t = rb::target(up, p, r);
  return {p, t.front(), t, t};
}

/// A partition of `count` whose first-ranked member among `up` is `who`
/// (and, with `not_first`, whose first-ranked is not).
uint32_t ranked_first(const std::string& who,
                      const std::vector<std::string>& up, bool not_first,
                      uint32_t count = 64) {
  for (uint32_t p = 0; p < count; ++p)
    if ((partition_map::rank(up, p).front() == who) != not_first)
      return p;
  ADD_FAILURE() << "no partition found for " << who;
  return 0;
}

/// Carries out `s` on `v` as the controller's transaction would.
void apply(rb::partition_view& v, const rb::step& s) {
  switch (s.what) {
  case rb::action::add_replica: v.replicas.push_back(s.member); break;
  case rb::action::move_leader: v.leader = s.member; break;
  case rb::action::remove_replica:
    std::erase(v.replicas, s.member);
    std::erase(v.isr, s.member);
    break;
  default: break;
  }
}

/// The leaders' side: every up replica not in the ISR catches up and is
/// added.
void catch_up(std::vector<rb::partition_view>& ps, const rb::members_view& m) {
  for (auto& v : ps)
    for (auto& r : v.replicas)
      if (has(m.up, r) && !has(v.isr, r))
        v.isr.push_back(r);
}

} // namespace

TEST(Rebalance, TheTargetIsTheFirstRUpMembersByRank) {
  std::vector<std::string> up{"m1", "m2", "m3", "m4"};
  for (uint32_t p = 0; p < 16; ++p) {
    auto ranked = partition_map::rank(up, p);
    EXPECT_EQ(rb::target(up, p, 3),
              (std::vector<std::string>{ranked[0], ranked[1], ranked[2]}));
    EXPECT_EQ(rb::target(up, p, 7), ranked);
  }
  EXPECT_TRUE(rb::target({}, 0, 3).empty());
}

TEST(Rebalance, AJoinerIsAddedThenLeadsOnceInSyncThenTheExtraReplicaGoes) {
  std::vector<std::string> three{"m1", "m2", "m3"};
  rb::members_view m{{"m1", "m2", "m3", "m4"}, {}, 3};
  // A partition that ranks m4 first once it is up.
  auto p = ranked_first("m4", m.up, false);
  auto v = settled(p, three, 3);
  auto t = rb::target(m.up, p, 3);
  ASSERT_EQ(t.front(), "m4");
  EXPECT_FALSE(rb::moving(v, m));
  // 1. m4 is added, not in sync: R+1 replicas, moving.
  auto s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::add_replica);
  EXPECT_EQ(s.member, "m4");
  EXPECT_TRUE(s.starts);
  EXPECT_EQ(s.describe(), "adding replica 'm4'");
  apply(v, s);
  EXPECT_EQ(v.replicas.size(), 4u);
  EXPECT_TRUE(rb::moving(v, m));
  // 2. It catches up: nothing until its leader adds it to the ISR.
  s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::wait);
  EXPECT_EQ(s.member, "m4");
  EXPECT_EQ(s.describe(), "adding replica 'm4': catching up from the "
                          "leader's log");
  v.isr.push_back("m4");
  // 3. In sync, the preferred leader leads.
  s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::move_leader);
  EXPECT_EQ(s.member, "m4");
  EXPECT_FALSE(s.starts);
  apply(v, s);
  // 4. The replica not in the target goes, from the ISR too.
  s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::remove_replica);
  EXPECT_FALSE(has(t, s.member));
  EXPECT_FALSE(s.starts);
  apply(v, s);
  EXPECT_EQ(as_set(v.replicas), as_set(t));
  EXPECT_EQ(as_set(v.isr), as_set(t));
  EXPECT_EQ(v.leader, "m4");
  EXPECT_FALSE(rb::moving(v, m));
  // 5. There: nothing more, however often it is asked.
  EXPECT_EQ(rb::next_step(v, m).what, rb::action::none);
  EXPECT_TRUE(rb::plan({v}, m, 2).steps.empty());
}

TEST(Rebalance, AReplicaJoinsWithoutALeaderMoveWhenItIsNotPreferred) {
  std::vector<std::string> three{"m1", "m2", "m3"};
  rb::members_view m{{"m1", "m2", "m3", "m4"}, {}, 3};
  // m4 in the target, not first, and the leader stays.
  uint32_t p = 64;
  for (uint32_t q = 0; q < 64 && p == 64; ++q) {
    auto t = rb::target(m.up, q, 3);
    if (t.front() != "m4" && has(t, "m4"))
      p = q;
  }
  ASSERT_LT(p, 64u);
  auto v = settled(p, three, 3);
  auto leader = v.leader;
  ASSERT_EQ(leader, rb::target(m.up, p, 3).front());
  apply(v, rb::next_step(v, m));
  v.isr.push_back("m4");
  auto s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::remove_replica);
  EXPECT_NE(s.member, leader);
  apply(v, s);
  EXPECT_EQ(v.leader, leader);
  EXPECT_EQ(rb::next_step(v, m).what, rb::action::none);
  // A partition m4 is not a target of: untouched.
  for (uint32_t q = 0; q < 64; ++q)
    if (!has(rb::target(m.up, q, 3), "m4")) {
      EXPECT_EQ(rb::next_step(settled(q, three, 3), m).what, rb::action::none)
        << q;
    }
}

TEST(Rebalance, LeadershipGoesBackToAPreferredLeaderThatIsInSyncAgain) {
  // After a failover the preferred leader came back and caught up: its
  // replicas are right, its leader is not.
  rb::members_view m{{"a", "b", "c"}, {}, 3};
  auto v = settled(3, m.up, 3);
  auto preferred = v.leader;
  v.leader = v.replicas[1];
  auto s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::move_leader);
  EXPECT_EQ(s.member, preferred);
  EXPECT_TRUE(s.starts);
  // Not while it is out of the ISR (it is still catching up).
  std::erase(v.isr, preferred);
  EXPECT_EQ(rb::next_step(v, m).what, rb::action::wait);
}

TEST(Rebalance, NothingMovesWhileAMemberLeavesOrAPartitionIsShortOfCopies) {
  std::vector<std::string> three{"m1", "m2", "m3"};
  rb::members_view m{{"m1", "m2", "m3", "m4"}, {}, 3};
  auto p = ranked_first("m4", m.up, false);
  std::vector<rb::partition_view> ps{settled(p, three, 3)};
  auto q = ranked_first("m4", m.up, true);
  ps.push_back(settled(q, three, 3));
  EXPECT_EQ(rb::blocked(ps, m), "");
  EXPECT_FALSE(rb::plan(ps, m, 2).steps.empty());
  // A member leaving (a drain is under way).
  auto leaving = m;
  leaving.leaving = {"m5"};
  EXPECT_EQ(rb::blocked(ps, leaving), "member 'm5' is leaving");
  EXPECT_TRUE(rb::plan(ps, leaving, 2).steps.empty());
  EXPECT_EQ(rb::plan(ps, leaving, 2).blocked, "member 'm5' is leaving");
  // A partition whose ISR lacks a copy (a follower fell behind).
  auto short_of = ps;
  short_of[1].isr.pop_back();
  auto why = rb::blocked(short_of, m);
  EXPECT_NE(why.find("partition " + std::to_string(q)
                     + " has 2 in-sync replica(s) up of the 3"),
            std::string::npos)
    << why;
  EXPECT_TRUE(rb::plan(short_of, m, 2).steps.empty());
  // An in-sync replica down counts as missing.
  auto down = ps;
  down[1].isr = {down[1].leader, "gone"};
  EXPECT_NE(rb::blocked(down, m), "");
  // A partition whose leader is down (a failover is due).
  auto leaderless = ps;
  leaderless[1].leader = "gone";
  EXPECT_EQ(rb::blocked(leaderless, m),
            "partition " + std::to_string(q) + " has no leader up");
  // With one copy per partition there is nothing to move a partition to.
  rb::members_view one = m;
  one.replication = 1;
  EXPECT_NE(rb::blocked({settled(p, three, 1)}, one), "");
  // Off.
  EXPECT_EQ(rb::plan(ps, m, 0).blocked, "cluster.rebalance_concurrency is 0");
  EXPECT_TRUE(rb::plan(ps, m, 0).steps.empty());
}

TEST(Rebalance, AtMostConcurrencyPartitionsMoveAtOnce) {
  std::vector<std::string> three{"m1", "m2", "m3"};
  rb::members_view m{{"m1", "m2", "m3", "m4"}, {}, 3};
  std::vector<rb::partition_view> ps;
  for (uint32_t p = 0; p < 32; ++p)
    ps.push_back(settled(p, three, 3));
  size_t due = 0;
  for (auto& v : ps)
    due += rb::next_step(v, m).what != rb::action::none;
  ASSERT_GT(due, 4u);
  // Two start, in partition order.
  auto first = rb::plan(ps, m, 2);
  ASSERT_EQ(first.steps.size(), 2u);
  EXPECT_LT(first.steps[0].first, first.steps[1].first);
  for (auto& [p, s] : first.steps) {
    EXPECT_TRUE(s.starts);
    apply(ps[p], s);
  }
  // Both moving: nothing new starts, and the two wait for their replica.
  auto second = rb::plan(ps, m, 2);
  EXPECT_EQ(second.moving, 2u);
  EXPECT_TRUE(second.steps.empty());
  // A third may start with a limit of 3; a leadership moved a moment ago
  // counts too.
  EXPECT_EQ(rb::plan(ps, m, 3).steps.size(), 1u);
  uint32_t other = 31;
  while (other == first.steps[0].first || other == first.steps[1].first)
    --other;
  EXPECT_TRUE(rb::plan(ps, m, 3, {other}).steps.empty());
  // Steps of partitions already moving go on whatever the limit.
  catch_up(ps, m);
  auto third = rb::plan(ps, m, 2);
  ASSERT_EQ(third.steps.size(), 2u);
  for (auto& [p, s] : third.steps)
    EXPECT_FALSE(s.starts) << p;
}

TEST(Rebalance, ANewControllerGoesOnFromTheRecordsAndTheWholeMoveConverges) {
  // 32 partitions at their targets over three members; a fourth joins.
  // Each round is a pass of a controller that knows only the records (a
  // new one every other round: no memory carried over), after which the
  // leaders add the replicas that caught up.
  std::vector<std::string> three{"m1", "m2", "m3"};
  rb::members_view m{{"m1", "m2", "m3", "m4"}, {}, 3};
  std::vector<rb::partition_view> ps;
  for (uint32_t p = 0; p < 32; ++p)
    ps.push_back(settled(p, three, 3));
  int rounds = 0;
  for (; rounds < 200; ++rounds) {
    auto planned = rb::plan(ps, m, 2);
    if (planned.steps.empty() && planned.moving == 0)
      break;
    for (auto& [p, s] : planned.steps)
      apply(ps[p], s);
    size_t moving = 0;
    for (auto& v : ps) {
      moving += rb::moving(v, m);
      // Never more than R+1 replicas, never fewer than R in sync, and the
      // leader always among them.
      EXPECT_LE(v.replicas.size(), 4u) << v.partition;
      EXPECT_GE(v.isr.size(), 3u) << v.partition;
      EXPECT_TRUE(has(v.isr, v.leader)) << v.partition;
    }
    EXPECT_LE(moving, 2u) << "round " << rounds;
    if (rounds % 2 == 1)
      catch_up(ps, m);
  }
  EXPECT_LT(rounds, 200);
  std::map<std::string, int> leads, holds;
  for (auto& v : ps) {
    auto t = rb::target(m.up, v.partition, 3);
    EXPECT_EQ(v.leader, t.front()) << v.partition;
    EXPECT_EQ(as_set(v.replicas), as_set(t)) << v.partition;
    EXPECT_EQ(as_set(v.isr), as_set(t)) << v.partition;
    ++leads[v.leader];
    for (auto& r : v.replicas)
      ++holds[r];
  }
  // The joiner leads and holds its share (a quarter, three quarters).
  EXPECT_GE(leads["m4"], 4);
  EXPECT_GE(holds["m4"], 16);
  std::cout << "converged in " << rounds << " passes; m4 leads " << leads["m4"]
            << " and holds " << holds["m4"] << " of 32\n";
}

TEST(Rebalance, FewerMembersThanRGrowNotMoveButLeadershipStillGoesHome) {
  // Two members, R=3: every partition has both. A third joins: growing to
  // R is the controller's other rule, not a move for balance; once it is
  // in sync, leadership of the partitions it ranks first in goes to it.
  rb::members_view m{{"a", "b", "c"}, {}, 3};
  auto p = ranked_first("c", m.up, false);
  auto v = settled(p, {"a", "b"}, 3);
  EXPECT_EQ(rb::next_step(v, m).what, rb::action::none);
  EXPECT_NE(rb::blocked({v}, m), "");
  v.replicas.push_back("c");
  v.isr.push_back("c");
  EXPECT_EQ(rb::blocked({v}, m), "");
  auto s = rb::next_step(v, m);
  EXPECT_EQ(s.what, rb::action::move_leader);
  EXPECT_EQ(s.member, "c");
}
