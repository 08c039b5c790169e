#pragma once

#include "actors/exec/process_runner.hpp"
#include "persistence/journal_store.hpp"
#include "runtime/model/workflow.hpp"

#include <caf/error.hpp>

#include <chrono>
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

/// What every actor of a node shares. Owned by the node, which outlives its
/// actors.
struct services {
  persistence::journal_store* store = nullptr;
  process_runner* runner = nullptr;
  spec_cache specs;
  engine_options options;
};

using services_ptr = std::shared_ptr<services>;

/// Returns the text of an actor's exit reason: the message it was given
/// when there is one, else CAF's rendering.
std::string describe_exit(const caf::error& reason);

/// Returns the wall-clock time in nanoseconds since the Unix epoch.
int64_t now_ns();

} // namespace troupe::actors
