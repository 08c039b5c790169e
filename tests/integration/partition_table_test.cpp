// Partition ownership through a real etcd, in one process: members claim
// home partitions of their own when they join, a claim is won by exactly
// one member, every member sees every claim, the partitions of runs a
// member's store already holds stay its own, and a member built with
// another partition count is refused.

#include "cluster/membership/etcd_coordinator.hpp"
#include "cluster/membership/partition_table.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

using namespace std::chrono_literals;
using troupe::cluster::etcd_coordinator;
using troupe::cluster::join_failure;
using troupe::cluster::membership_options;
using troupe::cluster::partition_options;
using troupe::cluster::partition_table;
using troupe::test::wait_until;

namespace {

struct Partitions : ::testing::Test {
  troupe::test::etcd_process etcd;

  void SetUp() override { ASSERT_TRUE(etcd.ok()) << etcd.error(); }

  partition_options opts(const std::string& member, uint32_t count = 64) {
    partition_options o;
    o.cluster = "c1";
    o.member = member;
    o.count = count;
    o.home = 4;
    o.etcd.endpoints = {etcd.url()};
    o.etcd.request_timeout = 500ms;
    o.etcd.call_timeout = 1500ms;
    return o;
  }

  membership_options member(const std::string& name) {
    membership_options o;
    o.cluster = "c1";
    o.self.name = name;
    o.self.control_address = "127.0.0.1:7400";
    o.self.version = "test";
    o.etcd.endpoints = {etcd.url()};
    o.etcd.request_timeout = 500ms;
    o.etcd.call_timeout = 1500ms;
    o.lease_ttl = std::chrono::seconds{2};
    o.partitions = 64;
    return o;
  }
};

} // namespace

TEST_F(Partitions, MembersClaimDisjointHomePartitionsAndSeeEachOthers) {
  partition_table a{opts("a")};
  ASSERT_EQ(a.start({}), "");
  partition_table b{opts("b")};
  ASSERT_EQ(b.start({}), "");
  auto mine = a.owned();
  auto theirs = b.owned();
  ASSERT_EQ(mine.size(), 4u);
  ASSERT_EQ(theirs.size(), 4u);
  for (auto p : mine) {
    EXPECT_EQ(std::count(theirs.begin(), theirs.end(), p), 0) << p;
    EXPECT_EQ(b.owner(p), "a") << p;
  }
  // a learns b's claims through its watch.
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto p : theirs)
        if (a.owner(p) != "b")
          return false;
      return true;
    },
    5s));
  auto owners = a.owners();
  ASSERT_EQ(owners.size(), 2u);
  EXPECT_EQ(owners[0], (std::pair<std::string, uint32_t>{"a", 4}));
  EXPECT_EQ(owners[1], (std::pair<std::string, uint32_t>{"b", 4}));

  // Ownership is kept in etcd, not under a lease: a restarted member finds
  // its partitions still its own and claims no more.
  a.stop();
  partition_table again{opts("a")};
  ASSERT_EQ(again.start({}), "");
  EXPECT_EQ(again.owned(), mine);
}

TEST_F(Partitions, AContestedPartitionHasExactlyOneOwner) {
  // Two members, each with its own view, claim the same free partitions at
  // once: each partition ends with one owner, and both agree on it.
  auto ao = opts("a");
  auto bo = opts("b");
  ao.home = bo.home = 0;
  partition_table a{ao};
  partition_table b{bo};
  ASSERT_EQ(a.start({}), "");
  ASSERT_EQ(b.start({}), "");
  std::vector<std::string> by_a(64), by_b(64);
  std::thread ta{[&] {
    for (uint32_t p = 0; p < 64; ++p)
      by_a[p] = a.claim(p);
  }};
  std::thread tb{[&] {
    for (uint32_t p = 64; p-- > 0;)
      by_b[p] = b.claim(p);
  }};
  ta.join();
  tb.join();
  size_t won_by_a = 0;
  for (uint32_t p = 0; p < 64; ++p) {
    ASSERT_FALSE(by_a[p].empty()) << p;
    EXPECT_EQ(by_a[p], by_b[p]) << p;
    won_by_a += by_a[p] == "a";
  }
  EXPECT_EQ(a.owned().size(), won_by_a);
  EXPECT_EQ(b.owned().size(), 64 - won_by_a);
  // Nothing left to claim: a third member gets no home, and says so.
  std::vector<std::string> warned;
  auto co = opts("c");
  co.warn = [&](const std::string& line) { warned.push_back(line); };
  partition_table c{co};
  ASSERT_EQ(c.start({}), "");
  EXPECT_TRUE(c.owned().empty());
  ASSERT_EQ(warned.size(), 1u);
  EXPECT_NE(warned[0].find("every partition of cluster 'c1' is owned"),
            std::string::npos)
    << warned[0];
}

TEST_F(Partitions, PartitionsOfRunsInTheStoreStayTheMembers) {
  auto ao = opts("a");
  ao.home = 0;
  partition_table a{ao};
  ASSERT_EQ(a.start({7, 9}), "");
  EXPECT_EQ(a.owned(), (std::vector<uint32_t>{7, 9}));
  // Held partitions another member owns are not taken from it.
  std::vector<std::string> warned;
  auto bo = opts("b");
  bo.home = 1;
  bo.warn = [&](const std::string& line) { warned.push_back(line); };
  partition_table b{bo};
  ASSERT_EQ(b.start({9}), "");
  EXPECT_EQ(b.owner(9), "a");
  ASSERT_EQ(b.owned().size(), 1u);
  EXPECT_NE(b.owned()[0], 9u);
  ASSERT_EQ(warned.size(), 1u);
  EXPECT_NE(warned[0].find("partition 9 holds runs in this member's store but "
                           "is owned by member 'a'"),
            std::string::npos)
    << warned[0];
}

TEST_F(Partitions, AMemberWithAnotherPartitionCountIsRefused) {
  partition_table a{opts("a", 64)};
  ASSERT_EQ(a.start({}), "");
  partition_table b{opts("b", 128)};
  auto why = b.start({});
  EXPECT_NE(why.find("cluster 'c1' has 64 partitions, and this member is "
                     "configured with 128 (cluster.partitions)"),
            std::string::npos)
    << why;
  EXPECT_TRUE(b.owned().empty());

  // Through the membership: the join is refused and leaves no member key.
  auto mo = member("m");
  mo.partitions = 128;
  etcd_coordinator m{mo};
  auto failed = m.join();
  EXPECT_EQ(failed.what, join_failure::kind::refused);
  EXPECT_NE(failed.message.find("has 64 partitions"), std::string::npos)
    << failed.message;
  troupe::cluster::etcd::client c{opts("x").etcd};
  EXPECT_FALSE(c.get(etcd_coordinator::member_key("c1", "m"))->has_value());
}

TEST_F(Partitions, AJoinedMemberAnswersWhoOwnsWhatAndClaimsOnDemand) {
  etcd_coordinator a{member("a")};
  ASSERT_FALSE(a.join());
  etcd_coordinator b{member("b")};
  ASSERT_FALSE(b.join());
  ASSERT_EQ(a.owned_partitions().size(), 8u);
  auto p = b.owned_partitions().front();
  ASSERT_TRUE(wait_until([&] { return a.owner_of_partition(p) == "b"; }, 5s));
  // A claim of b's partition by a answers b; a free one becomes a's.
  EXPECT_EQ(a.claim_partition(p), "b");
  uint32_t free = 0;
  while (!a.owner_of_partition(free).empty() && free < 64)
    ++free;
  ASSERT_LT(free, 64u);
  EXPECT_EQ(a.claim_partition(free), "a");
  ASSERT_TRUE(
    wait_until([&] { return b.owner_of_partition(free) == "a"; }, 5s));
  EXPECT_EQ(a.owned_partitions().size(), 9u);
}
