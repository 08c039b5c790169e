#include "actors/breaker/breaker_actor.hpp"

#include "actors/node_metrics.hpp"
#include "config/duration.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>

namespace troupe::actors {

const char* to_string(breaker_state::mode m) {
  switch (m) {
  case breaker_state::mode::closed: return "closed";
  case breaker_state::mode::open: return "open";
  case breaker_state::mode::half_open: return "half-open";
  }
  return "unknown";
}

namespace {

using self_ptr = caf::stateful_actor<breaker_state>*;
using mode = breaker_state::mode;
using call_id = breaker_state::call_id;

/// Sent to itself to check whether it has been idle long enough to retire.
using idle_check_atom = caf::atom_constant<caf::atom("idlecheck")>;

int64_t reopen_at(const breaker_state& st) {
  return st.opened_at_ns + st.spec.reset_timeout.count();
}

call_id id_of(const caf::actor_addr& owner, uint64_t ticket) {
  return {owner ? owner.id() : 0, ticket};
}

/// Lets the first waiter through, as a trial call or not.
void let_through(self_ptr self, bool probe) {
  auto& st = self->state;
  auto w = std::move(st.queue.front());
  st.queue.pop_front();
  st.granted[id_of(w.owner, w.ticket)] = {w.owner, std::move(w.holder), probe};
  if (probe)
    ++st.probes_in_flight;
  w.reply.deliver(true, int64_t{0}, probe);
}

/// Hands the free trial calls of a half-open breaker to the waiters, in
/// order.
void serve(self_ptr self) {
  auto& st = self->state;
  while (st.state == mode::half_open && !st.queue.empty()
         && st.probes_in_flight < st.spec.half_open_max_calls)
    let_through(self, true);
}

void change(self_ptr self, mode to, const std::string& why, int64_t now) {
  auto& st = self->state;
  if (st.svc->log)
    st.svc->log("circuit breaker '" + st.spec.key + "': " + to_string(st.state)
                + " -> " + to_string(to) + " (" + why + ")");
  st.state = to;
  if (auto* m = st.svc->metrics.get())
    m->breaker_state.with({{"key", st.spec.key}})
      .set(to == mode::closed      ? 0
           : to == mode::half_open ? 1
                                   : 2);
  if (to == mode::open)
    st.opened_at_ns = now;
  // The last state is kept in the store, for `troupe breakers`.
  if (st.svc->store) {
    nlohmann::json note
      = {{"key", st.spec.key},
         {"state", to_string(to)},
         {"since_ns", now},
         {"reason", why},
         {"failure_threshold", st.spec.failure_threshold},
         {"reset_timeout", config::format_duration(st.spec.reset_timeout)}};
    persistence::journal_store::append_op op;
    op.notes.emplace_back(
      "breaker/" + st.spec.key,
      note.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    st.svc->store->append(std::move(op), [](const std::string&) {});
  }
  if (to != mode::closed)
    st.calls.clear();
  // The waiters hear of the change once: closed lets them all through, open
  // tells them when to ask again.
  while (to == mode::closed && !st.queue.empty())
    let_through(self, false);
  while (to == mode::open && !st.queue.empty()) {
    auto w = std::move(st.queue.front());
    st.queue.pop_front();
    w.reply.deliver(false, reopen_at(st), false);
    st.owners.unhold(self, w.owner);
  }
}

/// Counts a closed breaker's outcome and opens it when the limits say so.
void count(self_ptr self, bool ok, int64_t now) {
  auto& st = self->state;
  auto& b = st.spec;
  st.calls.emplace_back(now, ok);
  while (!st.calls.empty() && st.calls.front().first < now - b.window.count())
    st.calls.pop_front();
  auto failures = std::count_if(st.calls.begin(), st.calls.end(),
                                [](auto& c) { return !c.second; });
  auto total = static_cast<int64_t>(st.calls.size());
  auto window = config::format_duration(b.window);
  if (failures >= b.failure_threshold) {
    change(self, mode::open,
           std::to_string(failures) + " failures within " + window, now);
  } else if (b.error_rate && total >= b.min_calls
             && static_cast<double>(failures)
                  >= *b.error_rate * static_cast<double>(total)) {
    change(self, mode::open,
           std::to_string(failures) + " of " + std::to_string(total)
             + " calls failed within " + window,
           now);
  }
}

/// Frees the call `id`; returns whether it was a trial call (nothing when
/// the breaker holds no such call).
std::optional<bool> free_call(self_ptr self, const call_id& id) {
  auto& st = self->state;
  auto i = st.granted.find(id);
  if (i == st.granted.end())
    return std::nullopt;
  auto probe = i->second.probe;
  auto owner = i->second.owner;
  st.granted.erase(i);
  if (probe)
    --st.probes_in_flight;
  st.owners.unhold(self, owner);
  return probe;
}

/// Takes the waiter `id` out of the queue, answering it "not allowed";
/// returns whether there was one.
bool drop_waiter(self_ptr self, const call_id& id) {
  auto& st = self->state;
  auto i = std::find_if(st.queue.begin(), st.queue.end(), [&](auto& w) {
    return id_of(w.owner, w.ticket) == id;
  });
  if (i == st.queue.end())
    return false;
  auto owner = i->owner;
  i->reply.deliver(false, int64_t{0}, false);
  st.queue.erase(i);
  st.owners.unhold(self, owner);
  return true;
}

/// Retires when it is closed and has had nothing to do for keyed_idle (so
/// a fresh breaker would be the same); else checks again later.
void check_idle(self_ptr self) {
  auto& st = self->state;
  while (!st.calls.empty()
         && st.calls.front().first < now_ns() - st.spec.window.count())
    st.calls.pop_front();
  retire_when_idle(self, st.svc->breakers, st.spec.key, *st.svc,
                   st.last_used_ns,
                   st.state == mode::closed && st.calls.empty()
                     && st.granted.empty() && st.queue.empty(),
                   idle_check_atom::value);
}

} // namespace

caf::behavior breaker_actor_impl(self_ptr self,
                                 runtime::circuit_breaker_spec spec,
                                 services_ptr svc) {
  self->state.spec = std::move(spec);
  self->state.svc = std::move(svc);
  self->state.last_used_ns = now_ns();
  if (auto idle = self->state.svc->options.keyed_idle; idle.count() > 0)
    self->delayed_send(self, idle, idle_check_atom::value);
  // An actor that dies holding calls or waiting gives them back: a trial
  // call it held is free again (its outcome is unknown, so not counted).
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    if (!st.owners.forget(msg.source))
      return;
    st.last_used_ns = now_ns();
    for (auto i = st.granted.begin(); i != st.granted.end();) {
      if (i->second.owner != msg.source) {
        ++i;
        continue;
      }
      if (i->second.probe)
        --st.probes_in_flight;
      i = st.granted.erase(i);
    }
    st.queue.erase(
      std::remove_if(st.queue.begin(), st.queue.end(),
                     [&](auto& w) { return w.owner == msg.source; }),
      st.queue.end());
    serve(self);
  });
  return {
    [self](runtime::breaker_acquire& a) -> caf::result<bool, int64_t, bool> {
      auto& st = self->state;
      auto now = now_ns();
      st.last_used_ns = now;
      auto owner = caf::actor_cast<caf::actor_addr>(self->current_sender());
      auto id = id_of(owner, a.ticket);
      if (auto i = st.granted.find(id); i != st.granted.end())
        return {true, 0, i->second.probe}; // asked twice
      if (st.state == mode::open) {
        if (now < reopen_at(st))
          return {false, reopen_at(st), false};
        change(self, mode::half_open,
               "reset_timeout of "
                 + config::format_duration(st.spec.reset_timeout) + " passed",
               now);
      }
      auto holder = a.run_id + "/" + a.node;
      if (st.state == mode::half_open
          && (st.probes_in_flight >= st.spec.half_open_max_calls
              || !st.queue.empty())) {
        // Every trial call is taken: wait for one, or for the outcome.
        // First: the promise takes the sender from the message.
        st.owners.hold(self);
        auto reply = self->make_response_promise();
        st.queue.push_back({owner, a.ticket, std::move(holder), reply});
        return reply;
      }
      auto probe = st.state == mode::half_open;
      st.granted[id] = {owner, std::move(holder), probe};
      if (probe)
        ++st.probes_in_flight;
      st.owners.hold(self);
      return {true, 0, probe};
    },
    [self](runtime::breaker_report& r) {
      auto& st = self->state;
      auto now = now_ns();
      st.last_used_ns = now;
      auto id = id_of(caf::actor_cast<caf::actor_addr>(self->current_sender()),
                      r.ticket);
      auto probe = free_call(self, id);
      if (!probe) {
        // A place in the queue given back; or a call given back twice, or
        // that the breaker never let through: nothing to count.
        drop_waiter(self, id);
        return;
      }
      if (!r.counted) {
        serve(self);
        return;
      }
      switch (st.state) {
      case mode::closed: count(self, r.ok, now); break;
      case mode::half_open:
        if (!*probe) {
          serve(self); // a call from before it opened
          break;
        }
        if (r.ok)
          change(self, mode::closed, "a trial call succeeded", now);
        else
          change(self, mode::open, "a trial call failed", now);
        break;
      case mode::open: break;
      }
    },
    [self](idle_check_atom) { check_idle(self); },
    [self](const runtime::inspect_actor&) -> std::string {
      auto& st = self->state;
      auto failures = std::count_if(st.calls.begin(), st.calls.end(),
                                    [](auto& c) { return !c.second; });
      nlohmann::json probes = nlohmann::json::array();
      for (auto& [_, c] : st.granted)
        if (c.probe)
          probes.push_back(c.holder);
      nlohmann::json queue = nlohmann::json::array();
      for (auto& w : st.queue)
        queue.push_back(w.holder);
      nlohmann::json out
        = {{"kind", "breaker"},
           {"actor_id", self->id()},
           {"mailbox", self->mailbox().size()},
           {"key", st.spec.key},
           {"state", to_string(st.state)},
           {"calls_in_window", st.calls.size()},
           {"failures_in_window", failures},
           {"failure_threshold", st.spec.failure_threshold},
           {"window", config::format_duration(st.spec.window)},
           {"reset_timeout", config::format_duration(st.spec.reset_timeout)},
           {"half_open_max_calls", st.spec.half_open_max_calls},
           {"calls_in_flight", st.granted.size()},
           {"probes_in_flight", st.probes_in_flight},
           {"probes", std::move(probes)},
           {"queue", std::move(queue)}};
      if (st.state == mode::open) {
        out["opened_at_ns"] = st.opened_at_ns;
        out["half_open_at_ns"] = reopen_at(st);
      }
      return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    },
    [self](runtime::reset_breaker& r) {
      auto& st = self->state;
      // Trial calls in flight become ordinary calls of the closed breaker.
      for (auto& [_, c] : st.granted)
        c.probe = false;
      st.probes_in_flight = 0;
      if (st.state != mode::closed)
        change(self, mode::closed, "reset by " + r.who, now_ns());
      st.calls.clear();
    },
  };
}

} // namespace troupe::actors
