#pragma once

// Membership through etcd: a member registers
// /troupe/<cluster>/members/<name> under a lease of its own, renews the
// lease at least every TTL/3, watches the members' prefix, and notices when
// it lost its registration (the lease expired or was revoked, or etcd was
// out of reach for longer than the TTL): it then counts as not joined and
// registers again with a new incarnation. Its work runs on two threads of
// its own (renewals, the watch); nothing here blocks a caller of
// members() or self().

#include "cluster/coordination/coordinator.hpp"
#include "cluster/etcd/client.hpp"
#include "cluster/membership/partition_map.hpp"

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace troupe::cluster {

/// How a member joins its cluster.
struct membership_options {
  /// The cluster's name: keys live under /troupe/<cluster>/.
  std::string cluster;
  /// What this member registers; its name is the key's last part, and the
  /// incarnation and joined_at_ms are set at each registration.
  member_info self;
  etcd::client_options etcd;
  /// The lease's TTL. Default: 5 s.
  std::chrono::seconds lease_ttl{5};
  /// A watch that saw nothing for this long (at most lease_ttl) is made
  /// again, after a fresh read of every member (a silent connection, as to
  /// an etcd member that was stopped, cannot hide changes for longer).
  /// Default: 10 s.
  std::chrono::milliseconds resync_interval{10'000};
  /// How many partitions the cluster's runs have (cluster.partitions); 0:
  /// the member keeps no partition map (leads none, knows no leader).
  uint32_t partitions = 0;
  /// Partitions this member's store holds runs of: led by it when they
  /// have no record yet.
  std::vector<uint32_t> held_partitions;
  /// Replicas per partition (cluster.replication).
  uint32_t replication = 3;
  /// Partitions the controller moves toward their rendezvous targets at
  /// once (cluster.rebalance_concurrency); 0: none.
  uint32_t rebalance_concurrency = 2;
  /// Told of each partition whose record changed, on the partition map's
  /// watch thread (see partition_map_options::on_change); may be empty.
  std::function<void(const partition_record&)> on_partition_change;
  /// Whether this member has a mesh link to member `name` now, for the
  /// partition controller (see partition_map_options::linked); may be
  /// empty.
  std::function<bool(const std::string& name)> linked;
  /// Where notices go (info and warnings); may be empty.
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
  /// Told when this member loses its registration (false: its lease
  /// expired or was revoked, or etcd was out of reach past its TTL) and
  /// when it has registered again after that (true), on the renewer
  /// thread; quick. May be empty.
  std::function<void(bool joined)> on_joined;
};

/// Why joining failed.
struct join_failure {
  enum class kind {
    none,
    /// etcd did not answer.
    unreachable,
    /// Another live member holds the name.
    name_taken,
    /// etcd refused (a bad request, or a TTL it will not grant).
    refused,
  };
  kind what = kind::none;
  std::string message;

  explicit operator bool() const noexcept { return what != kind::none; }
};

class etcd_coordinator final : public coordinator {
 public:
  explicit etcd_coordinator(membership_options opts);
  ~etcd_coordinator() override;

  etcd_coordinator(const etcd_coordinator&) = delete;
  etcd_coordinator& operator=(const etcd_coordinator&) = delete;

  /// Registers this member once, blocking the caller for at most the etcd
  /// client's call deadline a few times over; then starts renewing and
  /// watching. Call once, from a thread that may block.
  join_failure join();

  /// Marks this member's key "leaving" (under its lease, renewed as
  /// before): the others place no new attempt on it and list it as leaving
  /// while it drains. Blocks for at most one etcd call; returns whether
  /// etcd took it.
  bool mark_leaving();

  /// Stops renewing and watching, and revokes the lease so that the others
  /// see this member leave at once. Blocks for at most one etcd call.
  void leave();

  std::vector<member_info> members() const override;
  self_status self() const override;
  uint32_t partition_count() const override;
  std::string owner_of_partition(uint32_t p) const override;
  std::string claim_partition(uint32_t p) const override;
  std::vector<uint32_t> owned_partitions() const override;
  std::map<uint32_t, std::string> unavailable_partitions() const override;

  /// The partition records and the controller; null before join() or
  /// without partitions.
  partition_map* partitions() const;

  /// The key of `member` in `cluster`.
  static std::string member_key(const std::string& cluster,
                                const std::string& member);

  /// The lease this member holds now (0 when not joined). Joined means
  /// registered and renewed less than a TTL ago: a member cut off from etcd
  /// counts as not joined once its lease may have expired, even while a
  /// renewal is still in flight.
  int64_t lease_id() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
