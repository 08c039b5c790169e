#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace troupe::runtime::auth {

/// Per-subject token buckets: each subject may take `burst` actions at once,
/// then `rate` per second. Thread-safe.
///
/// Each bucket is kept as one time, the time at which it is full again (the
/// generic cell rate algorithm), so the arithmetic is exact.
/// Memory stays bounded: past `max_subjects` buckets, the buckets that have
/// refilled completely are dropped (forgetting them loses nothing), and if
/// that is not enough, the quarter closest to full (which then start over
/// with a full bucket).
class rate_limiter {
 public:
  using clock = std::chrono::steady_clock;

  /// Default for `max_subjects`.
  static constexpr size_t default_max_subjects = 10'000;

  /// Throws std::invalid_argument unless `rate` > 0, `burst` >= 1 and
  /// `max_subjects` >= 1.
  rate_limiter(double rate, double burst,
               size_t max_subjects = default_max_subjects);

  /// Takes one token from `subject`'s bucket. Returns zero when allowed;
  /// otherwise takes nothing and returns how long until a token is there
  /// (rounded up to whole milliseconds, at least 1 ms): the retry-after.
  std::chrono::milliseconds acquire(std::string_view subject,
                                    clock::time_point now);

  /// Returns how many subjects have a bucket.
  size_t tracked_subjects() const;

  double rate() const noexcept { return rate_; }
  double burst() const noexcept { return burst_; }

 private:
  /// Makes room for one more bucket. Called with the lock held.
  void evict(clock::time_point now);

  const double rate_;
  const double burst_;
  const size_t max_subjects_;
  /// Time one token takes to come back: 1 / rate.
  clock::duration interval_;
  /// How far ahead of now a bucket's time may run: (burst - 1) / rate.
  clock::duration tolerance_;
  mutable std::mutex mtx_;
  /// Per subject, the time at which its bucket is full again ("theoretical
  /// arrival time"); at or before now means full.
  std::map<std::string, clock::time_point, std::less<>> buckets_;
};

} // namespace troupe::runtime::auth
