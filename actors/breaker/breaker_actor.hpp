#pragma once

#include "actors/keyed_upkeep.hpp"
#include "actors/services.hpp"
#include "runtime/model/workflow.hpp"

#include <caf/actor_addr.hpp>
#include <caf/behavior.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <deque>
#include <map>
#include <string>
#include <unordered_map>

namespace troupe::actors {

/// The state of one circuit breaker: closed (calls go through, outcomes are
/// counted over a window), open (calls are refused until reset_timeout has
/// passed) or half-open (a few trial calls go through; a success closes it,
/// a failure opens it again).
struct breaker_state {
  static inline const char* name = "troupe.breaker";

  enum class mode { closed, open, half_open };

  /// A call let through and not reported yet.
  struct call {
    /// The actor that asked for it (invalid for an anonymous sender).
    caf::actor_addr owner;
    /// "run/node", for inspection.
    std::string holder;
    bool probe = false;
  };

  /// A caller waiting for a trial call of the half-open breaker.
  struct waiter {
    caf::actor_addr owner;
    uint64_t ticket = 0;
    std::string holder;
    caf::response_promise reply;
  };

  /// Names a call or waiter: its owner's actor id and its ticket.
  using call_id = std::pair<caf::actor_id, uint64_t>;

  runtime::circuit_breaker_spec spec;
  services_ptr svc;
  mode state = mode::closed;
  /// Outcomes within the window while closed: (time, ok).
  std::deque<std::pair<int64_t, bool>> calls;
  int64_t opened_at_ns = 0;
  int32_t probes_in_flight = 0;
  /// Calls let through and not reported yet.
  std::map<call_id, call> granted;
  /// Callers waiting for a trial call, in order of arrival.
  std::deque<waiter> queue;
  /// The actors that hold calls or wait: what they hold is freed when they
  /// die.
  holder_watch owners;
  /// When it last did anything.
  int64_t last_used_ns = 0;
};

/// Returns "closed", "open" or "half-open".
const char* to_string(breaker_state::mode m);

/// A circuit breaker for the nodes whose circuit_breaker has spec.key.
/// Answers breaker_acquire with (allowed, retry_at_ns, probe): at once,
/// except when half-open with every trial call taken, then once a trial call
/// is free or its state changes. Takes breaker_report. Logs its state
/// changes through svc->log. Closed, with nothing in its window and no call
/// or waiter for svc->options.keyed_idle, it retires from svc->breakers and
/// quits; open or half-open, it stays.
caf::behavior breaker_actor_impl(caf::stateful_actor<breaker_state>* self,
                                 runtime::circuit_breaker_spec spec,
                                 services_ptr svc);

} // namespace troupe::actors
