#include "actors/limiter/limiter_actor.hpp"

#include "runtime/protocol/messages.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace troupe::actors {

namespace {

using self_ptr = caf::stateful_actor<limiter_state>*;

/// Sent to itself to check whether it has been idle long enough to retire.
using idle_check_atom = caf::atom_constant<caf::atom("idlecheck")>;

/// Sent to itself once the processes of a holder whose owner died are gone.
using drained_atom = caf::atom_constant<caf::atom("drained")>;

/// Hands free slots to the queue, in order.
void grant(self_ptr self) {
  auto& st = self->state;
  while (!st.queue.empty()
         && static_cast<int32_t>(st.holders.size()) < st.limit) {
    auto w = std::move(st.queue.front());
    st.queue.pop_front();
    if (auto [i, fresh] = st.holders.emplace(w.holder, w.owner); !fresh) {
      // Asked again by a new actor for the same holder (a restarted run):
      // the slot is the new actor's.
      st.owners.unhold(self, i->second);
      i->second = w.owner;
    }
    w.reply.deliver(true);
  }
}

/// Keeps the slot of `holder`, whose owner `dead` died, until no process of
/// the holder's work is left: the owner's attempts died with it, but their
/// process groups may take the kill grace to go, and nothing else may run
/// beside them. Then the slot is free, unless a new actor for the holder
/// (the restarted run) has taken it over meanwhile. Without a process
/// runner it is free at once.
void drain(self_ptr self, const std::string& holder,
           const caf::actor_addr& dead) {
  auto* runner = self->state.svc->runner;
  if (runner == nullptr) {
    self->send(self, drained_atom::value, holder, dead);
    return;
  }
  runner->when_idle(holder, [me = self->address(), holder, dead] {
    if (auto limiter = caf::actor_cast<caf::actor>(me))
      caf::anon_send(limiter, drained_atom::value, holder, dead);
  });
}

/// Retires when it has had nothing to do for keyed_idle; else checks again.
void check_idle(self_ptr self) {
  auto& st = self->state;
  retire_when_idle(self, st.svc->limiters, st.key, *st.svc, st.last_used_ns,
                   st.holders.empty() && st.queue.empty(),
                   idle_check_atom::value);
}

} // namespace

caf::behavior limiter_actor_impl(self_ptr self, std::string key, int32_t limit,
                                 services_ptr svc) {
  auto& st = self->state;
  st.key = std::move(key);
  st.limit = std::max(1, limit);
  st.svc = std::move(svc);
  st.last_used_ns = now_ns();
  if (st.svc->options.keyed_idle.count() > 0)
    self->delayed_send(self, st.svc->options.keyed_idle,
                       idle_check_atom::value);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (!st.owners.forget(msg.source))
      return;
    st.last_used_ns = now_ns();
    for (auto& [holder, owner] : st.holders)
      if (owner == msg.source)
        drain(self, holder, owner);
    st.queue.erase(
      std::remove_if(st.queue.begin(), st.queue.end(),
                     [&](auto& w) { return w.owner == msg.source; }),
      st.queue.end());
    grant(self);
  });
  return {
    [self](runtime::limit_acquire& a) -> caf::result<bool> {
      auto& st = self->state;
      st.last_used_ns = now_ns();
      auto owner = caf::actor_cast<caf::actor_addr>(self->current_sender());
      if (auto i = st.holders.find(a.holder); i != st.holders.end()) {
        if (i->second != owner) {
          // A new actor for the holder (a restarted run): the slot is its.
          st.owners.hold(self);
          st.owners.unhold(self, i->second);
          i->second = owner;
        }
        return true;
      }
      // First: the promise takes the sender from the message.
      st.owners.hold(self);
      auto reply = self->make_response_promise();
      st.queue.push_back({a.holder, owner, reply});
      grant(self);
      return reply;
    },
    [self](runtime::limit_release& r) {
      auto& st = self->state;
      st.last_used_ns = now_ns();
      if (auto i = st.holders.find(r.holder); i != st.holders.end()) {
        st.owners.unhold(self, i->second);
        st.holders.erase(i);
      }
      st.queue.erase(std::remove_if(st.queue.begin(), st.queue.end(),
                                    [&](auto& w) {
                                      if (w.holder != r.holder)
                                        return false;
                                      w.reply.deliver(false);
                                      st.owners.unhold(self, w.owner);
                                      return true;
                                    }),
                     st.queue.end());
      grant(self);
    },
    [self](drained_atom, const std::string& holder,
           const caf::actor_addr& dead) {
      auto& st = self->state;
      auto i = st.holders.find(holder);
      if (i == st.holders.end() || i->second != dead)
        return; // taken over by the holder's new actor
      st.last_used_ns = now_ns();
      st.holders.erase(i);
      grant(self);
    },
    [self](idle_check_atom) { check_idle(self); },
    [self](const runtime::inspect_actor&) -> std::string {
      auto& st = self->state;
      nlohmann::json holders = nlohmann::json::array();
      for (auto& [h, _] : st.holders)
        holders.push_back(h);
      nlohmann::json queue = nlohmann::json::array();
      for (auto& w : st.queue)
        queue.push_back(w.holder);
      return nlohmann::json{{"kind", "limiter"},
                            {"actor_id", self->id()},
                            {"mailbox", self->mailbox().size()},
                            {"key", st.key},
                            {"limit", st.limit},
                            {"holders", std::move(holders)},
                            {"queue", std::move(queue)}}
        .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    },
  };
}

} // namespace troupe::actors
