#pragma once

// What a member does when it comes to lead a partition of the cluster's
// runs, or stops leading one: it resumes the partition's unfinished runs
// from its copy of their journals, or stops its runs there (their journals
// now belong to the new leader). The changes come from the controller's
// records and from the replicator (a leader deposed by a newer epoch);
// they are queued and carried out in order on the agent's own thread,
// since resuming reads the store.

#include "runtime/metrics/fwd.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace troupe::cluster {

struct partition_agent_options {
  /// How many partitions the cluster has.
  uint32_t count = 0;
  /// Resumes the partition's unfinished runs (embedded_node::
  /// resume_partition); returns how many, or nothing when the partition is
  /// not ready to be resumed yet (its store has not committed what it
  /// holds: its in-sync replicas are too few): a later lead() of the same
  /// epoch tries again. Blocking.
  std::function<std::optional<size_t>(uint32_t partition)> resume;
  /// Stops the partition's live runs (embedded_node::release_partition);
  /// returns how many. Blocking.
  std::function<uint64_t(uint32_t partition)> release;
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
  /// Where troupe_partition_failovers_total and
  /// troupe_failover_duration_seconds go; null: nowhere.
  runtime::metrics::registry* metrics = nullptr;
};

class partition_agent {
 public:
  explicit partition_agent(partition_agent_options opts);
  ~partition_agent();

  partition_agent(const partition_agent&) = delete;
  partition_agent& operator=(const partition_agent&) = delete;

  /// This member leads `partition` at `epoch`, and its store holds every
  /// record the partition committed: the partition's runs are resumed
  /// here. `failover_since_ms` (ms since the epoch), when not 0, is when
  /// the previous leader was found gone: the failover's duration is
  /// measured from it. A call for an epoch not newer than the last one
  /// seen for the partition does nothing, unless the last try found the
  /// partition not ready. Quick: queued.
  void lead(uint32_t partition, uint64_t epoch, int64_t failover_since_ms = 0);

  /// This member does not lead `partition` (another leads it at `epoch`, or
  /// a newer epoch deposed it): its runs there are stopped. Quick: queued.
  void follow(uint32_t partition, uint64_t epoch);

  /// Stops the agent's thread after what is queued. Idempotent.
  void stop();

  /// Whether the member leads `partition` and has resumed its runs: new
  /// runs may go there. Quick.
  bool leads(uint32_t partition) const;

  /// The partitions led and resumed, in order. Quick.
  std::vector<uint32_t> led() const;

  /// How the member stands in `partition`: {role: "leader", "resuming",
  /// "waiting" (not ready to resume yet), "follower" or "none", epoch,
  /// resumed (runs, at the last lead)}.
  nlohmann::json describe(uint32_t partition) const;

  /// Blocks until every change queued before the call is carried out
  /// (tests).
  void settle();

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
