#pragma once

#include "actors/node_metrics.hpp"
#include "actors/services.hpp"
#include "config/size.hpp"
#include "persistence/retention.hpp"
#include "runtime/model/workflow.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace troupe::actors {

/// One Troupe node inside this process: the journal store, the actor system
/// with its run supervisors, and the process runner for exec nodes.
class embedded_node {
 public:
  struct options {
    /// The RocksDB folder; created if missing.
    std::string data_dir = "data";
    /// fsync before a change counts as durable (durability = machine).
    bool sync = false;
    size_t max_batch = 512;
    size_t block_cache_mb = 8;
    /// Free space the data dir's filesystem must keep (storage.min_free):
    /// below it journal writes are held, so no attempt starts, and
    /// disk_low() says why. Default: none.
    config::free_space_floor min_free;
    /// Actor scheduler threads; 0: one per core, at least 2.
    size_t scheduler_threads = 0;
    /// Run supervisors; runs are spread over them by id.
    size_t supervisors = 4;
    engine_options engine;
    /// Node-wide notices (breaker state changes, ...); empty: dropped.
    std::function<void(const std::string&)> log;
    /// Where the node keeps its metrics; null: none kept. Must outlive the
    /// node.
    runtime::metrics::registry* metrics = nullptr;
    /// Called on the store's writer thread after each group commit with the
    /// appends it held and how long its write took; may be empty.
    std::function<void(size_t appends, std::chrono::nanoseconds took)>
      on_commit;
    /// How long a finished run is kept before it is deleted in the
    /// background (storage.retention); zero keeps every run. Default: zero
    /// here; `troupe` passes the configured value (7 days by default).
    std::chrono::nanoseconds retention{0};
    /// How long a deleted run's tombstone is kept. Default: 7 days.
    std::chrono::nanoseconds tombstone_retention = std::chrono::hours{7 * 24};
    /// Time between background collections. Default: 10 minutes.
    std::chrono::nanoseconds gc_interval = std::chrono::minutes{10};
    /// Adjusts the store's options before it opens: who holds it (troupe's
    /// commands), or for tests a fault injection hook or a free-space
    /// reading; may be empty.
    std::function<void(persistence::journal_store::options&)> tune_store;
    /// Adjusts the actor system's configuration before the system starts:
    /// a cluster member loads CAF's middleman there; may be empty.
    std::function<void(caf::actor_system_config&)> tune_system;
    /// The name exec children see as TROUPE_MEMBER (node.name, or the
    /// cluster member's name). Default: "local".
    std::string member = "local";
    /// The partition of a new run, given its idempotency key (empty when
    /// none): a cluster member puts a run with a key in the key's
    /// partition, and one without in a partition it owns. Called on the
    /// submitting thread; must be quick and thread-safe. Empty: any
    /// partition, or the key's among max_partitions (a node alone owns them
    /// all).
    std::function<uint32_t(const std::string& key)> partition_for;
  };

  /// What the node's actors share: a cluster member sets its placement
  /// there before it takes work.
  services_ptr shared_services() const { return svc_; }

  /// What recovery found.
  struct recovery {
    /// Runs resumed, in id order.
    std::vector<std::string> resumed;
    /// Runs that could not be resumed (e.g. a corrupt journal), each named
    /// in one message; they are marked failed.
    std::vector<std::string> problems;
  };

  /// Opens the store and starts the actors. On failure returns null and sets
  /// `error` to a clear reason.
  static std::unique_ptr<embedded_node> open(const options& opts,
                                             std::string& error);

  /// Stops every actor (run state is already journaled), kills remaining
  /// child processes and closes the store.
  ~embedded_node();

  embedded_node(const embedded_node&) = delete;
  embedded_node& operator=(const embedded_node&) = delete;

  caf::actor_system& system();

  persistence::journal_store& store();

  /// Resumes every unfinished run in the store; `observer` (may be invalid)
  /// receives their progress, and with `announce` a run_progress of event
  /// "resumed" from each run once its actor has rebuilt it. With `only`,
  /// just the runs it accepts (by id). Starts the retention thread. Call
  /// once, from a thread that is not a CAF worker.
  recovery recover(const caf::actor& observer, bool announce = false,
                   const std::function<bool(std::string_view run_id)>& only
                   = {});

  /// Resumes the unfinished runs of partition `partition` (of `count`,
  /// runtime/ids/partition.hpp) that are not live here already: a cluster
  /// member that has come to lead the partition, whose store holds the
  /// runs' journals as replicated. Like recover, for one partition.
  /// Blocking: not from a CAF worker.
  recovery resume_partition(uint32_t partition, uint32_t count,
                            const caf::actor& observer, bool announce = false);

  /// Stops the live runs of partition `partition` (of `count`), attempts
  /// and all, without journaling anything or restarting them: the member
  /// no longer leads the partition (its store refuses their writes), and
  /// the new leader resumes them. Returns how many were stopped; waits at
  /// most `timeout` for each supervisor. Blocking: not from a CAF worker.
  uint64_t release_partition(uint32_t partition, uint32_t count,
                             std::chrono::milliseconds timeout
                             = std::chrono::seconds{5});

  /// Journals a new run of `spec` (parsed from `source`, which the run is
  /// pinned to) with `inputs`, then starts it. Blocks until the submission is
  /// durable: call from a thread that is not a CAF worker. Returns the run
  /// id, or an empty string with `error` set.
  ///
  /// With an `idempotency_key` that a run already holds, nothing new is
  /// journaled or started. If that run was submitted with the same workflow
  /// (the same content: see runtime::same_workflow_text) and the same
  /// inputs, returns its id and sets `*existing`; else returns an empty
  /// string with `error` saying what differs and `*conflict` naming that
  /// run.
  std::string submit(const std::string& source,
                     const runtime::workflow_spec& spec,
                     const nlohmann::json& inputs, const caf::actor& observer,
                     std::string& error,
                     const std::string& idempotency_key = {},
                     bool* existing = nullptr, std::string* conflict = nullptr);

  /// Like `submit` without an idempotency key, but never blocks: returns the
  /// new run's id at once and starts the run once its submission is durable.
  /// `done` (may be empty) is then called on the store's writer thread with
  /// the run's id and an empty string, or the reason the submission failed
  /// (the run then never starts). Safe to call from an actor. Without
  /// `progress`, the observer hears only how the run ended.
  std::string submit_async(
    const std::string& source, const runtime::workflow_spec& spec,
    const nlohmann::json& inputs, const caf::actor& observer,
    std::function<void(const std::string& run_id, const std::string& error)>
      done,
    bool progress = true);

  /// Returns how a finished run ended, read from the store (its outputs, or
  /// for a failed run how compensation went); nothing while it runs or when
  /// it is unknown. Blocking: not from a CAF worker.
  std::optional<runtime::run_finished> finished_run(const std::string& run_id);

  /// Cancels a run.
  void cancel(const std::string& run_id, const std::string& reason);

  /// Pauses a run: no attempt starts until `resume`; running ones finish.
  void pause(const std::string& run_id, const std::string& reason);

  /// Resumes a paused run.
  void resume(const std::string& run_id, const std::string& who);

  /// Parsed workflows by source text, shared with the runs.
  spec_cache& specs();

  /// How long finished runs are kept (options::retention); zero: forever.
  std::chrono::nanoseconds retention() const { return opts_.retention; }

  /// Deletes the finished runs older than `older_than` now, on the node's
  /// retention thread (started by `recover`), and calls `done` there with
  /// what it removed; before `recover`, calls it at once with an error.
  void
  collect_now(std::chrono::nanoseconds older_than,
              std::function<void(persistence::journal_store::gc_report)> done);

  // -- inspection: each actor answers for itself; blocking, so never from a
  // CAF worker. Actors that do not answer within `timeout` are left out.

  /// The supervision tree: supervisors with their run actors (at most
  /// `limit` run actors described in full), breakers and limiters.
  nlohmann::json inspect_actors(size_t limit,
                                std::chrono::milliseconds timeout);

  /// A live run actor's account of its run; nothing when the run is not
  /// live on this node.
  std::optional<nlohmann::json> inspect_run(const std::string& run_id,
                                            std::chrono::milliseconds timeout);

  /// The actor with this id (a supervisor, run, breaker or limiter, or an
  /// attempt as its run sees it); nothing when none is live.
  std::optional<nlohmann::json>
  inspect_actor(uint64_t actor_id, std::chrono::milliseconds timeout);

  /// The breaker of `key`; nothing when no node used it yet.
  std::optional<nlohmann::json>
  inspect_breaker(const std::string& key, std::chrono::milliseconds timeout);

  /// Every concurrency limiter with its holders and queue.
  nlohmann::json inspect_limits(std::chrono::milliseconds timeout);

  /// Actors asked to describe themselves by the calls above so far.
  uint64_t inspect_asks() const { return inspect_asks_.load(); }

  /// Starts `node`'s next attempt of `run_id` now, skipping its backoff.
  void retry_now(const std::string& run_id, const std::string& node);

  /// Closes the breaker of `key`; false when there is none.
  bool reset_breaker(const std::string& key, const std::string& who);

  /// Crashes a run's actor on purpose (supervision tests and chaos).
  void crash(const std::string& run_id);

  /// Why the node takes no work now because its data dir is low on space
  /// (journal writes are held: no attempt starts; submissions should be
  /// refused), naming free space and the floor; nothing when space is fine.
  /// Quick: it reads the store's last reading.
  std::optional<std::string> disk_low();

  /// The store's last reading of free space (see journal_store::space).
  persistence::journal_store::disk_space disk_space();

  /// Stops the actors; later calls do nothing.
  void stop();

  /// Returns a new run id in `partition` (runtime/ids/partition.hpp):
  /// time-ordered, 21 characters of [0-9a-f-].
  static std::string new_run_id(uint32_t partition);

  /// The partitions, of `count`, the store holds runs of
  /// (runtime/ids/partition.hpp), in order: one pass over the run index.
  std::vector<uint32_t> partitions_held(uint32_t count);

  /// The partition of a new run (options::partition_for).
  uint32_t partition_for(const std::string& idempotency_key) const;

 private:
  embedded_node() = default;

  const caf::actor& supervisor_for(const std::string& run_id) const;

  /// Resumes the unfinished runs `only` accepts (by id; empty: all).
  recovery resume_if(const std::function<bool(std::string_view)>& only,
                     const caf::actor& observer, bool announce);

  /// Starts the retention thread (once).
  void start_retention();

  options opts_;
  std::unique_ptr<persistence::journal_store> store_;
  std::unique_ptr<process_runner> runner_;
  std::unique_ptr<http_client> http_;
  std::unique_ptr<timer_service> timers_;
  services_ptr svc_;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> system_;
  std::vector<caf::actor> supervisors_;
  /// Deletes finished runs after their retention; from `recover` on.
  std::unique_ptr<persistence::retention_worker> retention_;
  std::atomic<uint64_t> inspect_asks_{0};
  bool stopped_ = false;
};

/// Says how low `space` is, e.g. "the data dir's filesystem has 812 MiB
/// free, below storage.min_free (1 GiB)".
std::string
describe_low_disk(const persistence::journal_store::disk_space& space);

} // namespace troupe::actors
