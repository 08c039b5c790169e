#pragma once

// The replicator: moves a member's partition-log records from each
// partition's leader to its followers and commits them once every in-sync
// replica has them (Kafka's model; docs/cluster.md, "Replication").
//
// One per member, over the member's journal store opened with
// options::replication. It is told who leads which partition (assign(),
// from the controller's records in etcd) and never talks to etcd itself:
// the ISR changes it wants go out through callbacks in its options. Every
// blocking store call (lead, fence, accept, commit, truncate,
// read_records) runs on the replicator's own worker thread, never on a CAF
// scheduler thread nor on the store's writer thread.

#include "persistence/journal_store.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace troupe::cluster::replication {

/// How the replicator's messages reach another member. Messages are opaque
/// bytes (the replicator encodes and checks them itself); a transport may
/// drop or delay them (a lost link), and the replicator retries.
class transport {
 public:
  virtual ~transport() = default;
  /// Sends `bytes` to `member`'s replicator, which gets them through its
  /// on_message(this member, bytes). Quick and non-blocking; called on the
  /// replicator's worker thread.
  virtual void send(const std::string& member, std::string bytes) = 0;
};

struct replicator_options {
  /// This member's name, as in assign()'s leader, isr and replicas.
  std::string member;
  /// In-sync replicas (the leader included) a partition needs to take
  /// writes (cluster.min_insync). Fewer: it refuses them and commits
  /// nothing, never falling back quietly to fewer copies. Default: 2.
  uint32_t min_insync = 2;
  /// A follower in the ISR that lacks a record the leader wrote longer
  /// than this ago is reported through shrink_isr (cluster.replica_lag).
  /// Default: 2 s.
  std::chrono::milliseconds replica_lag{2000};
  /// How often idle partitions send the followers the leader's committed
  /// offset (a heartbeat, which the followers answer with their log end)
  /// and how often the timers below are checked. Default: 50 ms.
  std::chrono::milliseconds heartbeat{50};
  /// A shipment or question that got no progress within this is sent
  /// again (a lost message). Default: 300 ms.
  std::chrono::milliseconds retry{300};
  /// Most record bytes in one message to one member; a batch over it goes
  /// in several. A follower has at most one shipment per partition on its
  /// way (what is written meanwhile goes in the next), so this also bounds
  /// what a slow follower is sent ahead. Default: 1 MiB.
  size_t max_message_bytes = size_t{1} << 20;
  /// Most shipments of one partition on their way to one follower,
  /// unanswered: records written while earlier ones travel go out at once
  /// rather than a round trip later. Default: 4.
  size_t max_in_flight = 4;
  /// Records a partition's log keeps below what every replica that counts
  /// has (cluster.log_retain_records): a leader trims its log up to the
  /// smallest offset held by itself, its in-sync followers, followers
  /// catching up and answering, and followers being sent a snapshot, less
  /// this margin; a follower trims its own up to its committed offset less
  /// it. Never a record not applied here. A follower that lacks trimmed
  /// records is sent a snapshot instead. Default: 10000.
  uint64_t log_retain_records = 10'000;
  /// Most bytes of one snapshot chunk (one run at least). Default: 256 KiB.
  size_t snapshot_chunk_bytes = size_t{256} << 10;

  /// Asks the controller to drop `member` from partition `partition`'s
  /// ISR at `epoch` (a guarded transaction), saying why. Called on the
  /// worker thread, at most once per replica_lag for a member: it may
  /// block, and blocks replication meanwhile. The controller's answer
  /// comes back through assign(). May be empty.
  std::function<void(uint32_t partition, uint64_t epoch,
                     const std::string& member, const std::string& reason)>
    shrink_isr = {};
  /// Asks the controller to add `member`, caught up again, to the ISR. As
  /// shrink_isr. May be empty.
  std::function<void(uint32_t partition, uint64_t epoch,
                     const std::string& member)>
    expand_isr = {};
  /// Says that this member, leader of `partition` at `epoch`, learnt of
  /// `newer_epoch` (a follower refused its shipment as stale, a newer
  /// leader shipped to it, or assign() named another leader): it stopped
  /// leading, and its records not committed are truncated once it follows
  /// the new leader. On the worker thread; must be quick. May be empty.
  std::function<void(uint32_t partition, uint64_t epoch, uint64_t newer_epoch)>
    deposed = {};
  /// Where warnings go (a malformed message, a refused store call). May be
  /// empty.
  std::function<void(const std::string&)> warn = {};
};

/// Whether a partition takes writes here, and if not, why.
struct writability {
  bool writable = false;
  /// Empty when writable; else says why, naming the partition.
  std::string reason = {};
};

/// How one follower of a partition this member leads stands.
struct follower_metrics {
  std::string member;
  bool in_isr = false;
  /// Its log end as it last acknowledged it; 0 before its first answer.
  uint64_t log_end = 0;
  /// Records the leader has that it has not acknowledged.
  uint64_t lag_records = 0;
  /// How long ago the leader wrote the first record it lacks; 0 when it
  /// has them all.
  int64_t lag_ms = 0;
};

/// One partition as the replicator sees it, for metrics and `partitions`.
struct partition_metrics {
  uint32_t partition = 0;
  /// "leader", "follower" or "none".
  std::string role = "none";
  std::string leader;
  uint64_t epoch = 0;
  /// The ISR as last assigned (the leader included).
  size_t isr_size = 0;
  /// This member's log end and committed offset.
  uint64_t log_end = 0;
  uint64_t committed = 0;
  /// Leader: records written and waiting for the ISR to have them before
  /// they commit.
  uint64_t waiting = 0;
  /// Leader: the largest lag among its followers.
  uint64_t max_lag_records = 0;
  int64_t max_lag_ms = 0;
  /// Leader: each follower.
  std::vector<follower_metrics> followers;
};

/// Counts since start, for metrics.
struct replicator_counters {
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t records_shipped = 0;
  uint64_t records_accepted = 0;
  /// Messages dropped as malformed.
  uint64_t malformed = 0;
  /// Times this member learnt it was deposed.
  uint64_t deposed = 0;
  /// Records truncated from this member's logs (divergent tails).
  uint64_t truncated = 0;
  /// Snapshots this member sent whole to a follower, as a leader.
  uint64_t snapshots_sent = 0;
  /// Snapshots this member installed whole, as a follower.
  uint64_t snapshots_installed = 0;
  /// Records trimmed from this member's logs (retention).
  uint64_t trimmed = 0;
};

class replicator {
 public:
  /// Starts the worker thread. `store` (opened with options::replication)
  /// and `net` must outlive the replicator.
  replicator(persistence::journal_store& store, transport& net,
             replicator_options opts);
  /// Stops the worker (see stop()).
  ~replicator();

  replicator(const replicator&) = delete;
  replicator& operator=(const replicator&) = delete;

  /// Stops the worker thread after the task it runs; later calls are
  /// ignored. Idempotent.
  void stop();

  /// Tells the replicator partition `partition`'s record: led by `leader`
  /// at `epoch`, with in-sync replicas `isr` (leader included) among
  /// `replicas`. This member leads it (store's lead()), follows it (fences
  /// the epoch and truncates its divergent tail, KIP-101), or has no part
  /// in it. Quick: the work is queued.
  void assign(uint32_t partition, std::string leader, uint64_t epoch,
              std::vector<std::string> isr, std::vector<std::string> replicas);

  /// The store's replication_options::on_records: records were written.
  /// Quick: queued.
  void on_records(const std::vector<std::pair<uint32_t, uint64_t>>& written);

  /// A message from `from`'s replicator (through the transport). Quick:
  /// queued; malformed messages are counted, warned about and dropped.
  void on_message(const std::string& from, std::string bytes);

  /// Whether this member may take new submissions and attempts for
  /// `partition`: it leads it and its ISR has at least min_insync members.
  /// Thread-safe and quick.
  writability writable(uint32_t partition) const;

  /// The partitions this member has a part in. Thread-safe and quick.
  std::vector<partition_metrics> metrics() const;
  std::optional<partition_metrics> metrics(uint32_t partition) const;
  replicator_counters counters() const;

  /// Blocks until the worker has run everything queued before the call
  /// (for tests and orderly shutdown), or `timeout` passes; returns
  /// whether it did.
  bool drain(std::chrono::milliseconds timeout);

  struct state;

 private:
  void post(std::function<void()> task);
  void run();

  persistence::journal_store& store_;
  transport& net_;
  replicator_options opts_;
  std::unique_ptr<state> st_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::thread worker_;
};

/// The store's on_records, made before the replicator exists (the store is
/// opened first): attach() the replicator once made, and detach (attach
/// null) before destroying it.
class records_hook {
 public:
  records_hook();
  /// The function for replication_options::on_records.
  std::function<void(const std::vector<std::pair<uint32_t, uint64_t>>&)>
  callback() const;
  void attach(replicator* r);

 private:
  struct slot {
    std::mutex mu;
    replicator* target = nullptr;
  };
  std::shared_ptr<slot> slot_;
};

/// Members in one process linked by memory, for tests and benchmarks: a
/// transport per member, with links that can be cut (messages dropped) or
/// slowed (delivered late, in order, on a thread of the network's own).
class memory_network {
 public:
  memory_network();
  ~memory_network();

  /// Where `member`'s messages are delivered.
  void join(const std::string& member, replicator* r);
  /// Stops delivering to `member` (before destroying its replicator).
  void leave(const std::string& member);
  /// The transport `member` sends with.
  transport& endpoint(const std::string& member);

  /// Drops every message from `from` to `to` while set.
  void cut(const std::string& from, const std::string& to, bool cut = true);
  /// Drops every message to and from `member` while set.
  void isolate(const std::string& member, bool isolated = true);
  /// Delivers messages from `from` to `to` `delay` late (0: at once).
  void delay(const std::string& from, const std::string& to,
             std::chrono::milliseconds delay);
  /// Messages dropped so far.
  uint64_t dropped() const;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster::replication
