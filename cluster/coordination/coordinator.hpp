#pragma once

// What a node knows of its cluster and of itself in it, behind one
// interface: `local_coordinator` for a node alone (no etcd, nothing on the
// network), the etcd one in cluster/membership for a member of a cluster.
// It knows nothing of runs.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace troupe::cluster {

/// One member as registered (the JSON value of its key in etcd).
struct member_info {
  std::string name;
  /// HOST:PORT where peers reach it (cluster.advertise, else
  /// cluster.listen); may be empty until the mesh exists.
  std::string peer_address;
  /// HOST:PORT of its control protocol.
  std::string control_address;
  std::map<std::string, std::string> labels;
  /// Attempts it takes at once, by node kind.
  std::map<std::string, int64_t> capacity;
  /// Troupe's version.
  std::string version;
  /// A new id per registration: a member that rejoins has a new one.
  std::string incarnation;
  /// When the process started, ms since the epoch.
  int64_t started_at_ms = 0;
  /// When this incarnation registered, ms since the epoch.
  int64_t joined_at_ms = 0;
  /// "joining", "up", "leaving" or "left" as far as this member knows; the
  /// others are "up" while their key exists, or "leaving" once their key
  /// says so (they drain before they go).
  std::string state = "up";
  /// This member's mesh link to it: "self", "connecting", "connected",
  /// "suspect" or "refused"; empty without a mesh.
  std::string link;
  /// Why the link stands so (suspect, refused), or why it left.
  std::string reason;
  /// For a member shown "down": when its key was deleted, ms since the
  /// epoch.
  int64_t down_at_ms = 0;

  /// The registration's JSON (state left out: a reader derives it; but
  /// "leaving": true while the member drains).
  nlohmann::json to_json() const;

  /// Reads a registration, its state "up" or "leaving"; returns false (and
  /// leaves `out` partly set) when the value is not one.
  static bool from_json(const nlohmann::json& j, member_info& out);
};

/// How this node stands in its cluster.
struct self_status {
  /// Empty for a node alone.
  std::string cluster;
  std::string member;
  /// Whether it holds a live registration now; a node alone always does.
  bool joined = false;
  std::string incarnation;
  /// How many times it lost its registration and registered again.
  int64_t rejoins = 0;
  /// The TTL etcd granted its lease (it may exceed the one asked for); 0
  /// for a node alone.
  int64_t lease_ttl_s = 0;
  /// The member elected to revoke the leases of suspect members, as far as
  /// this node knows; empty when none or for a node alone.
  std::string detector;
};

/// A node's view of its cluster. Every call but claim_partition is quick
/// and never blocks on the network, so it may be called from the node's
/// io_context thread.
class coordinator {
 public:
  virtual ~coordinator() = default;

  /// The members known now, sorted by name, this node included.
  virtual std::vector<member_info> members() const = 0;

  /// This node's standing.
  virtual self_status self() const = 0;

  /// How many partitions the cluster's runs have.
  virtual uint32_t partition_count() const = 0;

  /// The member owning (leading) partition `p` of the cluster's runs (see
  /// runtime/ids/partition.hpp) as far as this node knows now, or "" when
  /// it has no record yet. A node alone owns every partition.
  virtual std::string owner_of_partition(uint32_t p) const = 0;

  /// The owner of partition `p`, making its record first when it has none
  /// (its leader is then the member rendezvous hashing ranks first). May
  /// block on the network: call it off the io_context thread. Returns ""
  /// when the cluster could not be asked.
  virtual std::string claim_partition(uint32_t p) const = 0;

  /// The partitions this member owns (leads), in order. A node alone lists
  /// none: it owns them all.
  virtual std::vector<uint32_t> owned_partitions() const = 0;

  /// The partitions no member can lead now, each with why (its leader is
  /// down and no in-sync replica is up: their runs wait for one to come
  /// back). Quick. None for a node alone.
  virtual std::map<uint32_t, std::string> unavailable_partitions() const {
    return {};
  }
};

/// The coordinator of a node alone: one member, itself, always up.
class local_coordinator final : public coordinator {
 public:
  /// `partitions`: runtime::max_partitions (a node alone owns them all).
  local_coordinator(member_info self, uint32_t partitions);

  std::vector<member_info> members() const override;
  self_status self() const override;
  uint32_t partition_count() const override { return partitions_; }
  std::string owner_of_partition(uint32_t p) const override;
  std::string claim_partition(uint32_t p) const override;
  std::vector<uint32_t> owned_partitions() const override;

 private:
  member_info self_;
  uint32_t partitions_;
};

/// Returns a new incarnation id: 16 hex digits, random.
std::string new_incarnation();

/// Returns ms since the epoch now.
int64_t now_ms();

} // namespace troupe::cluster
