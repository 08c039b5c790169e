#pragma once

#include "config/size.hpp"
#include "persistence/records.hpp"
#include "persistence/store_holder.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::persistence {

/// What a partition-log call (journal_store::fence, accept, commit, ...)
/// answers: ok, or a typed refusal that a replica acts on without parsing
/// the message.
enum class plog_errc : uint8_t {
  ok = 0,
  /// The store was opened without replicated partitions.
  not_replicated,
  /// The partition is not below options::replication.partitions.
  bad_partition,
  /// The epoch is older than the highest this partition has seen
  /// (plog_result::epoch holds that one): the sender was deposed.
  stale_epoch,
  /// The record's offset is past the log's end + 1 (plog_result::offset
  /// holds the offset expected next): records are missing in between.
  gap,
  /// The log holds another record at this offset (plog_result::offset): the
  /// replica's tail diverged from the leader's and must be truncated by
  /// epoch first (end_offset_for_epoch, truncate).
  diverged,
  /// The record's bytes are not a record this build reads.
  corrupt,
  /// Truncating would remove committed records (plog_result::offset holds
  /// the committed offset): never done.
  committed,
  /// The offset is past the log's end (plog_result::offset holds the end).
  beyond_end,
  /// The records asked for were removed by trim_log (plog_result::offset
  /// holds the first offset still kept): catch up from a snapshot.
  trimmed,
  /// Reading or writing the database failed.
  io,
};

/// Returns the code's name, e.g. "stale_epoch".
std::string_view to_string(plog_errc c);

/// The answer of a partition-log call.
struct plog_result {
  plog_errc code = plog_errc::ok;
  /// Says what was refused and why, naming the partition; empty when ok.
  std::string message = {};
  /// gap: the offset expected next; diverged: the offset that differs;
  /// committed: the committed offset; beyond_end: the log's end; trimmed:
  /// the first offset kept; end_offset_for_epoch: the answer.
  uint64_t offset = 0;
  /// stale_epoch: the highest epoch the partition has seen.
  uint64_t epoch = 0;

  bool ok() const { return code == plog_errc::ok; }
};

/// Where one partition's log stands. Offsets start at 1; 0 means none.
struct partition_log_state {
  /// The first offset still in the log (trim_log removes those before);
  /// log_end + 1 when the log is empty.
  uint64_t log_start = 1;
  /// The last offset written (0: no record yet).
  uint64_t log_end = 0;
  /// The highest epoch seen (fence, accept, or the records themselves).
  uint64_t epoch = 0;
  /// The highest offset known to be committed (held by every in-sync
  /// replica).
  uint64_t committed = 0;
  /// The highest offset whose effects are in the journals and indexes;
  /// at most committed.
  uint64_t applied = 0;
  /// The leader-epoch cache: (epoch, first offset written in it), in
  /// ascending order, as in Kafka's KIP-101.
  std::vector<std::pair<uint64_t, uint64_t>> epochs = {};

  bool operator==(const partition_log_state&) const = default;
};

/// One record of a partition log, as shipped to a follower.
struct log_record {
  uint64_t offset = 0;
  /// The epoch of the leader that wrote it.
  uint64_t epoch = 0;
  /// Its bytes, as stored; accept() takes them unchanged.
  std::string bytes = {};
};

/// The journal of every run and the run index, in one RocksDB database.
///
/// Writes go through one writer thread that commits everything queued since
/// its last write in one WriteBatch (and, with `sync`, one fsync): group
/// commit, so concurrent runs share writes. Callers never block on a write;
/// they are called back on the writer thread once it is durable.
class journal_store {
 public:
  struct append_op;

  /// Free space on the store's filesystem, as the space watcher last read
  /// it.
  struct disk_space {
    /// Bytes free to the node (statvfs: f_bavail × f_frsize).
    uint64_t free_bytes = 0;
    /// The filesystem's size in bytes.
    uint64_t total_bytes = 0;
    /// options::min_free in bytes on this filesystem; 0: no floor.
    uint64_t min_free_bytes = 0;
    /// Whether free space fell below the floor and has not come back above
    /// it by the margin: appends are held, not written.
    bool low = false;
    /// Whether a write found the disk full (it filled faster than the
    /// watcher read it): appends are held until RocksDB has recovered.
    bool write_failed = false;
    /// Appends queued and not yet written (held ones included).
    size_t queued = 0;
    /// Why the last reading failed, or empty; a failed reading changes
    /// nothing else.
    std::string error;
  };

  struct options {
    /// The database folder; created if missing (see create_if_missing).
    std::string path;
    /// Whether a folder that does not exist, or holds no store yet, gets a
    /// new store. False for a process that only reads what is there (`troupe
    /// status --data-dir`, ...): open() then fails with an error naming the
    /// path instead of creating an empty store. Default: true.
    bool create_if_missing = true;
    /// Who this process is (its command, its control address), written
    /// with its pid to the file HOLDER in the folder once the store is open
    /// and removed when it closes: a process refused the store's lock reads
    /// it (read_store_holder) to say who holds the store. Default: nothing
    /// but the pid.
    store_holder holder = {};
    /// fsync each group commit (storage.durability = machine). Default: off.
    bool sync = false;
    /// Most appends committed in one batch. Default: 512.
    size_t max_batch = 512;
    /// RocksDB block cache. Default: 8 MiB.
    size_t block_cache_mb = 8;
    /// Called on the writer thread after each group commit with the number
    /// of appends it held and how long the write took (its fsync included
    /// when `sync`), for metrics; must be quick. May be empty.
    std::function<void(size_t appends, std::chrono::nanoseconds took)> on_commit
      = {};
    /// For tests: called in append() with each op; a non-empty answer fails
    /// the op with that reason, as if it could not be written. May be empty.
    std::function<std::string(const append_op&)> fail_append = {};
    /// Free space the filesystem must keep (storage.min_free). Below it the
    /// writer holds appends instead of writing them, until free space is
    /// back above it by a margin (a twentieth of it, at most 64 MiB), so
    /// that the journal never fills the disk. Default: no floor.
    config::free_space_floor min_free = {};
    /// How often the space watcher, a thread of the store's own, reads free
    /// space. Default: 1s.
    std::chrono::milliseconds space_check_interval{1000};
    /// Reads the free and total bytes of the store's filesystem, or returns
    /// false with `error` set; called on the space watcher's thread. Empty
    /// (the default): statvfs on `path`; or, when the environment variable
    /// TROUPE_TEST_FREE_SPACE_FILE names a file, the two numbers "FREE
    /// TOTAL" it holds, for tests of a whole node.
    std::function<bool(uint64_t& free, uint64_t& total, std::string& error)>
      read_space = {};
    /// Called when `low` changes (on the space watcher's thread, or in
    /// open() when the first reading is low) with the new reading; must be
    /// quick. May be empty.
    std::function<void(const disk_space&)> on_space_change = {};

    /// Replicated partitions: every append becomes first a record in its
    /// partition's log, and takes effect only once committed (see
    /// "partition logs" below and persistence/README.md).
    struct replication_options {
      /// How many partitions (cluster.partitions); 0, the default: off.
      /// Off, an append is written straight to the journals, as on a node
      /// alone.
      uint32_t partitions = 0;
      /// The partition of an append, from its run id and idempotency key
      /// (runtime's partition_of_key for a keyed run, else
      /// partition_of_run). Required when `partitions` is set.
      std::function<uint32_t(std::string_view run_id,
                             std::string_view idempotency_key)>
        partition_of = {};
      /// Commit each record as soon as it is written, on the writer thread:
      /// a partition with no other replica. Default: off (commit() is
      /// called when the in-sync replicas have the record).
      bool commit_on_record = false;
      /// Most records applied in one WriteBatch by commit() and recovery.
      /// Default: 256.
      size_t apply_batch = 256;
      /// For tests: called after each WriteBatch that applies records, with
      /// the partition and its new applied offset; false stops applying
      /// there, as a crash would (commit() then fails with reason
      /// "stopped", and the next open applies the rest). May be empty.
      std::function<bool(uint32_t partition, uint64_t applied)>
        after_apply_write = {};
      /// Called on the writer thread after each group commit that wrote
      /// records, with (partition, its new log end) for each partition it
      /// wrote a record of, in partition order: what a replicator ships to
      /// the followers (cluster/replication). Called after the write, before
      /// the batch's other callbacks, outside the store's locks; must be
      /// quick (queue the work elsewhere). May be empty.
      std::function<void(
        const std::vector<std::pair<uint32_t, uint64_t>>& records)>
        on_records = {};
    };
    replication_options replication = {};
  };

  /// Opens (or creates) the store. On failure returns null and sets `error`
  /// to a clear reason naming the path (not a folder, no store there, in use
  /// by another process, corrupt, permission denied, ...).
  static std::unique_ptr<journal_store> open(const options& opts,
                                             std::string& error);

  /// Commits what is queued, calls the pending callbacks, closes the DB.
  virtual ~journal_store() = default;

  /// Appends to the journal of one run, and optionally replaces its index
  /// entry, atomically.
  struct append_op {
    std::string run_id;
    std::vector<event_record> events;
    std::optional<run_index_entry> index;
    /// When not empty, the append claims this idempotency key for the run,
    /// atomically with its events; a key another run holds refuses the
    /// append with an error naming that run (see find_idempotency_key).
    std::string idempotency_key = {};
    /// Node notes to store or replace along with it (e.g. the last state of
    /// a circuit breaker), by name. An append of notes only may leave
    /// run_id empty.
    std::vector<std::pair<std::string, std::string>> notes = {};
    /// Lifts the refusal that follows a failed append of the run (see
    /// append) before this append is written. Set it only once whoever
    /// made the run's earlier appends has stopped (the run actor is gone)
    /// and the journal is read again after it: the run supervisor's restart
    /// barrier, and its final run_failed when it gives up.
    bool resync = false;
    /// When set, a fence: the append goes through only if the run's events
    /// would be numbered from `expected_seq`, i.e. its journal holds
    /// `expected_seq - 1` events; else it writes nothing and fails with an
    /// error for which is_stale() holds. For callers acting on a journal
    /// they read earlier (a run actor resuming a run), so that they never
    /// append to a journal that has grown since. An append of no events
    /// only checks.
    std::optional<uint32_t> expected_seq = {};
  };

  /// Returns whether `error`, from an append's callback, is the refusal of
  /// a fenced append (see append_op::expected_seq): the run's journal is
  /// not as the caller read it.
  static bool is_stale(std::string_view error) {
    return error.starts_with(stale_journal_prefix);
  }
  static constexpr std::string_view stale_journal_prefix = "stale journal: ";

  /// Returns whether `error`, from an append's callback, says that this
  /// store does not lead the append's partition (see lead()): the run
  /// belongs to another member now.
  static bool is_not_leader(std::string_view error) {
    return error.starts_with(not_leader_prefix);
  }
  static constexpr std::string_view not_leader_prefix = "not the leader: ";

  /// Returns whether `error`, from an append's callback, says that the
  /// append's record was written but will never take effect: a newer
  /// leader's log replaced it (truncated). Nothing of the append exists or
  /// ever will: resending it is safe. (Appends waiting when a snapshot
  /// replaces their partition fail otherwise: they may be in the snapshot.)
  static bool is_discarded(std::string_view error) {
    return error.starts_with(discarded_prefix);
  }
  static constexpr std::string_view discarded_prefix
    = "not committed, discarded: ";

  /// Queues `op`. The store numbers the run's events itself, in order. `done`
  /// is called on the writer thread with an empty string once the batch that
  /// holds `op` is durable, or with the reason it failed.
  ///
  /// Once an append of a run fails, every later append of that run fails
  /// too, in the same group commit or any later one, until an append with
  /// `resync`: a run actor queues several appends before it hears of the
  /// first, and storing event N+1 without event N would leave its journal
  /// with a hole. (A run with no journal record yet is the exception: its
  /// first append is its submission, and nothing follows a submission that
  /// failed.) The journal a restart reads is thus always what the run had
  /// durably before the failure, with nothing missing.
  ///
  /// While free space is low (see disk_space) appends are held: `done` is
  /// called once space returns and they are written. flush() and closing
  /// the store fail the held appends instead, with the reason, so that
  /// neither waits for space.
  virtual void append(append_op op, std::function<void(std::string)> done) = 0;

  /// Blocks until everything queued before the call is durable or has
  /// failed. While appends are held for low disk space, fails those queued
  /// before the call (with the reason) rather than wait for space. With
  /// replicated partitions, durable means recorded in the partition's log:
  /// flush() does not wait for commits.
  virtual void flush() = 0;

  /// Returns the last reading of free space and whether appends are held.
  /// Thread-safe, and quick: it does no I/O.
  virtual disk_space space() = 0;

  // -- reads: blocking, for start-up and command-line tools ------------------

  /// Returns the index entry of `run_id`, or nothing.
  virtual std::optional<run_index_entry> find_run(const std::string& run_id)
    = 0;

  /// Returns the notes whose names start with `prefix`, in name order.
  virtual std::vector<std::pair<std::string, std::string>>
  read_notes(const std::string& prefix) = 0;

  /// Returns the run that holds idempotency key `key`, or nothing.
  virtual std::optional<std::string>
  find_idempotency_key(const std::string& key) = 0;

  /// Returns index entries in run-id order, starting after `after` (empty:
  /// from the first), at most `limit`.
  virtual std::vector<run_index_entry> list_runs(const std::string& after,
                                                 size_t limit)
    = 0;

  /// Reads the journal of `run_id` in order. On a corrupt record returns the
  /// events before it and sets `error` naming the run and the record number.
  virtual std::vector<event_record> read_journal(const std::string& run_id,
                                                 std::string& error)
    = 0;

  /// Returns event `seq` (1 for the first) of the journal of `run_id`, or
  /// nothing: with `error` empty when there is no such event, else saying
  /// why it cannot be read. One lookup, whatever the journal's length (a
  /// run's submission, say, is event 1).
  virtual std::optional<event_record>
  read_event(const std::string& run_id, uint32_t seq, std::string& error) = 0;

  /// Calls `visit` for every unfinished run (running or paused), with its
  /// journal (or the error that stopped reading it), in one pass. Reads the
  /// index of unfinished runs only: its cost does not grow with history.
  void
  scan_unfinished(const std::function<void(const run_index_entry&,
                                           std::vector<event_record> events,
                                           const std::string& error)>& visit) {
    scan_unfinished_if({}, visit);
  }

  /// Like scan_unfinished, for the runs `only` accepts (by id; empty: all):
  /// a partition's runs when a member comes to lead it. Journals of the
  /// others are not read.
  virtual void
  scan_unfinished_if(const std::function<bool(std::string_view run_id)>& only,
                     const std::function<void(const run_index_entry&,
                                              std::vector<event_record> events,
                                              const std::string& error)>& visit)
    = 0;

  /// Reads the journal of `run_id` on a reader thread and calls `done` there.
  virtual void read_journal_async(
    std::string run_id,
    std::function<void(std::vector<event_record>, std::string error)> done)
    = 0;

  // -- retention
  // ---------------------------------------------------------------

  /// What one collection is to delete.
  struct gc_options {
    /// Finished runs whose index entry went terminal before this time (ns
    /// since the epoch) are deleted: journal, index entry, idempotency keys.
    int64_t runs_before_ns = 0;
    /// Tombstones of runs deleted before this time are removed.
    int64_t tombstones_before_ns = 0;
    /// Runs deleted per WriteBatch; between batches the journal writer gets
    /// the database to itself. Default: 256.
    size_t batch = 256;
    /// When set (from another thread), the collection stops after its
    /// current batch, and a compaction it runs is cancelled. May be null.
    std::atomic<bool>* stop = nullptr;
    /// Compact what was deleted, so that the space is freed now and later
    /// reads skip no deletion markers. Default: true.
    bool compact = true;
    /// With replicated partitions: how long a batch of deletions may wait
    /// for its records to commit (every in-sync replica holds them) before
    /// the collection gives up with an error; deletions recorded by then
    /// still take effect once they commit. Default: 30 s.
    std::chrono::milliseconds commit_wait{30'000};
  };

  /// What one collection removed.
  struct gc_report {
    /// Finished runs deleted.
    uint64_t runs = 0;
    /// Journal records of those runs.
    uint64_t events = 0;
    /// Idempotency keys released.
    uint64_t keys = 0;
    /// Tombstones removed after their own retention.
    uint64_t tombstones = 0;
    /// Why it stopped early (a failed write, ...); empty when it did not.
    std::string error = {};
    /// Whether `stop` ended it before it was done.
    bool stopped = false;
    /// With replicated partitions: finished runs (and expired tombstones)
    /// past the time that were left alone because this store does not lead
    /// their partition; its leader deletes them, for every replica.
    uint64_t not_led = 0;
  };

  /// Deletes finished runs and tombstones older than `o` says, in batches,
  /// leaving a tombstone per deleted run; unfinished runs are never deleted.
  /// Blocking, on the caller's thread (which must not be the writer's);
  /// concurrent calls run one after the other.
  ///
  /// With replicated partitions the deletions go through the partitions'
  /// logs, so that every replica deletes the same: only the runs of the
  /// partitions this store leads are deleted (the others are counted in
  /// gc_report::not_led), each batch is queued to the writer like appends
  /// and becomes a record of each partition it touches (point deletions of
  /// the run's journal, index entries and keys, and the tombstone's puts),
  /// and takes effect when that record commits; the call waits for it, at
  /// most gc_options::commit_wait per batch. A store that holds partition
  /// logs but was opened without replication refuses to collect (its
  /// replicas would differ).
  virtual gc_report collect(const gc_options& o) = 0;

  /// Returns the tombstone of `run_id` if it was deleted after retention
  /// (and its tombstone has not expired yet), or nothing.
  virtual std::optional<run_tombstone> find_tombstone(const std::string& run_id)
    = 0;

  // -- partition logs (options::replication) ---------------------------------
  //
  // With replicated partitions an append is not written to the journals
  // directly: the group commit turns the appends of each partition into one
  // record of that partition's log (its effects, resolved: journal keys
  // numbered, index entries and keys as they will be written), at the next
  // offset, tagged with the partition's epoch, and writes the records
  // (fsynced with `sync`). The effects reach the journals, the run index
  // and the idempotency keys only when commit() is called for the record's
  // offset, on the leader and the followers alike; only then is the
  // append's callback called, on the thread that calls commit(). Reads
  // (find_run, read_journal, scan_unfinished, ...) see committed effects
  // only. Every call below is blocking and thread-safe, and must not be
  // made from an append's callback on the writer thread. Without
  // replication each answers plog_errc::not_replicated.

  /// Records that `epoch` is the partition's newest, durably (fsynced).
  /// Refuses an older epoch (stale_epoch); the same one is a no-op. A
  /// follower calls it when it learns of a newer leader (accept() does it
  /// too). A newer epoch ends this store's leadership of the partition.
  virtual plog_result fence(uint32_t partition, uint64_t epoch) = 0;

  /// Makes this store the partition's leader at `epoch`: fences it (as
  /// fence()), then records appends of the partition, tagged with it. Until
  /// then, and once a newer epoch is fenced or accepted, appends of the
  /// partition are refused with an error for which is_not_leader() holds,
  /// so that a deposed leader never writes a record under another's epoch.
  /// A partition never fenced (epoch 0: a store not yet in a cluster) is
  /// led at epoch 0. Leadership is not persisted: after a restart the
  /// member is told again.
  virtual plog_result lead(uint32_t partition, uint64_t epoch) = 0;

  /// A follower's write of record `offset`, shipped by the leader of
  /// `leader_epoch` (bytes from the leader's read_records). Refuses an
  /// epoch older than the highest seen (stale_epoch) and a record past the
  /// end + 1 (gap, naming the offset expected); acknowledges a record it
  /// already holds, byte for byte, without writing (a retried shipment),
  /// and refuses a different one there (diverged). Written with the store's
  /// durability, with the newer epoch if any, in one WriteBatch.
  virtual plog_result accept(uint32_t partition, uint64_t leader_epoch,
                             uint64_t offset, std::string_view record)
    = 0;

  /// One record of accept_many.
  struct accept_item {
    uint32_t partition = 0;
    uint64_t leader_epoch = 0;
    uint64_t offset = 0;
    std::string_view record = {};
  };

  /// accept() for several records (of one partition or many, each
  /// partition's in offset order), written in one WriteBatch with one sync:
  /// a follower's whole shipment for the cost of one write. Answers each;
  /// after a refusal, the partition's later records are refused too (gap)
  /// and nothing of them is written.
  virtual std::vector<plog_result>
  accept_many(const std::vector<accept_item>& items) = 0;

  /// Marks the partition committed up to `offset` and applies the records
  /// not applied yet up to it, in batches (each with its new applied
  /// offset, unsynced: an open re-applies what a crash lost), then calls
  /// the callbacks of the appends they hold. An offset at or below the
  /// applied one is a no-op; past the end it is refused (beyond_end).
  virtual plog_result commit(uint32_t partition, uint64_t offset) = 0;

  /// commit() for several partitions (each at most once), applied together
  /// in one unsynced WriteBatch where their records fit in apply_batch:
  /// a replicator's commits of one round for the cost of one write.
  /// Answers each, in order; a partition named again is refused
  /// (bad_partition).
  virtual std::vector<plog_result>
  commit_many(const std::vector<std::pair<uint32_t, uint64_t>>& items) = 0;

  /// Removes the records after `after_offset`: a deposed leader's (or a
  /// follower's) divergent tail. Never a committed record (committed). The
  /// appends those records held fail, and their runs' later appends are
  /// refused until a resync, as after any failed append. Nothing was
  /// applied from them, so no state is undone.
  virtual plog_result truncate(uint32_t partition, uint64_t after_offset) = 0;

  /// Returns in `offset` of the answer the last offset of `epoch` in this
  /// log (KIP-101): the offset before the first record of a newer epoch,
  /// or the log's end when no newer epoch wrote. A follower truncates
  /// after it (or after its own end for that epoch, if smaller).
  virtual plog_result end_offset_for_epoch(uint32_t partition, uint64_t epoch)
    = 0;

  /// Reads records from `from_offset` on, until the log's end or until
  /// `max_bytes` are reached (at least one record, whatever its size).
  /// Before the log's start: trimmed; past its end + 1: beyond_end.
  virtual plog_result read_records(uint32_t partition, uint64_t from_offset,
                                   size_t max_bytes,
                                   std::vector<log_record>& out)
    = 0;

  /// Removes the records up to `up_to` (at most the applied offset: give
  /// the smallest offset every replica holds), keeping the leader-epoch
  /// cache's entry that covers the new start. Retention of the log.
  virtual plog_result trim_log(uint32_t partition, uint64_t up_to) = 0;

  /// Returns where the partition's log stands, or nothing without
  /// replication or for a partition out of range.
  virtual std::optional<partition_log_state> log_state(uint32_t partition) = 0;

  /// A digest of what the records applied so far wrote for the partition's
  /// runs (their index entries and journals), read at one snapshot with the
  /// applied offset it matches: replicas that applied the same records
  /// answer the same digest for the same offset. Reads every run of the
  /// partition: for checks and tests, not the hot path.
  struct partition_digest {
    uint64_t applied = 0;
    uint64_t runs = 0;
    uint64_t events = 0;
    /// 16 hex digits (FNV-1a 64 over keys and values, length-prefixed).
    std::string digest;
  };
  virtual std::optional<partition_digest> digest_partition(uint32_t partition)
    = 0;

  // -- snapshots of a partition ----------------------------------------------
  //
  // A replica whose log lacks records the leader has trimmed cannot catch up
  // from the stream: it installs the leader's applied state of the
  // partition instead (a snapshot), then follows the stream from the
  // snapshot's offset. A partition's applied state is what its records
  // wrote for the runs whose id maps to it: their index entries, journals,
  // unfinished and finished entries, idempotency keys (both ways) and
  // tombstones. Node notes are the member's own and are not part of it.

  /// One piece of a snapshot, at most about max_bytes (one run at least).
  struct snapshot_chunk {
    /// Puts, encoded as a partition-log record (partition_log.hpp) of the
    /// snapshot's epoch: install_snapshot_chunk() writes them.
    std::string bytes = {};
    /// Where the next chunk starts; empty when this one is the last.
    std::string next = {};
  };

  /// A partition's applied state held at one RocksDB snapshot, with the
  /// applied offset and the epoch of the record at it, read in chunks. It
  /// holds the RocksDB snapshot until destroyed, and must not outlive its
  /// store.
  class partition_snapshot {
   public:
    virtual ~partition_snapshot() = default;
    virtual uint32_t partition() const = 0;
    /// The applied offset the state stands at (0: nothing applied).
    virtual uint64_t offset() const = 0;
    /// The epoch of the record at offset() (0 when offset() is 0).
    virtual uint64_t epoch() const = 0;
    /// Reads the chunk starting at `cursor` (empty: the first), the runs
    /// and entries up to about `max_bytes`. Resumable: the same cursor
    /// reads the same chunk again.
    virtual plog_result read(const std::string& cursor, size_t max_bytes,
                             snapshot_chunk& out)
      = 0;
  };

  /// Opens a snapshot of `partition`'s applied state, or returns null with
  /// `result` saying why.
  virtual std::unique_ptr<partition_snapshot> open_snapshot(uint32_t partition,
                                                            plog_result& result)
    = 0;

  /// Starts replacing what this store holds for `partition` by a snapshot
  /// of `leader_epoch`'s leader: records that epoch (refusing an older
  /// one, stale_epoch), marks the partition's install incomplete, empties
  /// its log (log_end 0) and deletes its applied state, durably. Until
  /// finish_snapshot_install(), accept() refuses its records. A crash (or
  /// an abandoned install) before the finish leaves the mark, and the next
  /// open (or abort_snapshot_install) deletes the half-written state
  /// again, so that the install is redone from its start: half a snapshot
  /// is never taken for the whole. The appends waiting on the partition's
  /// records fail.
  virtual plog_result begin_snapshot_install(uint32_t partition,
                                             uint64_t leader_epoch)
    = 0;

  /// Writes one chunk of the snapshot being installed (bytes from
  /// partition_snapshot::read, puts of the partition's keys only: anything
  /// else is refused as corrupt and nothing of the chunk is written).
  virtual plog_result install_snapshot_chunk(uint32_t partition,
                                             std::string_view bytes)
    = 0;

  /// Ends the install: the partition's log starts after `offset`, with
  /// committed = applied = `offset`, and `epoch` (that of the snapshot's
  /// record at `offset`) in its leader-epoch cache; the mark goes, durably.
  virtual plog_result finish_snapshot_install(uint32_t partition,
                                              uint64_t offset, uint64_t epoch)
    = 0;

  /// Gives up an install begun and not finished: deletes what it wrote and
  /// leaves the partition empty (log_end 0), unmarked. A no-op without one.
  virtual plog_result abort_snapshot_install(uint32_t partition) = 0;

  /// Whether an install of `partition` was begun and not finished.
  virtual bool snapshot_install_incomplete(uint32_t partition) = 0;
};

} // namespace troupe::persistence
