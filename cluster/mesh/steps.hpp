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
#include "runtime/metrics/fwd.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

class mesh;

/// A member an attempt may run on, as the owner sees it.
struct placement_candidate {
  std::string name;
  std::map<std::string, std::string> labels;
  /// Its capacity for the attempt's kind; -1: no bound.
  int64_t capacity = -1;
  /// Attempts of any kind in flight there: as it reported them, plus this
  /// owner's sends it has not reported yet.
  int64_t in_flight = 0;
  /// Attempts of the attempt's kind in flight there, counted alike.
  int64_t in_flight_kind = 0;
};

/// choose_member's answers when it picks nobody.
constexpr int no_member_fits = -1;
constexpr int no_member_has_room = -2;

/// Returns the index in `members` (sorted by name) of the member that runs
/// an attempt placed `placement` ("spread" or "least_loaded") with the
/// label constraints `on`: one with room for the attempt's kind (under its
/// capacity). Returns no_member_fits when no member carries the labels, and
/// no_member_has_room when those that do are all at capacity (the attempt
/// then waits). `turn` advances spread's rotation.
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
  /// This member's capacity by kind (cluster.capacity): it bounds every
  /// attempt it runs, its own runs' and other members'. A kind not listed:
  /// no bound.
  std::map<std::string, int64_t> capacity;
  /// How often this member reports its load to the members it is linked
  /// to; it also reports soon after a change (at most every `watch`).
  std::chrono::milliseconds report_every{250};
  /// How often the membership is looked at for members declared down, and
  /// a waiting attempt looks for room again.
  std::chrono::milliseconds watch{50};
  /// The runs this member owns now (unfinished runs in its store); null:
  /// not reported.
  std::function<int64_t()> runs_owned;
  /// Where troupe_remote_attempts_total is kept; may be null.
  runtime::metrics::registry* metrics = nullptr;
};

/// Places the attempts of this member's runs (services::place), runs the
/// attempts other members place here (its executor), and reports this
/// member's load to the others over the mesh.
///
/// Placement: an attempt goes to a member that is up, linked, carries the
/// node's `on:` labels and has room for its kind, by the node's placement.
/// Load is what each member last reported (every `report_every`, and soon
/// after a change) plus this owner's sends it has not reported yet. When
/// every member that fits is at capacity, the attempt waits (it uses no
/// retry; its timeout counts) and looks again every `watch` until one has
/// room. A member's executor still refuses an attempt past its capacity
/// with the retryable `member_full` (a report may be late).
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

  /// This member's step executor: where the mesh passes proven peers'
  /// step_atom requests (mesh_options::executor). It refuses an attempt
  /// with the retryable `member_fenced` while this member is fenced
  /// (svc->fence), `member_leaving` once it leaves, and `member_full` past
  /// its capacity.
  caf::actor executor() const;

  /// The actor that takes the load reports of the other members
  /// (mesh_options::loads).
  caf::actor reports() const;

  /// This member is leaving the cluster: its executor takes no new attempt
  /// and its own runs start none (they wait; they resume at its next
  /// start). Attempts running go on.
  void leave();

  /// Attempts running on this member now (its own runs' and others').
  int64_t running() const;

  /// The load of each member as this member knows it, by name: for itself
  /// its own count, for the others their last report. Each is
  /// {"load": {"in_flight", "capacity" (null: no bound), "kinds": {kind:
  /// {"in_flight", "capacity"}}}, "runs": runs owned, "reported_ms_ago"}.
  std::map<std::string, nlohmann::json> loads() const;

  /// The hook to set as services::place.
  std::function<caf::actor(caf::event_based_actor*, runtime::attempt_spec,
                           const runtime::node_spec&)>
  hook();

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
