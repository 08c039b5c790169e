#pragma once

// Steps spread across members. Every member runs a step executor behind its
// mesh actor: it runs an attempt of exec, http or a plugin kind for the
// member that owns the run, within its capacity per kind, and answers the
// attempt's result. The owner's run actors place each attempt through a
// step_placer: here, or on another member that is up, linked, carries the
// node's labels and has room; a remote attempt is an actor of the owner
// that asks the member's executor and watches the member's mesh actor, so
// that an attempt on a member that is lost fails at once as `member_down`;
// so does one on a member that etcd declares down (its key deleted, or a new
// incarnation registered) while its link still stands.

#include "actors/services.hpp"
#include "cluster/coordination/coordinator.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

class mesh;

/// Spawns this member's step executor. `capacity` bounds the attempts of
/// each kind it runs at once for other members (a kind not listed: no
/// bound); one over it is refused with the retryable error kind
/// `member_full`. While this member is fenced (svc->fence: not joined, its
/// lease may be gone) it refuses every attempt with the retryable
/// `member_fenced`: the owner may have placed it elsewhere already.
caf::actor spawn_step_executor(caf::actor_system& sys, actors::services_ptr svc,
                               std::map<std::string, int64_t> capacity);

/// A member an attempt may run on, as the owner sees it.
struct placement_candidate {
  std::string name;
  std::map<std::string, std::string> labels;
  /// Its capacity for the attempt's kind; -1: no bound.
  int64_t capacity = -1;
  /// Attempts of any kind this owner has in flight there.
  int64_t in_flight = 0;
  /// Attempts of the attempt's kind this owner has in flight there.
  int64_t in_flight_kind = 0;
};

/// Returns the index in `members` (sorted by name) of the member that runs
/// an attempt placed `placement` ("spread" or "least_loaded") with the
/// label constraints `on`, or -1 when no member carries the labels. Members
/// with room come first; when all are full the least loaded is taken (its
/// executor refuses, and the node's retry policy tries again). `turn`
/// advances spread's rotation.
int choose_member(const std::string& placement,
                  const std::map<std::string, std::string>& on,
                  const std::vector<placement_candidate>& members,
                  uint64_t& turn);

struct placer_options {
  /// This member's name.
  std::string member;
  /// Placement of a node that names none (cluster.placement).
  std::string default_placement = "least_loaded";
  /// Added to a node's timeout for a remote attempt's request deadline.
  std::chrono::milliseconds margin{10'000};
  /// A remote attempt's request deadline when its node has no timeout.
  std::chrono::milliseconds no_timeout_deadline = std::chrono::hours{24};
};

/// Places the attempts of this member's runs (services::place).
class step_placer {
 public:
  step_placer(caf::actor_system& sys, placer_options opts,
              actors::services_ptr svc);
  ~step_placer();

  step_placer(const step_placer&) = delete;
  step_placer& operator=(const step_placer&) = delete;

  /// Starts placing on the members `members` lists, linked through `peers`;
  /// until then, and after stop(), every attempt runs here. Both must stay
  /// valid until stop().
  void start(std::function<std::vector<member_info>()> members,
             std::function<std::string()> self_incarnation, mesh& peers);

  /// Places every attempt here from now on. Idempotent.
  void stop();

  /// The hook to set as services::place.
  std::function<caf::actor(caf::event_based_actor*, runtime::attempt_spec,
                           const runtime::node_spec&)>
  hook();

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
