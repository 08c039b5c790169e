#pragma once

#include "actors/keyed_upkeep.hpp"
#include "actors/services.hpp"

#include <caf/actor_addr.hpp>
#include <caf/behavior.hpp>
#include <caf/response_promise.hpp>
#include <caf/stateful_actor.hpp>

#include <deque>
#include <string>
#include <unordered_map>

namespace troupe::actors {

/// The state of one per-key concurrency limiter: who holds a slot, and who
/// waits, in order.
struct limiter_state {
  static inline const char* name = "troupe.limiter";

  struct waiter {
    std::string holder;
    caf::actor_addr owner;
    caf::response_promise reply;
  };

  std::string key;
  int32_t limit = 1;
  services_ptr svc;
  /// Holder -> the actor that asked for it.
  std::unordered_map<std::string, caf::actor_addr> holders;
  std::deque<waiter> queue;
  /// The actors that hold slots or wait: what they hold is freed when they
  /// die.
  holder_watch owners;
  /// When it last did anything.
  int64_t last_used_ns = 0;
};

/// A concurrency limiter for the nodes whose concurrency key resolves to
/// `key`: at most `limit` holders at once; limit_acquire is answered when a
/// slot is free (first come, first served), limit_release frees it. Places
/// of an actor that dies are freed at once, its slots once no process of
/// their holders' work is left (svc->runner's when_idle, keyed by holder),
/// or when a new actor asks for the same holder. With no holder and no waiter
/// for svc->options.keyed_idle, it retires from svc->limiters and quits.
caf::behavior limiter_actor_impl(caf::stateful_actor<limiter_state>* self,
                                 std::string key, int32_t limit,
                                 services_ptr svc);

} // namespace troupe::actors
