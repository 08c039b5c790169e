#include "actors/attempt_index.hpp"

#include <caf/abstract_actor.hpp>

namespace troupe::actors {

void attempt_index::add(const caf::actor& attempt, caf::actor_addr run) {
  if (!attempt)
    return;
  auto id = attempt.id();
  {
    std::lock_guard guard{mtx_};
    runs_[id] = std::move(run);
  }
  // Runs at once, on this thread, when the attempt is gone already. The
  // index outlives every actor of its node.
  attempt->attach_functor([this, id] { remove(id); });
}

caf::actor_addr attempt_index::find(caf::actor_id id) const {
  std::lock_guard guard{mtx_};
  auto i = runs_.find(id);
  return i == runs_.end() ? caf::actor_addr{} : i->second;
}

size_t attempt_index::size() const {
  std::lock_guard guard{mtx_};
  return runs_.size();
}

void attempt_index::remove(caf::actor_id id) {
  std::lock_guard guard{mtx_};
  runs_.erase(id);
}

} // namespace troupe::actors
