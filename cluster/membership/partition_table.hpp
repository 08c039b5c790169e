#pragma once

// Who owns which partition of a cluster's runs, kept in etcd:
// /troupe/<cluster>/partitions/<p> holds {member, claimed_at_ms} for every
// partition a member has claimed, and /troupe/<cluster>/partition_count the
// number of partitions the cluster was made with. A claim is a
// create-if-absent transaction, so two members never both own a partition;
// it is not under a lease, because the runs stay in the claiming member's
// store: until runs can move between members, a partition stays with the
// member that claimed it, across its restarts and while it is down. The
// table is read once and then watched, so owner() answers from memory.

#include "cluster/etcd/client.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

struct partition_options {
  std::string cluster;
  /// This member's name: what its claims record.
  std::string member;
  /// How many partitions the cluster has (cluster.partitions); a cluster
  /// made with another count refuses this member.
  uint32_t count = 0;
  /// Partitions a member claims for its runs submitted without an
  /// idempotency key, when it joins and owns fewer (fewer when fewer are
  /// free).
  uint32_t home = 8;
  etcd::client_options etcd;
  /// A watch that saw nothing this long is made again after a fresh read.
  std::chrono::milliseconds resync_interval{10'000};
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
};

class partition_table {
 public:
  explicit partition_table(partition_options opts);
  ~partition_table();

  partition_table(const partition_table&) = delete;
  partition_table& operator=(const partition_table&) = delete;

  /// Checks (or, for a new cluster, records) the partition count, reads
  /// the table, claims the partitions in `held` (those the member's store
  /// holds runs of) and enough free ones to have `home` of its own, and
  /// starts watching. Blocking; returns why the member may not join, or "".
  std::string start(const std::vector<uint32_t>& held);

  /// Stops the watch. Idempotent.
  void stop();

  /// The owner of partition `p` as last read, or "" when unclaimed. Quick.
  std::string owner(uint32_t p) const;

  /// Claims `p` for this member if nobody owns it. Blocking (one etcd
  /// transaction when not known to be owned). Returns the owner then (this
  /// member or another), or "" when etcd could not be asked.
  std::string claim(uint32_t p);

  /// The partitions this member owns, in order.
  std::vector<uint32_t> owned() const;

  /// How many partitions each member owns.
  std::vector<std::pair<std::string, uint32_t>> owners() const;

  /// The key of partition `p` in `cluster`, and of its count.
  static std::string partition_key(const std::string& cluster, uint32_t p);
  static std::string count_key(const std::string& cluster);

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
