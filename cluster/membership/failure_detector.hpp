#pragma once

// Failure detection: the mesh's links say which members look dead
// (suspect); one member, elected through etcd, revokes a suspect's lease,
// and the deletion of its key is the only verdict. Election: the key
// /troupe/<cluster>/detector, created if absent under the elector's own
// lease, so it goes with its holder and another member takes it. A revoke
// is guarded: the suspect's key is read first and its lease revoked only if
// it still holds the incarnation that was suspected, so a newer incarnation
// is never revoked. Any member may also revoke the holder itself when it
// is suspect (the holder cannot revoke itself). A member acts only on
// suspicions that arose while its own registration was held and not just
// after it was itself paused, and not when it lost its links to every
// other member (it is then the one cut off); and only a member linked to
// another one (or alone) stands for election.
//
// The detector is also this member's view of the cluster for `members`
// and /metrics: etcd's members, marked suspect when their link is lost,
// and members whose key was deleted shown as down for a while.

#include "cluster/coordination/coordinator.hpp"
#include "cluster/etcd/client.hpp"
#include "cluster/membership/etcd_coordinator.hpp"
#include "cluster/mesh/mesh.hpp"

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace troupe::cluster {

struct detector_options {
  std::string cluster;
  std::string member;
  etcd::client_options etcd;
  /// How often suspects and the election are looked at.
  std::chrono::milliseconds tick{50};
  /// A member that was itself stopped (SIGSTOP, a stalled VM) sees every
  /// link lost when it wakes, and must not take that for the others'
  /// death: when a thread that only sleeps finds a gap longer than `pause`
  /// between its wakes (the detector's own thread may be slow for other
  /// reasons, such as an etcd call), suspicions that arise within `settle`
  /// after it are ignored. The links it lost while
  /// stopped are reported as soon as it runs again (the peers closed them,
  /// or its own heartbeat check finds them silent), so `settle` can be
  /// short: half the mesh's connection timeout.
  std::chrono::milliseconds pause{500};
  std::chrono::milliseconds settle{500};
  /// How long a member whose key was deleted is still listed as down.
  std::chrono::milliseconds down_shown{10'000};
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
};

class failure_detector final : public coordinator {
 public:
  /// `membership` and `links` (the mesh's) must outlive stop().
  failure_detector(detector_options opts, const etcd_coordinator& membership,
                   std::function<std::map<std::string, peer_link>()> links);
  ~failure_detector() override;

  failure_detector(const failure_detector&) = delete;
  failure_detector& operator=(const failure_detector&) = delete;

  /// Starts the detector's thread.
  void start();

  /// Stops the thread; blocks for at most one etcd request's deadline.
  void stop();

  std::vector<member_info> members() const override;
  self_status self() const override;
  uint32_t partition_count() const override;
  std::string owner_of_partition(uint32_t p) const override;
  std::string claim_partition(uint32_t p) const override;
  std::vector<uint32_t> owned_partitions() const override;
  std::map<uint32_t, std::string> unavailable_partitions() const override;

  /// The key of the detector election in `cluster`.
  static std::string detector_key(const std::string& cluster);

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
