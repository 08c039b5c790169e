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
#include <vector>

namespace troupe::persistence {

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
  /// before the call (with the reason) rather than wait for space.
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
  virtual void
  scan_unfinished(const std::function<void(const run_index_entry&,
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
  };

  /// Deletes finished runs and tombstones older than `o` says, in batches,
  /// leaving a tombstone per deleted run; unfinished runs are never deleted.
  /// Blocking, on the caller's thread (which must not be the writer's);
  /// concurrent calls run one after the other.
  virtual gc_report collect(const gc_options& o) = 0;

  /// Returns the tombstone of `run_id` if it was deleted after retention
  /// (and its tombstone has not expired yet), or nothing.
  virtual std::optional<run_tombstone> find_tombstone(const std::string& run_id)
    = 0;
};

} // namespace troupe::persistence
