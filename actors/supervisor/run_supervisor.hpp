#pragma once

#include "actors/services.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/behavior.hpp>
#include <caf/stateful_actor.hpp>

#include <unordered_map>
#include <variant>
#include <vector>

namespace troupe::actors {

/// The state of a run supervisor: the run actors it owns and when each was
/// restarted.
struct run_supervisor_state {
  static inline const char* name = "troupe.run_supervisor";

  struct child {
    caf::actor actor;
    caf::actor observer;
    /// Whether the observer wants every event, or only the end.
    bool progress = true;
    /// The workflow's name, for the index entry when the run is given up.
    std::string workflow;
    int64_t created_at_ns = 0;
    /// Restart times (ns) inside the current window.
    std::vector<int64_t> restarts;
    int32_t total_restarts = 0;
    /// Commands that came while the run's actor was dead and its restart
    /// pending, in order: for the restarted actor.
    std::vector<std::variant<runtime::cancel_run, runtime::pause_run,
                             runtime::resume_run, runtime::retry_now>>
      held;
  };

  services_ptr svc;
  std::unordered_map<std::string, child> runs;
  /// Run ids (the keys of `runs`, which stay put) by the id of their live
  /// actor: for down messages, and to find a run actor by id (inspect).
  std::unordered_map<caf::actor_id, const std::string*> by_id;
  bool stopping = false;
};

/// Owns run actors: starts them (start_run), forwards cancel_run, pause_run,
/// resume_run, retry_now and crash_run, and restarts a run actor that dies
/// abnormally from its journal, with exponential backoff. Commands for a
/// run whose restart is pending wait for the restarted actor (crash_run is
/// dropped). After more than max_restarts restarts within
/// restart_window (the OTP intensity limit) the run is failed instead.
caf::behavior
run_supervisor_impl(caf::stateful_actor<run_supervisor_state>* self,
                    services_ptr svc);

} // namespace troupe::actors
