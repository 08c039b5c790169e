#pragma once

#include "actors/attempt_index.hpp"
#include "actors/exec/process_runner.hpp"
#include "actors/http/http_client.hpp"
#include "persistence/journal_store.hpp"
#include "runtime/model/workflow.hpp"

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace troupe::actors {

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
};

/// Parsed workflow specs by source text, shared by the runs pinned to them.
class spec_cache {
 public:
  /// Returns the spec parsed from `source`, or null with `error` set.
  std::shared_ptr<const runtime::workflow_spec> get(const std::string& source,
                                                    std::string& error);

 private:
  std::mutex mtx_;
  std::unordered_map<std::string, std::shared_ptr<const runtime::workflow_spec>>
    specs_;
};

struct services;
struct node_metrics;

/// Node-wide actors by key (circuit breakers, concurrency limiters), each
/// spawned on first use.
class keyed_actors {
 public:
  /// Returns the actor for `key`, calling `spawn` to make it if new.
  caf::actor get(const std::string& key,
                 const std::function<caf::actor()>& spawn);

  /// Stops them all (node shutdown).
  void stop_all();

  /// Every actor with its key, in key order.
  std::vector<std::pair<std::string, caf::actor>> all();

 private:
  std::mutex mtx_;
  std::unordered_map<std::string, caf::actor> actors_;
};

/// What every actor of a node shares. Owned by the node, which outlives its
/// actors.
struct services {
  persistence::journal_store* store = nullptr;
  process_runner* runner = nullptr;
  http_client* http = nullptr;
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
};

using services_ptr = std::shared_ptr<services>;

/// Returns the text of an actor's exit reason: the message it was given
/// when there is one, else CAF's rendering.
std::string describe_exit(const caf::error& reason);

/// Returns the wall-clock time in nanoseconds since the Unix epoch.
int64_t now_ns();

} // namespace troupe::actors
