#pragma once

#include "actors/services.hpp"
#include "runtime/engine/run_engine.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/behavior.hpp>
#include <caf/stateful_actor.hpp>

#include <map>
#include <random>
#include <unordered_map>
#include <unordered_set>

namespace troupe::actors {

/// The state of one run actor: the run's engine plus the attempts it has
/// spawned. Every decision of the engine is journaled before it is acted on:
/// events go to the store, and their effects (spawning attempts, arming
/// timers, telling observers) wait for the store's acknowledgement.
struct run_state {
  static inline const char* name = "troupe.run";

  caf::event_based_actor* self = nullptr;
  services_ptr svc;
  std::unique_ptr<runtime::run_engine> engine;
  caf::actor observer;
  /// Attempt actors by node, and back.
  std::unordered_map<std::string, caf::actor> attempts;
  std::unordered_map<caf::actor_addr, std::string> attempt_nodes;
  /// Events written but not yet durable, by store tag, with the seq of the
  /// first.
  std::map<uint64_t, std::pair<int64_t, std::vector<persistence::event_record>>>
    unacked;
  uint64_t next_tag = 1;
  /// Events in the journal, durable or queued: the next one's seq is one
  /// more.
  int64_t journal_size = 0;
  /// When the run was submitted (its first event), for the index entry.
  int64_t created_at_ns = 0;
  /// Calls let through by a circuit breaker, by node: the breaker (invalid
  /// when it did not answer) and whether the call is a half-open trial.
  std::unordered_map<std::string, std::pair<caf::actor, bool>> breaker_calls;
  /// Concurrency slots by node: the limiter, the holder name, and whether
  /// the slot is granted (else the node waits in the limiter's queue).
  struct slot {
    caf::actor limiter;
    std::string holder;
    bool granted = false;
  };
  std::unordered_map<std::string, slot> slots;
  /// Nodes whose breaker has been asked and has not answered yet.
  std::unordered_set<std::string> awaiting_breaker;
  /// Jitter source; seeded from the run id and the clock.
  std::mt19937_64 rng;
};

/// Runs one workflow run, starting from its journal (`start.journal`, whose
/// first event is run_submitted). Quits when the run ends.
caf::behavior run_actor_impl(caf::stateful_actor<run_state>* self,
                             runtime::start_run start, services_ptr svc);

} // namespace troupe::actors
