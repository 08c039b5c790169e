#pragma once

// A cluster member's replicated partitions, tied together: the controller's
// records (cluster/membership/partition_map) tell the replicator
// (cluster/replication) who leads and follows each partition, and the
// partition agent (cluster/node) resumes a partition's runs on the member
// that comes to lead it, once its store has committed what it holds, and
// stops them on a member that no longer does. New runs go to partitions
// this member leads that have enough in-sync replicas; `troupe partitions`
// and /metrics read from here.

#include "cluster/membership/partition_map.hpp"
#include "cluster/mesh/mesh.hpp"
#include "cluster/node/node_service.hpp"
#include "cluster/node/partition_agent.hpp"
#include "cluster/replication/mesh_transport.hpp"
#include "cluster/replication/replicator.hpp"
#include "runtime/metrics/fwd.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

namespace troupe::actors {
class embedded_node;
}

namespace troupe::tools {

struct member_partitions_options {
  std::string member;
  /// cluster.partitions, cluster.replication, cluster.min_insync and
  /// cluster.replica_lag.
  uint32_t count = 0;
  uint32_t replication = 3;
  uint32_t min_insync = 2;
  std::chrono::milliseconds replica_lag{2000};
  /// cluster.log_retain_records.
  uint64_t log_retain_records = 10'000;
  runtime::metrics::registry* metrics = nullptr;
};

class member_partitions {
 public:
  explicit member_partitions(member_partitions_options opts);
  ~member_partitions();

  member_partitions(const member_partitions&) = delete;
  member_partitions& operator=(const member_partitions&) = delete;

  /// For the store's replication_options::on_records, before it opens.
  std::function<void(const std::vector<std::pair<uint32_t, uint64_t>>&)>
  records_callback() const;

  /// Makes the mesh transport, the replicator and the agent, once the node
  /// (its store opened with replication) exists and the member has its
  /// name, before the mesh: give
  /// transport_actor() as mesh_options::replicator.
  void start(actors::embedded_node& node, cluster::node_service& service,
             const std::string& member);

  /// The actor the mesh passes peers' replication messages to.
  caf::actor transport_actor() const;

  /// The mesh, once made (messages to peers go through it).
  void set_mesh(cluster::mesh* peers);

  /// The partition map, once the member joined (ISR changes go through
  /// it); null before it goes.
  void set_map(cluster::partition_map* map);

  /// membership_options::on_partition_change: a partition's record
  /// changed. Quick.
  void on_change(const cluster::partition_record& r);

  /// The partition of a new run: its key's, or one this member leads and
  /// may write, in turn (any it leads when none may be written: the
  /// submission is refused by admit()).
  uint32_t partition_for(const std::string& key);

  /// Why a submission with `key` cannot be taken here now, or "".
  std::string admit(const std::string& key) const;

  /// `troupe partitions`' answer; with `digest`, each partition also
  /// says what this member applied of it (journal_store::digest_partition).
  nlohmann::json view(std::optional<uint32_t> one, bool digest) const;

  /// Partitions led here and resumed.
  std::vector<uint32_t> led() const;

  /// Whether this member leads `p` now.
  bool leads(uint32_t p) const;

  /// Whether this member is a replica of `p` (or `p` has no record yet,
  /// or the member has not joined): whether its copy of `p` is kept.
  bool holds(uint32_t p) const;

  /// Stops the agent, the replicator and the transport, in that order.
  /// Idempotent.
  void stop();

 private:
  /// Resumes `p` once its store has committed what it held when it came
  /// to lead it; nothing when that does not come soon.
  std::optional<size_t> resume(uint32_t p);
  /// Calls lead() again, every second, for partitions led but waiting.
  void tick();

  member_partitions_options opts_;
  actors::embedded_node* node_ = nullptr;
  cluster::node_service* service_ = nullptr;
  std::atomic<cluster::mesh*> mesh_{nullptr};
  std::atomic<cluster::partition_map*> map_{nullptr};
  cluster::replication::records_hook hook_;
  std::unique_ptr<cluster::replication::mesh_transport> transport_;
  std::unique_ptr<cluster::replication::replicator> replicator_;
  std::unique_ptr<cluster::partition_agent> agent_;
  std::atomic<uint32_t> turn_{0};
  std::atomic<bool> stopping_{false};
  std::thread ticker_;
  /// TROUPE_TEST_HOLD_RESUME_FILE (tests): while this file exists, resume()
  /// finds every partition not ready, so that a takeover can be held at
  /// the point where its leader waits to resume. Empty: none.
  std::string hold_file_;
};

} // namespace troupe::tools
