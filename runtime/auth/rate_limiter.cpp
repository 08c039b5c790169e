#include "runtime/auth/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace troupe::runtime::auth {

namespace {

using nanos = std::chrono::duration<double, std::nano>;

} // namespace

rate_limiter::rate_limiter(double rate, double burst, size_t max_subjects)
    : rate_(rate), burst_(burst), max_subjects_(max_subjects) {
  if (!(rate > 0) || !std::isfinite(rate) || rate > 1e9)
    throw std::invalid_argument("rate_limiter: rate must be in (0, 1e9]");
  if (!(burst >= 1) || !std::isfinite(burst) || burst > 1e9)
    throw std::invalid_argument("rate_limiter: burst must be in [1, 1e9]");
  if (max_subjects < 1)
    throw std::invalid_argument("rate_limiter: max_subjects must be >= 1");
  interval_ = std::chrono::round<clock::duration>(nanos{1e9 / rate});
  tolerance_ = std::chrono::round<clock::duration>(
    nanos{(std::floor(burst) - 1) * 1e9 / rate});
}

std::chrono::milliseconds rate_limiter::acquire(std::string_view subject,
                                                clock::time_point now) {
  std::lock_guard guard{mtx_};
  auto it = buckets_.find(subject);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_subjects_)
      evict(now);
    it = buckets_.emplace(std::string{subject}, now).first;
  }
  auto& full_at = it->second;
  auto tat = std::max(full_at, now);
  auto ahead = tat - now;
  if (ahead > tolerance_) {
    auto wait = ahead - tolerance_;
    return std::max(std::chrono::milliseconds{1},
                    std::chrono::ceil<std::chrono::milliseconds>(wait));
  }
  full_at = tat + interval_;
  return std::chrono::milliseconds{0};
}

void rate_limiter::evict(clock::time_point now) {
  // Full buckets hold no information: a new one would start full too.
  std::erase_if(buckets_, [now](auto& kv) { return kv.second <= now; });
  if (buckets_.size() < max_subjects_)
    return;
  // Every bucket is in use: drop the quarter closest to full, so that this
  // O(n) pass runs at most once per n/4 new subjects.
  std::vector<std::pair<clock::time_point, std::string_view>> by_time;
  by_time.reserve(buckets_.size());
  for (auto& [name, full_at] : buckets_)
    by_time.emplace_back(full_at, name);
  auto drop = std::max<size_t>(1, buckets_.size() / 4);
  std::nth_element(by_time.begin(), by_time.begin() + (drop - 1),
                   by_time.end());
  std::vector<std::string> victims;
  victims.reserve(drop);
  for (size_t i = 0; i < drop; ++i)
    victims.emplace_back(by_time[i].second);
  for (auto& name : victims)
    buckets_.erase(name);
}

size_t rate_limiter::tracked_subjects() const {
  std::lock_guard guard{mtx_};
  return buckets_.size();
}

} // namespace troupe::runtime::auth
