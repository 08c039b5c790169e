#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::persistence {

/// What happened to a run. Journal records are append-only; the numbers are
/// stored on disk: never renumber, only append (retired numbers stay taken).
enum class event_type : uint8_t {
  run_submitted = 1,     ///< data: spec source text; data2: inputs (JSON).
  attempt_started = 2,   ///< node, attempt; deadline_ns: attempt timeout.
  attempt_failed = 3,    ///< node, attempt, error_kind, message;
                         ///< deadline_ns: next retry time, 0 when none;
                         ///< data2: JSON {stdout, stderr} tails, if any.
  node_completed = 4,    ///< node, attempt; data: output (JSON); data2:
                         ///< JSON {stdout, stderr} tails, if any.
  node_failed = 5,       ///< node, attempt, error_kind, message.
  timer_set = 6,         ///< node; deadline_ns: when the timer fires.
  run_completed = 7,     ///< data: outputs (JSON).
  run_failed = 8,        ///< node (the failing node, if any), error_kind,
                         ///< message.
  run_cancelled = 9,     ///< message: why.
  run_restarted = 10,    ///< attempt: restart count; message: why.
  node_cancelled = 11,   ///< node, attempt; message: why.
  node_fell_back = 12,   ///< node (the one that failed), attempt, error_kind,
                         ///< message; data: the fallback node now standing in.
  node_skipped = 13,     ///< node; message: why (a branch not taken, ...).
  run_compensating = 14, ///< node (the failing node, if any), error_kind,
                         ///< message: why the run fails; its compensations
                         ///< run next, then run_failed follows.
  run_paused = 15,       ///< message: why (and who). No attempt starts until
                         ///< run_resumed; running ones finish.
  run_resumed = 16,      ///< message: who resumed it.
};

/// The highest event type this build knows.
inline constexpr event_type last_event_type = event_type::run_resumed;

/// Returns the event type's name, e.g. "attempt_failed".
std::string_view to_string(event_type t);

/// One journal event. A flat record, so that every event type shares one
/// versioned encoding; fields an event type does not use stay empty.
struct event_record {
  event_type type = event_type::run_submitted;
  /// Wall-clock time of the event, nanoseconds since the Unix epoch.
  int64_t at_ns = 0;
  std::string node;
  int32_t attempt = 0;
  /// A point in time (ns since epoch) whose meaning depends on the type.
  int64_t deadline_ns = 0;
  std::string error_kind;
  std::string message;
  /// JSON text or source text, depending on the type.
  std::string data;
  std::string data2;
  /// The cluster member that ran the attempt (node_completed,
  /// attempt_failed and node_failed of an attempt that ran); empty on a
  /// node alone and in journals written before clusters. Encoded only when
  /// set, as a tenth field, so records without it are as before.
  std::string member;

  bool operator==(const event_record&) const = default;
};

/// Where a run stands, as kept in the run index.
enum class run_state : uint8_t {
  running = 1,
  completed = 2,
  failed = 3,
  cancelled = 4,
  paused = 5, ///< Unfinished, but starting no attempts.
};

/// Returns the state's name, e.g. "running".
std::string_view to_string(run_state s);

/// Returns whether no further event can change a run in state `s`.
inline bool is_terminal(run_state s) {
  return s != run_state::running && s != run_state::paused;
}

/// One entry of the run index, for listing and for finding unfinished runs.
struct run_index_entry {
  std::string run_id;
  std::string workflow;
  run_state state = run_state::running;
  int64_t created_at_ns = 0;
  int64_t updated_at_ns = 0;
  /// Why the run failed or was cancelled; empty otherwise.
  std::string reason;

  bool operator==(const run_index_entry&) const = default;
};

/// What is left of a run deleted after retention: enough to answer "deleted"
/// rather than "never existed". Kept for storage.tombstone_retention.
struct run_tombstone {
  /// The run's last index entry, its reason dropped.
  run_index_entry last;
  /// When it was deleted, nanoseconds since the Unix epoch.
  int64_t deleted_at_ns = 0;

  bool operator==(const run_tombstone&) const = default;
};

} // namespace troupe::persistence
