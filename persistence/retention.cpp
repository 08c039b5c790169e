#include "persistence/retention.hpp"

#include <exception>

namespace troupe::persistence {

namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// `now - age` in ns since the epoch, never below zero.
int64_t before(int64_t now, std::chrono::nanoseconds age) {
  return age.count() >= now ? 0 : now - age.count();
}

} // namespace

journal_store::gc_options
collection_before(std::chrono::nanoseconds older_than,
                  std::chrono::nanoseconds tombstone_retention) {
  auto now = now_ns();
  journal_store::gc_options o;
  o.runs_before_ns = before(now, older_than);
  o.tombstones_before_ns = before(now, tombstone_retention);
  return o;
}

retention_worker::retention_worker(journal_store& store, options opts)
    : store_(store), opts_(std::move(opts)) {
  if (opts_.interval <= std::chrono::nanoseconds::zero())
    opts_.interval = std::chrono::minutes{10};
  thread_ = std::thread{[this] { loop(); }};
}

retention_worker::~retention_worker() {
  {
    std::lock_guard<std::mutex> lk{mu_};
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
  journal_store::gc_report stopped;
  stopped.stopped = true;
  for (auto& r : requests_)
    if (r.done)
      r.done(stopped);
}

void retention_worker::collect_now(
  std::chrono::nanoseconds older_than,
  std::function<void(journal_store::gc_report)> done) {
  {
    std::lock_guard<std::mutex> lk{mu_};
    if (!stopping_) {
      requests_.push_back({older_than, std::move(done)});
      done = nullptr;
    }
  }
  if (done) {
    journal_store::gc_report stopped;
    stopped.stopped = true;
    done(stopped);
    return;
  }
  cv_.notify_all();
}

journal_store::gc_report
retention_worker::collect(std::optional<std::chrono::nanoseconds> older_than) {
  auto o = collection_before(older_than.value_or(opts_.retention),
                             opts_.tombstone_retention);
  if (!older_than && opts_.retention.count() == 0)
    o.runs_before_ns = 0; // Zero retention keeps every run.
  o.stop = &stopping_;
  try {
    return store_.collect(o);
  } catch (const std::exception& e) {
    journal_store::gc_report r;
    r.error = e.what();
    return r;
  }
}

void retention_worker::loop() {
  auto next = std::chrono::steady_clock::now() + opts_.first_after;
  std::unique_lock<std::mutex> lk{mu_};
  while (!stopping_) {
    if (!requests_.empty()) {
      auto r = std::move(requests_.front());
      requests_.pop_front();
      lk.unlock();
      auto report = collect(r.older_than);
      if (r.done) {
        try {
          r.done(std::move(report));
        } catch (...) {
          // A callback must not end the worker.
        }
      }
      lk.lock();
      continue;
    }
    if (std::chrono::steady_clock::now() >= next) {
      lk.unlock();
      auto report = collect(std::nullopt);
      if (opts_.on_collect) {
        try {
          opts_.on_collect(report);
        } catch (...) {
          // Likewise.
        }
      }
      lk.lock();
      next = std::chrono::steady_clock::now() + opts_.interval;
      continue;
    }
    cv_.wait_until(lk, next,
                   [&] { return stopping_.load() || !requests_.empty(); });
  }
}

} // namespace troupe::persistence
