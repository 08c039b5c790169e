#include "cluster/node/partition_agent.hpp"

#include "runtime/metrics/registry.hpp"

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

namespace troupe::cluster {

namespace {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// One change to carry out.
struct change {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  bool lead = false;
  int64_t since_ms = 0;
};

/// How the member stands in one partition.
struct standing {
  enum role_t { none, resuming, waiting, leader, follower } role = none;
  /// The newest epoch heard of (queued or carried out).
  uint64_t epoch = 0;
  size_t resumed = 0;
};

const char* role_name(standing::role_t r) {
  switch (r) {
  case standing::resuming: return "resuming";
  case standing::waiting: return "waiting";
  case standing::leader: return "leader";
  case standing::follower: return "follower";
  default: return "none";
  }
}

} // namespace

struct partition_agent::impl {
  partition_agent_options opts;
  mutable std::mutex mtx;
  std::condition_variable cv;
  std::deque<change> queue;
  /// Changes taken off the queue but not carried out yet.
  size_t busy = 0;
  bool stopping = false;
  std::map<uint32_t, standing> partitions;
  std::thread worker;
  runtime::metrics::counter* failovers = nullptr;
  runtime::metrics::histogram* failover_duration = nullptr;

  void run() {
    std::unique_lock lk{mtx};
    for (;;) {
      cv.wait(lk, [&] { return stopping || !queue.empty(); });
      if (queue.empty())
        return;
      auto c = queue.front();
      queue.pop_front();
      ++busy;
      lk.unlock();
      carry_out(c);
      lk.lock();
      --busy;
      cv.notify_all();
    }
  }

  void carry_out(const change& c) {
    {
      // A newer change of the partition is queued: this one is moot.
      std::lock_guard lk{mtx};
      if (partitions[c.partition].epoch > c.epoch)
        return;
    }
    if (!c.lead) {
      auto stopped = opts.release ? opts.release(c.partition) : 0;
      {
        std::lock_guard lk{mtx};
        auto& s = partitions[c.partition];
        if (s.epoch == c.epoch)
          s.role = standing::follower;
      }
      if (stopped > 0 && opts.info)
        opts.info("partition " + std::to_string(c.partition)
                  + " is led elsewhere from epoch " + std::to_string(c.epoch)
                  + ": stopped its " + std::to_string(stopped)
                  + " run(s) here; its new leader resumes them");
      return;
    }
    auto ready = opts.resume ? opts.resume(c.partition) : size_t{0};
    auto resumed = ready.value_or(0);
    bool current = false;
    {
      std::lock_guard lk{mtx};
      auto& s = partitions[c.partition];
      current = s.epoch == c.epoch;
      if (current) {
        s.role = ready ? standing::leader : standing::waiting;
        s.resumed = resumed;
      }
    }
    if (!current)
      return;
    if (!ready) {
      if (opts.warn)
        opts.warn("partition " + std::to_string(c.partition) + " at epoch "
                  + std::to_string(c.epoch)
                  + " is led here but not ready to resume its runs yet");
      return;
    }
    if (c.since_ms > 0) {
      auto took = std::max<int64_t>(0, wall_ms() - c.since_ms);
      if (failovers)
        failovers->inc();
      if (failover_duration)
        failover_duration->observe(static_cast<double>(took) / 1000.0);
      if (opts.info)
        opts.info("took over partition " + std::to_string(c.partition)
                  + " at epoch " + std::to_string(c.epoch) + ": resumed "
                  + std::to_string(resumed) + " run(s), " + std::to_string(took)
                  + "ms after its leader was lost");
    } else if (resumed > 0 && opts.info) {
      opts.info("leading partition " + std::to_string(c.partition)
                + " at epoch " + std::to_string(c.epoch) + ": resumed "
                + std::to_string(resumed) + " run(s)");
    }
  }

  void push(change c) {
    {
      std::lock_guard lk{mtx};
      if (stopping)
        return;
      auto& s = partitions[c.partition];
      // Epoch 0 is a partition never fenced (a store not yet in a cluster);
      // an epoch seen already changes nothing.
      // (But a lead that found the partition not ready is tried again.)
      if (c.epoch < s.epoch
          || (c.epoch == s.epoch && s.role != standing::none
              && !(c.lead && s.role == standing::waiting)))
        return;
      s.epoch = c.epoch;
      s.role = c.lead ? standing::resuming : standing::follower;
      queue.push_back(c);
    }
    cv.notify_all();
  }
};

partition_agent::partition_agent(partition_agent_options opts)
    : impl_(std::make_shared<impl>()) {
  impl_->opts = std::move(opts);
  if (auto* m = impl_->opts.metrics) {
    impl_->failovers
      = &m->add_counter("troupe_partition_failovers_total",
                        "Partitions this member took over after their leader "
                        "was lost.")
           .with({});
    impl_->failover_duration
      = &m->add_histogram("troupe_failover_duration_seconds",
                          "Time from a partition's leader found lost until "
                          "this member, its new leader, resumed its runs.",
                          {0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30})
           .with({});
  }
  impl_->worker = std::thread{[i = impl_] { i->run(); }};
}

partition_agent::~partition_agent() {
  stop();
}

void partition_agent::lead(uint32_t partition, uint64_t epoch,
                           int64_t failover_since_ms) {
  impl_->push(change{partition, epoch, true, failover_since_ms});
}

void partition_agent::follow(uint32_t partition, uint64_t epoch) {
  impl_->push(change{partition, epoch, false, 0});
}

void partition_agent::stop() {
  {
    std::lock_guard lk{impl_->mtx};
    impl_->stopping = true;
    // What was not carried out yet is dropped: the member stops.
    impl_->queue.clear();
  }
  impl_->cv.notify_all();
  if (impl_->worker.joinable())
    impl_->worker.join();
}

bool partition_agent::leads(uint32_t partition) const {
  std::lock_guard lk{impl_->mtx};
  auto i = impl_->partitions.find(partition);
  return i != impl_->partitions.end() && i->second.role == standing::leader;
}

std::vector<uint32_t> partition_agent::led() const {
  std::vector<uint32_t> out;
  std::lock_guard lk{impl_->mtx};
  for (auto& [p, s] : impl_->partitions)
    if (s.role == standing::leader)
      out.push_back(p);
  return out;
}

nlohmann::json partition_agent::describe(uint32_t partition) const {
  std::lock_guard lk{impl_->mtx};
  auto i = impl_->partitions.find(partition);
  if (i == impl_->partitions.end())
    return {{"role", "none"}, {"epoch", 0}};
  return {{"role", role_name(i->second.role)},
          {"epoch", i->second.epoch},
          {"resumed", i->second.resumed}};
}

void partition_agent::settle() {
  std::unique_lock lk{impl_->mtx};
  impl_->cv.wait_for(lk, std::chrono::seconds{30}, [&] {
    return impl_->stopping || (impl_->queue.empty() && impl_->busy == 0);
  });
}

} // namespace troupe::cluster
