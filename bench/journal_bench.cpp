// How fast the journal store makes appends durable: one at a time (each
// waiting for the last, so no group commit) and with several in flight (the
// writer thread commits what queued meanwhile in one batch), with and without
// fsync; and, with replicated partitions, through the partition logs (each
// batch written as records, then applied when committed: here at once, as a
// partition with no other replica), beside the direct path in the same run;
// and replicated to two followers (replicated:3): a leader and two followers
// in one process, each with its own store, linked by memory, so that each
// append is answered once all three have its record (cluster/replication).

#include "bench/bench_workloads.hpp"
#include "cluster/replication/replicator.hpp"
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
#include <thread>
#include <vector>

namespace {

using namespace troupe::persistence;

namespace repl = troupe::cluster::replication;

constexpr uint32_t bench_partitions = 64;

uint32_t bench_partition(std::string_view run_id, std::string_view) {
  return static_cast<uint32_t>(std::hash<std::string_view>{}(run_id)
                               % bench_partitions);
}

/// Two followers of every partition of a leader's store, with their own
/// stores and replicators, linked to the leader's by memory.
struct followers {
  repl::memory_network net;
  repl::records_hook hook;
  std::vector<std::unique_ptr<journal_store>> stores;
  std::vector<std::unique_ptr<repl::replicator>> replicators;

  /// Stops replicating before the stores close.
  void stop() {
    hook.attach(nullptr);
    for (auto& r : replicators)
      r->stop();
  }
};

/// One store per durability mode, in its own temp folder, opened on first
/// use and shared by every benchmark run (opening RocksDB costs more than a
/// short benchmark run); closed and removed at exit.
struct bench_store {
  troupe::test::temp_dir dir;
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> committed{0};
  std::atomic<int64_t> commit_ns{0};
  std::unique_ptr<followers> others;
  std::unique_ptr<journal_store> store;
  std::string error;

  /// `replicas`: 0, appends written directly; 1, replicated partitions
  /// with no other replica; 3, a leader (this store) and two followers.
  explicit bench_store(bool sync, int replicas = 0) {
    journal_store::options opts;
    opts.path = (dir.path() / "db").string();
    opts.sync = sync;
    if (replicas > 0) {
      // As a cluster's default: 64 partitions, each committed as soon as it
      // is recorded when it has no other replica.
      opts.replication.partitions = bench_partitions;
      opts.replication.partition_of = bench_partition;
      opts.replication.commit_on_record = replicas == 1;
    }
    if (replicas == 3) {
      others = std::make_unique<followers>();
      opts.replication.on_records = others->hook.callback();
    }
    opts.on_commit = [this](size_t appends, std::chrono::nanoseconds took) {
      commits.fetch_add(1, std::memory_order_relaxed);
      committed.fetch_add(appends, std::memory_order_relaxed);
      commit_ns.fetch_add(took.count(), std::memory_order_relaxed);
    };
    store = journal_store::open(opts, error);
    if (store && others)
      replicate(sync);
  }

  ~bench_store() {
    if (others)
      others->stop();
  }

  /// Opens the followers, and makes this store lead every partition at
  /// epoch 1 with all three in sync (min_insync 2).
  void replicate(bool sync) {
    const std::vector<std::string> names = {"leader", "f1", "f2"};
    auto& o = *others;
    for (size_t i = 1; i < names.size(); ++i) {
      journal_store::options fo;
      fo.path = (dir.path() / names[i]).string();
      fo.sync = sync;
      fo.replication.partitions = bench_partitions;
      fo.replication.partition_of = bench_partition;
      o.stores.push_back(journal_store::open(fo, error));
      if (!o.stores.back())
        return;
    }
    for (size_t i = 0; i < names.size(); ++i) {
      repl::replicator_options ro;
      ro.member = names[i];
      auto& s = i == 0 ? *store : *o.stores[i - 1];
      o.replicators.push_back(
        std::make_unique<repl::replicator>(s, o.net.endpoint(names[i]), ro));
      o.net.join(names[i], o.replicators.back().get());
    }
    o.hook.attach(o.replicators.front().get());
    for (uint32_t p = 0; p < bench_partitions; ++p)
      for (auto& r : o.replicators)
        r->assign(p, "leader", 1, names, names);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (uint32_t p = 0; p < bench_partitions; ++p)
      while (!o.replicators.front()->writable(p).writable) {
        if (std::chrono::steady_clock::now() > until) {
          error = o.replicators.front()->writable(p).reason;
          store.reset();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
  }
};

bench_store& store_for(bool sync, int replicas = 0) {
  if (replicas == 3) {
    if (sync) {
      static bench_store synced{true, 3};
      return synced;
    }
    static bench_store unsynced{false, 3};
    return unsynced;
  }
  if (replicas == 1) {
    if (sync) {
      static bench_store synced{true, 1};
      return synced;
    }
    static bench_store unsynced{false, 1};
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
/// every commit holds one append. Args: sync, replicated (0: no; 1: one
/// replica; 3: a leader and two followers).
void append_serial(benchmark::State& state) {
  auto& s = store_for(state.range(0) != 0, static_cast<int>(state.range(1)));
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
/// durable (with followers: committed on all three). Args: sync, inflight,
/// replicated.
void append_group(benchmark::State& state) {
  auto& s = store_for(state.range(0) != 0, static_cast<int>(state.range(2)));
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
  ->ArgsProduct({{0, 1}, {0, 1, 3}})
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
BENCHMARK(append_group)
  ->ArgNames({"sync", "inflight", "replicated"})
  ->ArgsProduct({{0, 1}, {1, 16, 64}, {0, 1, 3}})
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
