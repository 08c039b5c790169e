#include "cluster/replication/mesh_transport.hpp"

#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <mutex>
#include <utility>

namespace troupe::cluster::replication {

struct mesh_transport::shared {
  std::mutex mu;
  replicator* target = nullptr;
  std::function<caf::actor(const std::string&)> peer_of;
  /// Messages dropped because their sender is not the member they name.
  uint64_t impostors = 0;
};

namespace {

caf::behavior replication_actor(caf::event_based_actor* self,
                                std::shared_ptr<mesh_transport::shared> sh) {
  return {
    [=](repl_atom, std::string& from, std::string& bytes) {
      // The mesh let it through from a proven peer; it must also come
      // from the node of the member it names, so that no member speaks
      // for another.
      auto& sender = self->current_sender();
      auto peer = sh->peer_of(from);
      std::lock_guard lock{sh->mu};
      if (!sender || !peer || sender->node() != peer.node()) {
        ++sh->impostors;
        return;
      }
      if (sh->target)
        sh->target->on_message(from, std::move(bytes));
    },
  };
}

} // namespace

mesh_transport::mesh_transport(
  caf::actor_system& sys, std::string member,
  std::function<caf::actor(const std::string&)> peer_of)
    : member_(std::move(member)), shared_(std::make_shared<shared>()) {
  shared_->peer_of = std::move(peer_of);
  actor_ = sys.spawn(replication_actor, shared_);
}

mesh_transport::~mesh_transport() {
  attach(nullptr);
  caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
}

void mesh_transport::attach(replicator* r) {
  std::lock_guard lock{shared_->mu};
  shared_->target = r;
}

void mesh_transport::send(const std::string& member, std::string bytes) {
  auto peer = shared_->peer_of(member);
  if (!peer)
    return;
  // Sent as the replication actor: the peer's mesh checks its node.
  caf::send_as(actor_, peer, repl_atom::value, member_, std::move(bytes));
}

} // namespace troupe::cluster::replication
