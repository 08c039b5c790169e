#pragma once

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/fwd.hpp>

#include <mutex>
#include <unordered_map>

namespace troupe::actors {

/// The live attempt actors by actor id, each with the run actor that owns
/// it, so that `inspect actor ID` asks one run instead of every run (run
/// actors are found by id through their supervisors). Entries hold weak
/// references and leave when their attempt terminates. Thread-safe.
class attempt_index {
 public:
  /// Files `attempt` until it terminates; `run` owns it. An attempt that
  /// has terminated already is not kept.
  void add(const caf::actor& attempt, caf::actor_addr run);

  /// The run actor owning the live attempt with this id; invalid when
  /// there is none.
  caf::actor_addr find(caf::actor_id id) const;

  /// Attempts filed now.
  size_t size() const;

 private:
  void remove(caf::actor_id id);

  mutable std::mutex mtx_;
  std::unordered_map<caf::actor_id, caf::actor_addr> runs_;
};

} // namespace troupe::actors
