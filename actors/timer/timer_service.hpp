#pragma once

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/message.hpp>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace troupe::actors {

/// Sends messages to actors after a delay without keeping them alive: a
/// thread of its own with a heap of pending deliveries, each holding its
/// receiver weakly.
///
/// CAF 0.17's delayed_send holds a strong reference to its receiver until
/// the message is due, and cannot be cancelled: a run that ended kept its
/// actor, and the actor's memory, for as long as its longest timer (a 24 h
/// timeout, a day). Here a receiver is named by a target it holds while it
/// lives (make_target) and drops when it ends; deliveries hold the target
/// weakly, so they expire with the receiver and pin a few bytes, never the
/// actor. An expired delivery is dropped when it comes due, or earlier:
/// receivers say how many of their deliveries are still pending when they
/// end (forget), and once those may make up half of the heap, the thread
/// drops every expired entry (amortised O(1) per delivery).
///
/// Callers never wait for the thread beyond a short lock: the heap is
/// purged outside it.
class timer_service {
 public:
  using clock = std::chrono::steady_clock;

  /// Who deliveries go to. The receiver holds it for as long as it lives
  /// and lets it go when it ends (before it calls forget).
  using target = std::shared_ptr<const caf::actor_addr>;

  /// Returns a target for `receiver`.
  static target make_target(const caf::actor_addr& receiver) {
    return std::make_shared<const caf::actor_addr>(receiver);
  }

  timer_service();

  /// Stops the thread; deliveries not yet due are dropped.
  ~timer_service();

  timer_service(const timer_service&) = delete;
  timer_service& operator=(const timer_service&) = delete;

  /// Sends `msg` to the receiver of `to` (as an anonymous message) once
  /// `delay` has passed, unless the receiver has let `to` go by then.
  void schedule(clock::duration delay, const target& to, caf::message msg);

  /// Says that a receiver ended with `pending` deliveries still scheduled
  /// (an upper bound is fine), so that their entries can go before they
  /// are due.
  void forget(size_t pending);

  /// Entries in the heap: deliveries not yet due, including those to ended
  /// receivers that were not purged yet.
  size_t size() const;

  /// Purges done since the start (for tests and metrics).
  size_t purges() const;

 private:
  struct entry {
    clock::time_point due;
    std::weak_ptr<const caf::actor_addr> to;
    caf::message msg;
  };
  /// Orders the heap by due time, earliest on top.
  struct later {
    bool operator()(const entry& a, const entry& b) const {
      return a.due > b.due;
    }
  };

  void run();
  /// Whether a purge is due; with the lock held.
  bool wants_purge() const;
  /// Drops the entries whose receiver has ended; called by the thread with
  /// `lock` held, which it releases while it filters.
  void purge(std::unique_lock<std::mutex>& lock);

  mutable std::mutex mtx_;
  std::condition_variable cv_;
  std::vector<entry> heap_;
  /// Deliveries that receivers said they left behind since the last purge.
  size_t forgotten_ = 0;
  size_t purges_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

} // namespace troupe::actors
