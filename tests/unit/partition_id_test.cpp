// Run ids and idempotency keys map to fixed partitions: the mapping is a
// function of the id or key alone, the same on every machine and build.

#include "runtime/ids/partition.hpp"

#include <gtest/gtest.h>

#include <set>

using troupe::runtime::max_partitions;
using troupe::runtime::new_run_id;
using troupe::runtime::partition_of_key;
using troupe::runtime::partition_of_run;

TEST(PartitionIds, ANewRunIdCarriesItsPartition) {
  for (uint32_t count : {1u, 7u, 64u, 256u})
    for (uint32_t p = 0; p < count; ++p) {
      auto id = new_run_id(p);
      ASSERT_EQ(id.size(), 21u) << id;
      EXPECT_EQ(partition_of_run(id, count), p) << id;
    }
  // Taken modulo the most partitions.
  EXPECT_EQ(partition_of_run(new_run_id(max_partitions + 3), 256), 3u);
}

TEST(PartitionIds, RunIdsSortByAgeAndDoNotRepeat) {
  std::set<std::string> seen;
  std::string last;
  // Many in the same millisecond and partition: the counter keeps them
  // apart.
  for (int i = 0; i < 200'000; ++i) {
    auto id = new_run_id(static_cast<uint32_t>(i % 3));
    EXPECT_TRUE(seen.insert(id).second) << id;
    // The first 12 digits are the time in ms: never going back.
    EXPECT_GE(id.substr(0, 12),
              last.substr(0, std::min<size_t>(12, last.size())));
    last = id;
  }
}

TEST(PartitionIds, OlderIdsKeepTheirPartitionAndKeysMapByAStableHash) {
  // Ids journaled before partitions had random digits where the partition
  // now is: they map by those.
  EXPECT_EQ(partition_of_run("0190a1b2c3d4-1a2b3c4d", 256), 0x1au);
  EXPECT_EQ(partition_of_run("0190a1b2c3d4-ff000000", 256), 0xffu);
  EXPECT_EQ(partition_of_run("0190a1b2c3d4-ff000000", 64), 0x3fu);
  // Values pinned: a change of the hash would move every stored key (and
  // every run of another shape) to another partition.
  EXPECT_EQ(partition_of_key("order-42", 256), 212u); // FNV-1a 64
  EXPECT_EQ(partition_of_key("order-42", 64), 212u % 64);
  EXPECT_EQ(partition_of_key("", 256), 0x25u);
  EXPECT_EQ(partition_of_run("my-run", 64), partition_of_key("my-run", 64));
  // Upper-case hex is not what new_run_id makes: hashed too.
  EXPECT_EQ(partition_of_run("0190A1B2C3D4-1A2B3C4D", 256),
            partition_of_key("0190A1B2C3D4-1A2B3C4D", 256));
  // A count out of range is taken as the nearest allowed.
  EXPECT_EQ(partition_of_key("order-42", 0), 0u);
  EXPECT_EQ(partition_of_key("order-42", 1000), 212u);
}

TEST(PartitionIds, KeysSpreadOverEveryPartition) {
  std::vector<int> hits(max_partitions);
  for (int i = 0; i < 100'000; ++i)
    ++hits[partition_of_key("key-" + std::to_string(i), max_partitions)];
  for (uint32_t p = 0; p < max_partitions; ++p) {
    // About 390 each; a hash this uneven would be a bug.
    EXPECT_GT(hits[p], 250) << p;
    EXPECT_LT(hits[p], 550) << p;
  }
}
