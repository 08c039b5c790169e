// Partition records and the controller through a real etcd, in one process:
// each "member" is an etcd_coordinator (its registration and lease) and a
// partition_map. Records are made on first use by rendezvous hashing; one
// member is the controller and another takes over when it dies; a leader
// whose key goes fails over to an in-sync replica at the transaction's
// revision, never to one outside the ISR; stale ISR changes are refused; a
// leaving member is replaced step by step; part 1's claims become records;
// a joining member gets its replicas and leaderships step by step, a few
// partitions at a time.

#include "cluster/etcd/client.hpp"
#include "cluster/membership/etcd_coordinator.hpp"
#include "cluster/membership/partition_map.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace std::chrono_literals;
using troupe::cluster::etcd_coordinator;
using troupe::cluster::isr_result;
using troupe::cluster::join_failure;
using troupe::cluster::membership_options;
using troupe::cluster::partition_map;
using troupe::cluster::partition_map_options;
using troupe::cluster::partition_record;
using troupe::test::wait_until;

namespace {

bool has(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

/// wait_until with a 1 ms poll, for timings.
bool poll_until(const std::function<bool()>& pred,
                std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return pred();
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

std::set<std::string> as_set(const std::vector<std::string>& xs) {
  return {xs.begin(), xs.end()};
}

/// A member: its registration, and its partition map once started.
struct member {
  std::unique_ptr<etcd_coordinator> coord;
  std::unique_ptr<partition_map> map;
  std::mutex mtx;
  /// What its change callback was told, in order.
  std::vector<partition_record> told;

  /// Gone: the map stops and the lease is revoked (its key deleted), as a
  /// member that dies and whose lease ends.
  void kill() {
    if (map)
      map->stop();
    if (coord)
      coord->leave();
  }
};

struct PartitionMap : ::testing::Test {
  troupe::test::etcd_process etcd;
  std::map<std::string, std::unique_ptr<member>> members;
  uint32_t count = 16;
  uint32_t replication = 3;
  /// cluster.rebalance_concurrency: off unless a test turns it on, so that
  /// the other tests see the other rules alone.
  uint32_t rebalance = 0;

  void SetUp() override { ASSERT_TRUE(etcd.ok()) << etcd.error(); }

  void TearDown() override {
    for (auto& [name, m] : members)
      m->kill();
  }

  troupe::cluster::etcd::client_options etcd_opts() {
    troupe::cluster::etcd::client_options o;
    o.endpoints = {etcd.url()};
    o.request_timeout = 500ms;
    o.call_timeout = 1500ms;
    return o;
  }

  membership_options registration(const std::string& name) {
    membership_options o;
    o.cluster = "c1";
    o.self.name = name;
    o.self.control_address = "127.0.0.1:7400";
    o.self.version = "test";
    o.etcd = etcd_opts();
    o.lease_ttl = std::chrono::seconds{2};
    return o;
  }

  partition_map_options map_opts(member& m, const std::string& name) {
    partition_map_options o;
    o.cluster = "c1";
    o.member = name;
    o.count = count;
    o.replication = replication;
    o.rebalance_concurrency = rebalance;
    o.home = 0;
    o.etcd = etcd_opts();
    o.tick = 50ms;
    auto* c = m.coord.get();
    o.lease = [c] { return c->lease_id(); };
    o.on_change = [&m](const partition_record& r) {
      std::lock_guard guard{m.mtx};
      m.told.push_back(r);
    };
    return o;
  }

  /// Registers `name` (without a map).
  member& join(const std::string& name) {
    auto m = std::make_unique<member>();
    m->coord = std::make_unique<etcd_coordinator>(registration(name));
    auto failed = m->coord->join();
    EXPECT_FALSE(failed) << failed.message;
    auto& out = *m;
    members[name] = std::move(m);
    return out;
  }

  /// Starts `name`'s map, after `tweak`.
  partition_map& start(const std::string& name,
                       std::function<void(partition_map_options&)> tweak = {}) {
    auto& m = *members.at(name);
    auto o = map_opts(m, name);
    if (tweak)
      tweak(o);
    m.map = std::make_unique<partition_map>(o);
    auto why = m.map->start();
    EXPECT_EQ(why, "");
    return *m.map;
  }

  partition_map& map(const std::string& name) { return *members.at(name)->map; }

  /// The controller as every running map sees it, once they agree and
  /// exactly one says it is; "" otherwise.
  std::string one_controller() {
    std::string who;
    int holders = 0;
    for (auto& [name, m] : members) {
      if (!m->map || !m->coord->self().joined)
        continue;
      if (m->map->is_controller()) {
        ++holders;
        who = name;
      }
    }
    if (holders != 1)
      return {};
    for (auto& [name, m] : members)
      if (m->map && m->coord->self().joined && m->map->controller() != who)
        return {};
    return who;
  }

  /// Registers `names`, starts the map of `controller` first and waits
  /// until it is the controller, then starts the others' maps in order.
  void controlled_by(const std::string& controller,
                     const std::vector<std::string>& names) {
    for (auto& name : names)
      join(name);
    start(controller);
    ASSERT_TRUE(
      wait_until([&] { return map(controller).is_controller(); }, 5s));
    for (auto& name : names)
      if (name != controller)
        start(name);
  }

  /// The first partition whose ranking of `up` (rendezvous order) `fits`.
  uint32_t
  ranked(const std::vector<std::string>& up,
         const std::function<bool(const std::vector<std::string>&)>& fits) {
    for (uint32_t p = 0; p < count; ++p)
      if (fits(partition_map::rank(up, p)))
        return p;
    ADD_FAILURE() << "no partition of " << count << " ranks as wanted";
    return 0;
  }

  /// A partition whose first-ranked member among `up` is `leader`.
  uint32_t led_by(const std::string& leader,
                  const std::vector<std::string>& up) {
    return ranked(up, [&](auto& r) { return r.front() == leader; });
  }

  /// The leader key's mod_revision and the state key's, as etcd has them.
  std::pair<int64_t, int64_t> revisions(uint32_t p) {
    troupe::cluster::etcd::client c{etcd_opts()};
    auto l = c.get(partition_map::leader_key("c1", p));
    auto s = c.get(partition_map::state_key("c1", p));
    EXPECT_TRUE(l && l->has_value() && s && s->has_value());
    return {l && *l ? (*l)->mod_revision : 0, s && *s ? (*s)->mod_revision : 0};
  }
};

} // namespace

TEST(Rendezvous, ScoresAndRanksArePinned) {
  // The hash decides where every partition's replicas live: a change would
  // move them on upgrade. These values must never change.
  EXPECT_EQ(partition_map::rendezvous_score("m1", 0), 18046396740011457056ULL);
  EXPECT_EQ(partition_map::rendezvous_score("m2", 0), 5695778142502080606ULL);
  EXPECT_EQ(partition_map::rendezvous_score("m1", 63), 12167582823701784630ULL);
  EXPECT_EQ(partition_map::rendezvous_score("", 255), 444956220089979950ULL);
  EXPECT_EQ(partition_map::rank({"m1", "m2", "m3"}, 0),
            (std::vector<std::string>{"m1", "m2", "m3"}));
  EXPECT_EQ(partition_map::rank({"m1", "m2", "m3"}, 1),
            (std::vector<std::string>{"m3", "m2", "m1"}));
  EXPECT_EQ(partition_map::rank({"m3", "m1", "m2"}, 1),
            partition_map::rank({"m1", "m2", "m3"}, 1));
}

TEST_F(PartitionMap, FirstUseMakesTheTopRankedLeaderWithRReplicasInSync) {
  count = 64;
  for (auto name : {"a", "b", "c", "d"})
    join(name);
  for (auto name : {"a", "b", "c", "d"})
    start(name);
  std::vector<std::string> up{"a", "b", "c", "d"};
  std::map<std::string, int> leads;
  for (uint32_t p = 0; p < count; ++p) {
    auto leader = map("a").claim(p);
    auto ranked = partition_map::rank(up, p);
    EXPECT_EQ(leader, ranked[0]) << p;
    auto r = map("a").record(p);
    ASSERT_TRUE(r.exists()) << p;
    EXPECT_EQ(r.leader, ranked[0]);
    EXPECT_EQ(r.replicas,
              (std::vector<std::string>{ranked[0], ranked[1], ranked[2]}))
      << p;
    EXPECT_EQ(r.isr, r.replicas) << p;
    // The epoch is the revision of the transaction that installed the
    // leader: the leader key's mod_revision, and the state's (one txn).
    auto [leader_rev, state_rev] = revisions(p);
    EXPECT_EQ(r.epoch, static_cast<uint64_t>(leader_rev)) << p;
    EXPECT_EQ(leader_rev, state_rev) << p;
    ++leads[leader];
  }
  // Leaders spread over every member.
  EXPECT_EQ(leads.size(), 4u);
  for (auto& [name, n] : leads)
    EXPECT_GE(n, 8) << name;
  // Every member sees every record, and a second claim changes nothing.
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto name : {"b", "c", "d"})
        if (map(name).records() != map("a").records())
          return false;
      return true;
    },
    5s));
  EXPECT_EQ(map("c").claim(5), map("a").record(5).leader);
  EXPECT_EQ(map("c").record(5).epoch, map("a").record(5).epoch);
  size_t total = 0;
  for (auto name : {"a", "b", "c", "d"})
    total += map(name).leaders_of(name).size();
  EXPECT_EQ(total, count);
  EXPECT_EQ(map("b").led(), map("a").leaders_of("b"));
  // Each record was told to every member's callback.
  EXPECT_TRUE(wait_until(
    [&] {
      std::lock_guard guard{members["d"]->mtx};
      std::set<uint32_t> told;
      for (auto& r : members["d"]->told)
        if (r.exists())
          told.insert(r.partition);
      return told.size() == count;
    },
    5s));
}

TEST_F(PartitionMap, ExactlyOneControllerAndAnotherTakesOverWhenItDies) {
  for (auto name : {"a", "b", "c"})
    join(name);
  for (auto name : {"a", "b", "c"})
    start(name);
  std::string first;
  ASSERT_TRUE(wait_until(
    [&] {
      first = one_controller();
      return !first.empty();
    },
    5s));
  // It stays one.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(one_controller(), first);
  members[first]->kill();
  std::string second;
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(wait_until(
    [&] {
      second = one_controller();
      return !second.empty() && second != first;
    },
    5s));
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - t0);
  std::cout << "controller takeover after its lease was revoked: "
            << took.count() << " ms\n";
  EXPECT_NE(second, first);
}

TEST_F(PartitionMap, ALeaderWhoseKeyGoesFailsOverToAnInSyncReplica) {
  // c is the controller (started first); b leads p.
  ASSERT_NO_FATAL_FAILURE(controlled_by("c", {"a", "b", "c"}));
  auto p = led_by("b", {"a", "b", "c"});
  ASSERT_EQ(map("a").claim(p), "b");
  auto before = map("a").record(p);
  ASSERT_EQ(before.isr.size(), 3u);
  {
    std::lock_guard guard{members["a"]->mtx};
    members["a"]->told.clear();
  }
  // b dies: its lease is revoked, its key deleted.
  auto t0 = std::chrono::steady_clock::now();
  members["b"]->kill();
  ASSERT_TRUE(poll_until([&] { return map("a").record(p).leader != "b"; }, 5s));
  auto took = std::chrono::duration_cast<std::chrono::microseconds>(
    std::chrono::steady_clock::now() - t0);
  std::cout << "failover: lease revoked -> new leader seen by another member: "
            << took.count() / 1000.0 << " ms\n";
  auto after = map("a").record(p);
  // The first ISR member up in rank order leads; the ISR is the old one
  // without the old leader; the replicas stay (b's copy is still assigned).
  std::string expected;
  for (auto& m : partition_map::rank({"a", "b", "c"}, p))
    if (m != "b") {
      expected = m;
      break;
    }
  EXPECT_EQ(after.leader, expected);
  auto isr = before.isr;
  isr.erase(std::find(isr.begin(), isr.end(), "b"));
  EXPECT_EQ(after.isr, isr);
  EXPECT_EQ(after.replicas, before.replicas);
  EXPECT_GT(after.epoch, before.epoch);
  auto [leader_rev, state_rev] = revisions(p);
  EXPECT_EQ(after.epoch, static_cast<uint64_t>(leader_rev));
  EXPECT_EQ(leader_rev, state_rev);
  EXPECT_EQ(map("a").unavailable(p), "");
  // When the old leader was seen gone, for the failover's duration.
  EXPECT_GT(after.failover_since_ms, troupe::cluster::now_ms() - 10'000);
  EXPECT_LE(after.failover_since_ms, troupe::cluster::now_ms());
  // a's callback was told of it.
  EXPECT_TRUE(wait_until(
    [&] {
      std::lock_guard guard{members["a"]->mtx};
      for (auto& r : members["a"]->told)
        if (r.partition == p && r.leader == expected && r.epoch == after.epoch)
          return true;
      return false;
    },
    5s));
}

TEST_F(PartitionMap, NoUncleanElectionWhenTheWholeIsrIsGoneUntilOneReturns) {
  replication = 2;
  ASSERT_NO_FATAL_FAILURE(controlled_by("c", {"a", "b", "c"}));
  // A partition a leads with b as its other replica.
  auto p = ranked({"a", "b", "c"},
                  [](auto& r) { return r[0] == "a" && r[1] == "b"; });
  ASSERT_EQ(map("a").claim(p), "a");
  auto r = map("a").record(p);
  ASSERT_EQ(r.isr, (std::vector<std::string>{"a", "b"}));
  // b fell behind: a drops it from the ISR.
  auto shrunk = map("a").shrink_isr(p, r.epoch, "b", "lag 2.5s");
  ASSERT_TRUE(shrunk.took()) << shrunk.why;
  r = map("a").record(p);
  EXPECT_EQ(r.isr, (std::vector<std::string>{"a"}));
  EXPECT_EQ(r.replicas, (std::vector<std::string>{"a", "b"}));
  // a dies: b is up but not in sync, so nobody leads.
  members["a"]->kill();
  ASSERT_TRUE(wait_until([&] { return !map("b").unavailable(p).empty(); }, 5s));
  EXPECT_NE(map("b").unavailable(p).find("no in-sync replica is up"),
            std::string::npos)
    << map("b").unavailable(p);
  std::this_thread::sleep_for(1500ms);
  auto still = map("b").record(p);
  EXPECT_EQ(still.leader, "a");
  EXPECT_EQ(still.epoch, r.epoch);
  EXPECT_EQ(still.isr, r.isr);
  EXPECT_EQ(map("c").availability().count(p), 1u);
  // b never leads p, though it is a replica and up.
  EXPECT_EQ(map("b").leader(p), "a");

  // a comes back (a new incarnation): it leads again, at a new epoch.
  join("a");
  start("a");
  ASSERT_TRUE(
    wait_until([&] { return map("b").record(p).epoch > r.epoch; }, 5s));
  auto back = map("b").record(p);
  EXPECT_EQ(back.leader, "a");
  EXPECT_EQ(back.isr, (std::vector<std::string>{"a"}));
  EXPECT_EQ(back.epoch, static_cast<uint64_t>(revisions(p).first));
  EXPECT_EQ(map("b").unavailable(p), "");
  EXPECT_TRUE(map("c").availability().empty());
}

TEST_F(PartitionMap,
       ARegisteredAgainLeaderWithoutALinkIsReplacedByAnInSyncFollower) {
  // c alone runs a map (the controller); a and b are registered. b leads p.
  // The controller asks `unlinked` which members it has no mesh link to.
  auto unlinked = std::make_shared<std::set<std::string>>();
  auto unlinked_mtx = std::make_shared<std::mutex>();
  auto linked = [&](partition_map_options& o) {
    o.linked = [unlinked, unlinked_mtx](const std::string& name) {
      std::lock_guard guard{*unlinked_mtx};
      return unlinked->count(name) == 0;
    };
  };
  join("a");
  join("b");
  join("c");
  start("c", linked);
  ASSERT_TRUE(wait_until([&] { return map("c").is_controller(); }, 5s));
  auto p = led_by("b", {"a", "b", "c"});
  ASSERT_EQ(map("c").claim(p), "b");
  auto first = map("c").record(p);
  ASSERT_EQ(first.isr.size(), 3u);

  // b registers again (a new incarnation) while no controller looks, so
  // that it is never seen gone; `then` sets what the controller is linked
  // to, and the controller starts again.
  auto reregister_b = [&](const std::function<void()>& then) {
    map("c").stop();
    members["b"]->coord->leave();
    join("b");
    then();
    start("c", linked);
  };

  // Linked to b (after an etcd outage, say): b is installed again, at a
  // new epoch, and keeps its lead.
  reregister_b([] {});
  ASSERT_TRUE(
    wait_until([&] { return map("c").record(p).epoch > first.epoch; }, 5s));
  auto again = map("c").record(p);
  EXPECT_EQ(again.leader, "b");
  EXPECT_EQ(again.isr, first.isr);

  // No link to b (cut off from its peers): the first in-sync follower up
  // in rank order leads instead, and b is out of the ISR until it has
  // caught up.
  reregister_b([&] {
    std::lock_guard guard{*unlinked_mtx};
    unlinked->insert("b");
  });
  ASSERT_TRUE(
    wait_until([&] { return map("c").record(p).epoch > again.epoch; }, 5s));
  auto moved = map("c").record(p);
  std::string expected;
  for (auto& m : partition_map::rank({"a", "b", "c"}, p))
    if (m != "b") {
      expected = m;
      break;
    }
  EXPECT_EQ(moved.leader, expected) << moved.note;
  auto isr = again.isr;
  isr.erase(std::find(isr.begin(), isr.end(), "b"));
  EXPECT_EQ(moved.isr, isr);
  EXPECT_EQ(moved.replicas, again.replicas);
  EXPECT_EQ(moved.epoch, static_cast<uint64_t>(revisions(p).first));
  EXPECT_NE(moved.note.find("no link"), std::string::npos) << moved.note;
}

TEST_F(PartitionMap, StaleIsrChangesAreRefused) {
  ASSERT_NO_FATAL_FAILURE(controlled_by("c", {"a", "b", "c"}));
  auto p = led_by("a", {"a", "b", "c"});
  ASSERT_EQ(map("a").claim(p), "a");
  auto r = map("a").record(p);
  auto other = r.isr[1] == "a" ? r.isr[2] : r.isr[1];
  ASSERT_TRUE(wait_until([&] { return map(other).record(p) == r; }, 5s));
  // Only the leader changes the ISR.
  EXPECT_EQ(map(other).shrink_isr(p, r.epoch, "a", "x").what,
            isr_result::kind::not_leader);
  // An epoch that is not the record's.
  auto old = map("a").shrink_isr(p, r.epoch - 1, other, "lag");
  EXPECT_EQ(old.what, isr_result::kind::stale_epoch) << old.why;
  // The leader cannot drop itself; a member not in the ISR cannot go.
  EXPECT_EQ(map("a").shrink_isr(p, r.epoch, "a", "x").what,
            isr_result::kind::refused);
  EXPECT_EQ(map("a").expand_isr(p, r.epoch, other).what,
            isr_result::kind::refused);
  // A state revision that changed since.
  auto shrunk = map("a").shrink_isr(p, r.epoch, other, "lag 3s");
  ASSERT_TRUE(shrunk.took()) << shrunk.why;
  auto now = map("a").record(p);
  EXPECT_EQ(now.epoch, r.epoch);
  EXPECT_GT(now.state_revision, r.state_revision);
  EXPECT_NE(now.note.find("lag 3s"), std::string::npos) << now.note;
  auto stale = map("a").expand_isr(p, r.epoch, other, r.state_revision);
  EXPECT_EQ(stale.what, isr_result::kind::stale_state) << stale.why;
  EXPECT_EQ(map("a").record(p).isr, now.isr);
  // With the current revision it takes.
  auto grown = map("a").expand_isr(p, r.epoch, other, now.state_revision);
  ASSERT_TRUE(grown.took()) << grown.why;
  EXPECT_TRUE(has(map("a").record(p).isr, other));
  // A deposed leader's change is refused: a fails over to another member,
  // and its old epoch no longer counts (checked by etcd, not only by its
  // view: b's map, behind on nothing, is asked with a's old epoch).
  members["a"]->kill();
  ASSERT_TRUE(
    wait_until([&] { return map("b").record(p).epoch > r.epoch; }, 5s));
  auto next = map("b").record(p);
  auto& leader = map(next.leader);
  ASSERT_TRUE(
    wait_until([&] { return leader.record(p).epoch == next.epoch; }, 5s));
  auto follower = next.isr[0] == next.leader ? next.isr[1] : next.isr[0];
  EXPECT_EQ(leader.shrink_isr(p, r.epoch, follower, "x").what,
            isr_result::kind::stale_epoch);
  EXPECT_TRUE(leader.shrink_isr(p, next.epoch, follower, "x").took());
}

TEST_F(PartitionMap, ALeavingMemberIsReplacedStepByStep) {
  ASSERT_NO_FATAL_FAILURE(controlled_by("a", {"a", "b", "c"}));
  // c leads p, with a and b.
  auto p = led_by("c", {"a", "b", "c"});
  ASSERT_EQ(map("a").claim(p), "c");
  auto r = map("a").record(p);
  ASSERT_EQ(as_set(r.replicas), (std::set<std::string>{"a", "b", "c"}));
  join("d");
  start("d");
  // R replicas are up: nothing moves.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(map("a").record(p), r);
  ASSERT_TRUE(members["c"]->coord->mark_leaving());
  // The replacement first joins the replicas (not the ISR), and c hands
  // leadership to an ISR member that is up; c stays until d is in sync.
  ASSERT_TRUE(wait_until(
    [&] {
      auto x = map("a").record(p);
      return has(x.replicas, "d") && x.leader != "c";
    },
    5s))
    << map("a").record(p).note;
  auto moved = map("a").record(p);
  EXPECT_FALSE(has(moved.isr, "d"));
  EXPECT_TRUE(moved.leader == "a" || moved.leader == "b") << moved.leader;
  EXPECT_GT(moved.epoch, r.epoch);
  std::this_thread::sleep_for(500ms);
  moved = map("a").record(p);
  EXPECT_TRUE(has(moved.replicas, "c"));
  EXPECT_TRUE(has(moved.isr, "c"));
  // d caught up: its leader adds it to the ISR, and c goes.
  auto grown = map(moved.leader).expand_isr(p, moved.epoch, "d");
  ASSERT_TRUE(grown.took()) << grown.why;
  ASSERT_TRUE(
    wait_until([&] { return !has(map("a").record(p).replicas, "c"); }, 5s));
  auto done = map("a").record(p);
  EXPECT_EQ(as_set(done.replicas), (std::set<std::string>{"a", "b", "d"}));
  EXPECT_EQ(as_set(done.isr), (std::set<std::string>{"a", "b", "d"}));
  EXPECT_EQ(done.leader, moved.leader);
  EXPECT_EQ(done.epoch, moved.epoch);
}

TEST_F(PartitionMap, ADownReplicaStaysAndIsReplacedThenTrimmedOnceRAreInSync) {
  // d is the controller; p ranks a first and d last.
  ASSERT_NO_FATAL_FAILURE(controlled_by("d", {"a", "b", "c", "d"}));
  auto p = ranked({"a", "b", "c", "d"},
                  [](auto& r) { return r[3] == "d" && r[0] == "a"; });
  ASSERT_EQ(map("a").claim(p), "a");
  auto r = map("a").record(p);
  ASSERT_EQ(as_set(r.replicas), (std::set<std::string>{"a", "b", "c"}));
  auto victim = r.replicas[1] == "a" ? r.replicas[2] : r.replicas[1];
  // Its key gone, the controller drops it from the ISR at once, without
  // waiting for the leader to find it behind.
  members[victim]->kill();
  ASSERT_TRUE(
    wait_until([&] { return !has(map("a").record(p).isr, victim); }, 5s));
  EXPECT_EQ(map("a").record(p).leader, "a");
  // d replaces it as a replica; the down one stays assigned meanwhile.
  ASSERT_TRUE(
    wait_until([&] { return has(map("a").record(p).replicas, "d"); }, 5s));
  auto x = map("a").record(p);
  EXPECT_TRUE(has(x.replicas, victim));
  EXPECT_EQ(x.leader, "a");
  EXPECT_EQ(x.epoch, r.epoch);
  // Once d is in sync, R are: the down one goes.
  ASSERT_TRUE(map("a").expand_isr(p, r.epoch, "d").took());
  ASSERT_TRUE(
    wait_until([&] { return !has(map("a").record(p).replicas, victim); }, 5s));
  EXPECT_EQ(map("a").record(p).replicas.size(), 3u);
}

TEST_F(PartitionMap, PartOnesClaimsBecomeRecordsLedByTheirClaimant) {
  troupe::cluster::etcd::client c{etcd_opts()};
  auto claim = [&](uint32_t p, const std::string& who) {
    ASSERT_TRUE(
      c.put(partition_map::claim_key("c1", p),
            nlohmann::json{{"member", who}, {"claimed_at_ms", 1}}.dump()));
  };
  claim(3, "old");
  claim(5, "a");
  join("a");
  start("a");
  auto r3 = map("a").record(3);
  EXPECT_EQ(r3.leader, "old");
  EXPECT_EQ(r3.isr, (std::vector<std::string>{"old"}));
  EXPECT_EQ(r3.replicas, (std::vector<std::string>{"old"}));
  EXPECT_EQ(map("a").record(5).leader, "a");
  EXPECT_EQ(map("a").led(), (std::vector<uint32_t>{5}));
  // The claims are gone.
  auto left = c.range_prefix("/troupe/c1/partitions/");
  ASSERT_TRUE(left);
  EXPECT_TRUE(left->kvs.empty());
  // "old" is not up, and its partition waits for it (its only copy).
  ASSERT_TRUE(wait_until([&] { return map("a").is_controller(); }, 5s));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(map("a").record(3).leader, "old");
  EXPECT_NE(map("a").unavailable(3).find("its leader 'old' is down"),
            std::string::npos)
    << map("a").unavailable(3);
}

TEST_F(PartitionMap, PartitionsOfRunsInTheStoreAreLedByTheMember) {
  join("a");
  start("a", [](auto& o) { o.held = {7, 9}; });
  EXPECT_EQ(map("a").led(), (std::vector<uint32_t>{7, 9}));
  EXPECT_EQ(map("a").record(7).replicas, (std::vector<std::string>{"a"}));
  // Held partitions another member leads are not taken from it.
  std::vector<std::string> warned;
  join("b");
  start("b", [&](auto& o) {
    o.held = {9};
    o.warn = [&](const std::string& line) { warned.push_back(line); };
  });
  EXPECT_EQ(map("b").leader(9), "a");
  EXPECT_TRUE(map("b").led().empty());
  ASSERT_EQ(warned.size(), 1u);
  EXPECT_NE(warned[0].find("partition 9 holds runs in this member's store but "
                           "is led by member 'a'"),
            std::string::npos)
    << warned[0];
}

TEST_F(PartitionMap, HomePartitionsAreOnesTheMemberRanksFirstIn) {
  count = 64;
  join("a");
  start("a", [](auto& o) { o.home = 8; });
  EXPECT_EQ(map("a").led().size(), 8u);
  join("b");
  start("b", [](auto& o) { o.home = 8; });
  auto mine = map("b").led();
  ASSERT_EQ(mine.size(), 8u);
  for (auto p : mine) {
    EXPECT_EQ(partition_map::rank({"a", "b"}, p).front(), "b") << p;
    EXPECT_EQ(map("b").record(p).replicas, partition_map::rank({"a", "b"}, p));
  }
}

TEST_F(PartitionMap, AContestedPartitionHasExactlyOneRecord) {
  count = 64;
  for (auto name : {"a", "b"})
    join(name);
  start("a");
  start("b");
  std::vector<std::string> by_a(count), by_b(count);
  std::thread ta{[&] {
    for (uint32_t p = 0; p < count; ++p)
      by_a[p] = map("a").claim(p);
  }};
  std::thread tb{[&] {
    for (uint32_t p = count; p-- > 0;)
      by_b[p] = map("b").claim(p);
  }};
  ta.join();
  tb.join();
  for (uint32_t p = 0; p < count; ++p) {
    ASSERT_FALSE(by_a[p].empty()) << p;
    EXPECT_EQ(by_a[p], by_b[p]) << p;
  }
  ASSERT_TRUE(
    wait_until([&] { return map("a").records() == map("b").records(); }, 5s));
}

TEST_F(PartitionMap, AMemberWithAnotherPartitionCountIsRefused) {
  join("a");
  start("a");
  join("b");
  auto& m = *members["b"];
  auto o = map_opts(m, "b");
  o.count = 128;
  partition_map other{o};
  auto why = other.start();
  EXPECT_NE(why.find("cluster 'c1' has 16 partitions, and this member is "
                     "configured with 128 (cluster.partitions)"),
            std::string::npos)
    << why;

  // Through the membership: the join is refused and leaves no member key.
  auto mo = registration("m");
  mo.partitions = 128;
  etcd_coordinator refused{mo};
  auto failed = refused.join();
  EXPECT_EQ(failed.what, join_failure::kind::refused);
  EXPECT_NE(failed.message.find("has 16 partitions"), std::string::npos)
    << failed.message;
  troupe::cluster::etcd::client c{etcd_opts()};
  EXPECT_FALSE(c.get(etcd_coordinator::member_key("c1", "m"))->has_value());
}

TEST_F(PartitionMap, AJoinedMemberAnswersWhoLeadsWhatAndClaimsOnDemand) {
  auto with_map = [&](const std::string& name) {
    auto o = registration(name);
    o.partitions = 64;
    return std::make_unique<etcd_coordinator>(o);
  };
  auto a = with_map("a");
  ASSERT_FALSE(a->join());
  auto b = with_map("b");
  ASSERT_FALSE(b->join());
  ASSERT_EQ(a->owned_partitions().size(), 8u);
  ASSERT_EQ(b->owned_partitions().size(), 8u);
  auto p = b->owned_partitions().front();
  ASSERT_TRUE(wait_until([&] { return a->owner_of_partition(p) == "b"; }, 5s));
  EXPECT_EQ(a->claim_partition(p), "b");
  // An unused one is made for the member ranked first, whoever asks.
  uint32_t unused = 0;
  while (unused < 64 && !a->owner_of_partition(unused).empty())
    ++unused;
  ASSERT_LT(unused, 64u);
  auto top = partition_map::rank({"a", "b"}, unused).front();
  EXPECT_EQ(a->claim_partition(unused), top);
  ASSERT_TRUE(
    wait_until([&] { return b->owner_of_partition(unused) == top; }, 5s));
  ASSERT_NE(a->partitions(), nullptr);
  EXPECT_EQ(a->partitions()->record(unused).replicas,
            partition_map::rank({"a", "b"}, unused));
  a->leave();
  b->leave();
}

TEST_F(PartitionMap,
       AJoiningMemberGetsItsReplicasThenItsLeadershipsStepByStep) {
  rebalance = 2;
  for (auto name : {"a", "b", "c"})
    join(name);
  start("a");
  ASSERT_TRUE(wait_until([&] { return map("a").is_controller(); }, 5s));
  start("b");
  start("c");
  for (uint32_t p = 0; p < count; ++p)
    ASSERT_FALSE(map("a").claim(p).empty()) << p;
  std::vector<partition_record> before;
  for (uint32_t p = 0; p < count; ++p)
    before.push_back(map("a").record(p));
  // At their targets over three members: nothing moves.
  std::this_thread::sleep_for(300ms);
  for (uint32_t p = 0; p < count; ++p) {
    EXPECT_EQ(map("a").record(p), before[p]) << p;
    EXPECT_EQ(map("a").balance(p).next, "") << p;
  }
  join("f");
  start("f");
  std::vector<std::string> up{"a", "b", "c", "f"};
  // The leaders' part, played here: a replica that is not in the ISR has
  // caught up (an empty log) once it was seen added, and is added.
  size_t most_moving = 0, most_replicas = 0;
  std::set<uint32_t> seen_moving;
  bool balanced = poll_until(
    [&] {
      size_t moving = 0;
      bool all_there = true;
      // One view of all records: read one by one, a move that ended and
      // one that began meanwhile would both count.
      auto all = map("a").records();
      for (uint32_t p = 0; p < count; ++p) {
        const auto& r = all[p];
        auto t = partition_map::rank(up, p);
        t.resize(3);
        most_replicas = std::max(most_replicas, r.replicas.size());
        if (r.replicas.size() > 3) {
          ++moving;
          seen_moving.insert(p);
          // A next step while it has a replica too many; the move may
          // have ended since `all` was read, and then the record says so.
          if (map("a").balance(p).next.empty()) {
            EXPECT_LE(map("a").record(p).replicas.size(), 3u) << p;
          }
        }
        for (auto& m : r.replicas)
          if (!has(r.isr, m))
            (void)map(r.leader).expand_isr(p, r.epoch, m);
        all_there = all_there && r.leader == t[0]
                    && as_set(r.replicas) == as_set(t)
                    && as_set(r.isr) == as_set(t);
      }
      most_moving = std::max(most_moving, moving);
      return all_there;
    },
    20s);
  std::string now;
  for (uint32_t p = 0; p < count; ++p) {
    auto r = map("a").record(p);
    now += std::to_string(p) + ": " + r.leader + " " + r.note + "\n";
  }
  ASSERT_TRUE(balanced) << now;
  // Step by step: R+1 replicas at most, two partitions at a time at most.
  EXPECT_EQ(most_replicas, 4u);
  EXPECT_GE(most_moving, 1u);
  EXPECT_LE(most_moving, 2u);
  // f leads the partitions it ranks first in, each at a new epoch, and
  // holds a replica of those whose target it is in; the others were not
  // touched.
  uint64_t leads = 0, holds = 0;
  for (uint32_t p = 0; p < count; ++p) {
    auto r = map("a").record(p);
    auto t = partition_map::rank(up, p);
    t.resize(3);
    if (r.leader == "f") {
      ++leads;
      EXPECT_GT(r.epoch, before[p].epoch) << p;
    }
    if (has(t, "f")) {
      ++holds;
      EXPECT_TRUE(seen_moving.count(p) || r.leader == "f") << p;
    } else {
      EXPECT_EQ(r.epoch, before[p].epoch) << p;
      EXPECT_EQ(r.replicas, before[p].replicas) << p;
    }
    // f's view of the records follows a's through its watch: it sees the
    // last move's end a little later.
    EXPECT_TRUE(
      wait_until([&] { return map("f").balance(p).next.empty(); }, 5s))
      << p << ": " << map("f").balance(p).next;
    EXPECT_EQ(map("f").balance(p).target, t) << p;
  }
  EXPECT_GE(leads, 1u);
  EXPECT_TRUE(wait_until([&] { return map("f").led().size() == leads; }, 5s))
    << map("f").led().size() << " vs " << leads;
  // The controller counted its moves (once each transaction returned).
  EXPECT_TRUE(wait_until(
    [&] {
      auto moves = map("a").moves();
      return moves.leader_rebalance == leads && moves.replicas_added == holds
             && moves.replicas_removed == holds && moves.leader_leaving == 0;
    },
    5s));
  std::cout << "f leads " << leads << " and holds " << holds << " of " << count
            << " partitions\n";
}

TEST_F(PartitionMap, NothingMovesForBalanceWhileAPartitionIsShortOfCopies) {
  rebalance = 2;
  for (auto name : {"a", "b", "c"})
    join(name);
  start("a");
  ASSERT_TRUE(wait_until([&] { return map("a").is_controller(); }, 5s));
  start("b");
  start("c");
  for (uint32_t p = 0; p < count; ++p)
    ASSERT_FALSE(map("a").claim(p).empty()) << p;
  // A follower of partition 0 fell behind: out of its ISR.
  auto r0 = map("a").record(0);
  auto behind = r0.isr.back();
  ASSERT_TRUE(map(r0.leader).shrink_isr(0, r0.epoch, behind, "lag 3s").took());
  join("f");
  start("f");
  // f ranks in the first three of most partitions, but nothing moves while
  // partition 0 lacks a copy, and each partition that has a move due says
  // why it waits.
  std::this_thread::sleep_for(1s);
  size_t due = 0;
  for (uint32_t p = 0; p < count; ++p) {
    EXPECT_FALSE(has(map("f").record(p).replicas, "f")) << p;
    auto b = map("f").balance(p);
    if (!b.next.empty()) {
      ++due;
      EXPECT_NE(b.waiting.find("partition 0 has 2 in-sync replica(s) up of "
                               "the 3 it should have"),
                std::string::npos)
        << p << ": " << b.waiting;
    }
  }
  EXPECT_GE(due, 1u);
  EXPECT_EQ(map("a").moves().replicas_added, 0u);
  // Caught up again: the moves begin.
  auto now0 = map("a").record(0);
  ASSERT_TRUE(map(now0.leader)
                .expand_isr(0, now0.epoch, behind, now0.state_revision)
                .took());
  EXPECT_TRUE(wait_until(
    [&] {
      for (uint32_t p = 0; p < count; ++p)
        if (has(map("f").record(p).replicas, "f"))
          return true;
      return false;
    },
    5s));
}

TEST_F(PartitionMap, ANewControllerGoesOnWithTheMovesTheLastOneStarted) {
  rebalance = 1;
  for (auto name : {"a", "b", "c", "e"})
    join(name);
  start("e");
  ASSERT_TRUE(wait_until([&] { return map("e").is_controller(); }, 5s));
  start("a");
  start("b");
  start("c");
  for (uint32_t p = 0; p < count; ++p)
    ASSERT_FALSE(map("a").claim(p).empty()) << p;
  join("f");
  start("f");
  // e, the controller, starts a move (f added to one partition, R+1)...
  uint32_t moving = count;
  ASSERT_TRUE(poll_until(
    [&] {
      for (uint32_t p = 0; p < count; ++p)
        if (map("a").record(p).replicas.size() > 3)
          moving = p;
      return moving < count;
    },
    5s));
  EXPECT_TRUE(map("a").balance(moving).moving);
  // ... and dies before it ends. Another member is elected, and goes on
  // from the records: every partition ends at its target over the members
  // left (the leaders' part played here as above).
  members["e"]->kill();
  std::vector<std::string> rest{"a", "b", "c", "f"};
  bool there = poll_until(
    [&] {
      bool all_there = true;
      for (uint32_t p = 0; p < count; ++p) {
        auto r = map("a").record(p);
        if (r.leader != "e")
          for (auto& m : r.replicas)
            if (!has(r.isr, m) && m != "e")
              (void)map(r.leader).expand_isr(p, r.epoch, m);
        auto t = partition_map::rank(rest, p);
        t.resize(3);
        all_there = all_there && r.leader == t[0]
                    && as_set(r.replicas) == as_set(t)
                    && as_set(r.isr) == as_set(t);
      }
      return all_there;
    },
    20s);
  std::string now;
  for (uint32_t p = 0; p < count; ++p) {
    auto r = map("a").record(p);
    now += std::to_string(p) + ": " + r.leader + " " + r.note + "\n";
  }
  EXPECT_TRUE(there) << now;
  auto who = one_controller();
  EXPECT_NE(who, "");
  EXPECT_NE(who, "e");
  if (!who.empty() && who != "e") {
    EXPECT_GE(map(who).moves().leader_rebalance, 1u);
  }
}
