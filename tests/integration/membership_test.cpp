// Membership through a real etcd, in one process: members register under
// leases and see each other, a taken name is refused, a revoked lease is
// noticed and the member registers again with a new incarnation, and a
// member that leaves disappears from the others' view.

#include "cluster/coordination/coordinator.hpp"
#include "cluster/membership/etcd_coordinator.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <mutex>

using namespace std::chrono_literals;
using troupe::cluster::etcd_coordinator;
using troupe::cluster::join_failure;
using troupe::cluster::member_info;
using troupe::cluster::membership_options;
using troupe::test::wait_until;

namespace {

struct Membership : ::testing::Test {
  troupe::test::etcd_process etcd;
  std::mutex mtx;
  std::vector<std::string> notices;

  void SetUp() override { ASSERT_TRUE(etcd.ok()) << etcd.error(); }

  membership_options opts(const std::string& name) {
    membership_options o;
    o.cluster = "c1";
    o.self.name = name;
    o.self.control_address = "127.0.0.1:7400";
    o.self.labels = {{"zone", "a"}};
    o.self.capacity = {{"exec", 4}};
    o.self.version = "test";
    o.etcd.endpoints = {etcd.url()};
    o.etcd.request_timeout = 500ms;
    o.etcd.call_timeout = 1500ms;
    o.lease_ttl = std::chrono::seconds{1};
    o.info = o.warn = [this](const std::string& line) {
      std::lock_guard guard{mtx};
      notices.push_back(line);
    };
    return o;
  }

  /// Every notice so far, one a line.
  std::string said() {
    std::lock_guard guard{mtx};
    std::string out;
    for (auto& n : notices)
      out += n + "\n";
    return out;
  }

  static std::vector<std::string> names(const etcd_coordinator& c) {
    std::vector<std::string> out;
    for (auto& m : c.members())
      out.push_back(m.name);
    return out;
  }
};

} // namespace

TEST_F(Membership, MembersSeeEachOtherAndATakenNameIsRefused) {
  etcd_coordinator a{opts("a")};
  ASSERT_FALSE(a.join());
  etcd_coordinator b{opts("b")};
  ASSERT_FALSE(b.join());
  std::vector<std::string> both{"a", "b"};
  EXPECT_TRUE(wait_until([&] { return names(a) == both; }, 5s))
    << names(a).size();
  EXPECT_EQ(names(b), both);
  EXPECT_TRUE(a.self().joined);
  EXPECT_EQ(a.self().cluster, "c1");
  EXPECT_EQ(a.self().lease_ttl_s, 1);

  // The registration holds what the member said of itself.
  troupe::cluster::etcd::client c{opts("x").etcd};
  auto kv = c.get(etcd_coordinator::member_key("c1", "a"));
  ASSERT_TRUE(kv && kv->has_value());
  EXPECT_EQ((*kv)->lease, a.lease_id());
  member_info m;
  ASSERT_TRUE(member_info::from_json(nlohmann::json::parse((*kv)->value), m));
  EXPECT_EQ(m.incarnation, a.self().incarnation);
  EXPECT_EQ(m.labels.at("zone"), "a");
  EXPECT_EQ(m.capacity.at("exec"), 4);

  etcd_coordinator again{opts("a")};
  auto failed = again.join();
  EXPECT_EQ(failed.what, join_failure::kind::name_taken);
  EXPECT_NE(failed.message.find("member name 'a' is taken"), std::string::npos)
    << failed.message;
  // The refused member left nothing behind: a still holds its key.
  EXPECT_EQ((*c.get(etcd_coordinator::member_key("c1", "a")))->lease,
            a.lease_id());

  b.leave();
  EXPECT_TRUE(wait_until([&] { return names(a).size() == 1; }, 5s));
  EXPECT_FALSE(c.get(etcd_coordinator::member_key("c1", "b"))->has_value());
}

TEST_F(Membership, ARevokedLeaseIsNoticedAndTheMemberRejoinsAsANewIncarnation) {
  etcd_coordinator a{opts("a")};
  ASSERT_FALSE(a.join());
  auto first = a.self().incarnation;
  auto lease = a.lease_id();
  troupe::cluster::etcd::client c{opts("x").etcd};
  ASSERT_TRUE(c.lease_revoke(lease));
  ASSERT_TRUE(wait_until(
    [&] {
      auto s = a.self();
      return s.joined && s.incarnation != first;
    },
    5s));
  EXPECT_EQ(a.self().rejoins, 1);
  EXPECT_NE(a.lease_id(), lease);
  auto kv = c.get(etcd_coordinator::member_key("c1", "a"));
  ASSERT_TRUE(kv && kv->has_value());
  EXPECT_NE((*kv)->value.find(a.self().incarnation), std::string::npos);
  std::lock_guard guard{mtx};
  bool said = false;
  for (auto& n : notices)
    said |= n.find("lost its registration") != std::string::npos;
  EXPECT_TRUE(said);
}

TEST_F(Membership, EtcdOutOfReachForATtlUnjoinsTheMemberUntilItIsBack) {
  etcd_coordinator a{opts("a")};
  ASSERT_FALSE(a.join());
  auto first = a.self().incarnation;
  etcd.stop();
  // Unrenewed for a whole TTL (1 s), the lease must be assumed gone.
  ASSERT_TRUE(wait_until([&] { return !a.self().joined; }, 5s));
  EXPECT_EQ(a.members().back().state, "joining");
  // Its renewals failing, it gives the registration up (back sooner, etcd
  // would still have the lease, and the member would carry on with it).
  ASSERT_TRUE(wait_until(
    [&] { return said().find("lost its registration") != std::string::npos; },
    10s))
    << said();
  ASSERT_TRUE(etcd.restart()) << etcd.error();
  // Back, it registers again: a new incarnation, its old key replaced.
  ASSERT_TRUE(wait_until(
    [&] {
      auto s = a.self();
      return s.joined && s.incarnation != first;
    },
    10s))
    << said();
  troupe::cluster::etcd::client c{opts("x").etcd};
  auto kv = c.get(etcd_coordinator::member_key("c1", "a"));
  ASSERT_TRUE(kv && kv->has_value()) << kv.err.message;
  EXPECT_NE((*kv)->value.find(a.self().incarnation), std::string::npos);
  EXPECT_EQ((*kv)->lease, a.lease_id());
}

TEST_F(Membership, EtcdUnreachableAtJoinIsReported) {
  auto o = opts("a");
  o.etcd.endpoints
    = {"http://127.0.0.1:" + std::to_string(troupe::test::free_port())};
  etcd_coordinator a{o};
  auto failed = a.join();
  EXPECT_EQ(failed.what, join_failure::kind::unreachable);
  EXPECT_FALSE(a.self().joined);
}

TEST(LocalCoordinator, IsOneMemberAlwaysUpOwningEveryPartition) {
  member_info me;
  me.name = "solo";
  troupe::cluster::local_coordinator c{me, 256};
  ASSERT_EQ(c.members().size(), 1u);
  EXPECT_EQ(c.members()[0].state, "up");
  EXPECT_TRUE(c.self().joined);
  EXPECT_TRUE(c.self().cluster.empty());
  EXPECT_EQ(c.self().incarnation.size(), 16u);
  // It owns every partition, without listing them.
  EXPECT_EQ(c.partition_count(), 256u);
  EXPECT_EQ(c.owner_of_partition(0), "solo");
  EXPECT_EQ(c.owner_of_partition(255), "solo");
  EXPECT_EQ(c.claim_partition(7), "solo");
  EXPECT_TRUE(c.owned_partitions().empty());
}
