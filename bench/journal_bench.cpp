// How fast the journal store makes appends durable: one at a time (each
// waiting for the last, so no group commit) and with several in flight (the
// writer thread commits what queued meanwhile in one batch), with and without
// fsync; and, with replicated partitions, through the partition logs (each
// batch written as records, then applied when committed: here at once, as a
// partition with no other replica), beside the direct path in the same run.

#include "bench/bench_workloads.hpp"
#include "persistence/journal_store.hpp"
#include "tests/support/temp_dir.hpp"

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace {

using namespace troupe::persistence;

/// One store per durability mode, in its own temp folder, opened on first
/// use and shared by every benchmark run (opening RocksDB costs more than a
/// short benchmark run); closed and removed at exit.
struct bench_store {
  troupe::test::temp_dir dir;
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> committed{0};
  std::atomic<int64_t> commit_ns{0};
  std::unique_ptr<journal_store> store;
  std::string error;

  explicit bench_store(bool sync, bool replicated = false) {
    journal_store::options opts;
    opts.path = (dir.path() / "db").string();
    opts.sync = sync;
    if (replicated) {
      // As a cluster's default: 64 partitions, each committed as soon as it
      // is recorded.
      opts.replication.partitions = 64;
      opts.replication.partition_of
        = [](std::string_view run_id, std::string_view) {
            return static_cast<uint32_t>(std::hash<std::string_view>{}(run_id)
                                         % 64);
          };
      opts.replication.commit_on_record = true;
    }
    opts.on_commit = [this](size_t appends, std::chrono::nanoseconds took) {
      commits.fetch_add(1, std::memory_order_relaxed);
      committed.fetch_add(appends, std::memory_order_relaxed);
      commit_ns.fetch_add(took.count(), std::memory_order_relaxed);
    };
    store = journal_store::open(opts, error);
  }
};

bench_store& store_for(bool sync, bool replicated = false) {
  if (replicated) {
    if (sync) {
      static bench_store synced{true, true};
      return synced;
    }
    static bench_store unsynced{false, true};
    return unsynced;
  }
  if (sync) {
    static bench_store synced{true};
    return synced;
  }
  static bench_store unsynced{false};
  return unsynced;
}

/// Counts completed appends; the caller waits for a count.
struct completions {
  std::mutex mu;
  std::condition_variable cv;
  uint64_t done = 0;
  std::string error;

  std::function<void(std::string)> callback() {
    return [this](std::string e) {
      // Notified under the lock: the waiter may return and destroy this
      // object as soon as it sees `done`.
      std::lock_guard<std::mutex> lk{mu};
      ++done;
      if (!e.empty() && error.empty())
        error = std::move(e);
      cv.notify_one();
    };
  }

  void wait_for(uint64_t n) {
    std::unique_lock<std::mutex> lk{mu};
    cv.wait(lk, [&] { return done >= n; });
  }
};

/// An append of one attempt_started event, as a run actor makes when it
/// starts a node.
journal_store::append_op make_op(const std::string& run_id) {
  return {run_id, {troupe::bench::attempt_started_event()}, std::nullopt};
}

/// Snapshot of a store's commit counters, to report a benchmark run's share.
struct commit_stats {
  uint64_t commits, committed;
  int64_t ns;

  explicit commit_stats(const bench_store& s)
      : commits(s.commits.load()), committed(s.committed.load()),
        ns(s.commit_ns.load()) {}
};

void report(benchmark::State& state, const bench_store& s,
            const commit_stats& before, completions& c) {
  commit_stats after{s};
  if (!c.error.empty())
    state.SkipWithError(("append failed: " + c.error).c_str());
  auto commits = static_cast<double>(after.commits - before.commits);
  state.SetItemsProcessed(state.iterations());
  if (commits > 0) {
    state.counters["batch"]
      = static_cast<double>(after.committed - before.committed) / commits;
    state.counters["commit_us"]
      = static_cast<double>(after.ns - before.ns) / commits / 1e3;
  }
}

/// One append at a time: each waits for the previous one's callback, so
/// every commit holds one append. Args: sync, replicated.
void append_serial(benchmark::State& state) {
  auto& s = store_for(state.range(0) != 0, state.range(1) != 0);
  if (!s.store) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  const std::string run_id = "serial";
  completions c;
  commit_stats before{s};
  uint64_t issued = 0;
  for (auto _ : state) {
    s.store->append(make_op(run_id), c.callback());
    c.wait_for(++issued);
  }
  report(state, s, before, c);
}

/// Keeps `inflight` appends pending from one thread: a new one is queued as
/// soon as any completes, so the writer commits what queued meanwhile in one
/// batch. The last iteration waits for all, so every append counted is
/// durable. Args: sync, inflight, replicated.
void append_group(benchmark::State& state) {
  auto& s = store_for(state.range(0) != 0, state.range(2) != 0);
  if (!s.store) {
    state.SkipWithError(s.error.c_str());
    return;
  }
  const auto inflight = static_cast<uint64_t>(state.range(1));
  // One run per slot, as if `inflight` runs were appending at once.
  std::vector<std::string> runs;
  for (uint64_t i = 0; i < inflight; ++i)
    runs.push_back("group-" + std::to_string(i));
  completions c;
  commit_stats before{s};
  uint64_t issued = 0;
  const auto last = static_cast<uint64_t>(state.max_iterations);
  for (auto _ : state) {
    if (issued >= inflight)
      c.wait_for(issued - inflight + 1);
    s.store->append(make_op(runs[issued % inflight]), c.callback());
    if (++issued == last)
      c.wait_for(issued);
  }
  c.wait_for(issued);
  report(state, s, before, c);
}

} // namespace

BENCHMARK(append_serial)
  ->ArgNames({"sync", "replicated"})
  ->ArgsProduct({{0, 1}, {0, 1}})
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
BENCHMARK(append_group)
  ->ArgNames({"sync", "inflight", "replicated"})
  ->ArgsProduct({{0, 1}, {1, 16, 64}, {0, 1}})
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
