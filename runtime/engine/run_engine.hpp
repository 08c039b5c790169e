#pragma once

#include "persistence/records.hpp"
#include "runtime/model/workflow.hpp"

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace troupe::runtime {

using persistence::event_record;
using persistence::event_type;
using persistence::run_state;

/// Where one node of a run stands.
enum class node_state : uint8_t {
  pending,       ///< Waiting for its `after` nodes.
  running,       ///< An attempt is executing.
  waiting_retry, ///< The last attempt failed; the next waits for its time.
  completed,
  failed,
  cancelled,
  fell_back, ///< Failed for good; its fallback runs in its place.
  skipped,   ///< On a branch not taken, or its trigger rule said so.
};

/// Returns the state's name, e.g. "waiting_retry".
std::string_view to_string(node_state s);

/// Everything the engine knows about one node of a run.
struct node_status {
  node_state state = node_state::pending;
  /// For a fallback node: whether the node it stands in for has failed, so
  /// that it runs.
  bool triggered = false;
  /// The current (or last) attempt, 1-based; 0 before the first.
  int32_t attempt = 0;
  /// How many of its `after` nodes have completed, and how many were
  /// skipped (both final), so that its readiness takes no scan.
  uint32_t after_completed = 0;
  uint32_t after_skipped = 0;
  int64_t started_at_ns = 0;
  /// When the running attempt times out; 0 for never.
  int64_t attempt_deadline_ns = 0;
  /// When the next attempt may start (waiting_retry).
  int64_t next_retry_ns = 0;
  /// When a sleep node's durable timer fires; 0 before it is set.
  int64_t timer_deadline_ns = 0;
  /// When schedule_to_close ends the node (set by its first attempt); 0 for
  /// never.
  int64_t close_deadline_ns = 0;
  std::string last_error_kind;
  std::string last_error;
  nlohmann::json output;
};

/// The deterministic state machine of one run: events in, events out. It
/// never reads a clock or does I/O: callers pass the time and persist the
/// events it returns before acting on them. Replaying a run's journal through
/// `apply` rebuilds exactly the state the run had.
class run_engine {
 public:
  /// Most bytes a map's output (its items' outputs as one JSON list) may
  /// take; a larger one fails the map with error kind output_too_large.
  static constexpr size_t max_map_output_bytes = size_t{16} << 20;

  run_engine(std::string run_id, std::shared_ptr<const workflow_spec> spec,
             nlohmann::json inputs);

  // -- replay -----------------------------------------------------------------

  /// Applies one journal event to the state.
  void apply(const event_record& e);

  // -- decisions: each returns the events it applied, in order ----------------

  /// Starts what can start at `now_ns`: nodes whose `after` nodes completed
  /// and retries whose time has come, up to max_concurrency; completes the
  /// run when every node completed.
  std::vector<event_record> decide(int64_t now_ns);

  /// Records a successful attempt; `logs` (JSON {stdout, stderr} tails of
  /// an exec node, or empty) is kept in the event for `troupe logs`.
  std::vector<event_record> on_attempt_succeeded(const std::string& node,
                                                 int32_t attempt,
                                                 const nlohmann::json& output,
                                                 int64_t now_ns,
                                                 const std::string& logs = {});

  /// Records a failed attempt: schedules the next one by the node's retry
  /// policy (`u` is a uniform draw in [0, 1) for the jitter), waiting at
  /// least `min_delay_ns` (a Retry-After), or fails the node and then the
  /// run, cancelling the nodes still running.
  std::vector<event_record>
  on_attempt_failed(const std::string& node, int32_t attempt,
                    const std::string& error_kind, const std::string& message,
                    int64_t now_ns, double u, int64_t min_delay_ns = 0,
                    const std::string& logs = {});

  /// Cancels the run: running nodes are cancelled; completed nodes'
  /// compensations run (newest first); the run ends cancelled.
  std::vector<event_record> cancel(const std::string& reason, int64_t now_ns);

  /// Pauses the run: running attempts finish, but none starts (retries and
  /// compensations included) until `resume`. Nothing when it is finished or
  /// already paused.
  std::vector<event_record> pause(const std::string& why, int64_t now_ns);

  /// Resumes a paused run and starts what is due. Nothing when not paused.
  std::vector<event_record> resume(const std::string& who, int64_t now_ns);

  /// Starts the next attempt of `node` (waiting for a retry) now, skipping
  /// what is left of its backoff. Nothing when it is not waiting for one.
  std::vector<event_record> retry_now(const std::string& node, int64_t now_ns);

  /// Ids of the map items of `id` that exist (started or waiting).
  std::vector<std::string> item_ids(const std::string& id) const;

  /// Fails the run when its timeout has passed at `now_ns`; else nothing.
  std::vector<event_record> time_out(int64_t now_ns);

  /// Restarts the per-attempt timeout of the running attempt of `id` at
  /// `now_ns`, for an attempt that runs again from its start because the
  /// run stopped while it was in flight (a node restart, a run actor
  /// restart): its deadline becomes `now_ns` plus the node's `timeout`, or
  /// its schedule_to_close deadline when that comes first (which, like the
  /// run's timeout, keeps its original time). Returns the new deadline (0:
  /// none).
  ///
  /// Not journaled: it is a fact about this execution of the attempt, not
  /// about the run. Replaying the journal gives the deadline of the
  /// attempt's first start, and each later restart sets its own again.
  int64_t restart_attempt_timeout(const std::string& id, int64_t now_ns);

  /// Fails the run from outside the DAG (e.g. too many restarts).
  std::vector<event_record> fail_run(const std::string& error_kind,
                                     const std::string& message,
                                     int64_t now_ns);

  // -- queries ----------------------------------------------------------------

  /// Resolves the templates in a node's parameters for its current attempt.
  std::optional<nlohmann::json> resolve_params(const node_spec& node,
                                               std::string& error) const;

  /// Resolves the templates in one string for a node's current attempt, as
  /// text.
  std::optional<std::string> resolve_text(const node_spec& node,
                                          const std::string& text,
                                          std::string& error) const;

  /// Returns the spec of node `id`: a workflow node, or for an item of a map
  /// ("m[3]") the map's inner node. Null for unknown ids.
  const node_spec* node_spec_of(const std::string& id) const;

  /// Resolves the parameters of node `id` (a map item included) for its
  /// current attempt.
  std::optional<nlohmann::json> resolve_params_for(const std::string& id,
                                                   std::string& error) const;

  /// For a map item id ("m[3]"): the map and the index.
  static std::optional<std::pair<std::string, size_t>>
  split_item(const std::string& id);

  /// Returns how many items map `id` runs over (0 before it starts).
  size_t map_items(const std::string& id) const {
    auto m = maps_.find(id);
    return m == maps_.end() ? 0 : m->second.items.size();
  }

  /// Returns the status of node (or map item) `id`, or null.
  const node_status* find_status(const std::string& id) const;

  /// Returns the item of a map item id, or null.
  const nlohmann::json* item_of(const std::string& id) const;

  /// Returns the earliest time a waiting retry may start, or 0.
  int64_t next_wakeup_ns() const;

  /// When the run's timeout ends it; 0 for never.
  int64_t run_deadline_ns() const noexcept { return run_deadline_ns_; }

  const std::string& run_id() const noexcept { return run_id_; }
  const workflow_spec& spec() const noexcept { return *spec_; }
  const nlohmann::json& inputs() const noexcept { return inputs_; }
  run_state state() const noexcept { return state_; }
  /// Whether the run is paused (and unfinished).
  bool paused() const noexcept { return paused_; }
  /// The state for the run index: paused for a paused unfinished run.
  run_state index_state() const noexcept {
    return paused_ && !is_finished() ? run_state::paused : state_;
  }
  bool is_finished() const noexcept { return persistence::is_terminal(state_); }
  /// Returns the status of node (or map item) `node`; throws
  /// std::out_of_range for an unknown one.
  const node_status& status(const std::string& node) const;
  /// The run's outputs once completed.
  const nlohmann::json& outputs() const noexcept { return outputs_; }
  /// Whether the run is running its compensations before it fails.
  bool compensating() const noexcept { return compensating_; }
  /// Why the run failed or was cancelled, and the node that failed it.
  const std::string& reason() const noexcept {
    return ending_ ? ending_->reason : no_text();
  }
  const std::string& failed_node() const noexcept {
    return ending_ ? ending_->failed_node : no_text();
  }
  int32_t restarts() const noexcept { return restarts_; }
  /// Number of nodes with an attempt executing.
  size_t running() const noexcept { return running_; }
  /// How many times decisions have checked whether a node may start: each
  /// step checks the nodes it may have made ready (those that run after the
  /// node that ended), not every node of the workflow.
  uint64_t readiness_checks() const noexcept { return readiness_checks_; }

 private:
  std::vector<event_record>
  attempt_failed(const std::string& node, int32_t attempt,
                 const std::string& error_kind, const std::string& message,
                 int64_t now_ns, double u, int64_t min_delay_ns);
  /// Ends `node` for good: its fallback takes over if it has one, else the
  /// node and the run fail.
  std::vector<event_record> give_up_node(const std::string& node,
                                         int32_t attempt,
                                         const std::string& kind,
                                         const std::string& message,
                                         int64_t now_ns);
  std::vector<event_record> fail_node_and_run(const std::string& node,
                                              int32_t attempt,
                                              const std::string& kind,
                                              const std::string& message,
                                              int64_t now_ns);
  void emit(std::vector<event_record>& out, event_record e);
  /// Skips what its trigger rule or an untaken branch skips and takes the
  /// branches of switch nodes that are ready, until nothing changes. Returns
  /// false when that ended the run.
  bool settle_branches(std::vector<event_record>& out, int64_t now_ns);
  /// Evaluates a ready switch node: completes it and skips the targets of
  /// the branches not taken (or gives it up on a bad expression).
  void take_branch(const node_spec& sw, std::vector<event_record>& out,
                   int64_t now_ns);
  enum class readiness { wait, ready, skip };
  /// Starts the next compensation (in reverse completion order) or, when
  /// all have ended, fails the run reporting how they went.
  void compensate_step(std::vector<event_record>& out, int64_t now_ns);
  /// Emits the start of `n`'s next attempt (and a sleep's timer); returns
  /// false when that failed the node (a bad sleep duration).
  bool start_attempt(const node_spec& n, std::vector<event_record>& out,
                     int64_t now_ns, const std::string& id = {});
  /// Whether node `pos` runs only when called on (a fallback or a
  /// compensation).
  bool is_standby(size_t pos) const {
    return index().primary[pos] >= 0 || index().compensates[pos] >= 0;
  }
  /// The place of workflow node `id` in the spec, or -1 (a map item, or
  /// unknown).
  int32_t position(const std::string& id) const;
  node_status* mutable_status(const std::string& id) {
    return const_cast<node_status*>(find_status(id));
  }
  /// Keeps the engine's work lists true after workflow node `pos` changed
  /// from state `was` (and retry time `was_retry_ns`) to what it is now.
  void track(uint32_t pos, node_state was, int64_t was_retry_ns);
  struct map_state;
  /// The same for item `i` of map `m`: its place among the retries.
  void track_item(map_state& m, size_t i, node_state was, int64_t was_retry_ns);
  /// Completes maps whose items all completed.
  void settle_maps(std::vector<event_record>& out, int64_t now_ns);
  /// Starts pending items and due retries of running maps.
  void start_items(std::vector<event_record>& out, int64_t now_ns);
  /// Cancels the running and waiting items of map `id`.
  void cancel_items(const std::string& id, const std::string& why,
                    std::vector<event_record>& out, int64_t now_ns);
  /// Whether a completed node has a compensation to run.
  bool has_compensations() const;
  /// Whether a pending node may start, given its `after` nodes and trigger
  /// rule; for skip, `why` says which upstream node made it so.
  readiness ready(const node_spec& n, const node_status& st, std::string& why);

  std::string run_id_;
  /// Always indexed: a spec that came without an index is copied with one.
  std::shared_ptr<const workflow_spec> spec_;
  nlohmann::json inputs_;
  /// The status of each workflow node, in the spec's order (map items are
  /// kept with their map).
  std::vector<node_status> nodes_;
  /// Outputs of completed nodes, by node id (the scope of templates); null
  /// until the first node completes (an empty object would cost an
  /// allocation per run).
  nlohmann::json node_outputs_;
  run_state state_ = run_state::running;
  nlohmann::json outputs_;
  /// Why the run failed or was cancelled, the node that failed it and the
  /// error kind; null until then (most runs never need the strings, and an
  /// engine is kept per live run: a parked run's memory).
  struct ending {
    std::string reason;
    std::string failed_node;
    std::string fail_kind;
  };
  std::unique_ptr<ending> ending_;
  ending& ended() {
    if (!ending_)
      ending_ = std::make_unique<ending>();
    return *ending_;
  }
  static const std::string& no_text() {
    static const std::string empty;
    return empty;
  }
  const workflow_index& index() const noexcept { return *spec_->index; }
  /// Nodes in the order they completed, for compensating in reverse.
  std::vector<uint32_t> completion_order_;
  /// The items of each started map and how far along they are.
  struct map_state {
    nlohmann::json items;
    /// Each item's status ("m[3]" is item 3).
    std::vector<node_status> status;
    size_t next = 0;    ///< Next item never started.
    size_t done = 0;    ///< Items completed.
    size_t running = 0; ///< Items with an attempt executing.
    /// Items waiting for a retry at a known time, by that time.
    std::set<std::pair<int64_t, size_t>> retrying;
  };
  std::unordered_map<std::string, map_state> maps_;
  // -- work lists: what a decision may act on, so that no decision scans
  //    every node (kept by `track`, so replaying a journal rebuilds them) --
  /// Pending nodes whose readiness may have changed (an `after` node ended,
  /// or a fallback was called on), to be checked by the next decision.
  std::set<uint32_t> unsettled_;
  /// Pending nodes found ready, waiting for room under max_concurrency.
  std::set<uint32_t> startable_;
  /// Nodes waiting for a retry at a known time, by that time.
  std::set<std::pair<int64_t, uint32_t>> retries_;
  /// Nodes that fell back (they complete when their fallback does) and
  /// running maps, in the spec's order; few at any time.
  std::vector<uint32_t> watched_;
  /// How many nodes at the end of completion_order_ need no more
  /// compensating (none to run, or it ended); not journaled: rebuilt by the
  /// first compensation step.
  size_t compensations_ended_ = 0;
  /// How many times decisions checked whether a node may start.
  uint64_t readiness_checks_ = 0;
  /// Set once the run fails with compensations to run.
  bool compensating_ = false;
  bool paused_ = false;
  int32_t restarts_ = 0;
  int64_t run_deadline_ns_ = 0;
  size_t running_ = 0;
  /// Nodes that must complete for the run to complete (all but fallbacks),
  /// and how many have.
  size_t required_ = 0;
  size_t completed_ = 0;
};

} // namespace troupe::runtime
