#pragma once

// Every message Troupe's actors exchange, and the one type-ID block that
// registers them with CAF (so that the same actors can talk across nodes).
// Only append to the block: never reorder or delete entries, since the IDs
// go on the wire.

#include "persistence/records.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::persistence {

template<class Inspector>
typename Inspector::result_type inspect(Inspector& f, event_record& x) {
  return f(caf::meta::type_name("troupe.event_record"), x.type, x.at_ns, x.node,
           x.attempt, x.deadline_ns, x.error_kind, x.message, x.data, x.data2);
}

} // namespace troupe::persistence

namespace troupe::runtime {

/// Starts (or restarts) a run actor from the run's journal.
struct start_run {
  std::string run_id;
  std::vector<persistence::event_record> journal;
  /// Receives run_progress and run_finished; may be invalid.
  caf::actor observer;
  /// How often the run actor was restarted, and why the last time.
  int32_t restarts = 0;
  std::string restart_reason;
  /// Tell the observer with a run_progress of event "resumed" (and no node)
  /// once the run actor has rebuilt the run; for measuring recovery.
  bool announce_resumed = false;
  /// Send the observer a run_progress for every journaled event; when false
  /// it hears only run_finished.
  bool progress = true;
};

/// What one attempt of one node executes.
struct attempt_spec {
  std::string run_id;
  std::string node;
  std::string kind;
  int32_t attempt = 0;
  /// The node's parameters with templates resolved (JSON).
  std::string params;
  /// The node's context (JSON {inputs, nodes}): exec's default stdin.
  std::string context;
  uint64_t max_output_bytes = 0;
  int64_t kill_grace_ms = 0;
};

/// How an attempt ended; sent by the attempt actor to its run actor.
struct attempt_result {
  std::string node;
  int32_t attempt = 0;
  bool ok = false;
  /// Output (JSON) when ok.
  std::string output;
  std::string error_kind;
  std::string message;
  /// The least wait before a retry the failure asks for (an HTTP 429 or 503
  /// with Retry-After), in milliseconds; 0: none.
  int64_t retry_after_ms = 0;
  /// JSON {stdout, stderr}: the tails of an exec attempt's output; empty
  /// for other kinds.
  std::string logs;
  /// The cluster member that ran it; empty on a node alone.
  std::string member;
};

/// The journal store made a batch durable (error empty) or failed.
struct store_ack {
  uint64_t tag = 0;
  std::string error;
};

/// A timer a run actor armed for itself fired. One message type for all of
/// them keeps the run actor's behavior (one per live run) small.
struct run_timer {
  enum kind_t : uint8_t {
    /// `node`'s retry time has come.
    retry,
    /// `node` (a sleep) is done sleeping.
    sleep,
    /// `attempt` of `node` ran past its timeout.
    attempt_timeout,
    /// The run ran past its deadline (no node).
    run_deadline,
    /// `attempt` of `node` waits while the member is fenced: ask again.
    fence_check,
  };
  uint8_t kind = retry;
  std::string node;
  int32_t attempt = 0;
};

/// A journal event of a run became durable; for observers.
struct run_progress {
  std::string run_id;
  std::string node;
  std::string event;
  int32_t attempt = 0;
  int64_t next_retry_ns = 0;
  std::string message;
  /// The event's position in the run's journal (1 for run_submitted), so
  /// that a watcher can join a journal it read with the events that follow.
  int64_t seq = 0;
  int64_t at_ns = 0;
  std::string error_kind;
  /// A map's first attempt_started: how many items it runs over; else 0.
  int64_t items = 0;
};

/// A run ended; for observers.
struct run_finished {
  std::string run_id;
  std::string workflow;
  persistence::run_state state = persistence::run_state::running;
  /// Outputs (JSON) when completed.
  std::string outputs;
  std::string reason;
  std::string failed_node;
};

/// A supervisor read a crashed run's journal to restart it.
struct journal_loaded {
  std::string run_id;
  std::vector<persistence::event_record> journal;
  /// Why the journal could not be read whole; empty when it could.
  std::string error;
  /// Why the run actor died.
  std::string reason;
};

/// Asks a run to stop, ending cancelled.
struct cancel_run {
  std::string run_id;
  std::string reason;
};

/// Asks a run to start no attempts until resumed; `reason` says why and who.
struct pause_run {
  std::string run_id;
  std::string reason;
};

/// Asks a paused run to go on; `who` is journaled.
struct resume_run {
  std::string run_id;
  std::string who;
};

/// Asks any Troupe actor for its own state; the reply is a std::string
/// holding a JSON object with at least kind, actor_id and mailbox.
struct inspect_actor {
  /// Longest text of any one value (parameters, errors) in the answer.
  uint32_t max_text = 512;
};

/// Asks a run supervisor for its run actors; the reply is a
/// std::vector<caf::actor>, at most `limit` of them.
struct list_children {
  uint32_t limit = 1000;
};

/// Asks a run supervisor for the actor of one run; the reply is a
/// caf::actor, invalid when the run is not live there.
struct find_run {
  std::string run_id;
};

/// Asks a run supervisor for its run actor with this actor id; the reply
/// is a caf::actor, invalid when it has none with that id.
struct find_actor {
  uint64_t actor_id = 0;
};

/// Starts a node's next attempt now, skipping what is left of its backoff.
struct retry_now {
  std::string run_id;
  std::string node;
};

/// Closes a circuit breaker by hand; `who` is logged.
struct reset_breaker {
  std::string who;
};

/// Makes a run actor fail as if it had a bug (supervision tests, chaos).
struct crash_run {
  std::string run_id;
};

/// A supervisor restarts a crashed run once its backoff has passed and its
/// journal is durable.
struct restart_run {
  std::string run_id;
  std::string reason;
};

/// Tells a run supervisor that this node no longer leads partition
/// `partition` (of `count`): its live runs there are stopped, attempts
/// and all, without a restart or a journal write, since their journals
/// now belong to the partition's new leader. The reply is how many runs
/// were stopped (uint64_t).
struct release_runs {
  uint32_t partition = 0;
  uint32_t count = 0;
};

/// Asks a circuit breaker whether a call may go through. The reply is
/// (bool allowed, int64_t retry_at_ns: when to ask again if not, bool probe:
/// whether the call is one of the half-open state's trial calls). A
/// half-open breaker whose trial calls are all taken answers once one is
/// free or its state changes. `ticket`, unique among the sender's calls,
/// names the call in breaker_report; the breaker watches the sender and
/// frees what it holds when it dies.
struct breaker_acquire {
  std::string run_id;
  std::string node;
  uint64_t ticket = 0;
};

/// Tells a circuit breaker how the sender's call `ticket` ended, or gives
/// back a call or a place in the queue that the sender no longer wants.
/// `counted` is false for calls that ended without reaching the service
/// (cancelled, bad parameters, given back): they only free what they held.
struct breaker_report {
  uint64_t ticket = 0;
  bool ok = false;
  bool counted = true;
};

/// Asks a concurrency limiter for a slot for `holder` (run id and node). The
/// reply (bool, always true) comes once a slot is free: callers wait in
/// order.
struct limit_acquire {
  std::string holder;
};

/// Gives back `holder`'s slot, or its place in the queue.
struct limit_release {
  std::string holder;
};

/// Asks an attempt actor to stop its work. An exec attempt kills its
/// process group and quits once the group is gone (SIGTERM, then SIGKILL
/// after the kill grace); other kinds quit at once. Its run waits for that
/// before it gives back the node's concurrency slot or starts the node's
/// next attempt. `reason` says why, for people.
struct halt_attempt {
  std::string reason;
};

#define TROUPE_INSPECT(type, ...)                                  \
  template<class Inspector>                                        \
  typename Inspector::result_type inspect(Inspector& f, type& x) { \
    return f(caf::meta::type_name("troupe." #type), __VA_ARGS__);  \
  }

TROUPE_INSPECT(start_run, x.run_id, x.journal, x.observer, x.restarts,
               x.restart_reason, x.announce_resumed, x.progress)
TROUPE_INSPECT(attempt_spec, x.run_id, x.node, x.kind, x.attempt, x.params,
               x.context, x.max_output_bytes, x.kill_grace_ms)
TROUPE_INSPECT(attempt_result, x.node, x.attempt, x.ok, x.output, x.error_kind,
               x.message, x.retry_after_ms, x.logs, x.member)
TROUPE_INSPECT(store_ack, x.tag, x.error)
TROUPE_INSPECT(run_timer, x.kind, x.node, x.attempt)
TROUPE_INSPECT(run_progress, x.run_id, x.node, x.event, x.attempt,
               x.next_retry_ns, x.message, x.seq, x.at_ns, x.error_kind,
               x.items)
TROUPE_INSPECT(run_finished, x.run_id, x.workflow, x.state, x.outputs, x.reason,
               x.failed_node)
TROUPE_INSPECT(cancel_run, x.run_id, x.reason)
TROUPE_INSPECT(crash_run, x.run_id)
TROUPE_INSPECT(restart_run, x.run_id, x.reason)
TROUPE_INSPECT(journal_loaded, x.run_id, x.journal, x.error, x.reason)
TROUPE_INSPECT(breaker_acquire, x.run_id, x.node, x.ticket)
TROUPE_INSPECT(breaker_report, x.ticket, x.ok, x.counted)
TROUPE_INSPECT(limit_acquire, x.holder)
TROUPE_INSPECT(limit_release, x.holder)
TROUPE_INSPECT(pause_run, x.run_id, x.reason)
TROUPE_INSPECT(inspect_actor, x.max_text)
TROUPE_INSPECT(list_children, x.limit)
TROUPE_INSPECT(find_run, x.run_id)
TROUPE_INSPECT(retry_now, x.run_id, x.node)
TROUPE_INSPECT(reset_breaker, x.who)
TROUPE_INSPECT(resume_run, x.run_id, x.who)
TROUPE_INSPECT(find_actor, x.actor_id)
TROUPE_INSPECT(halt_attempt, x.reason)
TROUPE_INSPECT(release_runs, x.partition, x.count)

#undef TROUPE_INSPECT

/// Registers every Troupe message type with `cfg`. Every node calls this
/// one function, so that all nodes agree on the types.
void register_message_types(caf::actor_system_config& cfg);

} // namespace troupe::runtime

// clang-format off
CAF_BEGIN_TYPE_ID_BLOCK(troupe, caf::first_custom_type_id)
  CAF_ADD_TYPE_ID(troupe, (troupe::persistence::event_record))
  CAF_ADD_TYPE_ID(troupe, (std::vector<troupe::persistence::event_record>))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::start_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::attempt_spec))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::attempt_result))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::store_ack))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::run_timer))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::run_progress))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::run_finished))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::cancel_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::crash_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::restart_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::journal_loaded))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::breaker_acquire))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::breaker_report))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::limit_acquire))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::limit_release))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::pause_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::resume_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::inspect_actor))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::list_children))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::find_run))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::retry_now))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::reset_breaker))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::find_actor))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::halt_attempt))
  CAF_ADD_TYPE_ID(troupe, (troupe::runtime::release_runs))
CAF_END_TYPE_ID_BLOCK(troupe)
// clang-format on
