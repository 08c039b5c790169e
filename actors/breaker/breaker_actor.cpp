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

} // namespace

caf::behavior breaker_actor_impl(self_ptr self,
                                 runtime::circuit_breaker_spec spec,
                                 services_ptr svc) {
  self->state.spec = std::move(spec);
  self->state.svc = std::move(svc);
  return {
    [self](runtime::breaker_acquire&) -> caf::result<bool, int64_t, bool> {
      auto& st = self->state;
      auto now = now_ns();
      if (st.state == mode::open) {
        auto reopen = st.opened_at_ns + st.spec.reset_timeout.count();
        if (now < reopen)
          return {false, reopen, false};
        change(self, mode::half_open,
               "reset_timeout of "
                 + config::format_duration(st.spec.reset_timeout) + " passed",
               now);
      }
      if (st.state == mode::half_open) {
        if (st.probes_in_flight >= st.spec.half_open_max_calls) {
          // Ask again soon: a trial call is on its way.
          auto wait
            = std::min<int64_t>(st.spec.reset_timeout.count(), 1'000'000'000);
          return {false, now + wait, false};
        }
        ++st.probes_in_flight;
        return {true, 0, true};
      }
      return {true, 0, false};
    },
    [self](const runtime::inspect_actor&) -> std::string {
      auto& st = self->state;
      auto failures = std::count_if(st.calls.begin(), st.calls.end(),
                                    [](auto& c) { return !c.second; });
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
           {"probes_in_flight", st.probes_in_flight}};
      if (st.state == mode::open) {
        out["opened_at_ns"] = st.opened_at_ns;
        out["half_open_at_ns"]
          = st.opened_at_ns + st.spec.reset_timeout.count();
      }
      return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    },
    [self](runtime::reset_breaker& r) {
      auto& st = self->state;
      st.probes_in_flight = 0;
      if (st.state != mode::closed)
        change(self, mode::closed, "reset by " + r.who, now_ns());
      st.calls.clear();
    },
    [self](runtime::breaker_report& r) {
      auto& st = self->state;
      auto now = now_ns();
      if (r.probe && st.probes_in_flight > 0)
        --st.probes_in_flight;
      if (!r.counted)
        return;
      switch (st.state) {
      case mode::closed: count(self, r.ok, now); break;
      case mode::half_open:
        if (!r.probe)
          break; // a call from before it opened
        if (r.ok)
          change(self, mode::closed, "a trial call succeeded", now);
        else
          change(self, mode::open, "a trial call failed", now);
        break;
      case mode::open: break;
      }
    },
  };
}

} // namespace troupe::actors
