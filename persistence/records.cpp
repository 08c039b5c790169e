#include "persistence/records.hpp"

namespace troupe::persistence {

std::string_view to_string(event_type t) {
  switch (t) {
  case event_type::run_submitted: return "run_submitted";
  case event_type::attempt_started: return "attempt_started";
  case event_type::attempt_failed: return "attempt_failed";
  case event_type::node_completed: return "node_completed";
  case event_type::node_failed: return "node_failed";
  case event_type::timer_set: return "timer_set";
  case event_type::run_completed: return "run_completed";
  case event_type::run_failed: return "run_failed";
  case event_type::run_cancelled: return "run_cancelled";
  case event_type::run_restarted: return "run_restarted";
  case event_type::node_cancelled: return "node_cancelled";
  case event_type::node_fell_back: return "node_fell_back";
  case event_type::node_skipped: return "node_skipped";
  case event_type::run_compensating: return "run_compensating";
  case event_type::run_paused: return "run_paused";
  case event_type::run_resumed: return "run_resumed";
  }
  return "unknown";
}

std::string_view to_string(run_state s) {
  switch (s) {
  case run_state::running: return "running";
  case run_state::completed: return "completed";
  case run_state::failed: return "failed";
  case run_state::cancelled: return "cancelled";
  case run_state::paused: return "paused";
  }
  return "unknown";
}

} // namespace troupe::persistence
