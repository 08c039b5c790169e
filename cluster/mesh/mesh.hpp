#pragma once

// The peer mesh: every member publishes a gate on cluster.listen through
// CAF's middleman, and links to every other member it sees in the
// membership. A link is made once per member and incarnation: the member
// whose name sorts first connects (with a deadline, through the
// middleman's own actor, so no scheduler thread blocks), both prove the
// cluster secret to each other through the gate (HMAC-SHA256 challenges),
// and each then monitors the other's mesh actor. A link that drops (the
// process died: milliseconds; its heartbeats stopped: the connection
// timeout) makes the peer `suspect`; a new link makes it `connected`
// again. The mesh only reports: etcd's lease decides who is in the
// cluster (cluster/membership).

#include "cluster/coordination/coordinator.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/node_id.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::cluster {

/// Asks a member to run an attempt for a run it does not own:
/// (step_atom, attempt_spec, owner member, owner incarnation), answered
/// with an attempt_result. Sent to the member's mesh actor, which passes
/// it on to its step executor only from a peer that proved the secret.
using step_atom = caf::atom_constant<caf::atom("m_step")>;

/// A control request forwarded to the member that owns its run:
/// (forward_atom, id, type, body JSON, subject, role, token expiry (s),
/// requesting member). Sent to the owner's mesh actor, which passes it on
/// to its forwarding server (cluster/forward) only from a peer that proved
/// the secret; answers go back to the sender as forward_answer_atom
/// messages.
using forward_atom = caf::atom_constant<caf::atom("m_fwd")>;

/// The requester no longer wants the answers to forwarded request `id`
/// (its client went away): (forward_close_atom, id), through the mesh actor.
using forward_close_atom = caf::atom_constant<caf::atom("m_fwd_cls")>;

/// One answer to a forwarded request: (forward_answer_atom, id, kind
/// ("reply", "fail", "event" or "end"), body JSON), from the owner's
/// forwarding server to the requester's relay.
using forward_answer_atom = caf::atom_constant<caf::atom("m_fwd_ans")>;

/// A member's load report: (load_atom, member, JSON body), built-in types
/// only. Sent to the peers' mesh actors, which pass it on to their placer
/// (mesh_options::loads) only from a peer that proved the secret.
using load_atom = caf::atom_constant<caf::atom("m_load")>;

/// A replication message: (repl_atom, sending member, bytes), built-in
/// types only (cluster/replication encodes the bytes). Sent by the
/// sender's replication actor to the peers' mesh actors, which pass it on
/// to their replication actor (mesh_options::replicator) only from a peer
/// that proved the secret.
using repl_atom = caf::atom_constant<caf::atom("m_repl")>;

/// Loads CAF's middleman into `cfg` with heartbeats every `heartbeat` and a
/// link declared lost after `timeout` of silence. Only a cluster member
/// calls it: a node alone loads no middleman.
void configure_mesh(caf::actor_system_config& cfg,
                    std::chrono::milliseconds heartbeat,
                    std::chrono::milliseconds timeout);

struct mesh_options {
  std::string cluster;
  std::string member;
  /// The cluster secret (never logged).
  std::string secret;
  /// Where the gate listens; port 0 picks a free one.
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  /// Mutual TLS on every link (configure_mesh_tls was called): the gate is
  /// published and peers are reached through libcaf_openssl.
  bool tls = false;
  /// Deadline of one connect and of each step of the challenge.
  std::chrono::milliseconds deadline{1000};
  /// How often the membership is read for new members and incarnations.
  std::chrono::milliseconds poll{50};
  std::function<void(const std::string&)> info;
  std::function<void(const std::string&)> warn;
  /// Where proven peers' step_atom requests go (cluster/mesh/steps); null:
  /// they are dropped.
  caf::actor executor;
  /// Where proven peers' forward_atom and forward_close_atom messages go
  /// (cluster/forward); null: they are dropped.
  caf::actor forwarder;
  /// Where proven peers' load_atom reports go (cluster/mesh/steps); null:
  /// they are dropped.
  caf::actor loads;
  /// Where proven peers' repl_atom messages go (cluster/replication);
  /// null: they are dropped.
  caf::actor replicator;
};

/// How this member's link to a peer stands.
struct peer_link {
  /// The peer's incarnation the link is for.
  std::string incarnation;
  /// "connecting", "connected", "suspect" (the link dropped) or "refused"
  /// (the peer did not prove the cluster secret).
  std::string state = "connecting";
  /// Why, for suspect and refused.
  std::string reason;
  /// When it entered that state, ms since the epoch.
  int64_t since_ms = 0;
};

class mesh {
 public:
  /// `sys` must have the middleman loaded (configure_mesh).
  mesh(caf::actor_system& sys, mesh_options opts);
  ~mesh();

  mesh(const mesh&) = delete;
  mesh& operator=(const mesh&) = delete;

  /// Publishes the gate; blocks the caller (not a scheduler thread) briefly.
  /// Returns why it could not, or "".
  std::string listen();

  /// The port the gate listens on, once listen() succeeded.
  uint16_t port() const;

  /// Starts linking to the members `members` lists (read every `poll`);
  /// `self` gives this member's current incarnation. Both must be quick
  /// and thread-safe, and stay valid until stop().
  void start(std::function<std::vector<member_info>()> members,
             std::function<std::string()> self_incarnation);

  /// Closes every link and stops the mesh's actors. Idempotent.
  void stop();

  /// The links to the other members now, by member name.
  std::map<std::string, peer_link> links() const;

  /// The mesh actor of `member` while linked to it (send it step_atom
  /// requests and monitor it), else null.
  caf::actor peer(const std::string& member) const;

  /// Whether CAF node `n` proved the cluster secret (or is this node).
  bool is_proven(const caf::node_id& n) const;

  struct shared;

 private:
  caf::actor_system& sys_;
  mesh_options opts_;
  std::shared_ptr<shared> shared_;
  caf::actor gate_;
  caf::actor actor_;
  uint16_t port_ = 0;
};

} // namespace troupe::cluster
