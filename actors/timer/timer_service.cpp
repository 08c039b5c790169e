#include "actors/timer/timer_service.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/message_id.hpp>

#include <algorithm>

namespace troupe::actors {

namespace {

/// Most deliveries made per wake-up before the lock is taken again.
constexpr size_t batch = 1024;

} // namespace

timer_service::timer_service() : thread_{[this] { run(); }} {}

timer_service::~timer_service() {
  {
    std::lock_guard guard{mtx_};
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void timer_service::schedule(clock::duration delay, const target& to,
                             caf::message msg) {
  auto due = clock::now() + delay;
  bool earliest;
  {
    std::lock_guard guard{mtx_};
    heap_.push_back(entry{due, to, std::move(msg)});
    std::push_heap(heap_.begin(), heap_.end(), later{});
    earliest = !(heap_.front().due < due);
  }
  // Only a new earliest entry changes how long the thread sleeps.
  if (earliest)
    cv_.notify_one();
}

void timer_service::forget(size_t pending) {
  if (pending == 0)
    return;
  bool wake;
  {
    std::lock_guard guard{mtx_};
    forgotten_ += pending;
    wake = wants_purge();
  }
  if (wake)
    cv_.notify_one();
}

size_t timer_service::size() const {
  std::lock_guard guard{mtx_};
  return heap_.size();
}

size_t timer_service::purges() const {
  std::lock_guard guard{mtx_};
  return purges_;
}

bool timer_service::wants_purge() const {
  // Entries of ended receivers may make up half of the heap: a purge costs
  // at most twice what they number.
  return forgotten_ > 0 && forgotten_ * 2 >= heap_.size();
}

void timer_service::run() {
  std::vector<entry> due_now;
  std::unique_lock lock{mtx_};
  for (;;) {
    if (stopping_)
      return;
    if (wants_purge()) {
      purge(lock);
      continue;
    }
    if (heap_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto now = clock::now();
    if (auto next = heap_.front().due; next > now) {
      cv_.wait_until(lock, next);
      continue;
    }
    while (!heap_.empty() && heap_.front().due <= now
           && due_now.size() < batch) {
      std::pop_heap(heap_.begin(), heap_.end(), later{});
      due_now.push_back(std::move(heap_.back()));
      heap_.pop_back();
    }
    lock.unlock();
    for (auto& e : due_now)
      if (auto to = e.to.lock())
        if (auto receiver = caf::actor_cast<caf::strong_actor_ptr>(*to))
          receiver->enqueue(nullptr, caf::make_message_id(), std::move(e.msg),
                            nullptr);
    due_now.clear();
    lock.lock();
  }
}

void timer_service::purge(std::unique_lock<std::mutex>& lock) {
  std::vector<entry> kept;
  kept.swap(heap_);
  forgotten_ = 0;
  ++purges_;
  lock.unlock();
  // Outside the lock: schedule() goes on into the emptied heap meanwhile.
  std::erase_if(kept, [](const entry& e) { return e.to.expired(); });
  if (kept.capacity() > 4 * kept.size() + 1024)
    kept.shrink_to_fit();
  std::make_heap(kept.begin(), kept.end(), later{});
  lock.lock();
  // Merge what was scheduled meanwhile (usually little) into what was kept.
  auto& big = kept.size() >= heap_.size() ? kept : heap_;
  auto& small = &big == &kept ? heap_ : kept;
  for (auto& e : small) {
    big.push_back(std::move(e));
    std::push_heap(big.begin(), big.end(), later{});
  }
  small.clear();
  if (&big == &kept)
    heap_.swap(kept);
}

} // namespace troupe::actors
