#pragma once

// The replicator's transport over the peer mesh (cluster/mesh): messages
// go as (repl_atom, member, bytes) from this member's replication actor to
// the peer's mesh actor, which passes them, from proven peers only, to the
// peer's replication actor (mesh_options::replicator). Built-in types only:
// no CAF type registration is needed.

#include "cluster/mesh/mesh.hpp"
#include "cluster/replication/replicator.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <functional>
#include <memory>
#include <string>

namespace troupe::cluster::replication {

class mesh_transport : public transport {
 public:
  /// `member` is this member's name; `peer_of(member)` returns that
  /// member's mesh actor while linked, else null (mesh::peer; thread-safe).
  /// Spawns the replication actor.
  mesh_transport(caf::actor_system& sys, std::string member,
                 std::function<caf::actor(const std::string&)> peer_of);
  /// Stops the replication actor.
  ~mesh_transport() override;

  mesh_transport(const mesh_transport&) = delete;
  mesh_transport& operator=(const mesh_transport&) = delete;

  /// The replication actor: give it as mesh_options::replicator.
  caf::actor actor() const { return actor_; }

  /// Where received messages go; null (before destroying the replicator)
  /// drops them.
  void attach(replicator* r);

  /// Sends to `member`'s mesh actor; dropped while not linked to it (the
  /// replicator retries).
  void send(const std::string& member, std::string bytes) override;

  struct shared;

 private:
  std::string member_;
  std::shared_ptr<shared> shared_;
  caf::actor actor_;
};

} // namespace troupe::cluster::replication
