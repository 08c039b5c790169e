#pragma once

#include "config/duration.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::runtime {

using config::duration;

/// How a retry delay is randomised.
enum class jitter_mode : uint8_t {
  none,  ///< Exactly the computed backoff.
  full,  ///< Uniform in [0, backoff].
  equal, ///< backoff/2 plus uniform in [0, backoff/2].
};

/// How often and how patiently a failed node is retried.
struct retry_policy {
  /// Attempts in all, the first included. Default: 3.
  int32_t max_attempts = 3;
  /// Delay before the second attempt. Default: 1s.
  duration initial_backoff = std::chrono::seconds{1};
  /// Factor applied to the delay after each attempt. Default: 2.
  double multiplier = 2.0;
  /// Cap on the delay. Default: 1m.
  duration max_backoff = std::chrono::minutes{1};
  /// Default: full.
  jitter_mode jitter = jitter_mode::full;
  /// Error kinds that fail the node at once, without retries. Default: none.
  std::vector<std::string> non_retryable;

  bool operator==(const retry_policy&) const = default;
};

} // namespace troupe::runtime
