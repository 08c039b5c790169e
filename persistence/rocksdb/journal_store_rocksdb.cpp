// The RocksDB implementation of journal_store. Key layout: key_layout.hpp.
//
// Threads: callers queue appends; one writer thread turns everything queued
// (up to max_batch appends) into one WriteBatch and one Write (group commit),
// then calls the appends' callbacks in order. It alone numbers journal
// records, so it keeps each active run's next sequence number in memory,
// loading it lazily with a reverse seek. A reader thread serves
// read_journal_async. Blocking reads run on the caller's thread. Retention
// (collect) runs on its caller's thread and writes batches of its own. A
// watcher thread reads free space every space_check_interval; below
// min_free (or after a write found the disk full) the writer holds appends
// until space returns, so that the journal never fills the disk.

#include "persistence/chaos_hooks.hpp"
#include "persistence/codec/codec.hpp"
#include "persistence/journal_store.hpp"
#include "persistence/rocksdb/key_layout.hpp"
#include "persistence/rocksdb/partition_log.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/table_properties_collectors.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_batch_base.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <exception>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sys/statvfs.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace troupe::persistence {

namespace {

namespace fs = std::filesystem;
namespace kl = key_layout;

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

/// Turns a failed DB::Open (or ListColumnFamilies) into a reason naming the
/// path.
std::string describe_open_failure(const std::string& path,
                                  const rocksdb::Status& s) {
  std::string msg = s.ToString();
  if (contains(msg, "lock hold by current process"))
    return "journal store at " + quoted(path)
           + " is already open in this process (RocksDB lock held)";
  if (s.IsIOError() && contains(msg, "LOCK")
      && (contains(msg, "Resource temporarily unavailable")
          || contains(msg, "No locks available")
          || contains(msg, "While lock file")))
    return "journal store at " + quoted(path)
           + " is in use by another troupe process (RocksDB lock held)";
  if (contains(msg, "Permission denied"))
    return "cannot open journal store at " + quoted(path)
           + ": permission denied (" + msg + ")";
  if (s.IsCorruption())
    return "journal store at " + quoted(path) + " is corrupt: " + msg;
  return "cannot open journal store at " + quoted(path) + ": " + msg;
}

/// Decodes the index entry stored under `key`; an entry naming another run
/// counts as corrupt.
std::optional<run_index_entry> decode_index_at(std::string_view key,
                                               std::string_view value,
                                               std::string& error) {
  auto entry = decode_index(value, error);
  if (entry && entry->run_id != key) {
    error = "index entry names run '" + entry->run_id + "'";
    return std::nullopt;
  }
  return entry;
}

/// Calls `f`, swallowing whatever it throws: a callback must not take down
/// the thread that runs it.
template<class F>
void call_quietly(F&& f) noexcept {
  try {
    f();
  } catch (...) {
    // Nothing sensible to do on a store thread.
  }
}

class rocksdb_journal_store final : public journal_store {
 public:
  rocksdb_journal_store(options opts, rocksdb::DB* db,
                        std::vector<rocksdb::ColumnFamilyHandle*> handles,
                        rocksdb::ColumnFamilyHandle* journal,
                        rocksdb::ColumnFamilyHandle* runs,
                        rocksdb::ColumnFamilyHandle* unfinished,
                        rocksdb::ColumnFamilyHandle* finished,
                        rocksdb::ColumnFamilyHandle* plog_family)
      : opts_(std::move(opts)), db_(db), handles_(std::move(handles)),
        journal_(journal), runs_(runs), unfinished_(unfinished),
        finished_(finished), plog_(plog_family) {
    max_batch_ = std::max<size_t>(1, opts_.max_batch);
    write_options_.sync = opts_.sync;
    // Before any thread starts: what a crash left committed but not
    // applied is applied now (throws with the reason when it cannot be).
    open_logs();
    if (!opts_.read_space)
      if (const char* file = std::getenv("TROUPE_TEST_FREE_SPACE_FILE"))
        space_file_ = file;
    // The first reading, before any append: a store opened on a full disk
    // holds its first append already.
    check_space();
    try {
      writer_ = std::thread{[this] { writer_loop(); }};
      reader_ = std::thread{[this] { reader_loop(); }};
      watcher_ = std::thread{[this] { watcher_loop(); }};
    } catch (...) {
      stop_threads();
      throw;
    }
  }

  ~rocksdb_journal_store() override {
    stop_threads();
    fail_waiting();
    // While the lock is still held: the next holder writes its own.
    remove_store_holder(opts_.path);
    // A log that failed to write must not be synced: Debian's RocksDB
    // build asserts on it (and aborts the process).
    close_db(db_, handles_, /*sync_wal=*/!db_failed_);
  }

  /// Stops the threads: the writer once it has written what is queued (or,
  /// while space is low, failed it), then the reader once it has answered
  /// what is queued.
  void stop_threads() {
    {
      std::lock_guard<std::mutex> lk{mu_};
      stopping_ = true;
    }
    work_cv_.notify_all();
    watch_cv_.notify_all();
    if (watcher_.joinable())
      watcher_.join();
    if (writer_.joinable())
      writer_.join();
    {
      std::lock_guard<std::mutex> lk{read_mu_};
      read_stopping_ = true;
    }
    read_cv_.notify_all();
    if (reader_.joinable())
      reader_.join();
  }

  /// Destroys the column family handles and closes `db` cleanly.
  static void close_db(rocksdb::DB* db,
                       std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                       bool sync_wal = true) {
    if (!db)
      return;
    for (auto* h : handles)
      db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
    handles.clear();
    // Without sync the last writes sit in the OS page cache; a clean close
    // makes them durable anyway.
    if (sync_wal)
      db->SyncWAL().PermitUncheckedError();
    db->Close().PermitUncheckedError();
    delete db;
  }

  // -- writes -----------------------------------------------------------------

  void append(append_op op, std::function<void(std::string)> done) override {
    pending p;
    p.done = std::move(done);
    try {
      if (opts_.fail_append)
        p.invalid = opts_.fail_append(op);
    } catch (const std::exception& e) {
      p.invalid = e.what();
    }
    p.idempotency_key = std::move(op.idempotency_key);
    p.notes = std::move(op.notes);
    p.resync = op.resync;
    p.expected_seq = op.expected_seq;
    try {
      p.run_id = std::move(op.run_id);
      bool notes_only = op.events.empty() && !op.index
                        && p.idempotency_key.empty() && !p.notes.empty();
      if (!p.invalid.empty()) {
        // Failed by the test hook.
      } else if (p.run_id.empty() && !notes_only)
        p.invalid = "cannot append: empty run id";
      else if (contains(p.run_id, std::string_view{"\0", 1}))
        p.invalid = "cannot append to run '" + p.run_id
                    + "': a run id must not contain NUL";
      else if (op.index && !op.index->run_id.empty()
               && op.index->run_id != p.run_id)
        p.invalid = "cannot append to run '" + p.run_id
                    + "': its index entry names run '" + op.index->run_id + "'";
      if (p.invalid.empty()) {
        // Encode on the caller's thread: the writer only assembles. What
        // the codec cannot encode is refused, never written truncated.
        std::string error;
        p.values.reserve(op.events.size());
        for (const auto& e : op.events) {
          auto value = encode(e, error);
          if (!value)
            break;
          p.values.push_back(std::move(*value));
        }
        if (error.empty() && op.index) {
          op.index->run_id = p.run_id;
          if (auto value = encode(*op.index, error))
            p.index_value = std::move(*value);
          p.terminal = is_terminal(op.index->state);
          p.finished_at_ns = op.index->updated_at_ns;
        }
        if (!error.empty()) {
          p.invalid = "cannot append to run '" + p.run_id + "': " + error;
          p.values.clear();
          p.index_value.reset();
        }
      }
    } catch (const std::exception& e) {
      p.invalid = "cannot append to run '" + p.run_id + "': " + e.what();
    }
    bool wake;
    {
      std::lock_guard<std::mutex> lk{mu_};
      queue_.push_back(std::move(p));
      ++enqueued_;
      wake = queue_.size() >= wake_at_;
    }
    if (wake)
      work_cv_.notify_one();
  }

  void flush() override {
    // From a callback, on the writer thread itself, waiting could only
    // deadlock: return at once.
    if (std::this_thread::get_id() == writer_.get_id())
      return;
    std::unique_lock<std::mutex> lk{mu_};
    uint64_t target = enqueued_;
    done_cv_.wait(lk, [&] { return completed_ >= target || low_; });
    if (completed_ >= target)
      return;
    // Held for space that may never come: have the writer fail them.
    fail_until_ = std::max(fail_until_, target);
    work_cv_.notify_all();
    done_cv_.wait(lk, [&] { return completed_ >= target; });
  }

  disk_space space() override {
    std::lock_guard<std::mutex> lk{mu_};
    auto out = space_;
    out.low = low_;
    out.queued = queue_.size();
    return out;
  }

  // -- reads ------------------------------------------------------------------

  std::vector<std::pair<std::string, std::string>>
  read_notes(const std::string& prefix) override {
    std::vector<std::pair<std::string, std::string>> out;
    auto start = kl::note_key(prefix);
    std::unique_ptr<rocksdb::Iterator> it{
      db_->NewIterator(rocksdb::ReadOptions{}, db_->DefaultColumnFamily())};
    for (it->Seek(start); it->Valid() && it->key().starts_with(start);
         it->Next())
      out.emplace_back(it->key().ToString().substr(5), it->value().ToString());
    return out;
  }

  std::optional<std::string>
  find_idempotency_key(const std::string& key) override {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions{}, db_->DefaultColumnFamily(),
                      kl::idempotency_key(key), &value);
    if (!s.ok())
      return std::nullopt;
    return value;
  }

  std::optional<run_index_entry> find_run(const std::string& run_id) override {
    try {
      std::string value;
      auto s = db_->Get(rocksdb::ReadOptions{}, runs_, run_id, &value);
      if (!s.ok())
        return std::nullopt;
      std::string error;
      return decode_index_at(run_id, value, error);
    } catch (...) {
      return std::nullopt;
    }
  }

  std::vector<run_index_entry> list_runs(const std::string& after,
                                         size_t limit) override {
    std::vector<run_index_entry> out;
    try {
      std::unique_ptr<rocksdb::Iterator> it{
        db_->NewIterator(rocksdb::ReadOptions{}, runs_)};
      if (after.empty()) {
        it->SeekToFirst();
      } else {
        // The smallest key greater than `after`.
        std::string start = after;
        start.push_back('\0');
        it->Seek(start);
      }
      for (; it->Valid() && out.size() < limit; it->Next()) {
        std::string error;
        auto key = it->key().ToStringView();
        if (auto e = decode_index_at(key, it->value().ToStringView(), error))
          out.push_back(std::move(*e));
        // A corrupt entry is skipped here; scan_unfinished reports it.
      }
    } catch (...) {
      // Out of memory: return what we have.
    }
    return out;
  }

  std::vector<event_record> read_journal(const std::string& run_id,
                                         std::string& error) override {
    error.clear();
    try {
      return read_journal_at(run_id, rocksdb::ReadOptions{}, error);
    } catch (const std::exception& e) {
      error = "run " + run_id + ": cannot read the journal: " + e.what();
      return {};
    }
  }

  std::optional<event_record> read_event(const std::string& run_id,
                                         uint32_t seq,
                                         std::string& error) override {
    error.clear();
    try {
      std::string value;
      auto s = db_->Get(rocksdb::ReadOptions{}, journal_,
                        kl::journal_key(run_id, seq), &value);
      if (s.IsNotFound())
        return std::nullopt;
      if (!s.ok()) {
        error = "run " + run_id + ": cannot read journal record "
                + std::to_string(seq) + ": " + s.ToString();
        return std::nullopt;
      }
      std::string reason;
      auto event = decode_event(value, reason);
      if (!event)
        error = "run " + run_id + ": journal record " + std::to_string(seq)
                + " is corrupt: " + reason;
      return event;
    } catch (const std::exception& e) {
      error = "run " + run_id + ": cannot read the journal: " + e.what();
      return std::nullopt;
    }
  }

  void scan_unfinished_if(
    const std::function<bool(std::string_view run_id)>& only,
    const std::function<void(const run_index_entry&,
                             std::vector<event_record> events,
                             const std::string& error)>& visit) override {
    // One snapshot: the indexes and the journals as of one moment.
    rocksdb::ManagedSnapshot snapshot{db_};
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, unfinished_)};
    // Journals are read in run-id order, like the index: one iterator serves
    // them all.
    std::unique_ptr<rocksdb::Iterator> journals{db_->NewIterator(ro, journal_)};
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string key = it->key().ToString();
      if (only && !only(key))
        continue;
      std::string value, error;
      auto s = db_->Get(ro, runs_, key, &value);
      if (s.IsNotFound())
        continue; // Listed, but its entry is gone: nothing to resume.
      std::optional<run_index_entry> entry;
      if (s.ok())
        entry = decode_index_at(key, value, error);
      else
        error = s.ToString();
      if (!entry) {
        run_index_entry placeholder;
        placeholder.run_id = key;
        visit(placeholder, {},
              "run " + key + ": index entry is corrupt: " + error);
        continue;
      }
      if (is_terminal(entry->state))
        continue;
      auto events = read_journal_with(*journals, key, error);
      visit(*entry, std::move(events), error);
    }
    if (!it->status().ok()) {
      run_index_entry placeholder;
      visit(placeholder, {},
            "cannot scan the index of unfinished runs: "
              + it->status().ToString());
    }
  }

  void read_journal_async(
    std::string run_id,
    std::function<void(std::vector<event_record>, std::string error)> done)
    override {
    {
      std::lock_guard<std::mutex> lk{read_mu_};
      reads_.push_back({std::move(run_id), std::move(done)});
    }
    read_cv_.notify_one();
  }

  // -- retention
  // ---------------------------------------------------------------

  gc_report collect(const gc_options& o) override {
    std::lock_guard<std::mutex> lk{gc_mu_};
    gc_report out;
    if (!replicated() && !metas_.empty()) {
      // Opened without replication (a tool on a member's data dir): a
      // direct deletion would make this replica differ from the others.
      out.error = "the store at " + quoted(std::as_const(opts_.path))
                  + " holds the logs of " + std::to_string(metas_.size())
                  + " replicated partition(s): its finished runs are deleted "
                    "by their partitions' leaders, through the logs (ask the "
                    "member that runs on it), never directly";
      return out;
    }
    collected_range range;
    try {
      if (replicated())
        collect_through_logs(o, out, range);
      else
        collect_runs(o, out, range);
      if (out.error.empty() && !out.stopped && !replicated())
        expire_tombstones(o, out);
      if (o.compact && (out.runs > 0 || out.tombstones > 0))
        compact_collected(o, range);
    } catch (const std::exception& e) {
      out.error = std::string{"collection failed: "} + e.what();
    }
    return out;
  }

  std::optional<run_tombstone>
  find_tombstone(const std::string& run_id) override {
    try {
      std::string value;
      auto s = db_->Get(rocksdb::ReadOptions{}, db_->DefaultColumnFamily(),
                        kl::tombstone_key(run_id), &value);
      if (!s.ok() || value.size() < 8)
        return std::nullopt;
      std::string error;
      auto entry = decode_index(std::string_view{value}.substr(8), error);
      if (!entry)
        return std::nullopt;
      return run_tombstone{std::move(*entry),
                           static_cast<int64_t>(kl::read_be64(value))};
    } catch (...) {
      return std::nullopt;
    }
  }

  /// Every write of the store after it opened goes through here, on the
  /// store's own threads: the chaos fault hooks (off unless the process
  /// was started with TROUPE_CHAOS_HOOKS=1) may delay it or fail it as
  /// RocksDB would (IOError, NoSpace).
  rocksdb::Status write_db(const rocksdb::WriteOptions& o,
                           rocksdb::WriteBatch* wb) {
    switch (chaos::before_store_write()) {
    case chaos::disk_fault::none: break;
    case chaos::disk_fault::io_error:
      return rocksdb::Status::IOError("injected by the fail_disk fault hook");
    case chaos::disk_fault::no_space:
      return rocksdb::Status::NoSpace("injected by the fail_disk fault hook: "
                                      "No space left on device");
    }
    return db_->Write(o, wb);
  }

  /// Sets whether (and at which epoch) this store leads `part`, telling
  /// the chaos ledger when it has one. Under plog_mu_.
  void set_leading(uint32_t part, std::optional<uint64_t> epoch) {
    if (chaos::ledger_on())
      chaos::note_leading(part, epoch, leading_[part]);
    leading_[part] = epoch;
  }

  // -- partition logs -------------------------------------------------------

  plog_result fence(uint32_t part, uint64_t epoch) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    return fence_locked(part, epoch);
  }

  plog_result lead(uint32_t part, uint64_t epoch) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    auto r = fence_locked(part, epoch);
    if (r.ok())
      set_leading(part, epoch);
    return r;
  }

  plog_result fence_locked(uint32_t part, uint64_t epoch) {
    if (auto r = check_partition(part); !r.ok())
      return r;
    auto& m = metas_[part];
    if (epoch < m.epoch)
      return stale_epoch(part, epoch, m.epoch);
    if (epoch == m.epoch)
      return {};
    auto next = m;
    next.epoch = epoch;
    rocksdb::WriteOptions synced;
    synced.sync = true;
    rocksdb::WriteBatch wb;
    wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
           plog::encode_meta(next));
    auto s = write_db(synced, &wb);
    if (!s.ok())
      return refused(plog_errc::io,
                     "cannot record epoch " + std::to_string(epoch) + " of "
                       + partition_name(part) + ": " + s.ToString());
    m = std::move(next);
    if (leading_[part] && *leading_[part] < epoch)
      set_leading(part, std::nullopt);
    // A new term: sequence numbers are read again from the log's state.
    next_seq_.clear();
    return {};
  }

  plog_result accept(uint32_t part, uint64_t leader_epoch, uint64_t offset,
                     std::string_view record) override {
    auto out = accept_many({accept_item{part, leader_epoch, offset, record}});
    return out.front();
  }

  std::vector<plog_result>
  accept_many(const std::vector<accept_item>& items) override {
    std::vector<plog_result> out(items.size());
    std::lock_guard<std::mutex> lk{plog_mu_};
    // Metas as the records staged so far leave them, and the records
    // staged, by partition and offset: a later item sees the earlier ones.
    std::map<uint32_t, partition_log_state> staged;
    std::map<std::pair<uint32_t, uint64_t>, std::string_view> staged_records;
    std::set<uint32_t> refused_parts;
    std::vector<size_t> written;
    rocksdb::WriteBatch wb;
    for (size_t i = 0; i < items.size(); ++i) {
      const auto& it = items[i];
      auto part = it.partition;
      if (auto r = check_partition(part); !r.ok()) {
        out[i] = r;
        continue;
      }
      if (refused_parts.count(part) != 0) {
        // After a refusal, nothing more of the partition in this call.
        out[i] = refused(plog_errc::gap,
                         "record " + std::to_string(it.offset) + " of "
                           + partition_name(part)
                           + " follows one refused in the same shipment",
                         staged.count(part) ? staged[part].log_end + 1
                                            : metas_[part].log_end + 1);
        continue;
      }
      if (installing_[part]) {
        out[i] = refused(plog_errc::gap,
                         "record " + std::to_string(it.offset) + " of "
                           + partition_name(part)
                           + " waits: a snapshot of the partition is being "
                             "installed",
                         metas_[part].log_end + 1);
        refused_parts.insert(part);
        continue;
      }
      auto& m = staged.try_emplace(part, metas_[part]).first->second;
      bool write = false;
      out[i] = check_accept(part, m, it.leader_epoch, it.offset, it.record,
                            staged_records, write);
      if (!out[i].ok()) {
        refused_parts.insert(part);
        continue;
      }
      if (!write)
        continue;
      auto record_epoch = *plog::record_epoch(it.record);
      m.epoch = std::max(m.epoch, it.leader_epoch);
      m.log_end = it.offset;
      if (m.epochs.empty() || m.epochs.back().first < record_epoch)
        m.epochs.emplace_back(record_epoch, it.offset);
      wb.Put(plog_, plog::record_key(part, it.offset),
             rocksdb::Slice{it.record.data(), it.record.size()})
        .PermitUncheckedError();
      staged_records[{part, it.offset}] = it.record;
      written.push_back(i);
    }
    if (written.empty())
      return out;
    for (auto& [part, m] : staged)
      if (m != metas_[part])
        wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
               plog::encode_meta(m))
          .PermitUncheckedError();
    // One write, with the store's durability, for the whole shipment.
    auto s = write_db(write_options_, &wb);
    if (!s.ok()) {
      for (auto i : written)
        out[i] = refused(
          plog_errc::io,
          "cannot write record " + std::to_string(items[i].offset) + " of "
            + partition_name(items[i].partition) + ": " + s.ToString());
      return out;
    }
    for (auto& [part, m] : staged) {
      if (m == metas_[part])
        continue;
      if (m.epoch != metas_[part].epoch)
        next_seq_.clear();
      metas_[part] = m;
      // Another leader writes this log: this store follows.
      set_leading(part, std::nullopt);
    }
    for (auto i : written) {
      auto part = items[i].partition;
      note_pending(part, items[i].offset, items[i].record);
      // Another leader numbered these runs' events: cached numbers are
      // stale.
      if (!overlays_[part].records.empty())
        for (const auto& run : overlays_[part].records.back().runs)
          next_seq_.erase(run);
    }
    return out;
  }

  plog_result commit(uint32_t part, uint64_t offset) override {
    callbacks ready;
    plog_result r;
    {
      std::lock_guard<std::mutex> lk{plog_mu_};
      if (r = check_partition(part); !r.ok())
        return r;
      r = apply_to(part, offset, ready);
    }
    for (auto& done : ready)
      if (done)
        call_quietly([&] { done(std::string{}); });
    return r;
  }

  std::vector<plog_result> commit_many(
    const std::vector<std::pair<uint32_t, uint64_t>>& items) override {
    std::vector<plog_result> out(items.size());
    callbacks ready;
    {
      std::lock_guard<std::mutex> lk{plog_mu_};
      const uint64_t chunk = std::max<size_t>(1, opts_.replication.apply_batch);
      rocksdb::WriteBatch wb;
      // (item, the partition's meta once written) of those staged in wb.
      std::vector<std::pair<size_t, partition_log_state>> staged;
      std::set<uint32_t> named;
      uint64_t records = 0;
      for (size_t i = 0; i < items.size(); ++i) {
        auto [part, to] = items[i];
        if (out[i] = check_partition(part); !out[i].ok())
          continue;
        if (out[i] = check_apply(part, to); !out[i].ok())
          continue;
        if (!named.insert(part).second) {
          // Its staged meta would be written over the other's.
          out[i] = refused(plog_errc::bad_partition,
                           partition_name(part)
                             + " is named twice in one commit_many");
          continue;
        }
        const auto& m = metas_[part];
        if (to <= m.applied)
          continue;
        if (records + (to - m.applied) > chunk) {
          // Too much for the shared write: on its own.
          out[i] = apply_to(part, to, ready);
          continue;
        }
        partition_log_state next;
        wb.SetSavePoint();
        out[i] = stage_apply(part, to, std::max(m.committed, to), wb, next);
        if (!out[i].ok()) {
          // Its effects may be half in wb: take them out again.
          wb.RollbackToSavePoint().PermitUncheckedError();
          continue;
        }
        wb.PopSavePoint().PermitUncheckedError();
        records += to - m.applied;
        staged.emplace_back(i, std::move(next));
      }
      if (!staged.empty()) {
        if (auto r = write_applied(items[staged.front().first].first, wb);
            !r.ok()) {
          for (auto& [j, next] : staged)
            out[j] = r;
        } else {
          for (auto& [j, next] : staged)
            out[j] = applied(items[j].first, std::move(next), ready);
        }
      }
    }
    for (auto& done : ready)
      if (done)
        call_quietly([&] { done(std::string{}); });
    return out;
  }

  plog_result truncate(uint32_t part, uint64_t after) override {
    std::vector<std::pair<uint64_t, callbacks>> dropped;
    std::string why;
    {
      std::lock_guard<std::mutex> lk{plog_mu_};
      if (auto r = check_partition(part); !r.ok())
        return r;
      auto& m = metas_[part];
      if (after < m.committed)
        return refused(plog_errc::committed,
                       "cannot truncate " + partition_name(part) + " after "
                         + std::to_string(after) + ": it is committed up to "
                         + std::to_string(m.committed),
                       m.committed);
      if (after >= m.log_end)
        return {};
      // The runs whose appends the records held, to refuse their next.
      std::vector<std::string> runs;
      if (after + 1 <= m.log_end && part < overlays_.size())
        for (const auto& t : overlays_[part].records)
          if (t.offset > after)
            runs.insert(runs.end(), t.runs.begin(), t.runs.end());
      rocksdb::WriteBatch wb;
      wb.DeleteRange(plog_, plog::record_key(part, after + 1),
                     plog::record_key(part, m.log_end + 1))
        .PermitUncheckedError();
      auto next = m;
      next.log_end = after;
      next.log_start = std::min(next.log_start, after + 1);
      while (!next.epochs.empty() && next.epochs.back().second > after)
        next.epochs.pop_back();
      wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
             plog::encode_meta(next))
        .PermitUncheckedError();
      auto s = write_db(write_options_, &wb);
      if (!s.ok())
        return refused(plog_errc::io, "cannot truncate " + partition_name(part)
                                        + ": " + s.ToString());
      m = std::move(next);
      rebuild_overlay(part);
      why = std::string{discarded_prefix} + "its record in "
            + partition_name(part) + " was truncated after offset "
            + std::to_string(after) + " (a newer leader's log replaced it)";
      std::unordered_map<std::string, std::string> failed;
      for (auto& run : runs) {
        next_seq_.erase(run);
        failed.try_emplace(run, why);
      }
      hold_back(failed);
      auto& queue = waiting_[part];
      while (!queue.empty() && queue.back().first > after) {
        dropped.push_back(std::move(queue.back()));
        queue.pop_back();
      }
    }
    for (auto it = dropped.rbegin(); it != dropped.rend(); ++it)
      for (auto& done : it->second)
        if (done)
          call_quietly([&] { done(why); });
    return {};
  }

  plog_result end_offset_for_epoch(uint32_t part, uint64_t epoch) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_partition(part); !r.ok())
      return r;
    const auto& m = metas_[part];
    if (epoch > m.epoch)
      return stale_epoch(part, epoch, m.epoch);
    plog_result out;
    out.offset = m.log_end;
    for (auto [e, start] : m.epochs)
      if (e > epoch) {
        out.offset = start - 1;
        break;
      }
    return out;
  }

  plog_result read_records(uint32_t part, uint64_t from, size_t max_bytes,
                           std::vector<log_record>& out) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_partition(part); !r.ok())
      return r;
    const auto& m = metas_[part];
    if (from < m.log_start)
      return refused(plog_errc::trimmed,
                     "records of " + partition_name(part) + " before "
                       + std::to_string(m.log_start) + " were trimmed",
                     m.log_start);
    if (from > m.log_end + 1)
      return refused(plog_errc::beyond_end,
                     "cannot read " + partition_name(part) + " from offset "
                       + std::to_string(from) + ": its log ends at "
                       + std::to_string(m.log_end),
                     m.log_end);
    size_t bytes = 0;
    // A leader ships mostly records not committed yet: those not applied
    // are in the overlay, in order, and need no read.
    if (part < overlays_.size()) {
      const auto& recs = overlays_[part].records;
      if (!recs.empty() && recs.front().offset <= from
          && recs.back().offset == m.log_end
          && recs.back().offset - recs.front().offset + 1 == recs.size()) {
        for (auto i = recs.begin()
                      + static_cast<ptrdiff_t>(from - recs.front().offset);
             i != recs.end() && (bytes < max_bytes || bytes == 0); ++i) {
          log_record r;
          r.offset = i->offset;
          r.epoch = plog::record_epoch(i->bytes).value_or(0);
          r.bytes = i->bytes;
          bytes += r.bytes.size();
          out.push_back(std::move(r));
        }
        return {};
      }
    }
    const std::string upper = plog::record_key(part, m.log_end + 1);
    rocksdb::Slice upper_slice{upper};
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, plog_)};
    for (it->Seek(plog::record_key(part, from));
         it->Valid() && (bytes < max_bytes || bytes == 0); it->Next()) {
      auto offset = plog::record_offset(it->key().ToStringView(), part);
      auto value = it->value().ToStringView();
      if (!offset)
        break;
      log_record r;
      r.offset = *offset;
      r.epoch = plog::record_epoch(value).value_or(0);
      r.bytes = std::string{value};
      bytes += r.bytes.size();
      out.push_back(std::move(r));
    }
    if (!it->status().ok())
      return refused(plog_errc::io, "cannot read the log of "
                                      + partition_name(part) + ": "
                                      + it->status().ToString());
    return {};
  }

  plog_result trim_log(uint32_t part, uint64_t up_to) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_partition(part); !r.ok())
      return r;
    auto& m = metas_[part];
    up_to = std::min(up_to, m.applied);
    if (up_to < m.log_start)
      return {};
    auto next = m;
    next.log_start = up_to + 1;
    // Entries wholly before the new start go, but the one covering it.
    std::vector<std::pair<uint64_t, uint64_t>> epochs;
    std::optional<uint64_t> covering;
    for (auto [e, start] : m.epochs)
      if (start <= next.log_start)
        covering = e;
      else
        epochs.emplace_back(e, start);
    if (covering)
      epochs.insert(epochs.begin(), {*covering, next.log_start});
    next.epochs = std::move(epochs);
    rocksdb::WriteBatch wb;
    wb.DeleteRange(plog_, plog::record_key(part, m.log_start),
                   plog::record_key(part, up_to + 1))
      .PermitUncheckedError();
    wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
           plog::encode_meta(next))
      .PermitUncheckedError();
    auto s = write_db(write_options_, &wb);
    if (!s.ok())
      return refused(plog_errc::io, "cannot trim the log of "
                                      + partition_name(part) + ": "
                                      + s.ToString());
    m = std::move(next);
    return {};
  }

  std::optional<partition_log_state> log_state(uint32_t part) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (!check_partition(part).ok())
      return std::nullopt;
    return metas_[part];
  }

  std::optional<partition_digest> digest_partition(uint32_t part) override {
    {
      std::lock_guard<std::mutex> lk{plog_mu_};
      if (!check_partition(part).ok())
        return std::nullopt;
    }
    rocksdb::ManagedSnapshot snapshot{db_};
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.snapshot();
    partition_digest out;
    std::string value, error;
    if (db_->Get(ro, db_->DefaultColumnFamily(), plog::meta_key(part), &value)
          .ok())
      if (auto m = plog::decode_meta(value, error))
        out.applied = m->applied;
    uint64_t h = 14695981039346656037ull;
    auto mix = [&h](std::string_view bytes) {
      std::string len;
      plog::append_be32(len, static_cast<uint32_t>(bytes.size()));
      for (auto part : {std::string_view{len}, bytes})
        for (unsigned char c : part) {
          h ^= c;
          h *= 1099511628211ull;
        }
    };
    std::unique_ptr<rocksdb::Iterator> runs{db_->NewIterator(ro, runs_)};
    std::unique_ptr<rocksdb::Iterator> journal{db_->NewIterator(ro, journal_)};
    for (runs->SeekToFirst(); runs->Valid(); runs->Next()) {
      auto id = runs->key().ToString();
      std::string ignored;
      auto p = partition_of(id, {}, ignored);
      if (!p || *p != part)
        continue;
      ++out.runs;
      mix(id);
      mix(runs->value().ToStringView());
      auto prefix = kl::journal_prefix(id);
      for (journal->Seek(prefix);
           journal->Valid() && journal->key().starts_with(prefix);
           journal->Next()) {
        ++out.events;
        mix(journal->key().ToStringView());
        mix(journal->value().ToStringView());
      }
    }
    static constexpr char hex[] = "0123456789abcdef";
    for (int shift = 60; shift >= 0; shift -= 4)
      out.digest.push_back(hex[(h >> shift) & 0xf]);
    return out;
  }

  // -- snapshots of a partition ---------------------------------------------

  /// A partition's applied state at one RocksDB snapshot (journal_store.hpp).
  class snapshot_reader final : public partition_snapshot {
   public:
    snapshot_reader(rocksdb_journal_store& store, uint32_t part)
        : store_(store), part_(part), snap_(store.db_->GetSnapshot()) {}
    ~snapshot_reader() override { store_.db_->ReleaseSnapshot(snap_); }

    uint32_t partition() const override { return part_; }
    uint64_t offset() const override { return offset_; }
    uint64_t epoch() const override { return epoch_; }

    plog_result read(const std::string& cursor, size_t max_bytes,
                     snapshot_chunk& out) override {
      rocksdb::ReadOptions ro;
      ro.snapshot = snap_;
      out = {};
      out.bytes = plog::begin_record(epoch_);
      return store_.visit_partition(
        part_, ro, cursor,
        [&](plog::family f, std::string_view key, std::string_view value) {
          plog::add(out.bytes, f, plog::kind::put, key, value);
        },
        [&](const std::string&) { return out.bytes.size() < max_bytes; },
        out.next);
    }

    /// Reads the applied offset and its epoch from the snapshot's meta.
    plog_result load() {
      rocksdb::ReadOptions ro;
      ro.snapshot = snap_;
      std::string value, error;
      auto s = store_.db_->Get(ro, store_.db_->DefaultColumnFamily(),
                               plog::meta_key(part_), &value);
      if (s.IsNotFound())
        return {};
      if (!s.ok())
        return refused(plog_errc::io, "cannot read the meta of "
                                        + partition_name(part_) + ": "
                                        + s.ToString());
      auto m = plog::decode_meta(value, error);
      if (!m)
        return refused(plog_errc::corrupt,
                       partition_name(part_) + ": " + error);
      offset_ = m->applied;
      if (offset_ == 0)
        return {};
      // The epoch of the record at the applied offset: the cache's entry
      // that covers it. A trim moves the entry covering the log's new start
      // to that start, which may be just after the applied offset: then
      // that entry's epoch, never older than the record's, is given (a
      // follower's KIP-101 question with it finds an end at or after the
      // offset, so nothing applied is ever asked to be truncated).
      epoch_ = m->epoch;
      if (!m->epochs.empty()) {
        epoch_ = m->epochs.front().first;
        for (auto [e, start] : m->epochs)
          if (start <= offset_)
            epoch_ = e;
      }
      return {};
    }

   private:
    rocksdb_journal_store& store_;
    uint32_t part_;
    const rocksdb::Snapshot* snap_;
    uint64_t offset_ = 0;
    uint64_t epoch_ = 0;
  };

  std::unique_ptr<partition_snapshot> open_snapshot(uint32_t part,
                                                    plog_result& r) override {
    std::unique_ptr<snapshot_reader> out;
    {
      // Under the lock: no apply is half-way (each writes its state and
      // meta in one batch anyway).
      std::lock_guard<std::mutex> lk{plog_mu_};
      if (r = check_partition(part); !r.ok())
        return nullptr;
      out = std::make_unique<snapshot_reader>(*this, part);
    }
    if (r = out->load(); !r.ok())
      return nullptr;
    return out;
  }

  plog_result begin_snapshot_install(uint32_t part,
                                     uint64_t leader_epoch) override {
    std::vector<std::pair<uint64_t, callbacks>> dropped;
    std::string why;
    plog_result r;
    {
      std::lock_guard<std::mutex> lk{plog_mu_};
      if (r = check_partition(part); !r.ok())
        return r;
      auto& m = metas_[part];
      if (leader_epoch < m.epoch)
        return stale_epoch(part, leader_epoch, m.epoch);
      partition_log_state next;
      next.epoch = leader_epoch;
      rocksdb::WriteBatch wb;
      wb.Put(db_->DefaultColumnFamily(), plog::install_key(part), "")
        .PermitUncheckedError();
      wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
             plog::encode_meta(next))
        .PermitUncheckedError();
      wb.DeleteRange(plog_, plog::record_key(part, 0),
                     plog::record_key(part + 1, 0))
        .PermitUncheckedError();
      rocksdb::WriteOptions synced;
      synced.sync = true;
      // The mark first, durably: from now on a crash redoes the install.
      auto s = write_db(synced, &wb);
      if (!s.ok())
        return refused(plog_errc::io, "cannot begin installing a snapshot of "
                                        + partition_name(part) + ": "
                                        + s.ToString());
      if (m.epoch != leader_epoch)
        next_seq_.clear();
      m = std::move(next);
      set_leading(part, std::nullopt);
      installing_[part] = true;
      if (part < overlays_.size()) {
        for (const auto& t : overlays_[part].records)
          for (const auto& run : t.runs)
            next_seq_.erase(run);
        overlays_[part] = {};
      }
      // Not "discarded": a waiting record may be in the new leader's log,
      // and so in the snapshot or the records after it. Its outcome is
      // unknown here.
      why = "not committed: " + partition_name(part)
            + " is replaced by a snapshot of its leader's state (the append "
              "may have taken effect there)";
      while (!waiting_[part].empty()) {
        dropped.push_back(std::move(waiting_[part].back()));
        waiting_[part].pop_back();
      }
      r = delete_partition_state(part);
    }
    for (auto& [offset, cbs] : dropped)
      for (auto& done : cbs)
        if (done)
          call_quietly([&] { done(why); });
    return r;
  }

  /// Whether `part` is in range and a snapshot install of it is under way.
  /// Under plog_mu_.
  plog_result check_installing(uint32_t part) {
    if (auto r = check_partition(part); !r.ok())
      return r;
    if (!installing_[part])
      return refused(plog_errc::bad_partition, "no snapshot install of "
                                                 + partition_name(part)
                                                 + " is under way");
    return {};
  }

  plog_result install_snapshot_chunk(uint32_t part,
                                     std::string_view bytes) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_installing(part); !r.ok())
      return r;
    rocksdb::WriteBatch wb;
    std::string error, wrong;
    bool good = plog::for_each_mutation(
      bytes,
      [&](const plog::mutation_view& mv) {
        if (!wrong.empty())
          return;
        auto run = plog::snapshot_key_run(mv.cf, mv.key, mv.value);
        std::string ignored;
        auto p
          = run ? partition_of(std::string{*run}, {}, ignored) : std::nullopt;
        if (mv.op != plog::kind::put || !p || *p != part) {
          wrong = "a chunk of a snapshot of " + partition_name(part)
                  + " writes a key that is not the partition's (family "
                  + std::to_string(static_cast<int>(mv.cf)) + ", "
                  + std::to_string(mv.key.size()) + " bytes)";
          return;
        }
        wb.Put(family_handle(mv.cf), mv.key, mv.value).PermitUncheckedError();
      },
      error);
    if (!good)
      return refused(plog_errc::corrupt, "a chunk of a snapshot of "
                                           + partition_name(part)
                                           + " is unreadable: " + error);
    if (!wrong.empty())
      return refused(plog_errc::corrupt, wrong);
    if (auto r = write_applied(part, wb); !r.ok())
      return r;
    return {};
  }

  plog_result finish_snapshot_install(uint32_t part, uint64_t offset,
                                      uint64_t epoch) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_installing(part); !r.ok())
      return r;
    auto next = metas_[part];
    next.log_start = offset + 1;
    next.log_end = next.committed = next.applied = offset;
    next.epoch = std::max(next.epoch, epoch);
    next.epochs.clear();
    if (epoch > 0)
      next.epochs.emplace_back(epoch, offset + 1);
    // Synced: the chunks' unsynced writes are in the log before it.
    rocksdb::WriteBatch wb;
    return end_install(part, std::move(next), wb,
                       "cannot finish installing a snapshot of ");
  }

  /// Ends `part`'s snapshot install with `wb` and, in the same synced
  /// write, the partition's meta `next` and the removal of its mark; on a
  /// failure, says why after `what`. Under plog_mu_.
  plog_result end_install(uint32_t part, partition_log_state next,
                          rocksdb::WriteBatch& wb, const std::string& what) {
    wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
           plog::encode_meta(next))
      .PermitUncheckedError();
    wb.Delete(db_->DefaultColumnFamily(), plog::install_key(part))
      .PermitUncheckedError();
    rocksdb::WriteOptions synced;
    synced.sync = true;
    auto s = write_db(synced, &wb);
    if (!s.ok())
      return refused(plog_errc::io,
                     what + partition_name(part) + ": " + s.ToString());
    metas_[part] = std::move(next);
    installing_[part] = false;
    return {};
  }

  plog_result abort_snapshot_install(uint32_t part) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    if (auto r = check_partition(part); !r.ok())
      return r;
    if (!installing_[part])
      return {};
    return redo_install(part);
  }

  bool snapshot_install_incomplete(uint32_t part) override {
    std::lock_guard<std::mutex> lk{plog_mu_};
    return check_partition(part).ok() && installing_[part];
  }

 private:
  static plog_result stale_epoch(uint32_t part, uint64_t epoch,
                                 uint64_t highest) {
    return refused(plog_errc::stale_epoch,
                   "epoch " + std::to_string(epoch) + " of "
                     + partition_name(part) + " is stale: it has seen epoch "
                     + std::to_string(highest),
                   0, highest);
  }

  /// Callbacks of appends.
  using callbacks = std::vector<std::function<void(std::string)>>;
  /// What the records not applied yet will write, that staging an append
  /// must see: per partition, each run's next sequence number and each
  /// claimed idempotency key, with the offset of the record that set it.
  struct overlay {
    std::unordered_map<std::string, std::pair<uint32_t, uint64_t>> next_seq;
    std::unordered_map<std::string, std::pair<std::string, uint64_t>> keys;
    /// Per record not applied yet: its offset, the runs and keys it set.
    struct touched {
      uint64_t offset;
      std::vector<std::string> runs;
      std::vector<std::string> keys;
      /// The record, so that applying it needs no read.
      std::string bytes;
      /// Runs whose index entry or tombstone it writes (a deletion of
      /// retention does both): retention leaves them to a later collection.
      std::vector<std::string> others = {};
    };
    std::deque<touched> records;
  };

  /// A deletion of retention, queued to the writer like an append so that
  /// it becomes part of a record of the run's partition.
  struct removal_op {
    enum class what : uint8_t { run, tombstone };
    what kind = what::run;
    /// run: the key of `finished` that named the run; tombstone: the key
    /// of the tombstones' time index.
    std::string key;
    /// run: when it is deleted (its tombstone's time); tombstone: the time
    /// in `key`.
    int64_t at_ns = 0;
    /// What its staging deleted; set by the writer.
    gc_report counted = {};
    /// Whether it committed (set by its callback).
    bool committed = false;
  };

  /// One queued append, encoded.
  struct pending {
    std::string run_id;
    std::vector<std::string> values;
    std::optional<std::string> index_value;
    std::string idempotency_key;
    std::vector<std::pair<std::string, std::string>> notes;
    /// The fence: the run's next sequence number must be this.
    std::optional<uint32_t> expected_seq;
    /// Whether the new index entry puts the run in a terminal state.
    bool terminal = false;
    /// The new index entry's updated_at_ns: when a terminal run finished.
    int64_t finished_at_ns = 0;
    /// See append_op::resync.
    bool resync = false;
    /// Why the append is refused before reaching the database.
    std::string invalid;
    std::function<void(std::string)> done;
    /// Set for a deletion of retention on a store with replicated
    /// partitions (see collect_through_logs); nothing else is then.
    std::shared_ptr<removal_op> removal = {};
  };

  struct read_request {
    std::string run_id;
    std::function<void(std::vector<event_record>, std::string)> done;
  };

  std::vector<event_record> read_journal_at(const std::string& run_id,
                                            rocksdb::ReadOptions ro,
                                            std::string& error) {
    const std::string upper = kl::journal_upper_bound(run_id);
    rocksdb::Slice upper_slice{upper};
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, journal_)};
    return read_journal_with(*it, run_id, error);
  }

  /// Reads the journal of `run_id` with `it`, an iterator over the journal
  /// column family that may be reused from run to run (a scan of many runs
  /// then costs one iterator, not one each).
  std::vector<event_record> read_journal_with(rocksdb::Iterator& iter,
                                              const std::string& run_id,
                                              std::string& error) {
    auto* it = &iter;
    std::vector<event_record> out;
    error.clear();
    const std::string prefix = kl::journal_prefix(run_id);
    uint32_t expected = 1;
    for (it->Seek(prefix);
         it->Valid() && it->key().ToStringView().starts_with(prefix);
         it->Next()) {
      auto key = it->key().ToStringView();
      auto seq = kl::journal_seq(key, prefix);
      if (!seq) {
        error = "run " + run_id + ": malformed journal key after record "
                + std::to_string(expected - 1);
        return out;
      }
      if (*seq != expected) {
        error = "run " + run_id + ": journal record " + std::to_string(expected)
                + " is missing (next is " + std::to_string(*seq) + ")";
        return out;
      }
      std::string reason;
      auto event = decode_event(it->value().ToStringView(), reason);
      if (!event) {
        error = "run " + run_id + ": journal record " + std::to_string(*seq)
                + " is corrupt: " + reason;
        return out;
      }
      out.push_back(std::move(*event));
      ++expected;
    }
    if (!it->status().ok())
      error = "run " + run_id
              + ": cannot read the journal: " + it->status().ToString();
    return out;
  }

  /// The next sequence number of `run_id`, loaded on first use. Writer thread
  /// only.
  std::optional<uint32_t> next_seq(const std::string& run_id,
                                   std::string& error) {
    if (auto it = next_seq_.find(run_id); it != next_seq_.end())
      return it->second;
    auto next = load_next_seq(run_id, error);
    if (next)
      next_seq_.emplace(run_id, *next);
    return next;
  }

  /// Finds the next sequence number of `run_id` in the database, with a
  /// reverse seek.
  std::optional<uint32_t> load_next_seq(const std::string& run_id,
                                        std::string& error) {
    const std::string prefix = kl::journal_prefix(run_id);
    rocksdb::ReadOptions ro;
    rocksdb::Slice lower{prefix};
    ro.iterate_lower_bound = &lower;
    std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, journal_)};
    it->SeekForPrev(kl::journal_key(run_id, ~uint32_t{0}));
    uint32_t next = 1;
    if (it->Valid()) {
      auto seq = kl::journal_seq(it->key().ToStringView(), prefix);
      if (!seq) {
        error = "run " + run_id + ": malformed last journal key";
        return std::nullopt;
      }
      if (*seq == ~uint32_t{0}) {
        error = "run " + run_id + ": journal is full";
        return std::nullopt;
      }
      next = *seq + 1;
    } else if (!it->status().ok()) {
      error = "run " + run_id
              + ": cannot find the journal's end: " + it->status().ToString();
      return std::nullopt;
    }
    return next;
  }

  void writer_loop() {
    std::vector<pending> batch;
    for (;;) {
      // Not empty: the batch is failed with this reason, not written.
      std::string held;
      {
        std::unique_lock<std::mutex> lk{mu_};
        work_cv_.wait(lk, [&] {
          return stopping_
                 || (!queue_.empty() && (!low_ || fail_until_ > completed_));
        });
        if (queue_.empty())
          return; // Stopping, and everything is committed.
        size_t n = 0;
        if (low_) {
          // Held appends are failed only when a flush or the close asks.
          held = held_reason(stopping_ ? "the store closed" : "a flush");
          n = std::min(max_batch_, queue_.size());
          if (!stopping_)
            n = std::min<uint64_t>(n, fail_until_ - completed_);
        } else {
          gather(lk);
          n = std::min(max_batch_, queue_.size());
        }
        batch.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          batch.push_back(std::move(queue_.front()));
          queue_.pop_front();
        }
      }
      if (held.empty()) {
        commit(batch);
        last_batch_ = batch.size();
      } else {
        fail_held(batch, held);
      }
      {
        std::lock_guard<std::mutex> lk{mu_};
        completed_ += batch.size();
      }
      done_cv_.notify_all();
      batch.clear();
    }
  }

  /// Why held appends were given up; `who` gave them up. Under mu_.
  std::string held_reason(std::string_view who) const {
    std::string why = space_.write_failed
                        ? "the disk holding " + quoted(opts_.path)
                            + " filled up (a write failed)"
                        : "free space on " + quoted(opts_.path) + " is "
                            + config::format_size(space_.free_bytes)
                            + ", below its floor of "
                            + config::format_size(space_.min_free_bytes)
                            + " (storage.min_free)";
    return "not written: " + why
           + "; the append was held until space returned, and "
           + std::string{who} + " gave it up";
  }

  /// Fails `batch`, held while space was low, with `reason`, and calls its
  /// callbacks in order. What the runs appended after it is refused as
  /// after any failed append.
  void fail_held(std::vector<pending>& batch,
                 const std::string& reason) noexcept {
    std::unordered_map<std::string, std::string> failed;
    std::vector<std::string> errors(batch.size());
    std::unique_lock<std::mutex> plk{plog_mu_};
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& p = batch[i];
      auto& error = errors[i];
      try {
        if (p.resync) {
          refused_.erase(p.run_id);
          next_seq_.erase(p.run_id);
        }
        error = refusal(p.run_id, failed);
        if (error.empty())
          error = p.invalid.empty() ? reason : p.invalid;
        // An empty append (a barrier) wrote nothing by failing: the run
        // need not be held back for it.
        bool empty = p.values.empty() && !p.index_value
                     && p.idempotency_key.empty() && p.notes.empty();
        if (!p.run_id.empty() && !empty)
          failed.try_emplace(p.run_id, error);
      } catch (...) {
        error = reason;
      }
    }
    hold_back(failed);
    plk.unlock();
    for (size_t i = 0; i < batch.size(); ++i)
      if (batch[i].done)
        call_quietly([&] { batch[i].done(std::move(errors[i])); });
  }

  // -- free space -------------------------------------------------------------

  /// Holds appends at once, as if free space were below the floor, until
  /// the space watcher reads enough again and RocksDB has recovered from
  /// the failed write. Writer thread.
  void hold_for_space() noexcept {
    std::optional<disk_space> changed;
    {
      std::lock_guard<std::mutex> lk{mu_};
      disk_full_ = true;
      space_.write_failed = true;
      if (low_)
        return;
      low_ = true;
      space_.low = true;
      changed = space_;
      changed->queued = queue_.size();
    }
    done_cv_.notify_all();
    if (opts_.on_space_change)
      call_quietly([&] { opts_.on_space_change(*changed); });
  }

  /// Reads free and total bytes of the store's filesystem.
  bool read_space(uint64_t& free, uint64_t& total, std::string& error) {
    if (opts_.read_space)
      return opts_.read_space(free, total, error);
    if (!space_file_.empty()) {
      // (stdio: <fstream> would bring std::quoted next to ours.)
      std::unique_ptr<FILE, int (*)(FILE*)> f{
        std::fopen(space_file_.c_str(), "r"), &std::fclose};
      unsigned long long a = 0, b = 0;
      if (f && std::fscanf(f.get(), "%llu %llu", &a, &b) == 2) {
        free = a;
        total = b;
        return true;
      }
      error = "cannot read free space from "
              + quoted(std::as_const(space_file_))
              + " (TROUPE_TEST_FREE_SPACE_FILE)";
      return false;
    }
    struct statvfs st {};
    if (::statvfs(opts_.path.c_str(), &st) != 0) {
      error = "cannot read the free space of "
              + quoted(std::as_const(opts_.path)) + ": " + std::strerror(errno);
      return false;
    }
    free = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    total = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
    return true;
  }

  /// Reads free space and holds or releases appends accordingly.
  void check_space() noexcept {
    uint64_t free = 0, total = 0;
    std::string error;
    bool ok = false;
    try {
      ok = read_space(free, total, error);
    } catch (const std::exception& e) {
      error = std::string{"cannot read free space: "} + e.what();
    }
    // After a write found the disk full, RocksDB refuses writes until it
    // has recovered (by itself, once it sees space): ask whether it has.
    bool full = false;
    {
      std::lock_guard<std::mutex> lk{mu_};
      full = disk_full_;
    }
    if (full && db_->Resume().ok())
      full = false;
    std::optional<disk_space> changed;
    {
      std::lock_guard<std::mutex> lk{mu_};
      disk_full_ = full;
      space_.write_failed = full;
      if (!ok) {
        space_.error = std::move(error);
        return;
      }
      space_.error.clear();
      space_.free_bytes = free;
      space_.total_bytes = total;
      auto floor = opts_.min_free.resolve(total);
      space_.min_free_bytes = floor;
      // Back above the floor by a margin, so that a disk hovering at the
      // floor does not flap.
      auto margin = std::min<uint64_t>(floor / 20, uint64_t{64} << 20);
      bool low = low_ ? free < floor + margin || full : free < floor;
      if (low != low_) {
        low_ = low;
        space_.low = low;
        changed = space_;
        changed->queued = queue_.size();
      }
    }
    if (!changed)
      return;
    work_cv_.notify_all();
    done_cv_.notify_all();
    if (opts_.on_space_change)
      call_quietly([&] { opts_.on_space_change(*changed); });
  }

  void watcher_loop() {
    auto interval
      = std::max(opts_.space_check_interval, std::chrono::milliseconds{1});
    std::unique_lock<std::mutex> lk{mu_};
    for (;;) {
      watch_cv_.wait_for(lk, interval, [&] { return stopping_; });
      if (stopping_)
        return;
      lk.unlock();
      check_space();
      lk.lock();
    }
  }

  /// With fsync, lets a batch fill up before it is written. The callers of
  /// the last batch append again as soon as they hear from it, which takes
  /// them a little while; a batch started at once would hold only the few
  /// that were quickest, and the others would wait for a whole fsync more.
  /// So while fewer appends are queued than the last batch held, wait for
  /// them, at most half as long as the last write took (and at most 1 ms).
  /// A lone caller never waits: its last batch held one append.
  void gather(std::unique_lock<std::mutex>& lk) {
    if (!opts_.sync || last_batch_ <= 1 || queue_.size() >= last_batch_)
      return;
    auto wait = std::min<std::chrono::steady_clock::duration>(
      last_commit_ / 2, std::chrono::milliseconds{1});
    wake_at_ = std::min(last_batch_, max_batch_);
    work_cv_.wait_for(lk, wait,
                      [&] { return queue_.size() >= wake_at_ || stopping_; });
    wake_at_ = 1;
  }

  /// Adds `p` to `wb`, or returns why it cannot be written; a refused
  /// append leaves `wb` as it was. Writer thread only.
  std::string stage(pending& p, rocksdb::WriteBatch& wb,
                    std::unordered_map<std::string, std::string>& claimed,
                    std::unordered_map<std::string, bool>& touched,
                    const overlay* ov = nullptr) {
    if (!p.invalid.empty())
      return p.invalid;
    if (p.removal)
      return stage_removal(p, wb, touched, ov);
    // A run this batch deletes takes no append after its deletion (its
    // journal would start again from a number the deletion removed).
    if (!p.run_id.empty() && removed_in_batch_.count(p.run_id) != 0)
      return "run " + p.run_id + " is being deleted (finished, past "
             + "retention)";
    if (p.run_id.empty()) {
      // Notes only.
      for (auto& [name, value] : p.notes)
        wb.Put(db_->DefaultColumnFamily(), kl::note_key(name), value)
          .PermitUncheckedError();
      return {};
    }
    if (!p.idempotency_key.empty()) {
      auto holder = claimed.count(p.idempotency_key)
                      ? std::optional{claimed[p.idempotency_key]}
                      : key_holder(p.idempotency_key, ov);
      if (holder && *holder != p.run_id)
        return "idempotency key '" + p.idempotency_key
               + "' is already used by run " + *holder;
    }
    // An index-only append needs no sequence number; a fenced one checks it.
    std::optional<uint32_t> first{0};
    if (!p.values.empty() || p.expected_seq) {
      std::string error;
      // A check alone, or a refusal, leaves the cache as it was: a parked or
      // finished run needs no entry (one is made below when events go in).
      auto cached = next_seq_.find(p.run_id);
      first = cached != next_seq_.end() ? std::optional{cached->second}
                                        : stored_next_seq(p.run_id, ov, error);
      if (!first)
        return error;
      if (p.expected_seq && *first != *p.expected_seq)
        return std::string{stale_journal_prefix} + "run " + p.run_id + " holds "
               + std::to_string(*first - 1) + " events, not "
               + std::to_string(*p.expected_seq - 1);
      if (p.values.size() > uint64_t{~uint32_t{0} - *first})
        return "run " + p.run_id + ": journal is full";
    }
    wb.SetSavePoint();
    rocksdb::Status s;
    uint32_t seq = *first;
    for (const auto& v : p.values) {
      s = wb.Put(journal_, kl::journal_key(p.run_id, seq), v);
      if (!s.ok())
        break;
      ++seq;
    }
    if (s.ok() && p.index_value)
      s = wb.Put(runs_, p.run_id, *p.index_value);
    if (s.ok() && !p.idempotency_key.empty())
      s = wb.Put(db_->DefaultColumnFamily(),
                 kl::idempotency_key(p.idempotency_key), p.run_id);
    if (s.ok())
      s = put_side_indexes(wb, p, !p.values.empty() && *first == 1);
    for (auto& [name, value] : p.notes)
      if (s.ok())
        s = wb.Put(db_->DefaultColumnFamily(), kl::note_key(name), value);
    if (!s.ok()) {
      wb.RollbackToSavePoint().PermitUncheckedError();
      return "run " + p.run_id + ": " + s.ToString();
    }
    wb.PopSavePoint().PermitUncheckedError();
    if (!p.idempotency_key.empty())
      claimed[p.idempotency_key] = p.run_id;
    if (!p.values.empty())
      next_seq_[p.run_id] = seq;
    auto& terminal = touched[p.run_id];
    if (p.index_value)
      terminal = p.terminal;
    return {};
  }

  /// Why an append to `run_id` is refused without being tried: an earlier
  /// append of the run failed (in this batch: `failed_here`), and no resync
  /// came since. Empty when it may be written.
  std::string refusal(
    const std::string& run_id,
    const std::unordered_map<std::string, std::string>& failed_here) const {
    if (run_id.empty())
      return {};
    const std::string* why = nullptr;
    if (auto i = failed_here.find(run_id); i != failed_here.end())
      why = &i->second;
    else if (auto j = refused_.find(run_id); j != refused_.end())
      why = &j->second;
    if (!why)
      return {};
    return "run " + run_id + ": not written: an earlier append of this run "
           + "failed (" + *why
           + "); the run must be restarted from its journal";
  }

  /// Whether `run_id` has at least one journal record (or its end cannot be
  /// found, which counts as yes). Writer thread only.
  bool has_journal(const std::string& run_id) {
    if (auto it = next_seq_.find(run_id); it != next_seq_.end())
      return it->second > 1;
    std::string error;
    auto next = stored_next_seq(run_id, overlay_of(run_id), error);
    return !next || *next > 1;
  }

  /// The run holding idempotency key `key`: a record not applied yet (in
  /// `ov`) first, else the database.
  std::optional<std::string> key_holder(const std::string& key,
                                        const overlay* ov) {
    if (ov && !ov->keys.empty())
      if (auto it = ov->keys.find(key); it != ov->keys.end())
        return it->second.first;
    return find_idempotency_key(key);
  }

  /// The next sequence number of `run_id` as the records not applied yet
  /// (in `ov`) leave it, else as the database holds it.
  std::optional<uint32_t> stored_next_seq(const std::string& run_id,
                                          const overlay* ov,
                                          std::string& error) {
    if (ov && !ov->next_seq.empty())
      if (auto it = ov->next_seq.find(run_id); it != ov->next_seq.end())
        return it->second.first;
    return load_next_seq(run_id, error);
  }

  /// The overlay of the partition of `run_id`, or null without replication.
  overlay* overlay_of(const std::string& run_id) {
    if (overlays_.empty() || run_id.empty())
      return nullptr;
    std::string error;
    auto part = partition_of(run_id, {}, error);
    return part ? &overlays_[*part] : nullptr;
  }

  bool replicated() const { return opts_.replication.partitions > 0; }

  /// The partition of an append, checked; nothing with `error` set when
  /// the mapping fails or answers out of range.
  std::optional<uint32_t> partition_of(const std::string& run_id,
                                       const std::string& key,
                                       std::string& error) {
    const auto& r = opts_.replication;
    if (!r.partition_of) {
      error = "cannot append to run '" + run_id
              + "': replicated partitions need a partition mapping";
      return std::nullopt;
    }
    uint32_t part = 0;
    try {
      part = r.partition_of(run_id, key);
    } catch (const std::exception& e) {
      error = "cannot append to run '" + run_id
              + "': its partition is unknown: " + e.what();
      return std::nullopt;
    }
    if (part >= r.partitions || part >= metas_.size()) {
      error = "cannot append to run '" + run_id + "': partition "
              + std::to_string(part) + " is out of range (there are "
              + std::to_string(r.partitions) + ")";
      return std::nullopt;
    }
    return part;
  }

  /// One partition's share of a batch: its effects, the appends they hold,
  /// and once encoded, its record.
  struct partition_share {
    rocksdb::WriteBatch effects;
    std::vector<size_t> appends;
    /// Appends that wrote nothing (checks, barriers): answered with the
    /// partition's newest record.
    std::vector<size_t> checks;
    std::string record;
    partition_log_state meta;
    /// Whether the record's effects went in the batch with it (see
    /// replication_options::commit_on_record).
    bool applied_with_record = false;
  };

  /// Writes `batch` in one WriteBatch and calls its callbacks in order.
  /// With replicated partitions, the appends of each partition become one
  /// record of its log instead, and their callbacks wait for its commit.
  void commit(std::vector<pending>& batch) noexcept {
    std::vector<std::string> errors(batch.size());
    // Appends answered when their record commits, not now.
    std::vector<bool> deferred(batch.size(), false);
    // Callbacks of appends committed at once (commit_on_record).
    callbacks ready;
    // Runs this batch touched -> whether its last index entry is terminal.
    std::unordered_map<std::string, bool> touched;
    removed_in_batch_.clear();
    // Idempotency keys claimed earlier in this batch.
    std::unordered_map<std::string, std::string> claimed;
    // Runs whose append failed in this batch -> why (the first reason).
    std::unordered_map<std::string, std::string> failed_here;
    rocksdb::WriteBatch wb;
    // By partition, in partition order: a record per partition touched.
    std::map<uint32_t, partition_share> shares;
    // (partition, new log end) of each record written, for on_records.
    std::vector<std::pair<uint32_t, uint64_t>> written;
    std::unique_lock<std::mutex> plk{plog_mu_};
    try {
      for (size_t i = 0; i < batch.size(); ++i) {
        auto& p = batch[i];
        if (p.resync) {
          // Everything the run appended before is settled (in this batch,
          // above): start afresh from what the database holds.
          failed_here.erase(p.run_id);
          refused_.erase(p.run_id);
          next_seq_.erase(p.run_id);
        }
        errors[i] = refusal(p.run_id, failed_here);
        if (errors[i].empty()) {
          if (!replicated() || p.run_id.empty() || !p.invalid.empty()) {
            // Notes alone are the node's own: written at once.
            errors[i] = stage(p, wb, claimed, touched);
          } else if (auto part
                     = partition_of(p.run_id, p.idempotency_key, errors[i]);
                     part && !leading_[*part]) {
            errors[i] = std::string{not_leader_prefix} + "run " + p.run_id
                        + " is in " + partition_name(*part)
                        + ", which this store does not lead (its epoch is "
                        + std::to_string(metas_[*part].epoch) + ")";
          } else if (part) {
            auto& share = shares[*part];
            auto before = share.effects.Count();
            errors[i]
              = stage(p, share.effects, claimed, touched, &overlays_[*part]);
            if (errors[i].empty())
              (share.effects.Count() > before ? share.appends : share.checks)
                .push_back(i);
          }
        }
        // A fence's refusal is no failure of the run: nothing was tried,
        // and the run's own writer goes on.
        // Nor is a deletion's (of a finished run, by retention).
        if (!errors[i].empty() && !p.run_id.empty() && !is_stale(errors[i])
            && !p.removal)
          failed_here.try_emplace(p.run_id, errors[i]);
      }
      for (auto& [part, share] : shares)
        if (share.effects.Count() > 0) {
          std::string error;
          if (!add_record(part, share, wb, error)) {
            share.record.clear();
            for (size_t i : share.appends) {
              errors[i] = error;
              failed_here.try_emplace(batch[i].run_id, error);
              next_seq_.erase(batch[i].run_id);
            }
          }
        }
      if (wb.Count() > 0) {
        // After a failed write RocksDB refuses every write until it is
        // told to resume (a full disk stops it so).
        if (db_failed_ && db_->Resume().ok())
          db_failed_ = false;
        auto began = std::chrono::steady_clock::now();
        auto s = write_db(write_options_, &wb);
        last_commit_ = std::chrono::steady_clock::now() - began;
        if (opts_.on_commit)
          call_quietly([&] {
            opts_.on_commit(batch.size(),
                            std::chrono::steady_clock::now() - began);
          });
        if (!s.ok()) {
          for (size_t i = 0; i < batch.size(); ++i)
            if (errors[i].empty()) {
              errors[i] = "writing the journal of run " + batch[i].run_id
                          + " failed: " + s.ToString();
              if (!batch[i].run_id.empty())
                failed_here.try_emplace(batch[i].run_id, errors[i]);
            }
          // The numbers handed out were not stored: reload them next time.
          for (const auto& [run, terminal] : touched)
            next_seq_.erase(run);
          touched.clear();
          if (s.IsIOError())
            db_failed_ = true;
          // The disk filled up faster than the space watcher saw: hold what
          // comes next, rather than fail it too, until there is space and
          // RocksDB has recovered from the error.
          if (s.IsNoSpace() || contains(s.ToString(), "No space left"))
            hold_for_space();
        } else {
          recorded(batch, shares, errors, deferred);
          for (const auto& [part, share] : shares)
            if (!share.record.empty())
              written.emplace_back(part, share.meta.log_end);
        }
      } else {
        recorded(batch, shares, errors, deferred);
      }
      for (const auto& [run, terminal] : touched)
        if (terminal)
          next_seq_.erase(run);
      // A failed apply leaves the appends waiting: the next batch's
      // applies them.
      if (opts_.replication.commit_on_record)
        for (auto& [part, share] : shares)
          (void)apply_to(part, metas_[part].log_end, ready);
    } catch (const std::exception& e) {
      for (size_t i = 0; i < batch.size(); ++i)
        if (errors[i].empty() && !deferred[i]) {
          errors[i] = std::string{"writing the journal failed: "} + e.what();
          if (!batch[i].run_id.empty())
            failed_here.try_emplace(batch[i].run_id, errors[i]);
        }
      next_seq_.clear();
    }
    hold_back(failed_here);
    plk.unlock();
    if (!written.empty() && opts_.replication.on_records)
      call_quietly([&] { opts_.replication.on_records(written); });
    for (size_t i = 0; i < batch.size(); ++i)
      if (batch[i].done && !deferred[i])
        call_quietly([&] { batch[i].done(std::move(errors[i])); });
    for (auto& done : ready)
      if (done)
        call_quietly([&] { done(std::string{}); });
  }

  /// Encodes `share`'s effects as the partition's next record and adds it,
  /// with the partition's new meta, to `wb`. Under plog_mu_.
  bool add_record(uint32_t part, partition_share& share,
                  rocksdb::WriteBatch& wb, std::string& error) {
    auto meta = metas_[part];
    share.record = plog::begin_record(*leading_[part]);
    struct encoder : rocksdb::WriteBatch::Handler {
      rocksdb_journal_store& store;
      std::string& out;
      encoder(rocksdb_journal_store& s, std::string& o) : store(s), out(o) {}
      rocksdb::Status put(uint32_t cf, const rocksdb::Slice& key,
                          const rocksdb::Slice& value, plog::kind op) {
        auto f = store.family_code(cf);
        if (!f)
          return rocksdb::Status::InvalidArgument("unknown column family");
        plog::add(out, *f, op, key.ToStringView(), value.ToStringView());
        return {};
      }
      rocksdb::Status PutCF(uint32_t cf, const rocksdb::Slice& key,
                            const rocksdb::Slice& value) override {
        return put(cf, key, value, plog::kind::put);
      }
      rocksdb::Status DeleteCF(uint32_t cf,
                               const rocksdb::Slice& key) override {
        return put(cf, key, {}, plog::kind::remove);
      }
      rocksdb::Status SingleDeleteCF(uint32_t cf,
                                     const rocksdb::Slice& key) override {
        return put(cf, key, {}, plog::kind::single_remove);
      }
    } enc{*this, share.record};
    auto s = share.effects.Iterate(&enc);
    if (!s.ok()) {
      error = "cannot record the appends of partition " + std::to_string(part)
              + ": " + s.ToString();
      return false;
    }
    uint64_t offset = meta.log_end + 1;
    // A partition with no other replica, all applied: the record's effects
    // go in the same batch, committed and applied with it.
    share.applied_with_record
      = opts_.replication.commit_on_record && meta.applied == meta.log_end;
    meta.log_end = offset;
    if (meta.epochs.empty() || meta.epochs.back().first < *leading_[part])
      meta.epochs.emplace_back(*leading_[part], offset);
    wb.SetSavePoint();
    if (share.applied_with_record) {
      auto r = add_effects(part, offset, share.record, wb);
      if (!r.ok()) {
        wb.RollbackToSavePoint().PermitUncheckedError();
        error = r.message;
        return false;
      }
      meta.committed = meta.applied = offset;
    }
    s = wb.Put(plog_, plog::record_key(part, offset), share.record);
    if (s.ok())
      s = wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
                 plog::encode_meta(meta));
    if (!s.ok()) {
      wb.RollbackToSavePoint().PermitUncheckedError();
      error = "cannot record the appends of partition " + std::to_string(part)
              + ": " + s.ToString();
      return false;
    }
    wb.PopSavePoint().PermitUncheckedError();
    share.meta = std::move(meta);
    return true;
  }

  /// After a batch's write succeeded: takes in the new metas and records,
  /// and parks the callbacks of their appends until the records commit.
  /// Under plog_mu_.
  void recorded(std::vector<pending>& batch,
                std::map<uint32_t, partition_share>& shares,
                const std::vector<std::string>& errors,
                std::vector<bool>& deferred) {
    for (auto& [part, share] : shares) {
      auto& queue = waiting_[part];
      if (!share.record.empty() && share.applied_with_record) {
        // Committed and applied already: answered with the batch.
        metas_[part] = share.meta;
      } else if (!share.record.empty()) {
        metas_[part] = share.meta;
        note_pending(part, share.meta.log_end, share.record);
        callbacks cbs;
        for (size_t i : share.appends)
          if (errors[i].empty()) {
            cbs.push_back(std::move(batch[i].done));
            deferred[i] = true;
          }
        queue.emplace_back(share.meta.log_end, std::move(cbs));
      }
      // A check, or a barrier, is answered once everything recorded before
      // it has committed.
      if (!queue.empty())
        for (size_t i : share.checks)
          if (errors[i].empty()) {
            queue.back().second.push_back(std::move(batch[i].done));
            deferred[i] = true;
          }
    }
  }

  /// The stable code of column family `id`, for records.
  std::optional<plog::family> family_code(uint32_t id) const {
    if (id == db_->DefaultColumnFamily()->GetID())
      return plog::family::default_;
    if (id == journal_->GetID())
      return plog::family::journal;
    if (id == runs_->GetID())
      return plog::family::runs;
    if (id == unfinished_->GetID())
      return plog::family::unfinished;
    if (id == finished_->GetID())
      return plog::family::finished;
    return std::nullopt;
  }

  rocksdb::ColumnFamilyHandle* family_handle(plog::family f) const {
    switch (f) {
    case plog::family::default_: return db_->DefaultColumnFamily();
    case plog::family::journal: return journal_;
    case plog::family::runs: return runs_;
    case plog::family::unfinished: return unfinished_;
    case plog::family::finished: return finished_;
    }
    return db_->DefaultColumnFamily();
  }

  // -- partition logs: applying, the overlay, recovery -----------------------

  static plog_result refused(plog_errc code, std::string message,
                             uint64_t offset = 0, uint64_t epoch = 0) {
    return {code, std::move(message), offset, epoch};
  }

  static std::string partition_name(uint32_t part) {
    return "partition " + std::to_string(part);
  }

  /// Whether partition-log calls apply, and `part` is in range.
  plog_result check_partition(uint32_t part) const {
    if (!replicated())
      return refused(plog_errc::not_replicated,
                     "the journal store has no replicated partitions");
    if (part >= metas_.size())
      return refused(plog_errc::bad_partition,
                     partition_name(part) + " is out of range (there are "
                       + std::to_string(metas_.size()) + ")");
    return {};
  }

  /// Adds the effects of `record` (record `offset` of `part`) to `wb`.
  plog_result add_effects(uint32_t part, uint64_t offset,
                          std::string_view record, rocksdb::WriteBatch& wb) {
    rocksdb::Status s;
    std::string error;
    bool good = plog::for_each_mutation(
      record,
      [&](const plog::mutation_view& mv) {
        if (!s.ok())
          return;
        auto* cf = family_handle(mv.cf);
        switch (mv.op) {
        case plog::kind::put: s = wb.Put(cf, mv.key, mv.value); break;
        case plog::kind::remove: s = wb.Delete(cf, mv.key); break;
        case plog::kind::single_remove: s = wb.SingleDelete(cf, mv.key); break;
        }
      },
      error);
    if (!good)
      return refused(plog_errc::corrupt,
                     "cannot apply record " + std::to_string(offset) + " of "
                       + partition_name(part) + ": " + error);
    if (!s.ok())
      return refused(plog_errc::io,
                     "cannot apply record " + std::to_string(offset) + " of "
                       + partition_name(part) + ": " + s.ToString());
    return {};
  }

  /// Marks `part` committed up to `to` (at most its end) and applies its
  /// records up to there, apply_batch records per WriteBatch, each with the
  /// new applied offset; adds the callbacks of the appends applied to
  /// `ready`. Under plog_mu_ (or before the threads start).
  plog_result apply_to(uint32_t part, uint64_t to, callbacks& ready) {
    auto& m = metas_[part];
    if (auto r = check_apply(part, to); !r.ok() || to <= m.applied)
      return r;
    const uint64_t committed = std::max(m.committed, to);
    const uint64_t chunk = std::max<size_t>(1, opts_.replication.apply_batch);
    rocksdb::WriteOptions unsynced;
    while (m.applied < to) {
      const uint64_t last = std::min(to, m.applied + chunk);
      rocksdb::WriteBatch wb;
      partition_log_state next;
      if (auto r = stage_apply(part, last, committed, wb, next); !r.ok())
        return r;
      if (auto r = write_applied(part, wb); !r.ok())
        return r;
      if (auto r = applied(part, std::move(next), ready); !r.ok())
        return r;
    }
    return {};
  }

  /// Whether `part` may be committed up to `to`: not past its end.
  plog_result check_apply(uint32_t part, uint64_t to) const {
    const auto& m = metas_[part];
    if (to > m.log_end)
      return refused(plog_errc::beyond_end,
                     "cannot commit " + partition_name(part) + " up to offset "
                       + std::to_string(to) + ": its log ends at "
                       + std::to_string(m.log_end),
                     m.log_end);
    return {};
  }

  /// Adds to `wb` the effects of `part`'s records after its applied offset
  /// up to `last`, and its meta as they leave it (`next`: committed up to
  /// `committed`, applied up to `last`). Under plog_mu_.
  plog_result stage_apply(uint32_t part, uint64_t last, uint64_t committed,
                          rocksdb::WriteBatch& wb, partition_log_state& next) {
    const auto& m = metas_[part];
    const uint64_t from = m.applied + 1;
    uint64_t expected = from;
    plog_result failed;
    auto apply_one = [&](std::string_view record) {
      failed = add_effects(part, expected, record, wb);
      if (failed.ok())
        ++expected;
      return failed.ok();
    };
    // The records not applied yet are in the overlay, in order; a store
    // without one (not replicated, recovering) reads them.
    const overlay* ov = part < overlays_.size() ? &overlays_[part] : nullptr;
    if (ov && !ov->records.empty() && ov->records.front().offset == from) {
      for (const auto& t : ov->records)
        if (t.offset != expected || t.offset > last || !apply_one(t.bytes))
          break;
    } else {
      const std::string upper = plog::record_key(part, last + 1);
      rocksdb::Slice upper_slice{upper};
      rocksdb::ReadOptions ro;
      ro.iterate_upper_bound = &upper_slice;
      std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, plog_)};
      for (it->Seek(plog::record_key(part, from)); it->Valid(); it->Next())
        if (plog::record_offset(it->key().ToStringView(), part) != expected
            || !apply_one(it->value().ToStringView()))
          break;
      if (!it->status().ok())
        return refused(plog_errc::io, "cannot read the log of "
                                        + partition_name(part) + ": "
                                        + it->status().ToString());
    }
    if (!failed.ok())
      return failed;
    if (expected != last + 1)
      return refused(plog_errc::corrupt, "record " + std::to_string(expected)
                                           + " of " + partition_name(part)
                                           + " is missing");
    next = m;
    next.committed = committed;
    next.applied = last;
    wb.Put(db_->DefaultColumnFamily(), plog::meta_key(part),
           plog::encode_meta(next))
      .PermitUncheckedError();
    return {};
  }

  /// Writes staged applies, unsynced (an open re-applies what a crash
  /// lost). `part` names the partition in the error (one of them).
  plog_result write_applied(uint32_t part, rocksdb::WriteBatch& wb) {
    if (db_failed_ && db_->Resume().ok())
      db_failed_ = false;
    rocksdb::WriteOptions unsynced;
    auto s = write_db(unsynced, &wb);
    if (!s.ok()) {
      if (s.IsIOError())
        db_failed_ = true;
      return refused(plog_errc::io, "cannot apply the log of "
                                      + partition_name(part) + ": "
                                      + s.ToString());
    }
    return {};
  }

  /// After the write of a staged apply: `part`'s meta becomes `next`, and
  /// the callbacks of the appends applied go to `ready`.
  plog_result applied(uint32_t part, partition_log_state next,
                      callbacks& ready) {
    const uint64_t last = next.applied;
    metas_[part] = std::move(next);
    prune_overlay(part, last);
    if (part < waiting_.size()) {
      auto& queue = waiting_[part];
      while (!queue.empty() && queue.front().first <= last) {
        for (auto& done : queue.front().second)
          ready.push_back(std::move(done));
        queue.pop_front();
      }
    }
    if (opts_.replication.after_apply_write
        && !opts_.replication.after_apply_write(part, last))
      return refused(plog_errc::io, "stopped applying the log of "
                                      + partition_name(part) + " after "
                                      + std::to_string(last)
                                      + " (after_apply_write)");
    return {};
  }

  /// Checks a follower's record `offset` of `part` against `m`, the
  /// partition's meta with what this shipment staged already (in
  /// `staged`): a refusal, or ok with `write` set when the record is new
  /// (false: held already, byte for byte). Under plog_mu_.
  plog_result check_accept(
    uint32_t part, const partition_log_state& m, uint64_t leader_epoch,
    uint64_t offset, std::string_view record,
    const std::map<std::pair<uint32_t, uint64_t>, std::string_view>& staged,
    bool& write) {
    write = false;
    if (leader_epoch < m.epoch)
      return stale_epoch(part, leader_epoch, m.epoch);
    std::string error;
    if (!plog::for_each_mutation(
          record, [](const auto&) {}, error))
      return refused(plog_errc::corrupt, "record " + std::to_string(offset)
                                           + " of " + partition_name(part)
                                           + " is unreadable: " + error);
    auto record_epoch = *plog::record_epoch(record);
    if (record_epoch > leader_epoch)
      return refused(
        plog_errc::corrupt,
        "record " + std::to_string(offset) + " of " + partition_name(part)
          + " is of epoch " + std::to_string(record_epoch)
          + ", newer than its leader's (" + std::to_string(leader_epoch) + ")");
    if (offset == 0 || offset > m.log_end + 1)
      return refused(plog_errc::gap,
                     "record " + std::to_string(offset) + " of "
                       + partition_name(part) + " does not follow the log: "
                       + "expected offset " + std::to_string(m.log_end + 1),
                     m.log_end + 1);
    if (offset < m.log_start)
      return {}; // Held once, and trimmed since.
    if (offset <= m.log_end) {
      std::string held;
      if (auto i = staged.find({part, offset}); i != staged.end()) {
        held = std::string{i->second};
      } else {
        auto s = db_->Get(rocksdb::ReadOptions{}, plog_,
                          plog::record_key(part, offset), &held);
        if (!s.ok())
          return refused(plog_errc::io,
                         "cannot read record " + std::to_string(offset) + " of "
                           + partition_name(part) + ": " + s.ToString());
      }
      if (held == record)
        return {}; // A shipment retried: held already.
      return refused(plog_errc::diverged,
                     "record " + std::to_string(offset) + " of "
                       + partition_name(part)
                       + " differs from the one held: truncate by epoch first",
                     offset);
    }
    if (!m.epochs.empty() && record_epoch < m.epochs.back().first)
      return refused(
        plog_errc::diverged,
        "record " + std::to_string(offset) + " of " + partition_name(part)
          + " is of epoch " + std::to_string(record_epoch)
          + ", older than epoch " + std::to_string(m.epochs.back().first)
          + " that wrote from offset " + std::to_string(m.epochs.back().second)
          + ": truncate by epoch first",
        m.epochs.back().second);
    write = true;
    return {};
  }

  /// Notes what record `offset` of `part` will write that staging must
  /// see before it is applied. Under plog_mu_.
  void note_pending(uint32_t part, uint64_t offset, std::string_view record) {
    if (part >= overlays_.size())
      return;
    auto& ov = overlays_[part];
    overlay::touched t{offset, {}, {}, std::string{record}};
    std::string error;
    plog::for_each_mutation(
      record,
      [&](const plog::mutation_view& mv) {
        std::string_view other;
        if (mv.cf == plog::family::runs)
          other = mv.key;
        else if (mv.cf == plog::family::default_ && mv.op != plog::kind::put
                 && mv.key.starts_with(kl::tombstone_prefix))
          other = mv.key.substr(kl::tombstone_prefix.size());
        if (!other.empty() && (t.others.empty() || t.others.back() != other))
          t.others.emplace_back(other);
        if (mv.op != plog::kind::put)
          return;
        if (mv.cf == plog::family::journal && mv.key.size() > kl::seq_size
            && mv.key[mv.key.size() - kl::seq_size - 1] == '\0') {
          std::string run{mv.key.substr(0, mv.key.size() - kl::seq_size - 1)};
          auto seq = plog::read_be32(mv.key.substr(mv.key.size() - 4));
          ov.next_seq[run] = {seq + 1, offset};
          if (t.runs.empty() || t.runs.back() != run)
            t.runs.push_back(std::move(run));
        } else if (mv.cf == plog::family::default_
                   && mv.key.starts_with("idem/")) {
          std::string key{mv.key.substr(5)};
          ov.keys[key] = {std::string{mv.value}, offset};
          t.keys.push_back(std::move(key));
        }
      },
      error);
    ov.records.push_back(std::move(t));
  }

  /// Forgets what records up to `offset` of `part` set: it is applied now.
  void prune_overlay(uint32_t part, uint64_t offset) {
    if (part >= overlays_.size())
      return;
    auto& ov = overlays_[part];
    while (!ov.records.empty() && ov.records.front().offset <= offset) {
      auto& t = ov.records.front();
      for (auto& run : t.runs)
        if (auto it = ov.next_seq.find(run);
            it != ov.next_seq.end() && it->second.second == t.offset)
          ov.next_seq.erase(it);
      for (auto& key : t.keys)
        if (auto it = ov.keys.find(key);
            it != ov.keys.end() && it->second.second == t.offset)
          ov.keys.erase(it);
      ov.records.pop_front();
    }
  }

  /// Builds the overlay of `part` from its records not applied yet.
  void rebuild_overlay(uint32_t part) {
    if (part >= overlays_.size())
      return;
    overlays_[part] = {};
    const auto& m = metas_[part];
    if (m.applied >= m.log_end)
      return;
    const std::string upper = plog::record_key(part, m.log_end + 1);
    rocksdb::Slice upper_slice{upper};
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, plog_)};
    for (it->Seek(plog::record_key(part, m.applied + 1)); it->Valid();
         it->Next())
      if (auto offset = plog::record_offset(it->key().ToStringView(), part))
        note_pending(part, *offset, it->value().ToStringView());
  }

  // -- partition state, for snapshots --------------------------------------

  /// Calls `emit(family, key, value)` for each key of `part`'s applied
  /// state read with `ro`, from `cursor` on (empty: the start), unit by
  /// unit: a run (its index entry, unfinished entry, journal, idempotency
  /// keys), then each finished entry and tombstone of the partition's runs.
  /// After each unit calls `more(cursor after it)`; false stops there, with
  /// `next` set to that cursor. At the end `next` is empty. A cursor is a
  /// phase letter and the last key visited in it.
  plog_result visit_partition(
    uint32_t part, const rocksdb::ReadOptions& ro, const std::string& cursor,
    const std::function<void(plog::family, std::string_view, std::string_view)>&
      emit,
    const std::function<bool(const std::string&)>& more, std::string& next) {
    struct phase {
      char tag;
      rocksdb::ColumnFamilyHandle* cf;
      plog::family family;
      std::string_view prefix;
    };
    const phase phases[] = {
      {'r', runs_, plog::family::runs, {}},
      {'f', finished_, plog::family::finished, {}},
      {'g', db_->DefaultColumnFamily(), plog::family::default_,
       kl::tombstone_prefix},
      {'t', db_->DefaultColumnFamily(), plog::family::default_,
       kl::tombstone_time_prefix},
    };
    next.clear();
    size_t first = 0;
    std::string after;
    if (!cursor.empty()) {
      while (first < std::size(phases) && phases[first].tag != cursor[0])
        ++first;
      if (first == std::size(phases))
        return refused(plog_errc::corrupt,
                       "unknown snapshot cursor of " + partition_name(part));
      after = cursor.substr(1);
    }
    std::unique_ptr<rocksdb::Iterator> journal{db_->NewIterator(ro, journal_)};
    std::unique_ptr<rocksdb::Iterator> keys{
      db_->NewIterator(ro, db_->DefaultColumnFamily())};
    auto failed = [&](const rocksdb::Status& s) {
      return refused(plog_errc::io, "cannot read the state of "
                                      + partition_name(part) + ": "
                                      + s.ToString());
    };
    for (size_t i = first; i < std::size(phases); ++i) {
      const auto& ph = phases[i];
      std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, ph.cf)};
      if (after.empty())
        it->Seek(rocksdb::Slice{ph.prefix.data(), ph.prefix.size()});
      else
        it->Seek(after);
      if (!after.empty() && it->Valid() && it->key().ToStringView() == after)
        it->Next();
      after.clear();
      for (; it->Valid() && it->key().ToStringView().starts_with(ph.prefix);
           it->Next()) {
        auto key = it->key().ToStringView();
        auto value = it->value().ToStringView();
        auto run = plog::snapshot_key_run(ph.family, key, value);
        std::string ignored;
        if (!run || partition_of(std::string{*run}, {}, ignored) != part)
          continue;
        emit(ph.family, key, value);
        if (ph.tag == 'r') {
          std::string id{*run}, held;
          auto s = db_->Get(ro, unfinished_, id, &held);
          if (s.ok())
            emit(plog::family::unfinished, id, held);
          else if (!s.IsNotFound())
            return failed(s);
          auto prefix = kl::journal_prefix(id);
          for (journal->Seek(prefix);
               journal->Valid()
               && journal->key().ToStringView().starts_with(prefix);
               journal->Next())
            emit(plog::family::journal, journal->key().ToStringView(),
                 journal->value().ToStringView());
          if (!journal->status().ok())
            return failed(journal->status());
          auto reverse = kl::idempotency_reverse_prefix_of(id);
          for (keys->Seek(reverse);
               keys->Valid() && keys->key().ToStringView().starts_with(reverse);
               keys->Next()) {
            auto rk = keys->key().ToStringView();
            emit(plog::family::default_, rk, keys->value().ToStringView());
            auto ik = kl::idempotency_key(rk.substr(reverse.size()));
            s = db_->Get(ro, db_->DefaultColumnFamily(), ik, &held);
            if (s.ok() && held == id)
              emit(plog::family::default_, ik, held);
            else if (!s.ok() && !s.IsNotFound())
              return failed(s);
          }
          if (!keys->status().ok())
            return failed(keys->status());
        }
        std::string here = std::string(1, ph.tag) + std::string{key};
        if (!more(here)) {
          next = std::move(here);
          return {};
        }
      }
      if (!it->status().ok())
        return failed(it->status());
    }
    return {};
  }

  /// Deletes `part`'s applied state, in batches (unsynced: what a crash
  /// loses is deleted again by the next open, while the mark stays). Under
  /// plog_mu_ (or before the threads start).
  plog_result delete_partition_state(uint32_t part) {
    rocksdb::WriteBatch wb;
    plog_result failed;
    auto flush = [&] {
      if (wb.Count() == 0)
        return true;
      failed = write_applied(part, wb);
      wb.Clear();
      return failed.ok();
    };
    std::string next;
    auto r = visit_partition(
      part, rocksdb::ReadOptions{}, {},
      [&](plog::family f, std::string_view key, std::string_view) {
        // `unfinished` keys are written once and only ever SingleDelete'd
        // (key_layout.hpp): mixing in a Delete is undefined for RocksDB.
        if (f == plog::family::unfinished)
          wb.SingleDelete(family_handle(f), key).PermitUncheckedError();
        else
          wb.Delete(family_handle(f), key).PermitUncheckedError();
      },
      [&](const std::string&) { return wb.Count() < 4096 || flush(); }, next);
    if (!r.ok())
      return r;
    if (!failed.ok() || !flush())
      return failed;
    return {};
  }

  /// Puts `part` back to empty after an install that did not finish:
  /// deletes its log and what the install wrote, then the mark (its epoch
  /// is kept). Under plog_mu_ (or before the threads start).
  plog_result redo_install(uint32_t part) {
    if (auto r = delete_partition_state(part); !r.ok())
      return r;
    partition_log_state next;
    next.epoch = metas_[part].epoch;
    rocksdb::WriteBatch wb;
    wb.DeleteRange(plog_, plog::record_key(part, 0),
                   plog::record_key(part + 1, 0))
      .PermitUncheckedError();
    auto r = end_install(part, std::move(next), wb,
                         "cannot undo the snapshot install of ");
    if (r.ok() && part < overlays_.size())
      overlays_[part] = {};
    return r;
  }

  /// Loads the partition metas, and applies what was committed and not
  /// applied before the store closed (or crashed). Throws with the reason.
  void open_logs() {
    std::map<uint32_t, partition_log_state> found;
    {
      const std::string prefix{plog::meta_prefix};
      std::unique_ptr<rocksdb::Iterator> it{
        db_->NewIterator(rocksdb::ReadOptions{}, db_->DefaultColumnFamily())};
      for (it->Seek(prefix);
           it->Valid() && it->key().ToStringView().starts_with(prefix);
           it->Next()) {
        auto key = it->key().ToStringView();
        if (key.size() != prefix.size() + 4)
          throw std::runtime_error("malformed partition log meta key");
        auto part = plog::read_be32(key.substr(prefix.size()));
        std::string error;
        auto meta = plog::decode_meta(it->value().ToStringView(), error);
        if (!meta)
          throw std::runtime_error(partition_name(part) + ": " + error);
        found.emplace(part, std::move(*meta));
      }
      if (!it->status().ok())
        throw std::runtime_error("cannot read the partition logs: "
                                 + it->status().ToString());
    }
    size_t count = opts_.replication.partitions;
    if (!replicated() && !found.empty())
      count = found.rbegin()->first + size_t{1};
    if (!found.empty() && found.rbegin()->first >= count)
      throw std::runtime_error(
        "the store holds the log of " + partition_name(found.rbegin()->first)
        + ", but replication.partitions is " + std::to_string(count));
    metas_.assign(count, partition_log_state{});
    installing_.assign(count, false);
    leading_.assign(count, std::nullopt);
    waiting_.assign(count, {});
    if (replicated())
      overlays_.assign(count, overlay{});
    // A partition never fenced is led at epoch 0: a store not (yet) in a
    // cluster records and commits on its own.
    for (size_t part = 0; part < count; ++part)
      leading_[part] = 0;
    std::set<uint32_t> unfinished_installs;
    {
      const std::string prefix{plog::install_prefix};
      std::unique_ptr<rocksdb::Iterator> it{
        db_->NewIterator(rocksdb::ReadOptions{}, db_->DefaultColumnFamily())};
      for (it->Seek(prefix);
           it->Valid() && it->key().ToStringView().starts_with(prefix);
           it->Next()) {
        auto key = it->key().ToStringView();
        if (key.size() == prefix.size() + 4)
          unfinished_installs.insert(
            plog::read_be32(key.substr(prefix.size())));
      }
    }
    for (auto& [part, meta] : found) {
      metas_[part] = meta;
      if (meta.epoch > 0)
        leading_[part].reset();
      if (unfinished_installs.count(part) != 0 && part < count) {
        // A snapshot install that did not finish: what it wrote is deleted
        // and the partition is empty again, to be installed anew.
        installing_[part] = true;
        if (auto r = redo_install(part); !r.ok())
          throw std::runtime_error(r.message);
        continue;
      }
      callbacks none;
      auto r = apply_to(part, meta.committed, none);
      if (!r.ok())
        throw std::runtime_error(r.message);
      rebuild_overlay(part);
    }
  }

  /// Fails the appends still waiting for their commit: the store closes.
  void fail_waiting() noexcept {
    for (size_t part = 0; part < waiting_.size(); ++part)
      for (auto& [offset, cbs] : waiting_[part])
        for (auto& done : cbs)
          if (done)
            call_quietly([&] {
              done("not committed: the journal store closed while record "
                   + std::to_string(offset) + " of "
                   + partition_name(static_cast<uint32_t>(part))
                   + " waited for its commit");
            });
    waiting_.clear();
  }

  /// Adds to `wb` what the indexes beside the run index need for `p`,
  /// atomically with its index entry and idempotency key (key_layout.hpp);
  /// `creates_run` when `p` holds the run's first journal record.
  ///
  /// A run enters `unfinished` once, with the append that creates it, and
  /// leaves it with a SingleDelete when it finishes: a key put once and
  /// single-deleted vanishes, tombstone and all, as soon as a flush or
  /// compaction sees both (with Delete the tombstone would linger until the
  /// last level, and a busy node would leave recovery millions to step
  /// over). So a pause or a resume, which changes an unfinished run's entry,
  /// must not put the key again, and nothing else may delete it.
  rocksdb::Status put_side_indexes(rocksdb::WriteBatch& wb, const pending& p,
                                   bool creates_run) {
    rocksdb::Status s;
    if (p.index_value) {
      if (p.terminal) {
        if (!creates_run)
          s = wb.SingleDelete(unfinished_, p.run_id);
        if (s.ok())
          s = wb.Put(finished_, kl::finished_key(p.finished_at_ns, p.run_id),
                     rocksdb::Slice{});
      } else if (creates_run) {
        s = wb.Put(unfinished_, p.run_id, rocksdb::Slice{});
      }
    }
    if (s.ok() && !p.idempotency_key.empty())
      s = wb.Put(db_->DefaultColumnFamily(),
                 kl::idempotency_reverse_key(p.run_id, p.idempotency_key),
                 rocksdb::Slice{});
    return s;
  }

  /// The run ids a collection deleted, for compacting after it.
  struct collected_range {
    std::string first;
    std::string last;
    int64_t finished_before_ns = 0;

    void add(const std::string& run_id) {
      if (first.empty() || run_id < first)
        first = run_id;
      if (last.empty() || run_id > last)
        last = run_id;
    }
  };

  static bool stop_requested(const gc_options& o) {
    return o.stop && o.stop->load();
  }

  /// Returns the number of journal records of `run_id` (its last sequence
  /// number), seeking with `it`, an iterator over the journal family.
  static uint64_t journal_length(rocksdb::Iterator& it,
                                 const std::string& run_id) {
    const std::string prefix = kl::journal_prefix(run_id);
    it.SeekForPrev(kl::journal_key(run_id, ~uint32_t{0}));
    if (!it.Valid())
      return 0;
    auto seq = kl::journal_seq(it.key().ToStringView(), prefix);
    return seq ? *seq : 0;
  }

  /// Deletes finished runs older than `o.runs_before_ns`, a batch at a time.
  void collect_runs(const gc_options& o, gc_report& out,
                    collected_range& range) {
    // Every key of a run that finished before the time.
    const std::string upper = kl::finished_key(o.runs_before_ns, "");
    range.finished_before_ns = o.runs_before_ns;
    std::string resume; // The first finished key not looked at yet.
    const size_t batch_size = std::max<size_t>(1, o.batch);
    for (;;) {
      if (stop_requested(o)) {
        out.stopped = true;
        return;
      }
      // A fresh iterator per batch, from where the last one stopped: the
      // keys behind it are deleted, and a long-lived iterator would pin
      // what the batches free.
      std::vector<std::pair<std::string, std::string>> due; // key, run id
      {
        rocksdb::ReadOptions ro;
        rocksdb::Slice upper_slice{upper};
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, finished_)};
        for (it->Seek(resume); it->Valid() && due.size() < batch_size;
             it->Next()) {
          auto key = it->key().ToString();
          if (key.size() <= 8)
            due.emplace_back(key, std::string{}); // malformed: just drop it
          else
            due.emplace_back(key, key.substr(8));
        }
        if (!it->status().ok()) {
          out.error = "cannot read the index of finished runs: "
                      + it->status().ToString();
          return;
        }
      }
      if (due.empty())
        return;
      resume = due.back().first;
      resume.push_back('\0');
      auto deleted_at = wall_now_ns();
      rocksdb::WriteBatch wb;
      gc_report counted;
      std::vector<std::string> deleted;
      std::unique_ptr<rocksdb::Iterator> journal{
        db_->NewIterator(rocksdb::ReadOptions{}, journal_)};
      for (auto& [key, run_id] : due) {
        wb.Delete(finished_, key).PermitUncheckedError();
        if (run_id.empty())
          continue;
        auto entry = find_run(run_id);
        // Only the key written with the run's current, terminal entry
        // counts: another is stale (the run finished again later, or is
        // gone already).
        if (!entry || !is_terminal(entry->state)
            || kl::finished_key(entry->updated_at_ns, run_id) != key)
          continue;
        counted.events += journal_length(*journal, run_id);
        wb.DeleteRange(journal_, kl::journal_prefix(run_id),
                       kl::journal_upper_bound(run_id))
          .PermitUncheckedError();
        wb.Delete(runs_, run_id).PermitUncheckedError();
        // Not in `unfinished`: it left with a SingleDelete when it finished.
        counted.keys += release_keys(wb, run_id);
        entry->reason.clear();
        std::string tombstone;
        kl::append_be64(tombstone, kl::time_part(deleted_at));
        tombstone += encode(*entry);
        wb.Put(db_->DefaultColumnFamily(), kl::tombstone_key(run_id), tombstone)
          .PermitUncheckedError();
        wb.Put(db_->DefaultColumnFamily(),
               kl::tombstone_time_key(deleted_at, run_id), rocksdb::Slice{})
          .PermitUncheckedError();
        ++counted.runs;
        deleted.push_back(run_id);
      }
      auto s = write_db(write_options_, &wb);
      if (!s.ok()) {
        out.error = "cannot delete finished runs: " + s.ToString();
        return;
      }
      out.runs += counted.runs;
      out.events += counted.events;
      out.keys += counted.keys;
      for (auto& id : deleted)
        range.add(id);
      if (due.size() < batch_size)
        return;
    }
  }

  /// Adds to `wb` the deletion of the idempotency keys `run_id` holds, both
  /// ways; returns how many it releases. A key another run holds now is
  /// left to it.
  uint64_t release_keys(rocksdb::WriteBatch& wb, const std::string& run_id) {
    uint64_t released = 0;
    const std::string prefix = kl::idempotency_reverse_prefix_of(run_id);
    std::unique_ptr<rocksdb::Iterator> it{
      db_->NewIterator(rocksdb::ReadOptions{}, db_->DefaultColumnFamily())};
    for (it->Seek(prefix);
         it->Valid() && it->key().ToStringView().starts_with(prefix);
         it->Next()) {
      auto key = it->key().ToString().substr(prefix.size());
      if (find_idempotency_key(key) == run_id) {
        wb.Delete(db_->DefaultColumnFamily(), kl::idempotency_key(key))
          .PermitUncheckedError();
        ++released;
      }
      wb.Delete(db_->DefaultColumnFamily(), it->key()).PermitUncheckedError();
    }
    return released;
  }

  // -- retention through the partition logs --------------------------------

  /// Whether a record of `ov` (not applied yet) writes `run_id`'s journal,
  /// index entry or tombstone.
  static bool writes_run(const overlay& ov, const std::string& run_id) {
    if (ov.next_seq.count(run_id) != 0)
      return true;
    for (const auto& t : ov.records)
      for (const auto& other : t.others)
        if (other == run_id)
          return true;
    return false;
  }

  /// Adds to `wb` the deletions of `p.removal`, as the applied state has
  /// them now: a finished run's journal (a point deletion per record, so
  /// that a record holds nothing but puts and deletions), index entries,
  /// idempotency keys, and its tombstone; or an expired tombstone. Adds
  /// nothing for a run no longer due (its entry changed, or it is gone) or
  /// one that a record not applied yet, or an append of this batch, writes:
  /// a later collection sees it again. Writer thread, under plog_mu_.
  std::string stage_removal(pending& p, rocksdb::WriteBatch& wb,
                            std::unordered_map<std::string, bool>& touched,
                            const overlay* ov) {
    auto& r = *p.removal;
    if (touched.count(p.run_id) != 0 || (ov && writes_run(*ov, p.run_id)))
      return {};
    auto* def = db_->DefaultColumnFamily();
    gc_report counted;
    rocksdb::Status s;
    wb.SetSavePoint();
    if (r.kind == removal_op::what::tombstone) {
      s = wb.Delete(def, r.key);
      // A run deleted again since keeps its newer tombstone.
      if (auto t = find_tombstone(p.run_id);
          s.ok() && t
          && kl::time_part(t->deleted_at_ns) == kl::time_part(r.at_ns)) {
        s = wb.Delete(def, kl::tombstone_key(p.run_id));
        counted.tombstones = 1;
      }
    } else {
      s = wb.Delete(finished_, r.key);
      auto entry = find_run(p.run_id);
      // As in collect_runs: only the key of the run's current, terminal
      // entry counts.
      if (s.ok() && entry && is_terminal(entry->state)
          && kl::finished_key(entry->updated_at_ns, p.run_id) == r.key) {
        std::unique_ptr<rocksdb::Iterator> journal{
          db_->NewIterator(rocksdb::ReadOptions{}, journal_)};
        uint64_t n = journal_length(*journal, p.run_id);
        for (uint64_t seq = 1; s.ok() && seq <= n; ++seq)
          s = wb.Delete(journal_,
                        kl::journal_key(p.run_id, static_cast<uint32_t>(seq)));
        if (s.ok())
          s = wb.Delete(runs_, p.run_id);
        if (s.ok())
          counted.keys = release_keys(wb, p.run_id);
        entry->reason.clear();
        std::string tombstone;
        kl::append_be64(tombstone, kl::time_part(r.at_ns));
        tombstone += encode(*entry);
        if (s.ok())
          s = wb.Put(def, kl::tombstone_key(p.run_id), tombstone);
        if (s.ok())
          s = wb.Put(def, kl::tombstone_time_key(r.at_ns, p.run_id),
                     rocksdb::Slice{});
        counted.runs = 1;
        counted.events = n;
        touched[p.run_id] = true;
        removed_in_batch_.insert(p.run_id);
      }
    }
    if (!s.ok()) {
      wb.RollbackToSavePoint().PermitUncheckedError();
      touched.erase(p.run_id);
      removed_in_batch_.erase(p.run_id);
      return "cannot delete run " + p.run_id + ": " + s.ToString();
    }
    wb.PopSavePoint().PermitUncheckedError();
    r.counted = counted;
    return {};
  }

  /// What collect_through_logs waits for: the answers of one batch of
  /// deletions, which may come after the collection gave up waiting.
  struct removal_wait {
    std::mutex mu;
    std::condition_variable cv;
    size_t left = 0;
    uint64_t not_led = 0;
    std::string error;
  };

  /// Retention with replicated partitions: the finished runs past the time,
  /// then the expired tombstones, of the partitions this store leads, each
  /// batch queued to the writer as deletions (one record per partition)
  /// and waited for until committed.
  void collect_through_logs(const gc_options& o, gc_report& out,
                            collected_range& range) {
    range.finished_before_ns = o.runs_before_ns;
    if (!sweep_through_logs(o, removal_op::what::run, out, range))
      return;
    sweep_through_logs(o, removal_op::what::tombstone, out, range);
  }

  /// One kind of collect_through_logs' deletions; false when it stopped
  /// early (out.error or out.stopped set).
  bool sweep_through_logs(const gc_options& o, removal_op::what kind,
                          gc_report& out, collected_range& range) {
    const bool runs = kind == removal_op::what::run;
    auto* cf = runs ? finished_ : db_->DefaultColumnFamily();
    const std::string prefix{runs ? std::string_view{}
                                  : kl::tombstone_time_prefix};
    const std::string upper
      = runs ? kl::finished_key(o.runs_before_ns, "")
             : kl::tombstone_time_key(o.tombstones_before_ns, "");
    const size_t batch_size = std::max<size_t>(1, o.batch);
    std::string resume = prefix;
    for (;;) {
      if (stop_requested(o)) {
        out.stopped = true;
        return false;
      }
      std::vector<std::string> keys;
      {
        rocksdb::ReadOptions ro;
        rocksdb::Slice upper_slice{upper};
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it{db_->NewIterator(ro, cf)};
        for (it->Seek(resume); it->Valid() && keys.size() < batch_size;
             it->Next())
          keys.push_back(it->key().ToString());
        if (!it->status().ok()) {
          out.error = std::string{runs ? "cannot read the index of finished "
                                         "runs: "
                                       : "cannot read the tombstones: "}
                      + it->status().ToString();
          return false;
        }
      }
      if (keys.empty())
        return true;
      resume = keys.back() + '\0';
      auto deleted_at = wall_now_ns();
      auto wait = std::make_shared<removal_wait>();
      std::vector<pending> queued;
      std::vector<std::shared_ptr<removal_op>> ops;
      std::vector<std::string> ids;
      for (auto& key : keys) {
        // Malformed keys (no run id) are left: they map to no partition.
        const size_t head = prefix.size() + 8;
        if (key.size() <= head)
          continue;
        std::string run_id = key.substr(head);
        std::string ignored;
        auto part = partition_of(run_id, {}, ignored);
        if (!part)
          continue;
        {
          std::lock_guard<std::mutex> plk{plog_mu_};
          if (!leading_[*part]) {
            ++out.not_led;
            continue;
          }
        }
        auto op = std::make_shared<removal_op>();
        op->kind = kind;
        op->key = key;
        op->at_ns = runs ? deleted_at
                         : static_cast<int64_t>(kl::read_be64(
                           std::string_view{key}.substr(prefix.size())));
        pending p;
        ids.push_back(run_id);
        p.run_id = std::move(run_id);
        p.removal = op;
        p.done = [wait, op](std::string error) {
          std::lock_guard<std::mutex> lk{wait->mu};
          if (error.empty())
            op->committed = true;
          else if (is_not_leader(error))
            ++wait->not_led;
          else if (wait->error.empty())
            wait->error = std::move(error);
          if (--wait->left == 0)
            wait->cv.notify_all();
        };
        ops.push_back(std::move(op));
        queued.push_back(std::move(p));
      }
      if (!queued.empty()) {
        wait->left = queued.size();
        {
          std::lock_guard<std::mutex> lk{mu_};
          for (auto& p : queued) {
            queue_.push_back(std::move(p));
            ++enqueued_;
          }
        }
        work_cv_.notify_one();
        bool timed_out = false;
        {
          std::unique_lock<std::mutex> lk{wait->mu};
          auto deadline = std::chrono::steady_clock::now() + o.commit_wait;
          while (wait->left > 0 && !stop_requested(o)) {
            auto now = std::chrono::steady_clock::now();
            if (now >= deadline) {
              timed_out = true;
              break;
            }
            wait->cv.wait_for(
              lk, std::min<std::chrono::steady_clock::duration>(
                    deadline - now, std::chrono::milliseconds{100}));
          }
          for (auto& op : ops)
            if (op->committed) {
              out.runs += op->counted.runs;
              out.events += op->counted.events;
              out.keys += op->counted.keys;
              out.tombstones += op->counted.tombstones;
            }
          out.not_led += wait->not_led;
          if (!wait->error.empty())
            out.error
              = "cannot delete "
                + std::string{runs ? "finished runs" : "expired tombstones"}
                + ": " + wait->error;
          else if (timed_out)
            out.error = std::to_string(wait->left)
                        + " deletion(s) were not committed within "
                        + std::to_string(o.commit_wait.count())
                        + " ms: their partitions wait for their in-sync "
                          "replicas (they take effect if they commit)";
          if (wait->left > 0 && out.error.empty())
            out.stopped = true;
          // Under the lock: removals given up on may still be committed by
          // the writer thread.
          for (size_t i = 0; i < ops.size(); ++i)
            if (ops[i]->committed && ops[i]->counted.runs > 0)
              range.add(ids[i]);
        }
        if (!out.error.empty() || out.stopped)
          return false;
      }
      if (keys.size() < batch_size)
        return true;
    }
  }

  /// Removes tombstones of runs deleted before `o.tombstones_before_ns`.
  void expire_tombstones(const gc_options& o, gc_report& out) {
    std::string upper = kl::tombstone_time_key(o.tombstones_before_ns, "");
    const std::string prefix{kl::tombstone_time_prefix};
    std::string resume = prefix;
    const size_t batch_size = std::max<size_t>(1, o.batch) * 4;
    for (;;) {
      if (stop_requested(o)) {
        out.stopped = true;
        return;
      }
      rocksdb::WriteBatch wb;
      size_t seen = 0;
      uint64_t expired = 0;
      {
        rocksdb::ReadOptions ro;
        rocksdb::Slice upper_slice{upper};
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it{
          db_->NewIterator(ro, db_->DefaultColumnFamily())};
        for (it->Seek(resume); it->Valid() && seen < batch_size; it->Next()) {
          auto key = it->key().ToString();
          ++seen;
          resume = key + '\0';
          wb.Delete(db_->DefaultColumnFamily(), key).PermitUncheckedError();
          if (key.size() <= prefix.size() + 8)
            continue;
          auto at = kl::read_be64(std::string_view{key}.substr(prefix.size()));
          auto run_id = key.substr(prefix.size() + 8);
          // A run deleted again since (recreated under the same id) keeps
          // its newer tombstone.
          if (auto t = find_tombstone(run_id);
              t && kl::time_part(t->deleted_at_ns) == at) {
            wb.Delete(db_->DefaultColumnFamily(), kl::tombstone_key(run_id))
              .PermitUncheckedError();
            ++expired;
          }
        }
        if (!it->status().ok()) {
          out.error = "cannot read the tombstones: " + it->status().ToString();
          return;
        }
      }
      if (seen == 0)
        return;
      auto s = write_db(write_options_, &wb);
      if (!s.ok()) {
        out.error = "cannot remove expired tombstones: " + s.ToString();
        return;
      }
      out.tombstones += expired;
      if (seen < batch_size)
        return;
    }
  }

  /// Compacts what a collection deleted: the space is freed, and reads no
  /// longer step over deletion markers. Cancelled by `o.stop`.
  void compact_collected(const gc_options& o, const collected_range& range) {
    rocksdb::CompactRangeOptions cro;
    cro.exclusive_manual_compaction = false;
    cro.canceled = o.stop;
    // Null bounds: from the first key, to the last.
    auto compact = [&](rocksdb::ColumnFamilyHandle* cf,
                       const std::string* begin, const std::string* end) {
      if (stop_requested(o))
        return;
      rocksdb::Slice b, e;
      if (begin)
        b = *begin;
      if (end)
        e = *end;
      db_->CompactRange(cro, cf, begin ? &b : nullptr, end ? &e : nullptr)
        .PermitUncheckedError();
    };
    if (!range.first.empty()) {
      auto journal_begin = kl::journal_prefix(range.first);
      auto journal_end = kl::journal_upper_bound(range.last);
      compact(journal_, &journal_begin, &journal_end);
      auto runs_end = range.last + '\0';
      compact(runs_, &range.first, &runs_end);
      auto finished_end = kl::finished_key(range.finished_before_ns, "");
      compact(finished_, nullptr, &finished_end);
    }
    compact(unfinished_, nullptr, nullptr);
  }

  static int64_t wall_now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
  }

  /// Refuses the later appends of the runs in `failed` until a resync (see
  /// journal_store::append). Writer thread only.
  void hold_back(
    const std::unordered_map<std::string, std::string>& failed) noexcept {
    for (const auto& [run, why] : failed) {
      try {
        if (refused_.count(run) || has_journal(run))
          refused_.try_emplace(run, why);
      } catch (...) {
        // Out of memory: nothing better to do than to go on.
      }
    }
  }

  void reader_loop() {
    for (;;) {
      read_request r;
      {
        std::unique_lock<std::mutex> lk{read_mu_};
        read_cv_.wait(lk, [&] { return !reads_.empty() || read_stopping_; });
        if (reads_.empty())
          return;
        r = std::move(reads_.front());
        reads_.pop_front();
      }
      std::string error;
      auto events = read_journal(r.run_id, error);
      if (r.done)
        call_quietly([&] { r.done(std::move(events), std::move(error)); });
    }
  }

  options opts_;
  size_t max_batch_ = 512;
  rocksdb::WriteOptions write_options_;
  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* journal_;
  rocksdb::ColumnFamilyHandle* runs_;
  rocksdb::ColumnFamilyHandle* unfinished_;
  rocksdb::ColumnFamilyHandle* finished_;
  rocksdb::ColumnFamilyHandle* plog_;
  /// Held by a collection, so that two run one after the other.
  std::mutex gc_mu_;

  // Writer state; mu_ guards the queue, the counters and stopping_.
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::deque<pending> queue_;
  uint64_t enqueued_ = 0;
  uint64_t completed_ = 0;
  /// Queue length at which an append wakes the writer (see gather).
  size_t wake_at_ = 1;
  // The last batch written and how long its write took; writer thread only.
  size_t last_batch_ = 0;
  std::chrono::steady_clock::duration last_commit_{};
  bool stopping_ = false;
  /// Whether appends are held for low disk space, and the last reading.
  bool low_ = false;
  /// Whether a write found the disk full and RocksDB has not recovered.
  bool disk_full_ = false;
  disk_space space_;
  /// Held appends up to this count (of all appends ever queued) are to be
  /// failed: a flush asked for them.
  uint64_t fail_until_ = 0;
  /// TROUPE_TEST_FREE_SPACE_FILE, read once at open.
  std::string space_file_;
  std::condition_variable watch_cv_;
  std::thread watcher_;
  /// Whether a write failed with an I/O error and RocksDB has not resumed
  /// since; writer thread only (and the destructor, once it has stopped).
  bool db_failed_ = false;
  /// Next sequence number of each active run; writer thread only.
  std::unordered_map<std::string, uint32_t> next_seq_;
  /// Runs whose appends are refused until a resync, with the failure that
  /// started it; writer thread only.
  std::unordered_map<std::string, std::string> refused_;
  std::thread writer_;

  // Partition logs. plog_mu_ guards them, and is held by the writer while
  // it stages and writes a batch (so next_seq_ and refused_ are also
  // guarded by it whenever a partition-log call touches them).
  std::mutex plog_mu_;
  /// Each partition's meta, as last written; indexed by partition.
  std::vector<partition_log_state> metas_;
  /// The epoch at which this store leads each partition, if it does.
  std::vector<std::optional<uint64_t>> leading_;
  /// Appends whose record is written but not committed: per partition, by
  /// offset, their callbacks.
  std::vector<std::deque<std::pair<uint64_t, callbacks>>> waiting_;
  std::vector<overlay> overlays_;
  /// Per partition: a snapshot install was begun and not finished (its
  /// mark is in the database).
  std::vector<bool> installing_;
  /// Runs the batch being staged deletes (retention through the logs): no
  /// append to them is staged after. Writer thread only.
  std::unordered_set<std::string> removed_in_batch_;

  // Reader state.
  std::mutex read_mu_;
  std::condition_variable read_cv_;
  std::deque<read_request> reads_;
  bool read_stopping_ = false;
  std::thread reader_;
};

/// Writes the store's layout version, durably.
bool write_format(rocksdb::DB* db, const std::string& path, int version,
                  std::string& error) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  auto s = db->Put(wo, db->DefaultColumnFamily(), kl::format_key,
                   std::to_string(version));
  if (!s.ok()) {
    error = "cannot write the format version of journal store at "
            + quoted(path) + ": " + s.ToString();
    return false;
  }
  return true;
}

/// Returns the store's layout version, writing today's into a new store; 0
/// with `error` set when it is unreadable or newer than this build's.
int check_format(rocksdb::DB* db, const std::string& path, std::string& error) {
  std::string value;
  auto s = db->Get(rocksdb::ReadOptions{}, db->DefaultColumnFamily(),
                   kl::format_key, &value);
  if (s.IsNotFound()) {
    if (!write_format(db, path, kl::store_format_version, error))
      return 0;
    return kl::store_format_version;
  }
  if (!s.ok()) {
    error = "cannot read the format version of journal store at " + quoted(path)
            + ": " + s.ToString();
    return 0;
  }
  bool digits = !value.empty() && value.size() <= 3
                && std::all_of(value.begin(), value.end(),
                               [](char c) { return c >= '0' && c <= '9'; });
  int version = digits ? std::stoi(value) : 0;
  if (version == 0) {
    error = "journal store at " + quoted(path)
            + " is corrupt: unreadable format version";
    return 0;
  }
  if (version > plog::replicated_format_version) {
    error = "journal store at " + quoted(path)
            + " was written by a newer troupe (format version "
            + std::to_string(version) + "; this build reads up to "
            + std::to_string(plog::replicated_format_version) + ")";
    return 0;
  }
  return version;
}

/// Migrates a format-1 store to format 2: builds the index of unfinished
/// runs, the index of finished runs and the reverse idempotency keys from the
/// run index and the keys, then records format 2. Every write is a Put of a
/// value derived from what is read, so a migration cut short by a crash is
/// simply done again at the next open.
bool migrate_from_v1(rocksdb::DB* db, const std::string& path,
                     rocksdb::ColumnFamilyHandle* runs,
                     rocksdb::ColumnFamilyHandle* unfinished,
                     rocksdb::ColumnFamilyHandle* finished,
                     std::string& error) {
  rocksdb::WriteOptions wo;
  rocksdb::WriteBatch wb;
  rocksdb::Status s;
  auto write = [&](bool last) {
    if (!s.ok() || (!last && wb.Count() < 10'000) || wb.Count() == 0)
      return;
    s = db->Write(wo, &wb);
    wb.Clear();
  };
  {
    std::unique_ptr<rocksdb::Iterator> it{
      db->NewIterator(rocksdb::ReadOptions{}, runs)};
    for (it->SeekToFirst(); s.ok() && it->Valid(); it->Next()) {
      auto key = it->key().ToString();
      std::string reason;
      auto entry = decode_index_at(key, it->value().ToStringView(), reason);
      // A corrupt entry is listed as unfinished: recovery reports it, as it
      // did before. A key is put only once (see put_side_indexes), also
      // when a migration cut short is done again.
      if (!entry || !is_terminal(entry->state)) {
        std::string ignored;
        auto found = db->Get(rocksdb::ReadOptions{}, unfinished, key, &ignored);
        if (found.IsNotFound())
          s = wb.Put(unfinished, key, rocksdb::Slice{});
        else if (!found.ok())
          s = found;
      } else
        s = wb.Put(finished, kl::finished_key(entry->updated_at_ns, key),
                   rocksdb::Slice{});
      write(false);
    }
    if (s.ok())
      s = it->status();
  }
  {
    const std::string prefix = kl::idempotency_key("");
    std::unique_ptr<rocksdb::Iterator> it{
      db->NewIterator(rocksdb::ReadOptions{}, db->DefaultColumnFamily())};
    for (it->Seek(prefix);
         s.ok() && it->Valid() && it->key().ToStringView().starts_with(prefix);
         it->Next()) {
      auto key = it->key().ToStringView().substr(prefix.size());
      s = wb.Put(db->DefaultColumnFamily(),
                 kl::idempotency_reverse_key(it->value().ToStringView(), key),
                 rocksdb::Slice{});
      write(false);
    }
    if (s.ok())
      s = it->status();
  }
  write(true);
  if (!s.ok()) {
    error = "cannot migrate journal store at " + quoted(path)
            + " from format version 1: " + s.ToString();
    return false;
  }
  return write_format(db, path, 2, error);
}

/// RocksDB's info log, written to `<db>/LOG` with stdio. RocksDB's own
/// logger asserts on the first write after one that failed, which aborts
/// the process in Debian's build (assertions on): a full disk made every
/// node die so, since RocksDB logs the very error that the disk is full.
/// This one shrugs a failed write off, and stops at 16 MiB per open so that
/// it never fills the disk itself.
class tolerant_logger final : public rocksdb::Logger {
 public:
  explicit tolerant_logger(const std::string& file)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL),
        file_(std::fopen(file.c_str(), "w")) {}

  ~tolerant_logger() override {
    if (file_)
      std::fclose(file_);
  }

  using rocksdb::Logger::Logv;

  void Logv(const char* format, va_list ap) override {
    std::lock_guard<std::mutex> lk{mu_};
    if (!file_ || written_ > limit)
      return;
    char stamp[40];
    auto now = std::chrono::system_clock::now();
    auto secs = std::chrono::system_clock::to_time_t(now);
    auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                    now.time_since_epoch())
                    .count()
                  % 1'000'000;
    std::tm tm{};
    ::localtime_r(&secs, &tm);
    auto n = std::strftime(stamp, sizeof stamp, "%Y/%m/%d-%H:%M:%S", &tm);
    std::snprintf(stamp + n, sizeof stamp - n, ".%06lld ",
                  static_cast<long long>(micros));
    int a = std::fputs(stamp, file_);
    int b = std::vfprintf(file_, format, ap);
    std::fputc('\n', file_);
    std::fflush(file_);
    written_ += static_cast<size_t>(std::max(a, 0) + std::max(b, 0) + 1);
  }

 private:
  static constexpr size_t limit = size_t{16} << 20;
  std::mutex mu_;
  FILE* file_;
  size_t written_ = 0;
};

/// The run part (`run_id 0x00`) of a journal key.
class run_prefix : public rocksdb::SliceTransform {
 public:
  const char* Name() const override { return "troupe.run_prefix"; }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return {key.data(), key.size() - kl::seq_size};
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return key.size() > kl::seq_size
           && key[key.size() - kl::seq_size - 1] == '\0';
  }
};

std::unique_ptr<journal_store> open_store(const journal_store::options& opts,
                                          std::string& error) {
  const std::string& path = opts.path;
  if (path.empty()) {
    error = "cannot open journal store: no path given";
    return nullptr;
  }
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec && st.type() != fs::file_type::not_found) {
    error
      = "cannot open journal store at " + quoted(path) + ": " + ec.message();
    return nullptr;
  }
  if (fs::exists(st) && !fs::is_directory(st)) {
    error = "cannot open journal store at " + quoted(path)
            + ": the path exists but is not a folder";
    return nullptr;
  }
  if (!opts.create_if_missing) {
    if (!fs::exists(st)) {
      error
        = "no journal store at " + quoted(path) + ": the folder does not exist";
      return nullptr;
    }
    if (!fs::exists(fs::path{path} / "CURRENT", ec)) {
      error = "no journal store at " + quoted(path) + ": the folder holds none";
      return nullptr;
    }
  }
  if (!fs::exists(st)) {
    fs::create_directories(path, ec);
    if (ec) {
      error = "cannot create journal store folder " + quoted(path) + ": "
              + ec.message();
      return nullptr;
    }
  }
  if (::access(path.c_str(), R_OK | W_OK | X_OK) != 0) {
    error
      = "cannot open journal store at " + quoted(path) + ": permission denied";
    return nullptr;
  }

  rocksdb::Options o;
  // The last log is kept as LOG.old.<microseconds>, as RocksDB names it (and
  // purges all but keep_log_file_num of them). This runs before DB::Open
  // takes the store's lock: when another process holds the store, its LOG
  // is moved aside, never overwritten, and it goes on writing there.
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  fs::rename(fs::path{path} / "LOG",
             fs::path{path} / ("LOG.old." + std::to_string(micros)), ec);
  o.info_log = std::make_shared<tolerant_logger>(path + "/LOG");
  o.create_if_missing = opts.create_if_missing;
  o.create_missing_column_families = true;
  o.max_open_files = 256;
  o.keep_log_file_num = 4;
  // Bounded memtables: their memory is a fixed cost of the node, not one
  // that grows with the runs it holds.
  o.db_write_buffer_size = 16 << 20;
  o.write_buffer_size = 8 << 20;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache
    = rocksdb::NewLRUCache(std::max<size_t>(1, opts.block_cache_mb) << 20);
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));

  // An existing store must be opened with all its column families.
  std::vector<std::string> names;
  if (fs::exists(fs::path{path} / "CURRENT", ec)) {
    auto s = rocksdb::DB::ListColumnFamilies(o, path, &names);
    if (!s.ok()) {
      error = describe_open_failure(path, s);
      return nullptr;
    }
  }
  for (std::string_view name :
       {std::string_view{rocksdb::kDefaultColumnFamilyName}, kl::journal_cf,
        kl::runs_cf, kl::unfinished_cf, kl::finished_cf, plog::plog_cf})
    if (std::find(names.begin(), names.end(), name) == names.end())
      names.emplace_back(name);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  rocksdb::ColumnFamilyOptions cf_options{o};
  for (const auto& name : names) {
    descriptors.emplace_back(name, cf_options);
    // A run's records are appended in key order: the memtable keeps, per
    // run, where the last one went, and inserts the next one from there.
    if (name == kl::journal_cf)
      descriptors.back().options.memtable_insert_with_hint_prefix_extractor
        = std::make_shared<run_prefix>();
    // Retention deletes from the front of `finished` and from the default
    // family; every finished run deletes its key from `unfinished`. Files
    // dense in deletion markers are compacted soon after they are written,
    // so that scans of these small families do not step over them.
    if (name != kl::journal_cf && name != kl::runs_cf)
      descriptors.back().options.table_properties_collector_factories
        = {rocksdb::NewCompactOnDeletionCollectorFactory(128, 32)};
    // A small memtable for `unfinished`: most of its entries are a run's
    // key and, soon after, its deletion; flushed often, they are compacted
    // away instead of piling up in memory where recovery would step over
    // them.
    if (name == kl::unfinished_cf)
      descriptors.back().options.write_buffer_size = 1 << 20;
  }

  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  auto s = rocksdb::DB::Open(o, path, descriptors, &handles, &db);
  if (!s.ok()) {
    delete db;
    error = describe_open_failure(path, s);
    return nullptr;
  }
  rocksdb::ColumnFamilyHandle* journal = nullptr;
  rocksdb::ColumnFamilyHandle* runs = nullptr;
  rocksdb::ColumnFamilyHandle* unfinished = nullptr;
  rocksdb::ColumnFamilyHandle* finished = nullptr;
  rocksdb::ColumnFamilyHandle* plog_family = nullptr;
  for (size_t i = 0; i < names.size() && i < handles.size(); ++i) {
    if (names[i] == kl::journal_cf)
      journal = handles[i];
    else if (names[i] == kl::runs_cf)
      runs = handles[i];
    else if (names[i] == kl::unfinished_cf)
      unfinished = handles[i];
    else if (names[i] == kl::finished_cf)
      finished = handles[i];
    else if (names[i] == plog::plog_cf)
      plog_family = handles[i];
  }
  if (!journal || !runs || !unfinished || !finished || !plog_family) {
    rocksdb_journal_store::close_db(db, handles);
    error = "cannot open journal store at " + quoted(path)
            + ": column families missing after open";
    return nullptr;
  }
  auto version = check_format(db, path, error);
  if (version == 1
      && !migrate_from_v1(db, path, runs, unfinished, finished, error))
    version = 0;
  // A store with replicated partitions is marked so: an older build would
  // not apply what its logs hold.
  if (version != 0 && opts.replication.partitions > 0
      && version < plog::replicated_format_version
      && !write_format(db, path, plog::replicated_format_version, error))
    version = 0;
  if (version == 0) {
    rocksdb_journal_store::close_db(db, handles);
    return nullptr;
  }
  // Best effort: it only describes the holder to whoever is refused.
  (void)write_store_holder(path, opts.holder);
  try {
    return std::make_unique<rocksdb_journal_store>(
      opts, db, handles, journal, runs, unfinished, finished, plog_family);
  } catch (const std::exception& e) {
    remove_store_holder(path);
    rocksdb_journal_store::close_db(db, handles);
    error = "cannot open journal store at " + quoted(path) + ": " + e.what();
    return nullptr;
  }
}

} // namespace

std::string_view to_string(plog_errc c) {
  switch (c) {
  case plog_errc::ok: return "ok";
  case plog_errc::not_replicated: return "not_replicated";
  case plog_errc::bad_partition: return "bad_partition";
  case plog_errc::stale_epoch: return "stale_epoch";
  case plog_errc::gap: return "gap";
  case plog_errc::diverged: return "diverged";
  case plog_errc::corrupt: return "corrupt";
  case plog_errc::committed: return "committed";
  case plog_errc::beyond_end: return "beyond_end";
  case plog_errc::trimmed: return "trimmed";
  case plog_errc::io: return "io";
  }
  return "unknown";
}

std::unique_ptr<journal_store> journal_store::open(const options& opts,
                                                   std::string& error) {
  try {
    return open_store(opts, error);
  } catch (const std::exception& e) {
    error
      = "cannot open journal store at " + quoted(opts.path) + ": " + e.what();
    return nullptr;
  }
}

} // namespace troupe::persistence
