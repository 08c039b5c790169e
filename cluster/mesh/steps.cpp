#include "cluster/mesh/steps.hpp"

#include "actors/attempt/attempt_actor.hpp"
#include "cluster/mesh/mesh.hpp"
#include "runtime/metrics/registry.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <mutex>

namespace troupe::cluster {

namespace {

/// Tells a remote attempt that its member was declared down by etcd (its
/// key went, or it registered again as a new incarnation): a local message.
using lost_atom = caf::atom_constant<caf::atom("m_lost")>;
/// The placer's own tick (members declared down, load reports) and a
/// waiting attempt's.
using tick_atom = caf::atom_constant<caf::atom("m_ptick")>;

/// The largest load report taken from a peer.
constexpr size_t max_report_bytes = 64 << 10;

using clock = std::chrono::steady_clock;

using runtime::attempt_result;
using runtime::attempt_spec;

/// What runs on this member now, shared by its executor and its placer:
/// every attempt it runs (its own runs' and other owners'), by kind, which
/// its capacity bounds; and other owners' attempts by owner, which its load
/// reports tell them.
struct load_book {
  mutable std::mutex mtx;
  std::map<std::string, int64_t> capacity;
  std::map<std::string, int64_t> running;
  std::map<std::string, std::map<std::string, int64_t>> served;
  /// Bumped by every change, so that a change is reported soon.
  uint64_t version = 0;
  bool leaving = false;
  runtime::metrics::family<runtime::metrics::counter>* remote_attempts
    = nullptr;
  /// Attempts that waited for room (no member that fits had any).
  runtime::metrics::counter* room_waits = nullptr;

  /// Takes a slot of `kind` for `owner` (empty: this member's own run).
  /// Returns -1 when taken, else the capacity that is full.
  int64_t take(const std::string& kind, const std::string& owner) {
    std::lock_guard guard{mtx};
    auto& n = running[kind];
    if (auto c = capacity.find(kind); c != capacity.end() && n >= c->second)
      return c->second;
    ++n;
    if (!owner.empty())
      ++served[owner][kind];
    ++version;
    return -1;
  }

  void give_back(const std::string& kind, const std::string& owner) {
    std::lock_guard guard{mtx};
    if (auto i = running.find(kind); i != running.end() && --i->second <= 0)
      running.erase(i);
    if (!owner.empty())
      if (auto o = served.find(owner); o != served.end()) {
        if (auto k = o->second.find(kind);
            k != o->second.end() && --k->second <= 0)
          o->second.erase(k);
        if (o->second.empty())
          served.erase(o);
      }
    ++version;
  }

  int64_t total() const {
    std::lock_guard guard{mtx};
    int64_t n = 0;
    for (auto& [kind, k] : running)
      n += k;
    return n;
  }

  bool is_leaving() const {
    std::lock_guard guard{mtx};
    return leaving;
  }

  /// Counts a remote attempt's end: `direction` "sent" (by this owner) or
  /// "served" (for another owner), outcome "ok" or its error kind.
  void count(const char* direction, const attempt_result& r) const {
    if (!remote_attempts)
      return;
    remote_attempts
      ->with({{"direction", direction},
              {"outcome", r.ok                   ? std::string{"ok"}
                          : r.error_kind.empty() ? std::string{"failed"}
                                                 : r.error_kind}})
      .inc();
  }
};

using book_ptr = std::shared_ptr<load_book>;

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
                              actors::services_ptr svc, book_ptr book) {
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
        book->count("served", r);
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
        book->count("served", r);
        st->rp.deliver(std::move(r));
      }
      self->quit();
    },
  };
}

struct executor_state {
  /// The kind and owner of each relay.
  std::map<caf::actor_addr, std::pair<std::string, std::string>> relays;
  static inline const char* name = "troupe.step_executor";
};

caf::behavior step_executor_impl(caf::stateful_actor<executor_state>* self,
                                 actors::services_ptr svc, book_ptr book) {
  self->set_down_handler([=](caf::down_msg& dm) {
    auto i = self->state.relays.find(dm.source);
    if (i == self->state.relays.end())
      return;
    book->give_back(i->second.first, i->second.second);
    self->state.relays.erase(i);
  });
  return {
    [=](step_atom step, attempt_spec& spec, std::string& owner,
        std::string& incarnation) {
      auto refuse = [&](std::string kind, std::string message) {
        auto r = failure(spec, std::move(kind), std::move(message));
        r.member = svc->member;
        book->count("served", r);
        self->make_response_promise().deliver(std::move(r));
      };
      // A member not joined (its lease may be gone, and the owner may have
      // placed the attempt elsewhere already) takes no work.
      if (svc->fence)
        if (auto why = svc->fence(); !why.empty())
          return refuse("member_fenced", "member '" + svc->member
                                           + "' takes no attempt now: " + why);
      if (book->is_leaving())
        return refuse("member_leaving",
                      "member '" + svc->member
                        + "' is leaving the cluster: it takes no new attempt");
      if (auto full = book->take(spec.kind, owner.empty() ? "?" : owner);
          full >= 0)
        return refuse("member_full",
                      "member '" + svc->member + "' runs "
                        + std::to_string(full) + " attempt(s) of kind '"
                        + spec.kind + "' already (cluster.capacity " + spec.kind
                        + "=" + std::to_string(full) + ")");
      // Linked: the executor's end (the node stops) ends its attempts.
      auto relay
        = self->spawn<caf::monitored + caf::linked>(step_relay_impl, svc, book);
      self->state.relays.emplace(
        relay.address(),
        std::make_pair(spec.kind, owner.empty() ? "?" : owner));
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
                                  caf::duration deadline, book_ptr book) {
  auto done = std::make_shared<bool>(false);
  auto answer = [=](attempt_result r) {
    if (*done)
      return;
    *done = true;
    self->send(parent, std::move(r));
    self->quit();
  };
  auto answer_from = [=](attempt_result r) {
    if (*done)
      return;
    r.member = member;
    book->count("sent", r);
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
    return no_member_fits;
  auto has_room = [&](int i) {
    auto& m = members[static_cast<size_t>(i)];
    return m.capacity < 0 || m.in_flight_kind < m.capacity;
  };
  std::vector<int> pool;
  std::copy_if(fit.begin(), fit.end(), std::back_inserter(pool), has_room);
  if (pool.empty())
    return no_member_has_room;
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

namespace {

/// What placement needs of a node, kept by an attempt that waits.
struct placement_ask {
  std::string placement;
  std::map<std::string, std::string> on;
  std::optional<std::chrono::milliseconds> timeout;
};

int64_t sum(const std::map<std::string, int64_t>& m) {
  int64_t n = 0;
  for (auto& [k, v] : m)
    n += v;
  return n;
}

std::map<std::string, int64_t> counts_of(const nlohmann::json& j) {
  std::map<std::string, int64_t> out;
  if (!j.is_object())
    return out;
  for (auto& [k, v] : j.items())
    if (v.is_number_integer() && k.size() <= 256)
      out[k] = v.get<int64_t>();
  return out;
}

} // namespace

struct step_placer::impl : std::enable_shared_from_this<impl> {
  placer_options opts;
  actors::services_ptr svc;
  book_ptr book = std::make_shared<load_book>();
  mutable std::mutex mtx;
  bool started = false;
  std::function<std::vector<member_info>()> members;
  std::function<std::string()> incarnation;
  mesh* peers = nullptr;
  caf::actor_system* sys = nullptr;
  /// Watches the membership for members declared down under remote
  /// attempts, sends this member's load reports and takes the others'.
  caf::actor watcher;
  caf::actor executor;
  /// Attempts in flight by member, then kind, as this owner sent them.
  std::map<std::string, std::map<std::string, int64_t>> in_flight;
  uint64_t turn = 0;
  /// A remote attempt in flight: the member and incarnation it runs on.
  struct remote {
    std::string member;
    std::string incarnation;
    caf::actor actor;
  };
  std::map<caf::actor_addr, remote> remotes;
  /// What another member last reported of its load.
  struct report {
    std::string incarnation;
    /// Attempts running there, by kind, and those of them that are ours.
    std::map<std::string, int64_t> running;
    std::map<std::string, int64_t> ours;
    std::map<std::string, int64_t> capacity;
    int64_t runs = -1;
    bool leaving = false;
    clock::time_point at;
  };
  std::map<std::string, report> reports;
  uint64_t sent_version = UINT64_MAX;
  clock::time_point sent_at{};

  void release(const std::string& member, const std::string& kind,
               const caf::actor_addr& addr) {
    std::lock_guard guard{mtx};
    if (auto m = in_flight.find(member); m != in_flight.end()) {
      if (auto k = m->second.find(kind);
          k != m->second.end() && --k->second <= 0)
        m->second.erase(k);
      if (m->second.empty())
        in_flight.erase(m);
    }
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
      if (!started || !members)
        return;
      std::map<std::string, std::string> live;
      for (auto& m : members())
        if (m.name != opts.member)
          live[m.name] = m.incarnation;
      for (auto i = reports.begin(); i != reports.end();)
        i = live.count(i->first) ? std::next(i) : reports.erase(i);
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

  /// This member's own load, as a report's JSON.
  nlohmann::json own_load() const {
    nlohmann::json j;
    {
      std::lock_guard guard{book->mtx};
      j["running"] = book->running;
      j["capacity"] = book->capacity;
      j["owners"] = book->served;
      j["leaving"] = book->leaving;
    }
    j["runs"] = opts.runs_owned ? opts.runs_owned() : -1;
    return j;
  }

  /// Sends this member's load to every member it is linked to: every
  /// report_every, and at the next tick after a change.
  void send_report(caf::event_based_actor* self) {
    std::vector<caf::actor> to;
    nlohmann::json j;
    {
      std::lock_guard guard{mtx};
      if (!started || !members || !peers)
        return;
      uint64_t version = 0;
      {
        std::lock_guard b{book->mtx};
        version = book->version;
      }
      auto now = clock::now();
      if (version == sent_version && now - sent_at < opts.report_every)
        return;
      sent_version = version;
      sent_at = now;
      for (auto& m : members())
        if (m.name != opts.member)
          if (auto h = peers->peer(m.name))
            to.push_back(std::move(h));
      if (to.empty())
        return;
      j = own_load();
      j["incarnation"] = incarnation ? incarnation() : std::string{};
    }
    auto body = j.dump();
    for (auto& h : to)
      self->send(h, load_atom::value, opts.member, body);
  }

  /// Takes a member's load report (from a proven peer, through the mesh),
  /// if it comes from the node this member is linked to as `member`.
  void take_report(const std::string& member, const std::string& body,
                   const caf::node_id& from) {
    if (member.empty() || member.size() > 256 || member == opts.member
        || body.size() > max_report_bytes)
      return;
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object())
      return;
    report r;
    r.incarnation = j.value("incarnation", std::string{});
    r.running = counts_of(j.value("running", nlohmann::json{}));
    r.capacity = counts_of(j.value("capacity", nlohmann::json{}));
    if (auto o = j.find("owners"); o != j.end() && o->is_object())
      if (auto mine = o->find(opts.member); mine != o->end())
        r.ours = counts_of(*mine);
    if (auto n = j.find("runs"); n != j.end() && n->is_number_integer())
      r.runs = n->get<int64_t>();
    if (auto l = j.find("leaving"); l != j.end() && l->is_boolean())
      r.leaving = l->get<bool>();
    r.at = clock::now();
    std::lock_guard guard{mtx};
    auto linked = peers ? peers->peer(member) : caf::actor{};
    if (!linked || linked.node() != from)
      return;
    reports[member] = std::move(r);
  }

  /// Spawns, from `spawner`, the attempt for `spec` on this member or
  /// another, answering `parent`; or returns null (and leaves `spec`) when
  /// it must wait: every member that fits is at capacity, or this member is
  /// leaving.
  caf::actor try_place(caf::event_based_actor* spawner, caf::actor parent,
                       attempt_spec& spec, const placement_ask& ask);

  caf::actor place(caf::event_based_actor* run, attempt_spec spec,
                   const runtime::node_spec& node);
};

namespace {

/// An attempt that waits for room: every `every` it asks the placer again;
/// once placed, it stands between its run actor and the attempt (results
/// up, a halt down), and ends as the attempt ends. Its timeout (armed by the
/// run) counts while it waits; it uses up no retry.
caf::behavior waiting_attempt_impl(caf::event_based_actor* self,
                                   std::weak_ptr<step_placer::impl> placer,
                                   attempt_spec spec, placement_ask ask,
                                   caf::actor run,
                                   std::chrono::milliseconds every) {
  auto child = std::make_shared<caf::actor>();
  auto pending = std::make_shared<attempt_spec>(std::move(spec));
  self->set_exit_handler([=](caf::exit_msg& msg) {
    if (*child && msg.source == child->address())
      self->quit(msg.reason);
    else if (msg.reason != caf::exit_reason::normal)
      self->quit(msg.reason);
  });
  self->delayed_send(self, every, tick_atom::value);
  return {
    [=](tick_atom) {
      if (*child)
        return;
      auto p = placer.lock();
      if (!p) {
        self->send(run, failure(*pending, "member_stopping",
                                "the member stops: the attempt was not "
                                "placed"));
        return self->quit();
      }
      if (auto c = p->try_place(self, caf::actor{self}, *pending, ask)) {
        *child = std::move(c);
        return;
      }
      self->delayed_send(self, every, tick_atom::value);
    },
    [=](attempt_result& r) { self->send(run, std::move(r)); },
    [=](runtime::halt_attempt& h) {
      if (*child)
        self->send(*child, std::move(h));
      else
        self->quit();
    },
  };
}

} // namespace

caf::actor step_placer::impl::try_place(caf::event_based_actor* spawner,
                                        caf::actor parent, attempt_spec& spec,
                                        const placement_ask& ask) {
  auto kind = spec.kind;
  // This member's own run here: within this member's capacity, counted
  // with the attempts it runs for others.
  auto local = [&]() -> caf::actor {
    if (book->take(kind, {}) >= 0)
      return {};
    auto child = spawner->spawn<caf::linked>(actors::attempt_actor_impl,
                                             std::move(spec), parent, svc);
    child->attach_functor([b = book, kind] { b->give_back(kind, {}); });
    return child;
  };
  if (book->is_leaving())
    return {};
  std::unique_lock guard{mtx};
  if (!started || (ask.placement == "local" && ask.on.empty())) {
    guard.unlock();
    return local();
  }
  auto listed = members();
  std::vector<placement_candidate> candidates;
  std::vector<caf::actor> handles;
  std::vector<std::string> incarnations;
  for (auto& m : listed) {
    bool self = m.name == opts.member;
    if (ask.placement == "local" && !self)
      continue;
    caf::actor handle;
    placement_candidate c;
    c.name = m.name;
    c.labels = m.labels;
    if (self) {
      std::lock_guard b{book->mtx};
      if (auto cap = book->capacity.find(kind); cap != book->capacity.end())
        c.capacity = cap->second;
      c.in_flight = sum(book->running);
      if (auto n = book->running.find(kind); n != book->running.end())
        c.in_flight_kind = n->second;
    } else {
      // Up (its key exists, not leaving) and linked (it proved the secret).
      if (m.state != "up")
        continue;
      handle = peers->peer(m.name);
      if (!handle)
        continue;
      if (auto cap = m.capacity.find(kind); cap != m.capacity.end())
        c.capacity = cap->second;
      auto& mine = in_flight[m.name];
      auto mine_kind = mine.count(kind) ? mine[kind] : 0;
      auto r = reports.find(m.name);
      if (r != reports.end() && r->second.incarnation == m.incarnation) {
        if (r->second.leaving)
          continue;
        // What it reported, and what this owner sent that the report does
        // not hold yet.
        auto& rep = r->second;
        auto ours_kind = rep.ours.count(kind) ? rep.ours.at(kind) : 0;
        c.in_flight_kind = (rep.running.count(kind) ? rep.running.at(kind) : 0)
                           + std::max<int64_t>(0, mine_kind - ours_kind);
        c.in_flight
          = sum(rep.running) + std::max<int64_t>(0, sum(mine) - sum(rep.ours));
      } else {
        c.in_flight_kind = mine_kind;
        c.in_flight = sum(mine);
      }
    }
    candidates.push_back(std::move(c));
    handles.push_back(handle);
    incarnations.push_back(m.incarnation);
  }
  auto chosen = choose_member(ask.placement, ask.on, candidates, turn);
  // Without label constraints this member always qualifies, listed or not
  // (between registrations it may not be).
  if (chosen == no_member_fits && ask.on.empty()) {
    guard.unlock();
    return local();
  }
  if (chosen == no_member_has_room)
    return {};
  if (chosen == no_member_fits) {
    guard.unlock();
    std::string wanted;
    for (auto& [k, v] : ask.on)
      wanted += (wanted.empty() ? "" : ", ") + k + "=" + v;
    auto r = failure(spec, "no_member",
                     "no member that is up and linked has the labels " + wanted
                       + " (on:) for node '" + spec.node + "'");
    return spawner->spawn<caf::linked>(unplaced_attempt_impl, std::move(r),
                                       parent);
  }
  auto target = handles[static_cast<size_t>(chosen)];
  if (!target) {
    guard.unlock();
    return local();
  }
  auto name = candidates[static_cast<size_t>(chosen)].name;
  auto target_incarnation = incarnations[static_cast<size_t>(chosen)];
  ++in_flight[name][kind];
  auto owner_incarnation = incarnation ? incarnation() : std::string{};
  guard.unlock();
  auto timeout
    = ask.timeout
        ? std::chrono::duration_cast<caf::timespan>(*ask.timeout + opts.margin)
        : caf::timespan{opts.no_timeout_deadline};
  auto child = spawner->spawn<caf::linked>(
    remote_attempt_impl, std::move(spec), parent, target, name, opts.member,
    owner_incarnation, caf::duration{timeout}, book);
  {
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

caf::actor step_placer::impl::place(caf::event_based_actor* run,
                                    attempt_spec spec,
                                    const runtime::node_spec& node) {
  placement_ask ask;
  ask.placement
    = node.placement.empty() ? opts.default_placement : node.placement;
  ask.on = node.on;
  if (node.timeout)
    ask.timeout
      = std::chrono::duration_cast<std::chrono::milliseconds>(*node.timeout);
  if (auto child = try_place(run, caf::actor{run}, spec, ask))
    return child;
  if (book->room_waits)
    book->room_waits->inc();
  return run->spawn<caf::linked>(waiting_attempt_impl, weak_from_this(),
                                 std::move(spec), std::move(ask),
                                 caf::actor{run}, opts.watch);
}

namespace {

/// The placer's actor: every `every`, fails the remote attempts on members
/// declared down and reports this member's load; takes the others' reports.
caf::behavior placer_watch_impl(caf::event_based_actor* self,
                                std::weak_ptr<step_placer::impl> placer,
                                std::chrono::milliseconds every) {
  self->send(self, tick_atom::value);
  return {
    [=](tick_atom) {
      auto p = placer.lock();
      if (!p)
        return self->quit();
      p->watch(self);
      p->send_report(self);
      self->delayed_send(self, every, tick_atom::value);
    },
    [=](load_atom, const std::string& member, const std::string& body) {
      // Through the mesh actor, which passes only proven peers' reports
      // (delegated: the sender is the peer's).
      auto& sender = self->current_sender();
      if (auto p = placer.lock(); p && sender)
        p->take_report(member, body, sender->node());
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
  impl_->book->capacity = impl_->opts.capacity;
  if (auto* r = impl_->opts.metrics)
    impl_->book->remote_attempts = &r->add_counter(
      "troupe_remote_attempts_total",
      "Attempts run on another member: sent by this member for its runs "
      "(direction=sent) or run here for another member's (served), by "
      "outcome (ok, or the error kind).");
  if (auto* r = impl_->opts.metrics)
    impl_->book->room_waits
      = &r->add_counter("troupe_placement_waits_total",
                        "Attempts that waited for room: every member that "
                        "fits was at its cluster.capacity for the kind, or "
                        "this member was leaving.")
           .with({});
  impl_->executor = sys.spawn(step_executor_impl, impl_->svc, impl_->book);
  impl_->watcher = sys.spawn(placer_watch_impl, std::weak_ptr<impl>{impl_},
                             impl_->opts.watch);
}

step_placer::~step_placer() {
  stop();
  if (impl_->executor)
    caf::anon_send_exit(impl_->executor, caf::exit_reason::user_shutdown);
}

void step_placer::start(std::function<std::vector<member_info>()> members,
                        std::function<std::string()> self_incarnation,
                        mesh& peers) {
  std::lock_guard guard{impl_->mtx};
  impl_->members = std::move(members);
  impl_->incarnation = std::move(self_incarnation);
  impl_->peers = &peers;
  impl_->started = true;
}

void step_placer::stop() {
  std::lock_guard guard{impl_->mtx};
  impl_->started = false;
  impl_->members = nullptr;
  impl_->incarnation = nullptr;
  impl_->peers = nullptr;
  // Before the actor system stops (it waits for every actor). The executor
  // ends with the mesh (mesh::stop), or here.
  if (impl_->watcher)
    caf::anon_send_exit(impl_->watcher, caf::exit_reason::user_shutdown);
  impl_->watcher = nullptr;
}

caf::actor step_placer::executor() const {
  return impl_->executor;
}

caf::actor step_placer::reports() const {
  return impl_->watcher;
}

void step_placer::leave() {
  std::lock_guard guard{impl_->book->mtx};
  impl_->book->leaving = true;
  ++impl_->book->version;
}

int64_t step_placer::running() const {
  return impl_->book->total();
}

std::map<std::string, nlohmann::json> step_placer::loads() const {
  auto as_load
    = [](const std::map<std::string, int64_t>& running,
         const std::map<std::string, int64_t>& capacity, int64_t runs) {
        nlohmann::json kinds = nlohmann::json::object();
        for (auto& [kind, n] : running)
          kinds[kind]["in_flight"] = n;
        for (auto& [kind, c] : capacity) {
          kinds[kind]["capacity"] = c;
          if (!kinds[kind].contains("in_flight"))
            kinds[kind]["in_flight"] = 0;
        }
        nlohmann::json load{{"in_flight", sum(running)}, {"kinds", kinds}};
        load["capacity"]
          = capacity.empty() ? nlohmann::json{} : nlohmann::json(sum(capacity));
        nlohmann::json out{{"load", load}};
        if (runs >= 0)
          out["runs"] = runs;
        return out;
      };
  std::map<std::string, nlohmann::json> out;
  auto& i = *impl_;
  auto own = i.own_load();
  out[i.opts.member]
    = as_load(counts_of(own["running"]), counts_of(own["capacity"]),
              own.value("runs", int64_t{-1}));
  out[i.opts.member]["reported_ms_ago"] = 0;
  std::lock_guard guard{i.mtx};
  auto now = clock::now();
  for (auto& [name, r] : i.reports) {
    out[name] = as_load(r.running, r.capacity, r.runs);
    out[name]["reported_ms_ago"]
      = std::chrono::duration_cast<std::chrono::milliseconds>(now - r.at)
          .count();
  }
  return out;
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
