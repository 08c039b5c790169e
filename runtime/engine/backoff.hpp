#pragma once

#include "runtime/model/retry_policy.hpp"

#include <cstdint>

namespace troupe::runtime {

/// Returns the delay before the attempt after `failed_attempt` (1-based):
/// initial_backoff * multiplier^(failed_attempt - 1), capped at max_backoff,
/// then jittered with `u`, a uniform draw in [0, 1): `none` ignores it,
/// `full` gives u * delay, `equal` gives delay / 2 + u * delay / 2.
duration backoff_delay(const retry_policy& policy, int32_t failed_attempt,
                       double u);

/// Returns whether an attempt that failed with `error_kind` may be retried:
/// the kind is not listed in the policy's non_retryable, nor a kind that no
/// retry can fix (bad_template, bad_params, cancelled).
bool is_retryable(const retry_policy& policy, const std::string& error_kind);

/// Returns a well-mixed 64-bit value (splitmix64), for reproducible draws.
uint64_t mix64(uint64_t x);

/// Returns a uniform draw in [0, 1) from `x` (mixed first).
double unit_interval(uint64_t x);

} // namespace troupe::runtime
