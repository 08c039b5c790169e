#pragma once

#include "runtime/metrics/fwd.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

namespace troupe::runtime::metrics {

/// A count that only goes up. Get it once from its family, then `inc()` is a
/// relaxed atomic add.
class counter {
 public:
  counter() = default;
  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  void inc(uint64_t n = 1) noexcept {
    value_.fetch_add(n, std::memory_order_relaxed);
  }

  uint64_t value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<uint64_t> value_{0};
};

/// A value that goes up and down; every operation is one atomic.
class gauge {
 public:
  gauge() = default;
  gauge(const gauge&) = delete;
  gauge& operator=(const gauge&) = delete;

  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }

  void inc(double d = 1) noexcept {
    value_.fetch_add(d, std::memory_order_relaxed);
  }

  void dec(double d = 1) noexcept {
    value_.fetch_sub(d, std::memory_order_relaxed);
  }

  double value() const noexcept {
    return value_.load(std::memory_order_relaxed);
  }

 private:
  std::atomic<double> value_{0};
};

/// Counts observations into buckets with fixed upper bounds. `observe()` is
/// lock-free: a binary search, one relaxed add to the bucket's count, and one
/// to the sum (a compare-and-swap loop on a double).
class histogram {
 public:
  /// `bounds`: strictly increasing and finite (the family checks them); the
  /// +Inf bucket is implicit.
  explicit histogram(std::shared_ptr<const std::vector<double>> bounds);

  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  /// Counts `v` in the first bucket whose bound is >= v. NaN is ignored.
  void observe(double v) noexcept;

  /// Observes a duration in seconds.
  template<class Rep, class Period>
  void observe(std::chrono::duration<Rep, Period> d) noexcept {
    observe(std::chrono::duration<double>{d}.count());
  }

  /// The upper bounds, without +Inf.
  std::span<const double> bounds() const noexcept { return *bounds_; }

  /// Observations per bucket, not cumulative: one per bound, then the +Inf
  /// bucket (values above the last bound).
  std::vector<uint64_t> bucket_counts() const;

  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

} // namespace troupe::runtime::metrics
