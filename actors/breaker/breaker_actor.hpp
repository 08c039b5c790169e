#pragma once

#include "actors/services.hpp"
#include "runtime/model/workflow.hpp"

#include <caf/behavior.hpp>
#include <caf/stateful_actor.hpp>

#include <deque>
#include <string>

namespace troupe::actors {

/// The state of one circuit breaker: closed (calls go through, outcomes are
/// counted over a window), open (calls are refused until reset_timeout has
/// passed) or half-open (a few trial calls go through; a success closes it,
/// a failure opens it again).
struct breaker_state {
  static inline const char* name = "troupe.breaker";

  enum class mode { closed, open, half_open };

  runtime::circuit_breaker_spec spec;
  services_ptr svc;
  mode state = mode::closed;
  /// Outcomes within the window while closed: (time, ok).
  std::deque<std::pair<int64_t, bool>> calls;
  int64_t opened_at_ns = 0;
  int32_t probes_in_flight = 0;
};

/// Returns "closed", "open" or "half-open".
const char* to_string(breaker_state::mode m);

/// A circuit breaker for the nodes whose circuit_breaker has spec.key.
/// Answers breaker_acquire with (allowed, retry_at_ns, probe) and takes
/// breaker_report. Logs its state changes through svc->log.
caf::behavior breaker_actor_impl(caf::stateful_actor<breaker_state>* self,
                                 runtime::circuit_breaker_spec spec,
                                 services_ptr svc);

} // namespace troupe::actors
