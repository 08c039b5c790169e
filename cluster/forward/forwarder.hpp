#pragma once

// Any member answers. A control request about a run that another member
// owns (status, watch, cancel, ...; a keyed submit whose key's partition
// another member owns) is forwarded over the peer mesh to that member,
// whose node service answers it; its answers travel back over the mesh to
// the client's connection here, so the client is never redirected. `list`
// asks every member and merges their pages; `gc` and `cancel_many` ask
// every member to act on the runs of the partitions it leads, and sum. A
// request that names no run, or a run this member owns, goes to the node
// service here unchanged.
//
// On the wire (CAF's middleman), only built-in types travel: atoms,
// integers and strings holding JSON (cluster/mesh/mesh.hpp), so no message
// type needs registering on both sides.

#include "cluster/control/control_server.hpp"
#include "cluster/coordination/coordinator.hpp"
#include "runtime/metrics/fwd.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace troupe::cluster {

class mesh;

struct forward_options {
  /// How long a forwarded request (all but watch) may wait for its answer;
  /// then it fails with owner_unavailable. Default: 30 s.
  std::chrono::milliseconds request_timeout{30'000};
  /// How long `list` waits for each other member's page; one that did not
  /// answer by then is reported in `missing_members`. Default: 5 s.
  std::chrono::milliseconds list_timeout{5'000};
  /// How long `gc` waits for each other member's collection; one that did
  /// not answer by then is reported in `failed_members`. Default: 5 min.
  std::chrono::milliseconds gc_timeout{300'000};
  /// Where forwarded requests are counted; may be null.
  runtime::metrics::registry* metrics = nullptr;
};

/// Merges one `list` page of each member (each {runs, next, scanned}, from
/// the same cursor and filters) into one page of at most `limit` runs in id
/// order, with the `next` from which every member continues: no further
/// than the least `next` of a member whose page stopped early.
nlohmann::json merge_list_pages(const std::vector<nlohmann::json>& pages,
                                size_t limit);

/// The node's control handler on a cluster member: forwards what another
/// member owns, hands the rest to `inner` (the node service). Serves the
/// requests other members forward here through `inner` too.
class forwarder final : public control_handler {
 public:
  /// `inner` and `io` (where `inner` is called) must outlive the forwarder.
  forwarder(caf::actor_system& sys, boost::asio::io_context& io,
            control_handler& inner, forward_options opts);
  ~forwarder() override;

  forwarder(const forwarder&) = delete;
  forwarder& operator=(const forwarder&) = delete;

  /// The actor that serves requests forwarded to this member: the mesh
  /// hands it those of proven peers (mesh_options::forwarder).
  caf::actor server() const;

  /// Starts forwarding through `peers`, with run ownership and member
  /// states from `members`; until then every request goes to `inner`. Both
  /// must stay valid until the forwarder is destroyed or `io` stops running
  /// (after stop(), they still tell which runs other members own).
  void start(mesh& peers, const coordinator& members);

  /// Forwards nothing more: requests about runs other members own, and
  /// those waiting for another member's answer, fail with `draining` (those
  /// served here for other members are still answered, by the node service
  /// as it drains). Blocks until a partition claim under way has ended.
  /// Idempotent.
  void stop();

  void handle(const request_ptr& req, const std::string& type,
              const nlohmann::json& msg) override;

  /// The forwarder's state, shared with its actors.
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
