#pragma once

// The partitions of a cluster's runs, kept in etcd, and the controller that
// assigns them (Kafka's replication model, coordinated by etcd).
//
// Every partition that has been used has a record of two keys:
// - /troupe/<cluster>/partition/<pppp>/leader: the leading member's name.
//   Only a change of leader writes it, so its mod_revision is the epoch:
//   the etcd revision of the transaction that installed the leader.
// - /troupe/<cluster>/partition/<pppp>/state: {"isr": [...], "replicas":
//   [...], "note": "...", "failover_since_ms": N}: the in-sync replicas
//   (the leader always among them), every assigned replica, why it last
//   changed, and after a failover when the old leader was seen gone.
// Every change is one transaction guarded by the mod_revisions of both keys
// (and by a member key's version or create_revision where it depends on a
// member being gone or still the same), so a writer working from a stale
// view changes nothing. Neither key is under a lease: the runs stay in the
// replicas' stores across restarts.
//
// /troupe/<cluster>/partition_count holds the count the cluster was made
// with; a member configured with another one is refused.
//
// Who writes what:
// - A record is made when a partition is first used, by whichever member
//   needs it (its home partitions at join, a keyed submit, the partitions
//   its store already holds), with one create-if-absent transaction:
//   leader = the top member by rendezvous hashing over the up members,
//   replicas = the top R, isr = replicas (empty logs are in sync). The
//   partitions a member's store already holds are led by it instead, with
//   itself as the only replica.
// - The controller, one member elected through /troupe/<cluster>/controller
//   (a key under its lease, see lease_election), keeps the records right:
//   it fails a partition over when its leader's member key is gone (to the
//   first ISR member that is up, in rank order; never to one outside the
//   ISR), installs a leader again (a new epoch) when it registered again
//   since it was installed, grows the replica set to R one member at a
//   time, replaces `leaving` members, and trims replicas beyond R once R
//   are in sync. When none of that is due, it moves partitions toward
//   their rendezvous targets step by step, a few at a time (rebalance.hpp):
//   a member that joins gets its replicas, then the leadership of the
//   partitions it ranks first in.
// - The leader changes the ISR: shrink_isr and expand_isr, guarded by its
//   epoch and the state's mod_revision.
//
// Every member follows /troupe/<cluster>/ with one watch (members, records,
// the controller key) on a thread of its own, so reads are quick and from
// memory, and a change callback tells of each partition whose record
// changed.

#include "cluster/etcd/client.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::cluster {

/// One partition's record, as last seen.
struct partition_record {
  uint32_t partition = 0;
  /// "" when the partition has no record (never used).
  std::string leader;
  /// The revision of the transaction that installed the leader; 0 when no
  /// record.
  uint64_t epoch = 0;
  /// The in-sync replicas (the leader among them), in the order they were
  /// added.
  std::vector<std::string> isr;
  /// Every assigned replica (the ISR and those catching up or down).
  std::vector<std::string> replicas;
  /// The state key's mod_revision: what ISR changes are guarded by.
  int64_t state_revision = 0;
  /// Why the state last changed (who changed it, and why).
  std::string note;
  /// When the state was written by a failover: when the controller saw
  /// the old leader's key gone, ms since the epoch (a failover's duration
  /// runs from it); else 0.
  int64_t failover_since_ms = 0;

  bool exists() const noexcept { return epoch != 0; }
  bool operator==(const partition_record&) const = default;
};

/// How a partition stands toward its rendezvous target.
struct partition_balance {
  /// The first min(R, up) up members by rendezvous rank; the first is the
  /// preferred leader. Empty when no member is up.
  std::vector<std::string> target;
  /// Whether a move is under way (a replica was added and another is to
  /// go, or leadership moved a moment ago).
  bool moving = false;
  /// The next step toward the target ("moving leader to 'm4'"), "" when
  /// it is there.
  std::string next;
  /// Why the cluster's moves wait now, "" when they do not.
  std::string waiting;
};

/// Moves the controller made on this member, since it started.
struct move_counts {
  /// Leaderships moved to another live member: for balance, and away from
  /// a leaving member.
  uint64_t leader_rebalance = 0;
  uint64_t leader_leaving = 0;
  /// Replicas added and removed for balance.
  uint64_t replicas_added = 0;
  uint64_t replicas_removed = 0;
};

/// What an ISR change did.
struct isr_result {
  enum class kind {
    /// It took.
    done,
    /// The epoch given is not the record's (a new leader was installed).
    stale_epoch,
    /// The state changed since the revision given.
    stale_state,
    /// This member does not lead the partition (as far as it knows).
    not_leader,
    /// The member is not one the change applies to (not a replica, already
    /// in or out of the ISR, the leader itself), or the partition has no
    /// record.
    refused,
    /// etcd did not answer.
    unreachable,
  };
  kind what = kind::done;
  std::string why;
  /// The revision of the transaction when it took.
  int64_t revision = 0;

  bool took() const noexcept { return what == kind::done; }
};

struct partition_map_options {
  std::string cluster;
  /// This member's name.
  std::string member;
  /// How many partitions the cluster has (cluster.partitions).
  uint32_t count = 0;
  /// Replicas per partition (cluster.replication); at most the members
  /// that are up.
  uint32_t replication = 3;
  /// Partitions this member leads at join for runs submitted without an
  /// idempotency key: records made for unused partitions it ranks first
  /// in, until it leads this many.
  uint32_t home = 8;
  /// Partitions this member's store holds runs of: led by it when they
  /// have no record.
  std::vector<uint32_t> held;
  etcd::client_options etcd;
  /// This member's lease now, 0 when it is not joined (it then does not
  /// stand for controller, and gives the office up). Called from the
  /// controller's thread; must be quick.
  std::function<int64_t()> lease;
  /// Told of each partition whose record changed (leader, epoch, isr,
  /// replicas), on the watch thread: must be quick and must not call back
  /// into a blocking method. The first read reports every record.
  std::function<void(const partition_record&)> on_change;
  /// Whether this member has a mesh link to member `name` now. The
  /// controller asks it of a leader that registered again (a new
  /// incarnation) before installing it again at a new epoch: a leader it
  /// cannot reach was likely cut off from its peers too, and is not
  /// installed again while an in-sync follower that is up can lead instead.
  /// Called from the controller's thread; must be quick and thread-safe.
  /// Empty: every member counts as linked.
  std::function<bool(const std::string& name)> linked;
  /// Partitions the controller moves toward their targets at once
  /// (cluster.rebalance_concurrency); 0: it never moves one for balance.
  uint32_t rebalance_concurrency = 2;
  /// How long a partition whose leadership the controller moved for balance
  /// counts as moving: time for the new leader to commit what it holds and
  /// resume the partition's runs (tens of ms measured) before the next move
  /// starts in its place.
  std::chrono::milliseconds rebalance_settle{1000};
  /// How often the controller looks when nothing wakes it.
  std::chrono::milliseconds tick{100};
  /// A watch that saw nothing this long is made again after a fresh read.
  std::chrono::milliseconds resync_interval{10'000};
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
};

class partition_map {
 public:
  explicit partition_map(partition_map_options opts);
  ~partition_map();

  partition_map(const partition_map&) = delete;
  partition_map& operator=(const partition_map&) = delete;

  /// Checks (or, for a new cluster, records) the partition count, turns
  /// part 1's claims into records, makes the records of the partitions
  /// this member's store holds and of its home partitions, then starts
  /// following etcd and the controller. Blocking; call after this member
  /// registered. Returns why the member may not join, or "".
  std::string start();

  /// Stops the watch and the controller. Idempotent.
  void stop();

  /// Partition `p`'s record as last seen (exists() false when none).
  partition_record record(uint32_t p) const;

  /// Every partition's record, by partition.
  std::vector<partition_record> records() const;

  /// The leader of `p`, "" when it has no record.
  std::string leader(uint32_t p) const;

  /// The partitions `member` leads, in order.
  std::vector<uint32_t> leaders_of(const std::string& member) const;

  /// The partitions this member leads, in order.
  std::vector<uint32_t> led() const;

  /// The leader of `p`, making its record first when it has none
  /// (rendezvous hashing over the up members). Blocking (one etcd
  /// transaction when `p` has no record). Returns "" when etcd could not
  /// be asked or no member is up.
  std::string claim(uint32_t p);

  /// Drops `member` from `p`'s ISR, as its leader at `epoch`, guarded by
  /// the state's mod_revision `state_revision` (0: the state as it is: a
  /// change of the replicas meanwhile is then no reason to refuse).
  /// Blocking; once it took, record(p) shows it.
  isr_result shrink_isr(uint32_t p, uint64_t epoch, const std::string& member,
                        const std::string& reason, int64_t state_revision = 0);

  /// Adds replica `member` to `p`'s ISR (it has caught up), as shrink_isr.
  isr_result expand_isr(uint32_t p, uint64_t epoch, const std::string& member,
                        int64_t state_revision = 0);

  /// Whether this member is the elected controller now.
  bool is_controller() const;

  /// The controller's name as last seen, "" when none.
  std::string controller() const;

  /// Why `p` cannot be led now ("" when it can, or when it has no record
  /// yet: it is made on first use): its leader is down and no in-sync
  /// replica is up (no unclean election: it waits for one to come back),
  /// or its leader is down and a failover is due.
  std::string unavailable(uint32_t p) const;

  /// Every partition unavailable now, with the reason.
  std::map<uint32_t, std::string> availability() const;

  /// How `p` stands toward its rendezvous target, as this member's view
  /// and the controller's rules see it (any member can tell).
  partition_balance balance(uint32_t p) const;

  /// The moves this member made as the controller.
  move_counts moves() const;

  /// The rendezvous score of `member` for partition `p`: the higher, the
  /// earlier it ranks. Stable across builds and machines (FNV-1a of the
  /// name, mixed with p by splitmix64's finalizer).
  static uint64_t rendezvous_score(std::string_view member, uint32_t p);

  /// `members` ranked for `p`: by score, highest first, ties by name.
  static std::vector<std::string> rank(std::vector<std::string> members,
                                       uint32_t p);

  static std::string leader_key(const std::string& cluster, uint32_t p);
  static std::string state_key(const std::string& cluster, uint32_t p);
  static std::string count_key(const std::string& cluster);
  static std::string controller_key(const std::string& cluster);
  /// Part 1's claim of `p` (read once at start and turned into a record).
  static std::string claim_key(const std::string& cluster, uint32_t p);

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
