#pragma once

// Rebalancing: what the controller does to move the partitions toward
// their rendezvous targets when members join or come back (Kafka's
// reassignment plus its preferred leader election, step by step).
//
// A partition's target is the first R up members by rendezvous hashing
// (R = cluster.replication, at most the members up); its preferred leader
// is the first of them. A partition whose up replicas are not its target,
// or whose leader is not its preferred leader, is moved one step at a time,
// each step one guarded transaction of the controller:
// 1. add the first target member missing as a replica (R+1 replicas for a
//    while; not in the ISR: the leader adds it once it caught up from the
//    log, which is not trimmed yet, so no snapshot is needed);
// 2. once the preferred leader is in the ISR, move leadership to it, as
//    when a leader leaves (its runs stop on the old leader and resume on
//    the new one from its copy);
// 3. once every target member is in the ISR and the preferred leader
//    leads, remove an up replica that is not in the target.
// The churn is bounded: at most `concurrency` partitions move at once, and
// nothing moves (a move under way waits too) while a member is leaving or
// any partition is short of in-sync copies or has no leader up. Everything the
// steps depend on is in the records (a partition with more up replicas than its
// target is moving), so a new controller goes on where the last one stopped.
//
// These are pure functions over a view of the records and members, so
// that the decisions can be tested without etcd; partition_map turns them
// into transactions.

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace troupe::cluster::rebalance {

/// One partition's record, as the rebalancer sees it.
struct partition_view {
  uint32_t partition = 0;
  std::string leader;
  std::vector<std::string> isr;
  std::vector<std::string> replicas;
};

/// The members, as the rebalancer sees them.
struct members_view {
  /// Members whose key exists and that are not leaving.
  std::vector<std::string> up;
  /// Members whose key exists and that are leaving (drained).
  std::vector<std::string> leaving;
  /// cluster.replication.
  uint32_t replication = 3;
};

/// What the next step of a partition is.
enum class action {
  /// At its target, led by its preferred leader.
  none,
  /// Waits for a target replica to join the ISR (it catches up).
  wait,
  /// Adds `member` as a replica (not in the ISR).
  add_replica,
  /// Moves leadership to `member`, an in-sync replica.
  move_leader,
  /// Removes `member`, an up replica not in the target, from the replicas
  /// and the ISR.
  remove_replica,
};

struct step {
  action what = action::none;
  std::string member;
  /// Whether the step starts moving a partition that was not moving
  /// (counted against the concurrency), rather than going on with one.
  bool starts = false;
  /// What the step does, for notes, logs and `troupe partitions`.
  std::string describe() const;
};

/// Partition `p`'s target: the first min(R, up) of `up` by rendezvous rank.
std::vector<std::string> target(const std::vector<std::string>& up, uint32_t p,
                                uint32_t replication);

/// Whether `p` is between the steps of a move: it has more up replicas
/// than its target has members (one was added and another is still to go).
bool moving(const partition_view& p, const members_view& m);

/// The next step of `p` toward its target, ignoring the concurrency and
/// the cluster's state (see plan). `p` must have a leader.
step next_step(const partition_view& p, const members_view& m);

/// Why no partition may start moving now, or "": rebalancing is off
/// (replication 1), a member is leaving, or a partition has no leader up
/// or fewer in-sync up replicas than its target has members.
std::string blocked(const std::vector<partition_view>& partitions,
                    const members_view& m);

/// What one pass of the controller does.
struct plan_result {
  /// The steps to take now, by partition.
  std::vector<std::pair<uint32_t, step>> steps;
  /// Why nothing moves now, or "".
  std::string blocked;
  /// Partitions moving before the pass (in the records, and those in
  /// `recent`).
  size_t moving = 0;
};

/// The steps of one pass over `partitions` (those with a record): those
/// that go on with a move, and new ones while fewer than `concurrency`
/// partitions are moving, in partition order. `recent` are partitions
/// whose leadership moved a moment ago, counted as moving. Nothing at all
/// while blocked() says why, or when `concurrency` is 0.
plan_result plan(const std::vector<partition_view>& partitions,
                 const members_view& m, uint32_t concurrency,
                 const std::set<uint32_t>& recent = {});

} // namespace troupe::cluster::rebalance
