#pragma once

// Partitions: the units in which a cluster owns runs. Every run id and
// every idempotency key maps to one fixed partition, computed from the id
// or key alone, so that any member can tell which partition a request is
// about without asking anyone. A run submitted with an idempotency key
// lives in the key's partition: the key's entry and the run's journal are
// then written in one batch of one partition, and a partition's data can
// be moved (replicated, failed over) as a whole.
//
// The count is fixed for the life of a cluster (cluster.partitions, at
// most 256): changing it would move every key. A cluster records it in etcd
// when its first member joins, and a member configured with another count
// refuses to join.

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::runtime {

/// The most partitions a cluster may have: a run id has two hex digits for
/// its partition.
inline constexpr uint32_t max_partitions = 256;

/// How many partitions a new cluster has unless configured otherwise.
inline constexpr uint32_t default_partitions = 64;

/// The partition of run `run_id` in a cluster of `count` partitions
/// (1..max_partitions): the two hex digits after the '-' of an id shaped as
/// new_run_id() makes them, modulo `count` (ids of runs journaled before
/// partitions existed have random digits there); any other id maps by a
/// hash of the whole id.
uint32_t partition_of_run(std::string_view run_id, uint32_t count);

/// The partition of idempotency key `key` among `count`: a hash of the
/// key.
uint32_t partition_of_key(std::string_view key, uint32_t count);

/// A new run id in `partition` (taken modulo max_partitions), 21
/// characters: the time in ms since the epoch (12 hex digits, so ids sort
/// by age), '-', the partition (2 hex digits) and a counter (6 hex digits)
/// that starts at a random value in each process. Only a partition's owner
/// makes ids in it, so ids never repeat unless one process makes 16M in
/// one millisecond.
std::string new_run_id(uint32_t partition);

/// A partition (of max_partitions) picked at random, for a node that owns
/// them all.
uint32_t random_partition();

} // namespace troupe::runtime
