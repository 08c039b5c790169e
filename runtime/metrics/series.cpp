#include "runtime/metrics/series.hpp"

#include <algorithm>

namespace troupe::runtime::metrics {

static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<double>::is_always_lock_free);

histogram::histogram(std::shared_ptr<const std::vector<double>> bounds)
    : bounds_(std::move(bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(bounds_->size() + 1)) {
  // make_unique value-initialises: every count starts at zero.
}

void histogram::observe(double v) noexcept {
  if (std::isnan(v))
    return;
  const auto& b = *bounds_;
  // The first bound >= v: buckets are "less than or equal" (le).
  auto i
    = static_cast<size_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::vector<uint64_t> histogram::bucket_counts() const {
  std::vector<uint64_t> out(bounds_->size() + 1);
  for (size_t i = 0; i < out.size(); ++i)
    out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

} // namespace troupe::runtime::metrics
