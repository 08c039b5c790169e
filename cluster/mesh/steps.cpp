#include "cluster/mesh/steps.hpp"

#include "actors/attempt/attempt_actor.hpp"
#include "cluster/mesh/mesh.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <mutex>

namespace troupe::cluster {

namespace {

/// Tells a remote attempt that its member was declared down by etcd (its
/// key went, or it registered again as a new incarnation): a local message.
using lost_atom = caf::atom_constant<caf::atom("m_lost")>;
/// The placer's own tick: watches the membership for members declared down.
using tick_atom = caf::atom_constant<caf::atom("m_ptick")>;

/// How often the placer looks for members declared down under its remote
/// attempts.
constexpr auto watch_every = std::chrono::milliseconds{50};

using runtime::attempt_result;
using runtime::attempt_spec;

attempt_result failure(const attempt_spec& spec, std::string kind,
                       std::string message) {
  attempt_result r;
  r.node = spec.node;
  r.attempt = spec.attempt;
  r.ok = false;
  r.error_kind = std::move(kind);
  r.message = std::move(message);
  return r;
}

/// Runs one attempt for a remote owner and answers its result. It watches
/// the asking actor: when that is gone (the owner stopped the attempt, or
/// the owner itself is lost) the attempt is halted.
caf::behavior step_relay_impl(caf::event_based_actor* self,
                              actors::services_ptr svc) {
  struct relay {
    caf::response_promise rp;
    caf::actor child;
    std::string node;
    int32_t attempt = 0;
    bool answered = false;
  };
  auto st = std::make_shared<relay>();
  self->set_exit_handler([=](caf::exit_msg& msg) {
    if (st->child && msg.source == st->child.address()) {
      if (!st->answered && msg.reason != caf::exit_reason::normal) {
        st->answered = true;
        auto r = failure({}, "crashed",
                         "the attempt's actor on member '" + svc->member
                           + "' ended: " + actors::describe_exit(msg.reason));
        r.node = st->node;
        r.attempt = st->attempt;
        r.member = svc->member;
        st->rp.deliver(std::move(r));
      }
      self->quit();
    } else if (msg.reason != caf::exit_reason::normal) {
      self->quit(msg.reason);
    }
  });
  self->set_down_handler([=](caf::down_msg&) {
    // Its owner no longer waits: stop the attempt (an exec child is
    // killed), and end once it has.
    if (st->child)
      self->send(st->child, runtime::halt_attempt{"owner gone"});
    else
      self->quit();
  });
  return {
    [=](step_atom, attempt_spec& spec, std::string&, std::string&) {
      st->rp = self->make_response_promise();
      if (auto& owner = self->current_sender())
        self->monitor(owner);
      st->node = spec.node;
      st->attempt = spec.attempt;
      st->child = self->spawn<caf::linked>(
        actors::attempt_actor_impl, std::move(spec), caf::actor{self}, svc);
    },
    [=](attempt_result& r) {
      if (!st->answered) {
        st->answered = true;
        r.member = svc->member;
        st->rp.deliver(std::move(r));
      }
      self->quit();
    },
  };
}

struct executor_state {
  /// Attempts running, by kind, and the kind of each relay.
  std::map<std::string, int64_t> running;
  std::map<caf::actor_addr, std::string> relays;
  static inline const char* name = "troupe.step_executor";
};

caf::behavior step_executor_impl(caf::stateful_actor<executor_state>* self,
                                 actors::services_ptr svc,
                                 std::map<std::string, int64_t> capacity) {
  self->set_down_handler([=](caf::down_msg& dm) {
    auto i = self->state.relays.find(dm.source);
    if (i == self->state.relays.end())
      return;
    --self->state.running[i->second];
    self->state.relays.erase(i);
  });
  return {
    [=](step_atom step, attempt_spec& spec, std::string& owner,
        std::string& incarnation) {
      // A member not joined (its lease may be gone, and the owner may have
      // placed the attempt elsewhere already) takes no work.
      if (svc->fence)
        if (auto why = svc->fence(); !why.empty()) {
          self->make_response_promise().deliver(failure(
            spec, "member_fenced",
            "member '" + svc->member + "' takes no attempt now: " + why));
          return;
        }
      auto& running = self->state.running[spec.kind];
      if (auto c = capacity.find(spec.kind);
          c != capacity.end() && running >= c->second) {
        self->make_response_promise().deliver(
          failure(spec, "member_full",
                  "member '" + svc->member + "' runs " + std::to_string(running)
                    + " attempt(s) of kind '" + spec.kind
                    + "' already (cluster.capacity " + spec.kind + "="
                    + std::to_string(c->second) + ")"));
        return;
      }
      ++running;
      // Linked: the executor's end (the node stops) ends its attempts.
      auto relay
        = self->spawn<caf::monitored + caf::linked>(step_relay_impl, svc);
      self->state.relays.emplace(relay.address(), spec.kind);
      self->delegate(relay, step, std::move(spec), std::move(owner),
                     std::move(incarnation));
    },
  };
}

/// An attempt running on another member, as its run actor sees it: asks
/// the member's executor, and fails the attempt as `member_down` as soon as
/// the member's mesh actor is lost (CAF fails no request in flight to a
/// node that is gone). A halt ends it, which the executor's relay sees and
/// halts the attempt there.
caf::behavior remote_attempt_impl(caf::event_based_actor* self,
                                  attempt_spec spec, caf::actor parent,
                                  caf::actor target, std::string member,
                                  std::string owner, std::string incarnation,
                                  caf::duration deadline) {
  auto done = std::make_shared<bool>(false);
  auto answer = [=](attempt_result r) {
    if (*done)
      return;
    *done = true;
    self->send(parent, std::move(r));
    self->quit();
  };
  auto answer_from = [=](attempt_result r) {
    r.member = member;
    answer(std::move(r));
  };
  self->set_down_handler([=](caf::down_msg& dm) {
    if (dm.source != target.address())
      return;
    answer_from(failure(spec, "member_down",
                        "member '" + member + "' was lost while it ran attempt "
                          + std::to_string(spec.attempt) + " ("
                          + caf::to_string(dm.reason) + ")"));
  });
  self->monitor(target);
  self->request(target, deadline, step_atom::value, spec, owner, incarnation)
    .then([=](attempt_result& r) { answer_from(std::move(r)); },
          [=](caf::error& e) {
            auto timed_out = e == caf::sec::request_timeout;
            answer_from(
              failure(spec, timed_out ? "member_timeout" : "member_error",
                      "member '" + member + "' did not answer attempt "
                        + std::to_string(spec.attempt)
                        + (timed_out ? " in time" : ": " + caf::to_string(e))));
          });
  return {
    [=](runtime::halt_attempt&) {
      *done = true;
      self->quit();
    },
    [=](lost_atom, std::string& why) {
      // Its end tells the member's relay (if the link still stands) to halt
      // the attempt there.
      answer_from(failure(spec, "member_down",
                          "member '" + member
                            + "' was declared down while it "
                              "ran attempt "
                            + std::to_string(spec.attempt) + " (" + why + ")"));
    },
  };
}

/// Fails an attempt at once: no member can take it.
caf::behavior unplaced_attempt_impl(caf::event_based_actor* self,
                                    attempt_result r, caf::actor parent) {
  self->send(parent, std::move(r));
  self->quit();
  return {[](runtime::halt_attempt&) {}};
}

} // namespace

caf::actor spawn_step_executor(caf::actor_system& sys, actors::services_ptr svc,
                               std::map<std::string, int64_t> capacity) {
  return sys.spawn(step_executor_impl, std::move(svc), std::move(capacity));
}

int choose_member(const std::string& placement,
                  const std::map<std::string, std::string>& on,
                  const std::vector<placement_candidate>& members,
                  uint64_t& turn) {
  std::vector<int> fit;
  for (size_t i = 0; i < members.size(); ++i) {
    auto& m = members[i];
    bool labelled = std::all_of(on.begin(), on.end(), [&](auto& kv) {
      auto l = m.labels.find(kv.first);
      return l != m.labels.end() && l->second == kv.second;
    });
    if (labelled)
      fit.push_back(static_cast<int>(i));
  }
  if (fit.empty())
    return -1;
  auto has_room = [&](int i) {
    auto& m = members[static_cast<size_t>(i)];
    return m.capacity < 0 || m.in_flight_kind < m.capacity;
  };
  std::vector<int> room;
  std::copy_if(fit.begin(), fit.end(), std::back_inserter(room), has_room);
  auto& pool = room.empty() ? fit : room;
  if (placement == "spread")
    return pool[turn++ % pool.size()];
  // least_loaded: the fewest in flight, ties in turn.
  int64_t least = INT64_MAX;
  for (auto i : pool)
    least = std::min(least, members[static_cast<size_t>(i)].in_flight);
  std::vector<int> tied;
  for (auto i : pool)
    if (members[static_cast<size_t>(i)].in_flight == least)
      tied.push_back(i);
  return tied[turn++ % tied.size()];
}

struct step_placer::impl : std::enable_shared_from_this<impl> {
  placer_options opts;
  actors::services_ptr svc;
  std::mutex mtx;
  bool started = false;
  std::function<std::vector<member_info>()> members;
  std::function<std::string()> incarnation;
  mesh* peers = nullptr;
  caf::actor_system* sys = nullptr;
  /// Watches the membership for members declared down under remote
  /// attempts (spawned by start()).
  caf::actor watcher;
  /// Attempts in flight by member, then kind, as this owner placed them.
  std::map<std::string, std::map<std::string, int64_t>> in_flight;
  uint64_t turn = 0;
  /// A remote attempt in flight: the member and incarnation it runs on.
  struct remote {
    std::string member;
    std::string incarnation;
    caf::actor actor;
  };
  std::map<caf::actor_addr, remote> remotes;

  void release(const std::string& member, const std::string& kind,
               const caf::actor_addr& addr) {
    std::lock_guard guard{mtx};
    auto& n = in_flight[member][kind];
    if (n > 0)
      --n;
    remotes.erase(addr);
  }

  /// Fails, as member_down, every remote attempt whose member etcd no
  /// longer lists with the incarnation it was placed on: its key was
  /// deleted (lease expired or revoked) or it registered again. The mesh
  /// link may still stand (a lease revoked on a false suspicion, a key
  /// deleted by hand): the membership's word is what counts.
  void watch(caf::event_based_actor* self) {
    std::vector<std::pair<caf::actor, std::string>> lost;
    {
      std::lock_guard guard{mtx};
      if (!started || !members || remotes.empty())
        return;
      std::map<std::string, std::string> live;
      for (auto& m : members())
        if (m.name != opts.member)
          live[m.name] = m.incarnation;
      for (auto i = remotes.begin(); i != remotes.end();) {
        auto l = live.find(i->second.member);
        if (l != live.end() && l->second == i->second.incarnation) {
          ++i;
          continue;
        }
        lost.emplace_back(
          i->second.actor,
          l == live.end()
            ? "its key was deleted: its lease expired or was revoked"
            : "it registered again as incarnation " + l->second + ", not "
                + i->second.incarnation);
        i = remotes.erase(i);
      }
    }
    for (auto& [actor, why] : lost)
      self->send(actor, lost_atom::value, std::move(why));
  }

  caf::actor place(caf::event_based_actor* run, attempt_spec spec,
                   const runtime::node_spec& node);
};

caf::actor step_placer::impl::place(caf::event_based_actor* run,
                                    attempt_spec spec,
                                    const runtime::node_spec& node) {
  auto parent = caf::actor{run};
  auto local = [&] {
    return run->spawn<caf::linked>(actors::attempt_actor_impl, std::move(spec),
                                   parent, svc);
  };
  auto placement
    = node.placement.empty() ? opts.default_placement : node.placement;
  std::unique_lock guard{mtx};
  if (!started || (placement == "local" && node.on.empty()))
    return local();
  auto listed = members();
  std::vector<placement_candidate> candidates;
  std::vector<caf::actor> handles;
  std::vector<std::string> incarnations;
  for (auto& m : listed) {
    bool self = m.name == opts.member;
    if (placement == "local" && !self)
      continue;
    caf::actor handle;
    if (!self) {
      // Up (its key exists) and linked (it proved the secret).
      if (m.state != "up")
        continue;
      handle = peers->peer(m.name);
      if (!handle)
        continue;
    }
    placement_candidate c;
    c.name = m.name;
    c.labels = m.labels;
    if (auto cap = m.capacity.find(spec.kind); cap != m.capacity.end())
      c.capacity = cap->second;
    auto& counts = in_flight[m.name];
    for (auto& [kind, n] : counts)
      c.in_flight += n;
    c.in_flight_kind = counts[spec.kind];
    candidates.push_back(std::move(c));
    handles.push_back(handle);
    incarnations.push_back(m.incarnation);
  }
  auto chosen = choose_member(placement, node.on, candidates, turn);
  // Without label constraints this member always qualifies, listed or not
  // (between registrations it may not be).
  if (chosen < 0 && node.on.empty()) {
    guard.unlock();
    return local();
  }
  if (chosen < 0) {
    guard.unlock();
    std::string wanted;
    for (auto& [k, v] : node.on)
      wanted += (wanted.empty() ? "" : ", ") + k + "=" + v;
    auto r = failure(spec, "no_member",
                     "no member that is up and linked has the labels " + wanted
                       + " (on:) for node '" + spec.node + "'");
    return run->spawn<caf::linked>(unplaced_attempt_impl, std::move(r), parent);
  }
  auto& c = candidates[static_cast<size_t>(chosen)];
  auto target = handles[static_cast<size_t>(chosen)];
  auto target_incarnation = incarnations[static_cast<size_t>(chosen)];
  ++in_flight[c.name][spec.kind];
  auto name = c.name;
  auto kind = spec.kind;
  auto owner_incarnation = incarnation ? incarnation() : std::string{};
  guard.unlock();
  caf::actor child;
  if (!target) {
    child = local();
  } else {
    auto timeout = node.timeout ? std::chrono::duration_cast<caf::timespan>(
                     *node.timeout + opts.margin)
                                : caf::timespan{opts.no_timeout_deadline};
    child = run->spawn<caf::linked>(remote_attempt_impl, std::move(spec),
                                    parent, target, name, opts.member,
                                    owner_incarnation, caf::duration{timeout});
    std::lock_guard again{mtx};
    remotes.emplace(child.address(), remote{name, target_incarnation, child});
  }
  // Counted out when it ends, however it ends.
  child->attach_functor(
    [self = shared_from_this(), name, kind, addr = child.address()] {
      self->release(name, kind, addr);
    });
  return child;
}

namespace {

/// The placer's actor: every watch_every, fails the remote attempts on
/// members declared down.
caf::behavior placer_watch_impl(caf::event_based_actor* self,
                                std::weak_ptr<step_placer::impl> placer) {
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto p = placer.lock();
      if (!p)
        return self->quit();
      p->watch(self);
      self->delayed_send(self, watch_every, tick_atom::value);
    },
  };
}

} // namespace

step_placer::step_placer(caf::actor_system& sys, placer_options opts,
                         actors::services_ptr svc)
    : impl_(std::make_shared<impl>()) {
  impl_->sys = &sys;
  impl_->opts = std::move(opts);
  impl_->svc = std::move(svc);
}

step_placer::~step_placer() {
  stop();
}

void step_placer::start(std::function<std::vector<member_info>()> members,
                        std::function<std::string()> self_incarnation,
                        mesh& peers) {
  std::lock_guard guard{impl_->mtx};
  impl_->members = std::move(members);
  impl_->incarnation = std::move(self_incarnation);
  impl_->peers = &peers;
  impl_->started = true;
  if (!impl_->watcher)
    impl_->watcher
      = impl_->sys->spawn(placer_watch_impl, std::weak_ptr<impl>{impl_});
}

void step_placer::stop() {
  std::lock_guard guard{impl_->mtx};
  impl_->started = false;
  impl_->members = nullptr;
  impl_->incarnation = nullptr;
  impl_->peers = nullptr;
  if (impl_->watcher)
    caf::anon_send_exit(impl_->watcher, caf::exit_reason::user_shutdown);
  impl_->watcher = nullptr;
}

std::function<caf::actor(caf::event_based_actor*, runtime::attempt_spec,
                         const runtime::node_spec&)>
step_placer::hook() {
  return [i = impl_](caf::event_based_actor* run, runtime::attempt_spec spec,
                     const runtime::node_spec& node) {
    return i->place(run, std::move(spec), node);
  };
}

} // namespace troupe::cluster
