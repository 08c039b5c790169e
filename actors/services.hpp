#pragma once

#include "actors/attempt_index.hpp"
#include "actors/exec/process_runner.hpp"
#include "actors/http/http_client.hpp"
#include "persistence/journal_store.hpp"
#include "runtime/model/workflow.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/diagnostic.hpp"

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace troupe::actors {

/// Default bounds of the spec cache (see spec_cache).
inline constexpr size_t spec_cache_default_entries = 1000;
inline constexpr size_t spec_cache_default_bytes = size_t{64} << 20;

/// Tunables of the engine, from the [engine] and [exec] configuration.
struct engine_options {
  /// Cap on an exec node's captured stdout and stderr, each. Default: 1 MiB.
  size_t max_output_bytes = 1 << 20;
  /// Between SIGTERM and SIGKILL when an exec attempt is stopped. Default: 2s.
  std::chrono::milliseconds kill_grace{2000};
  /// Restarts of one run actor allowed within restart_window. Default: 5.
  int32_t max_restarts = 5;
  /// Default: 60s.
  std::chrono::milliseconds restart_window{60'000};
  /// Delay before the first restart; doubles with each. Default: 100ms.
  std::chrono::milliseconds restart_backoff{100};
  /// How long a circuit breaker or concurrency limiter with nothing to do
  /// (closed and its window empty, no calls, slots or waiters) lives on
  /// before it stops; its key's next use starts a fresh one. Zero: never.
  /// Default: 60s.
  std::chrono::milliseconds keyed_idle{60'000};
  /// Most parsed workflows kept for reuse. Default: 1000.
  size_t spec_cache_entries = spec_cache_default_entries;
  /// Most workflow text behind them. Default: 64 MiB.
  size_t spec_cache_bytes = spec_cache_default_bytes;
};

/// Parsed workflow specs by source text, shared by the runs pinned to them.
/// Bounded: past `max_entries` specs or `max_bytes` of source text, the
/// least recently used are dropped. A run holds its spec by shared_ptr, so
/// a dropped spec lives on until its last run ends; a later `get` of the
/// same text parses it again.
class spec_cache {
 public:
  /// Returns the spec parsed from `source`, or null with `error` set.
  std::shared_ptr<const runtime::workflow_spec> get(const std::string& source,
                                                    std::string& error);

  /// As above, with every problem of an invalid workflow in `errors` (in
  /// file order), for callers that report them all. Only valid specs are
  /// kept: invalid text is parsed again on each call.
  std::shared_ptr<const runtime::workflow_spec>
  get(const std::string& source, runtime::diagnostics& errors);

  /// Sets the bounds (each at least 1) and drops what no longer fits.
  void set_limits(size_t max_entries, size_t max_bytes);

  /// Specs kept now.
  size_t size();

  /// Bytes of source text kept now.
  size_t bytes();

 private:
  struct entry {
    std::shared_ptr<const runtime::workflow_spec> spec;
    /// Its place in `lru_`.
    std::list<const std::string*>::iterator use;
  };

  /// Drops the least recently used until the bounds hold. mtx_ held.
  void trim();

  std::mutex mtx_;
  std::unordered_map<std::string, entry> specs_;
  /// Keys of `specs_`, most recently used first.
  std::list<const std::string*> lru_;
  size_t bytes_ = 0;
  size_t max_entries_ = spec_cache_default_entries;
  size_t max_bytes_ = spec_cache_default_bytes;
};

struct services;
struct node_metrics;
class timer_service;

/// Node-wide actors by key (circuit breakers, concurrency limiters), each
/// spawned on first use. Keys may be templated (one per customer, ...), so
/// an actor with nothing left to do retires, and the next use of its key
/// spawns a fresh one.
class keyed_actors {
 public:
  /// Returns the actor for `key`, calling `spawn` to make it if new.
  caf::actor get(const std::string& key,
                 const std::function<caf::actor()>& spawn);

  /// Forgets `key` if it still names `actor`: an idle actor calls this, then
  /// quits, so no caller is given it afterwards. A caller given it before
  /// sees its request fail and asks again.
  void retire(const std::string& key, const caf::actor_addr& actor);

  /// Stops them all (node shutdown).
  void stop_all();

  /// Every actor with its key, in key order.
  std::vector<std::pair<std::string, caf::actor>> all();

 private:
  /// Shared with the actors' exit hooks, which may outlive this object.
  struct table {
    std::mutex mtx;
    std::unordered_map<std::string, caf::actor> actors;
  };
  std::shared_ptr<table> table_ = std::make_shared<table>();
};

/// What every actor of a node shares. Owned by the node, which outlives its
/// actors.
struct services {
  persistence::journal_store* store = nullptr;
  process_runner* runner = nullptr;
  http_client* http = nullptr;
  /// Delayed messages that do not keep their receivers alive; null: run
  /// actors use CAF's delayed_send.
  timer_service* timers = nullptr;
  spec_cache specs;
  keyed_actors breakers;
  keyed_actors limiters;
  /// Live attempt actors by id, with their runs (inspect actor).
  attempt_index attempts;
  engine_options options;
  /// Where node-wide notices go (breaker state changes, ...); may be empty.
  std::function<void(const std::string&)> log;
  /// The node's metrics; null when nobody scrapes them.
  std::shared_ptr<node_metrics> metrics;
  /// The name exec children see as TROUPE_MEMBER: the cluster member's
  /// name, else the node's.
  std::string member = "local";
  /// Where a cluster member runs an attempt of exec, http or a plugin kind:
  /// spawns, from the run actor `run` and linked to it, the actor that
  /// stands for the attempt (which answers an attempt_result and takes a
  /// halt_attempt, as an attempt actor does). Null: every attempt runs here.
  std::function<caf::actor(caf::event_based_actor* run,
                           runtime::attempt_spec spec,
                           const runtime::node_spec& node)>
    place;
  /// Why this cluster member must not start work now (it is fenced: not
  /// joined to its cluster, its lease may have expired), or empty when it
  /// may. Quick, never blocks. A run actor asks it before it starts an
  /// attempt that does work; a fenced attempt waits and asks again. Null:
  /// never fenced (a node alone, `troupe run`).
  std::function<std::string()> fence;
  /// Runs with an actor on this node now: its unfinished runs (running or
  /// paused), counted by the run supervisors. A cluster member reports it
  /// as the runs it owns.
  std::atomic<int64_t> runs_live{0};
};

using services_ptr = std::shared_ptr<services>;

/// Returns the text of an actor's exit reason: the message it was given
/// when there is one, else CAF's rendering.
std::string describe_exit(const caf::error& reason);

/// Returns the wall-clock time in nanoseconds since the Unix epoch.
int64_t now_ns();

/// Names the work of `node` in run `run_id`: the holder of its concurrency
/// slot and the key of its exec processes, so that a limiter can tell when
/// the processes of a holder whose run actor died are gone.
std::string work_key(const std::string& run_id, const std::string& node);

} // namespace troupe::actors
