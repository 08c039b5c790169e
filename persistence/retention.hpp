#pragma once

#include "persistence/journal_store.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

namespace troupe::persistence {

/// What a collection run now deletes: the finished runs that finished more
/// than `older_than` ago, and the tombstones of runs deleted more than
/// `tombstone_retention` ago (wall clock; an age beyond the epoch reaches
/// nothing).
journal_store::gc_options
collection_before(std::chrono::nanoseconds older_than,
                  std::chrono::nanoseconds tombstone_retention);

/// Deletes finished runs after their retention, on a thread of its own (never
/// a scheduler thread, and never the journal writer's): one collection soon
/// after it starts, then one every `interval`, and any asked for with
/// `collect_now`. Each collection deletes in small batches, so appends wait
/// at most for one batch's write.
class retention_worker {
 public:
  struct options {
    /// How long a finished run is kept after it finished; zero keeps every
    /// run. Default: 7 days.
    std::chrono::nanoseconds retention = std::chrono::hours{7 * 24};
    /// How long a deleted run's tombstone is kept. Default: 7 days.
    std::chrono::nanoseconds tombstone_retention = std::chrono::hours{7 * 24};
    /// Time between collections. Default: 10 minutes.
    std::chrono::nanoseconds interval = std::chrono::minutes{10};
    /// Delay before the first collection. Default: none.
    std::chrono::nanoseconds first_after{0};
    /// Called on the worker thread after each scheduled collection, with
    /// what it removed; must be quick. May be empty.
    std::function<void(const journal_store::gc_report&)> on_collect = {};
  };

  /// Starts the thread; `store` must outlive the worker.
  retention_worker(journal_store& store, options opts);

  /// Stops the thread, cancelling a collection under way after its current
  /// batch (what it deleted stays deleted).
  ~retention_worker();

  retention_worker(const retention_worker&) = delete;
  retention_worker& operator=(const retention_worker&) = delete;

  /// Collects now, on the worker thread, the finished runs older than
  /// `older_than` (and the tombstones past their retention), then calls
  /// `done` there with what it removed. On shutdown `done` is called with
  /// `stopped` set.
  void collect_now(std::chrono::nanoseconds older_than,
                   std::function<void(journal_store::gc_report)> done);

  /// The options it runs with.
  const options& settings() const { return opts_; }

 private:
  struct request {
    std::chrono::nanoseconds older_than;
    std::function<void(journal_store::gc_report)> done;
  };

  void loop();
  /// One collection: of runs older than `older_than`, or by the retention
  /// when nothing is given.
  journal_store::gc_report
  collect(std::optional<std::chrono::nanoseconds> older_than);

  journal_store& store_;
  options opts_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<request> requests_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

} // namespace troupe::persistence
