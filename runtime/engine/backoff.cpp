#include "runtime/engine/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace troupe::runtime {

duration backoff_delay(const retry_policy& policy, int32_t failed_attempt,
                       double u) {
  auto initial = static_cast<double>(policy.initial_backoff.count());
  auto cap = static_cast<double>(policy.max_backoff.count());
  // Computed in floating point and capped before converting, so large
  // attempt numbers cannot overflow.
  double exponent = std::max(0, failed_attempt - 1);
  double delay = initial * std::pow(policy.multiplier, exponent);
  if (!std::isfinite(delay) || delay > cap)
    delay = cap;
  u = std::clamp(u, 0.0, 1.0);
  switch (policy.jitter) {
  case jitter_mode::none: break;
  case jitter_mode::full: delay *= u; break;
  case jitter_mode::equal: delay = delay / 2 + u * delay / 2; break;
  }
  return duration{static_cast<int64_t>(delay)};
}

bool is_retryable(const retry_policy& policy, const std::string& error_kind) {
  // Failures that the same attempt again cannot mend.
  if (error_kind == "bad_template" || error_kind == "bad_params"
      || error_kind == "cancelled" || error_kind == "bad_expression"
      || error_kind == "http_4xx" || error_kind == "response_too_large"
      || error_kind == "output_too_large")
    return false;
  return std::find(policy.non_retryable.begin(), policy.non_retryable.end(),
                   error_kind)
         == policy.non_retryable.end();
}

uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double unit_interval(uint64_t x) {
  return static_cast<double>(mix64(x) >> 11) * 0x1.0p-53;
}

} // namespace troupe::runtime
