#include "cluster/mesh/mesh.hpp"

#include "cluster/mesh/secret.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include <algorithm>
#include <mutex>
#include <set>

namespace troupe::cluster {

namespace {

using hello_atom = caf::atom_constant<caf::atom("m_hello")>;
using prove_atom = caf::atom_constant<caf::atom("m_prove")>;
using up_atom = caf::atom_constant<caf::atom("m_up")>;
using poll_atom = caf::atom_constant<caf::atom("m_poll")>;
using refused_atom = caf::atom_constant<caf::atom("m_refused")>;

using clock = std::chrono::steady_clock;

/// Challenges a gate keeps at once, and how long each stays valid.
constexpr size_t max_pending = 256;
constexpr auto pending_ttl = std::chrono::seconds{10};

/// Between connection attempts to a peer: from the first to the last.
constexpr auto first_backoff = std::chrono::milliseconds{50};
constexpr auto max_backoff = std::chrono::milliseconds{1000};
/// How long the member whose name sorts last waits for a link before it
/// connects itself.
constexpr auto fallback_after = std::chrono::milliseconds{1000};
/// Before trying again a peer that did not prove the secret.
constexpr auto refused_backoff = std::chrono::seconds{5};

/// What a proof covers: who proves (`role` "gate" or "peer", its cluster
/// and name) in answer to which challenge, with its own nonce, so a proof
/// is good for one exchange only.
std::string proof_text(const char* role, const std::string& cluster,
                       const std::string& name, const std::string& challenge,
                       const std::string& own_nonce) {
  return std::string{"troupe-mesh-v1|"} + role + "|" + cluster + "|" + name
         + "|" + challenge + "|" + own_nonce;
}

std::pair<std::string, uint16_t> split_address(const std::string& a) {
  auto colon = a.rfind(':');
  if (colon == std::string::npos)
    return {a, 0};
  auto host = a.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(a.substr(colon + 1));
  } catch (...) {
    port = 0;
  }
  return {host, static_cast<uint16_t>(port > 0 && port < 65536 ? port : 0)};
}

} // namespace

struct mesh::shared {
  mutable std::mutex mtx;
  /// CAF nodes that proved the cluster secret (to_string of their node id).
  std::set<std::string> proven;
  /// The links as the mesh actor last published them.
  std::map<std::string, peer_link> links;
  /// The mesh actors of the members linked now.
  std::map<std::string, caf::actor> handles;
  /// Nodes whose unproven messages were logged once already.
  std::set<std::string> dropped_logged;
  std::function<std::vector<member_info>()> members;
  std::function<std::string()> incarnation;

  bool is_proven(const caf::node_id& n) const {
    std::lock_guard guard{mtx};
    return proven.count(caf::to_string(n)) > 0;
  }
  void prove(const caf::node_id& n) {
    std::lock_guard guard{mtx};
    proven.insert(caf::to_string(n));
  }
  std::string self_incarnation() const {
    std::lock_guard guard{mtx};
    return incarnation ? incarnation() : std::string{};
  }
  /// Whether the current message comes from this node or a proven one;
  /// logs the first message dropped from each other node.
  bool accept(caf::scheduled_actor* self, const mesh_options& opts) {
    auto& sender = self->current_sender();
    if (sender && (sender->node() == self->node() || is_proven(sender->node())))
      return true;
    auto who = sender ? caf::to_string(sender->node()) : std::string{"?"};
    bool first = false;
    {
      std::lock_guard guard{mtx};
      if (dropped_logged.size() < 1024)
        first = dropped_logged.insert(who).second;
    }
    if (first && opts.warn)
      opts.warn("dropped a message from node " + who
                + ", which has not proven the cluster secret (logged once)");
    return false;
  }
};

namespace {

struct gate_state {
  struct pending {
    std::string name;
    std::string their_nonce;
    std::string our_nonce;
    clock::time_point at;
  };
  /// Challenges sent, by the asking node.
  std::map<std::string, pending> pending;
  std::set<std::string> logged;
  static inline const char* name = "troupe.mesh_gate";
};

/// The published actor: answers a hello with a challenge and its own proof,
/// and a proof with the mesh actor's handle; nothing else gets through.
caf::behavior gate_impl(caf::stateful_actor<gate_state>* self,
                        std::shared_ptr<mesh::shared> sh, mesh_options opts,
                        caf::actor mesh_actor) {
  self->set_default_handler(caf::drop);
  return {
    [=](hello_atom, const std::string& cluster, const std::string& name,
        const std::string& incarnation,
        const std::string& nonce) -> caf::message {
      (void)incarnation;
      auto refuse = [](std::string why) {
        return caf::make_message(false, std::move(why), std::string{},
                                 std::string{}, std::string{}, std::string{});
      };
      auto& sender = self->current_sender();
      if (!sender)
        return refuse("anonymous hello");
      if (cluster != opts.cluster)
        return refuse("this is member '" + opts.member + "' of cluster '"
                      + opts.cluster + "', not of '" + cluster + "'");
      if (nonce.size() != 32 || name.empty() || name.size() > 256)
        return refuse("malformed hello");
      auto& st = self->state;
      auto now = clock::now();
      for (auto i = st.pending.begin(); i != st.pending.end();)
        i = now - i->second.at > pending_ttl ? st.pending.erase(i) : ++i;
      if (st.pending.size() >= max_pending)
        return refuse("too many handshakes in progress; try again");
      auto ours = random_nonce();
      st.pending[caf::to_string(sender->node())] = {name, nonce, ours, now};
      auto proof = hmac_hex(opts.secret, proof_text("gate", opts.cluster,
                                                    opts.member, nonce, ours));
      return caf::make_message(true, std::string{}, opts.member,
                               sh->self_incarnation(), ours, proof);
    },
    [=](prove_atom, const std::string& proof) -> caf::message {
      auto refuse = [](std::string why) {
        return caf::make_message(false, std::move(why), caf::actor{});
      };
      auto& sender = self->current_sender();
      if (!sender)
        return refuse("anonymous proof");
      auto key = caf::to_string(sender->node());
      auto& st = self->state;
      auto i = st.pending.find(key);
      if (i == st.pending.end())
        return refuse("no challenge pending: say hello first");
      auto p = std::move(i->second);
      st.pending.erase(i);
      auto expected
        = hmac_hex(opts.secret, proof_text("peer", opts.cluster, p.name,
                                           p.our_nonce, p.their_nonce));
      if (!same_proof(proof, expected)) {
        if (st.logged.size() < 1024 && st.logged.insert(p.name).second
            && opts.warn)
          opts.warn("refused a peer calling itself member '" + p.name
                    + "': it did not prove the cluster secret (is "
                      "TROUPE_CLUSTER_SECRET the same on every member?)");
        self->send(mesh_actor, refused_atom::value, p.name,
                   std::string{"did not prove the cluster secret"});
        return refuse("the proof of the cluster secret did not match");
      }
      sh->prove(sender->node());
      return caf::make_message(true, std::string{}, mesh_actor);
    },
  };
}

struct peer_entry {
  std::string incarnation;
  std::string address;
  std::string state = "connecting";
  std::string reason;
  int64_t since_ms = now_ms();
  caf::actor mesh;
  bool in_flight = false;
  /// Bumped by every attempt, so a late answer to an old one is ignored.
  uint64_t attempt = 0;
  clock::time_point next_try{};
  std::chrono::milliseconds backoff = first_backoff;
  std::set<std::string> logged;
};

struct mesh_state {
  std::map<std::string, peer_entry> peers;
  static inline const char* name = "troupe.mesh";
};

using mesh_actor_ptr = caf::stateful_actor<mesh_state>*;

void set_state(peer_entry& p, std::string state, std::string reason) {
  if (p.state != state)
    p.since_ms = now_ms();
  p.state = std::move(state);
  p.reason = std::move(reason);
}

void publish_view(mesh_actor_ptr self, mesh::shared& sh) {
  std::map<std::string, peer_link> view;
  std::map<std::string, caf::actor> handles;
  for (auto& [name, p] : self->state.peers) {
    view[name] = {p.incarnation, p.state, p.reason, p.since_ms};
    if (p.state == "connected" && p.mesh)
      handles[name] = p.mesh;
  }
  std::lock_guard guard{sh.mtx};
  sh.links = std::move(view);
  sh.handles = std::move(handles);
}

/// Logs `line` once per peer incarnation under `tag`.
void log_once(peer_entry& p, const std::string& tag,
              const std::function<void(const std::string&)>& sink,
              const std::string& line) {
  if (sink && p.logged.size() < 64 && p.logged.insert(tag).second)
    sink(line);
}

/// An attempt failed short of a proof: try again after the backoff.
void attempt_failed(mesh_actor_ptr self, const mesh_options& opts,
                    mesh::shared& sh, const std::string& name, uint64_t attempt,
                    const std::string& why) {
  auto i = self->state.peers.find(name);
  if (i == self->state.peers.end() || i->second.attempt != attempt)
    return;
  auto& p = i->second;
  p.in_flight = false;
  p.next_try = clock::now() + p.backoff;
  p.backoff = std::min(p.backoff * 2, max_backoff);
  if (p.state == "connecting")
    p.reason = why;
  log_once(p, "fail:" + p.incarnation, opts.info,
           "cannot link to member '" + name + "' yet (" + why
             + "); trying again");
  publish_view(self, sh);
}

void attempt_refused(mesh_actor_ptr self, const mesh_options& opts,
                     mesh::shared& sh, const std::string& name,
                     uint64_t attempt, const std::string& why) {
  auto i = self->state.peers.find(name);
  if (i == self->state.peers.end() || i->second.attempt != attempt)
    return;
  auto& p = i->second;
  p.in_flight = false;
  p.next_try = clock::now() + refused_backoff;
  set_state(p, "refused", why);
  log_once(p, "refused:" + p.incarnation, opts.warn,
           "refused member '" + name + "' at " + p.address + ": " + why
             + (why.find("TLS") == std::string::npos
                  ? " (is TROUPE_CLUSTER_SECRET the same on every member?)"
                  : ""));
  publish_view(self, sh);
}

/// Connects to `name`'s gate, proves the secret both ways and monitors its
/// mesh actor. Every step has the deadline; nothing blocks.
void connect(mesh_actor_ptr self, const mesh_options& opts,
             std::shared_ptr<mesh::shared> sh, const std::string& name) {
  auto& p = self->state.peers[name];
  p.in_flight = true;
  auto attempt = ++p.attempt;
  auto [host, port] = split_address(p.address);
  if (host.empty() || port == 0)
    return attempt_failed(self, opts, *sh, name, attempt,
                          "peer address '" + p.address + "' is not HOST:PORT");
  auto fail = [=](const std::string& why) {
    attempt_failed(self, opts, *sh, name, attempt, why);
  };
  auto deadline = caf::duration{opts.deadline};
  // With TLS, libcaf_openssl's middleman actor (also a thread of its own).
  auto mm = opts.tls ? self->system().openssl_manager().actor_handle()
                     : self->system().middleman().actor_handle();
  auto address = p.address;
  self->request(mm, deadline, caf::connect_atom::value, host, port)
    .then(
      [=](const caf::node_id&, caf::strong_actor_ptr& gate_ptr,
          const std::set<std::string>&) {
        if (!gate_ptr)
          return fail("nothing is published at " + address);
        auto gate = caf::actor_cast<caf::actor>(gate_ptr);
        auto nonce = random_nonce();
        self
          ->request(gate, deadline, hello_atom::value, opts.cluster,
                    opts.member, sh->self_incarnation(), nonce)
          .then(
            [=](bool ok, const std::string& reason,
                const std::string& their_name, const std::string&,
                const std::string& their_nonce, const std::string& proof) {
              if (!ok)
                return attempt_refused(self, opts, *sh, name, attempt,
                                       "it refused our hello: " + reason);
              if (their_name != name)
                return fail(address + " answered as member '" + their_name
                            + "'");
              auto expected = hmac_hex(
                opts.secret, proof_text("gate", opts.cluster, their_name, nonce,
                                        their_nonce));
              if (!same_proof(proof, expected))
                return attempt_refused(self, opts, *sh, name, attempt,
                                       "it did not prove the cluster secret");
              auto mine = hmac_hex(opts.secret,
                                   proof_text("peer", opts.cluster, opts.member,
                                              their_nonce, nonce));
              self->request(gate, deadline, prove_atom::value, mine)
                .then(
                  [=](bool ok, const std::string& reason,
                      const caf::actor& their_mesh) {
                    if (!ok || !their_mesh)
                      return attempt_refused(self, opts, *sh, name, attempt,
                                             "it refused our proof: " + reason);
                    auto i = self->state.peers.find(name);
                    if (i == self->state.peers.end()
                        || i->second.attempt != attempt)
                      return;
                    auto& p = i->second;
                    sh->prove(their_mesh.node());
                    if (p.mesh)
                      self->demonitor(p.mesh);
                    p.mesh = their_mesh;
                    self->monitor(their_mesh);
                    p.in_flight = false;
                    p.backoff = first_backoff;
                    set_state(p, "connected", {});
                    self->send(their_mesh, up_atom::value, opts.member,
                               sh->self_incarnation());
                    if (opts.info)
                      opts.info("linked to member '" + name + "' (incarnation "
                                + p.incarnation + ") at " + address);
                    publish_view(self, *sh);
                  },
                  [=](const caf::error& e) {
                    fail("proof: " + caf::to_string(e));
                  });
            },
            [=](const caf::error& e) { fail("hello: " + caf::to_string(e)); });
      },
      [=](const caf::error& e) {
        // With TLS, a link cut during the handshake is a peer whose
        // certificate our CA did not sign (or that did not accept ours).
        if (opts.tls && e == caf::sec::disconnect_during_handshake)
          return attempt_refused(self, opts, *sh, name, attempt,
                                 "the TLS handshake failed (is its "
                                 "certificate signed by cluster.tls_ca, and "
                                 "ours by its CA?)");
        fail("connect to " + address + ": " + caf::to_string(e));
      });
}

/// Links to the members the membership lists, and reports links lost.
caf::behavior mesh_impl(mesh_actor_ptr self, std::shared_ptr<mesh::shared> sh,
                        mesh_options opts) {
  self->set_default_handler([=](caf::scheduled_actor* s, caf::message_view& x) {
    (void)sh->accept(s, opts);
    return caf::drop(s, x);
  });
  self->set_down_handler([=](caf::down_msg& dm) {
    for (auto& [name, p] : self->state.peers) {
      if (!p.mesh || p.mesh.address() != dm.source)
        continue;
      p.mesh = nullptr;
      p.in_flight = false;
      p.next_try = clock::now();
      p.backoff = first_backoff;
      set_state(p, "suspect",
                "mesh link lost (" + caf::to_string(dm.reason) + ")");
      if (opts.warn)
        opts.warn("member '" + name + "' (incarnation " + p.incarnation
                  + ") is suspect: its link was lost ("
                  + caf::to_string(dm.reason) + ")");
    }
    publish_view(self, *sh);
  });
  self->send(self, poll_atom::value);
  return {
    [=](poll_atom) {
      if (!sh->accept(self, opts))
        return;
      // Called under the lock: stop() clears it under the same lock, so
      // the membership is never read after it went away.
      std::vector<member_info> listed;
      {
        std::lock_guard guard{sh->mtx};
        if (sh->members)
          listed = sh->members();
      }
      auto& peers = self->state.peers;
      auto now = clock::now();
      std::set<std::string> seen;
      for (auto& m : listed) {
        if (m.name == opts.member || m.peer_address.empty())
          continue;
        seen.insert(m.name);
        auto [i, fresh] = peers.try_emplace(m.name);
        auto& p = i->second;
        if (fresh) {
          p.incarnation = m.incarnation;
          p.address = m.peer_address;
        } else if (p.incarnation != m.incarnation) {
          // A new incarnation: a live link carries on (same process); a
          // lost or refused one starts over, unsuspected.
          p.incarnation = m.incarnation;
          p.address = m.peer_address;
          p.logged.clear();
          if (p.state != "connected") {
            set_state(p, "connecting", {});
            p.backoff = first_backoff;
            p.next_try = now;
          }
        }
        // One side connects: the member whose name sorts first; the other
        // too once it has waited for a link for a while (the first may
        // still count an old link as alive).
        bool first = opts.member < m.name;
        bool waited = now_ms() - p.since_ms > fallback_after.count();
        if ((first || waited) && p.state != "connected" && !p.in_flight
            && now >= p.next_try)
          connect(self, opts, sh, m.name);
      }
      for (auto i = peers.begin(); i != peers.end();) {
        // A member whose key went keeps a live link (and its monitor): the
        // process may come back as a new incarnation over it.
        if (seen.count(i->first) || i->second.mesh) {
          ++i;
          continue;
        }
        if (i->second.mesh)
          self->demonitor(i->second.mesh);
        i = peers.erase(i);
      }
      publish_view(self, *sh);
      self->delayed_send(self, opts.poll, poll_atom::value);
    },
    [=](up_atom, const std::string& name, const std::string& incarnation) {
      if (!sh->accept(self, opts))
        return;
      auto peer = caf::actor_cast<caf::actor>(self->current_sender());
      if (!peer || name == opts.member || name.size() > 256)
        return;
      auto& p = self->state.peers[name];
      if (p.mesh && p.mesh != peer)
        self->demonitor(p.mesh);
      if (p.mesh != peer)
        self->monitor(peer);
      p.mesh = peer;
      p.incarnation = incarnation;
      ++p.attempt;
      p.in_flight = false;
      set_state(p, "connected", {});
      if (opts.info)
        opts.info("member '" + name + "' (incarnation " + incarnation
                  + ") linked to us");
      publish_view(self, *sh);
    },
    [=](step_atom step, runtime::attempt_spec& spec, std::string& owner,
        std::string& incarnation) {
      // The executor answers the peer itself (delegate keeps the sender and
      // the request); nothing from an unproven node gets that far.
      if (!sh->accept(self, opts) || !opts.executor)
        return;
      self->delegate(opts.executor, step, std::move(spec), std::move(owner),
                     std::move(incarnation));
    },
    [=](forward_atom fwd, uint64_t id, std::string& type, std::string& body,
        std::string& subject, std::string& role, int64_t expires_at_s,
        std::string& from) {
      // The forwarding server answers the sender (delegate keeps it).
      if (!sh->accept(self, opts) || !opts.forwarder)
        return;
      self->delegate(opts.forwarder, fwd, id, std::move(type), std::move(body),
                     std::move(subject), std::move(role), expires_at_s,
                     std::move(from));
    },
    [=](forward_close_atom close, uint64_t id) {
      if (!sh->accept(self, opts) || !opts.forwarder)
        return;
      self->delegate(opts.forwarder, close, id);
    },
    [=](load_atom load, std::string& member, std::string& body) {
      if (!sh->accept(self, opts) || !opts.loads)
        return;
      // Delegated: the placer checks that the sender is that member's.
      self->delegate(opts.loads, load, std::move(member), std::move(body));
    },
    [=](repl_atom repl, std::string& from, std::string& bytes) {
      if (!sh->accept(self, opts) || !opts.replicator)
        return;
      // Delegated: the replication actor checks that the sender is that
      // member's.
      self->delegate(opts.replicator, repl, std::move(from), std::move(bytes));
    },
    [=](refused_atom, const std::string& name, const std::string& why) {
      // From our own gate only (accept() lets local senders through).
      auto& sender = self->current_sender();
      if (!sender || sender->node() != self->node())
        return;
      auto i = self->state.peers.find(name);
      if (i == self->state.peers.end() || i->second.state == "connected")
        return;
      set_state(i->second, "refused", why);
      publish_view(self, *sh);
    },
  };
}

} // namespace

void configure_mesh(caf::actor_system_config& cfg,
                    std::chrono::milliseconds heartbeat,
                    std::chrono::milliseconds timeout) {
  cfg.load<caf::io::middleman>();
  // The middleman's actor connects with a blocking TCP connect: on a thread
  // of its own (CAF's default, said here so that it stays so), never on a
  // scheduler thread.
  cfg.set("middleman.attach-utility-actors", false);
  cfg.set("middleman.heartbeat-interval", caf::timespan{heartbeat});
  cfg.set("middleman.connection-timeout", caf::timespan{timeout});
}

mesh::mesh(caf::actor_system& sys, mesh_options opts)
    : sys_(sys), opts_(std::move(opts)), shared_(std::make_shared<shared>()) {}

mesh::~mesh() {
  stop();
}

std::string mesh::listen() {
  if (!actor_)
    actor_ = sys_.spawn(mesh_impl, shared_, opts_);
  if (!gate_)
    gate_ = sys_.spawn(gate_impl, shared_, opts_, actor_);
  auto port
    = opts_.tls
        ? caf::openssl::publish(gate_, opts_.port, opts_.host.c_str(), true)
        : caf::io::publish(gate_, opts_.port, opts_.host.c_str(), true);
  if (!port)
    return "cannot listen for cluster peers on " + opts_.host + ":"
           + std::to_string(opts_.port) + ": " + sys_.render(port.error());
  port_ = *port;
  return {};
}

uint16_t mesh::port() const {
  return port_;
}

void mesh::start(std::function<std::vector<member_info>()> members,
                 std::function<std::string()> self_incarnation) {
  std::lock_guard guard{shared_->mtx};
  shared_->members = std::move(members);
  shared_->incarnation = std::move(self_incarnation);
}

void mesh::stop() {
  {
    std::lock_guard guard{shared_->mtx};
    shared_->members = nullptr;
    shared_->incarnation = nullptr;
  }
  if (gate_)
    caf::anon_send_exit(gate_, caf::exit_reason::user_shutdown);
  if (actor_)
    caf::anon_send_exit(actor_, caf::exit_reason::user_shutdown);
  // The executor's attempts for other members end with it.
  if (opts_.executor)
    caf::anon_send_exit(opts_.executor, caf::exit_reason::user_shutdown);
  gate_ = nullptr;
  actor_ = nullptr;
}

std::map<std::string, peer_link> mesh::links() const {
  std::lock_guard guard{shared_->mtx};
  return shared_->links;
}

caf::actor mesh::peer(const std::string& member) const {
  std::lock_guard guard{shared_->mtx};
  auto i = shared_->handles.find(member);
  return i == shared_->handles.end() ? caf::actor{} : i->second;
}

bool mesh::is_proven(const caf::node_id& n) const {
  return n == sys_.node() || shared_->is_proven(n);
}

} // namespace troupe::cluster
