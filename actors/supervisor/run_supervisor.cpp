#include "actors/supervisor/run_supervisor.hpp"

#include "actors/run/run_actor.hpp"
#include "runtime/ids/partition.hpp"

#include <caf/all.hpp>

namespace troupe::actors {

using persistence::event_record;
using persistence::event_type;

namespace {

using self_ptr = caf::stateful_actor<run_supervisor_state>*;

/// Whether the actor of `c` is alive (else its restart is pending).
bool live(const run_supervisor_state& st,
          const run_supervisor_state::child& c) {
  return c.actor && st.by_id.count(c.actor.id()) != 0;
}

/// How long a run actor may take to take a command before the supervisor
/// stops watching for its failure (the command may still be carried out).
constexpr auto command_timeout = std::chrono::seconds{60};

template<class Command>
void forward(self_ptr self, Command command);

void spawn_run(self_ptr self, runtime::start_run start) {
  auto& st = self->state;
  auto [entry, fresh] = st.runs.try_emplace(start.run_id);
  auto& [id, c] = *entry;
  if (fresh)
    ++st.svc->runs_live;
  // A run has one actor at a time: a second start of a live run (a run
  // submitted while the node recovered, started by both) is dropped.
  if (live(st, c))
    return;
  c.observer = start.observer;
  c.progress = start.progress;
  if (c.workflow.empty() && !start.journal.empty()) {
    // Parsed specs are cached: this costs a lookup, not a parse.
    std::string error;
    if (auto spec = st.svc->specs.get(start.journal.front().data, error))
      c.workflow = spec->name;
    c.created_at_ns = start.journal.front().at_ns;
  }
  c.actor
    = self->spawn<caf::monitored>(run_actor_impl, std::move(start), st.svc);
  st.by_id[c.actor.id()] = &id;
  // What came while the run was restarting, after its start.
  auto held = std::move(c.held);
  c.held.clear();
  for (auto& command : held)
    std::visit([&](auto& m) { forward(self, std::move(m)); }, command);
}

/// Sends `command` to the actor of its run, or holds it for the restarted
/// actor while the run restarts. A command the actor never took, because it
/// died with the command in its mailbox or before it came (the supervisor
/// hears of a death after its mailbox is closed), comes back as an error:
/// it goes to the restarted actor too. The commands are requests for that
/// reason only.
template<class Command>
void forward(self_ptr self, Command command) {
  auto& st = self->state;
  auto i = st.runs.find(command.run_id);
  if (i == st.runs.end())
    return;
  auto& c = i->second;
  if (!live(st, c)) {
    c.held.emplace_back(std::move(command));
    return;
  }
  auto to = c.actor.id();
  self->request(c.actor, command_timeout, command)
    .then([] {},
          [self, command, to](caf::error& error) mutable {
            // Timed out: it may yet be carried out, and is not sent twice.
            if (error == caf::sec::request_timeout)
              return;
            auto& st = self->state;
            auto i = st.runs.find(command.run_id);
            if (i == st.runs.end())
              return; // the run ended
            if (i->second.actor.id() == to)
              // Its death is not known here yet: its down message follows.
              i->second.held.emplace_back(std::move(command));
            else
              forward(self, std::move(command));
          });
}

/// Ends a run that cannot be run any more: journals run_failed and marks
/// the index, then tells the observer.
void give_up(self_ptr self, const std::string& run_id, std::string reason) {
  auto& st = self->state;
  auto observer = st.runs[run_id].observer;
  auto workflow = st.runs[run_id].workflow;
  auto created_at = st.runs[run_id].created_at_ns;
  auto progress = st.runs[run_id].progress;
  st.svc->runs_live -= static_cast<int64_t>(st.runs.erase(run_id));
  auto at = now_ns();
  persistence::journal_store::append_op op;
  op.run_id = run_id;
  op.events.push_back(
    event_record{event_type::run_failed, at, "", 0, 0, "supervision", reason});
  op.index = persistence::run_index_entry{
    run_id, workflow, persistence::run_state::failed, created_at, at, reason};
  // The run actor is gone: whatever it queued comes before this append, so
  // a store that refuses the run after a failed write may take this one.
  op.resync = true;
  // The observer hears of it once it is durable, like any other change.
  runtime::run_finished finished{
    run_id, workflow, persistence::run_state::failed, "null", reason, ""};
  auto me = caf::actor{self};
  auto* store = st.svc->store;
  store->append(std::move(op), [observer, finished, me, store, run_id,
                                progress](const std::string& error) {
    if (error.empty()) {
      if (observer)
        caf::anon_send(observer, finished);
      return;
    }
    // The store refused the failure (a disk error, say): the run is started
    // again from its journal a little later, as a node does at its start,
    // rather than left unfinished with no actor.
    store->read_journal_async(run_id, [me, run_id, observer, progress,
                                       error](std::vector<event_record> events,
                                              std::string read_error) {
      if (!read_error.empty() || events.empty())
        return;
      caf::delayed_anon_send(
        me, std::chrono::seconds{2},
        runtime::start_run{run_id, std::move(events), observer, 0,
                           "its failure could not be journaled: " + error,
                           false, progress});
    });
  });
}

} // namespace

caf::behavior run_supervisor_impl(self_ptr self, services_ptr svc) {
  self->state.svc = std::move(svc);
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& st = self->state;
    auto i = st.by_id.find(msg.source.id());
    if (i == st.by_id.end())
      return;
    auto id = *i->second;
    st.by_id.erase(i);
    // user_shutdown: the run was handed over (its partition has another
    // leader now), so it is not restarted here.
    if (msg.reason == caf::exit_reason::normal
        || msg.reason == caf::exit_reason::user_shutdown || st.stopping) {
      st.svc->runs_live -= static_cast<int64_t>(st.runs.erase(id));
      return;
    }
    auto& c = st.runs[id];
    auto reason = describe_exit(msg.reason);
    auto now = now_ns();
    auto window = std::chrono::nanoseconds{st.svc->options.restart_window};
    // (A vector: restarts are rare, and a deque costs 512 bytes per run.)
    std::erase_if(c.restarts,
                  [&](int64_t t) { return t < now - window.count(); });
    if (static_cast<int32_t>(c.restarts.size())
        >= st.svc->options.max_restarts) {
      give_up(self, id,
              "the run actor crashed " + std::to_string(c.restarts.size() + 1)
                + " times within "
                + config::format_duration(st.svc->options.restart_window)
                + "; last: " + reason);
      return;
    }
    c.restarts.push_back(now);
    ++c.total_restarts;
    auto backoff = st.svc->options.restart_backoff
                   * (1 << std::min<size_t>(c.restarts.size() - 1, 10));
    self->delayed_send(self, backoff, runtime::restart_run{id, reason});
  });
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    st.stopping = true;
    for (auto& [_, c] : st.runs)
      if (c.actor)
        self->send_exit(c.actor, msg.reason);
    self->quit(msg.reason);
  });
  return {
    [self](runtime::start_run& start) { spawn_run(self, std::move(start)); },
    [self](runtime::restart_run& r) {
      auto& st = self->state;
      if (st.stopping || !st.runs.count(r.run_id))
        return;
      // An empty append completes after every earlier write of this run, so
      // the journal read that follows sees them all. It resyncs the run: the
      // old actor is gone, so after a failed write the store refuses the
      // writes it had queued and takes the new actor's.
      auto me = caf::actor{self};
      auto* store = st.svc->store;
      auto id = r.run_id;
      auto reason = r.reason;
      persistence::journal_store::append_op barrier;
      barrier.run_id = id;
      barrier.resync = true;
      store->append(std::move(barrier), [me, store, id,
                                         reason](const std::string&) {
        store->read_journal_async(id, [me, id,
                                       reason](std::vector<event_record> events,
                                               std::string error) {
          caf::anon_send(me, runtime::journal_loaded{id, std::move(events),
                                                     std::move(error), reason});
        });
      });
    },
    [self](runtime::journal_loaded& j) {
      auto& st = self->state;
      auto i = st.runs.find(j.run_id);
      if (st.stopping || i == st.runs.end())
        return;
      if (!j.error.empty()) {
        give_up(self, j.run_id, "cannot restart: " + j.error);
        return;
      }
      spawn_run(self,
                runtime::start_run{j.run_id, std::move(j.journal),
                                   i->second.observer, i->second.total_restarts,
                                   j.reason, false, i->second.progress});
    },
    [self](const runtime::release_runs& r) -> uint64_t {
      auto& st = self->state;
      uint64_t stopped = 0;
      for (auto i = st.runs.begin(); i != st.runs.end();) {
        if (runtime::partition_of_run(i->first, r.count) != r.partition) {
          ++i;
          continue;
        }
        // Forgotten first, so that its end is not taken for a crash.
        if (i->second.actor) {
          st.by_id.erase(i->second.actor.id());
          self->send_exit(i->second.actor, caf::exit_reason::user_shutdown);
        }
        ++stopped;
        --st.svc->runs_live;
        i = st.runs.erase(i);
      }
      return stopped;
    },
    [self](runtime::cancel_run& c) { forward(self, c); },
    [self](runtime::pause_run& c) { forward(self, c); },
    [self](runtime::resume_run& c) { forward(self, c); },
    [self](runtime::retry_now& c) { forward(self, c); },
    [self](const runtime::list_children& q) -> std::vector<caf::actor> {
      std::vector<caf::actor> out;
      for (auto& [_, c] : self->state.runs) {
        if (out.size() >= q.limit)
          break;
        if (c.actor)
          out.push_back(c.actor);
      }
      return out;
    },
    [self](const runtime::find_actor& q) -> caf::actor {
      auto& st = self->state;
      auto i = st.by_id.find(q.actor_id);
      return i == st.by_id.end() ? caf::actor{} : st.runs[*i->second].actor;
    },
    [self](const runtime::find_run& q) -> caf::actor {
      auto& st = self->state;
      auto i = st.runs.find(q.run_id);
      return i == st.runs.end() ? caf::actor{} : i->second.actor;
    },
    [self](const runtime::inspect_actor&) -> std::string {
      auto& st = self->state;
      nlohmann::json runs = nlohmann::json::array();
      size_t restarting = 0;
      for (auto& [id, c] : st.runs) {
        if (!live(st, c))
          ++restarting;
        if (runs.size() < 1000)
          runs.push_back({{"run_id", id},
                          {"actor_id", c.actor ? c.actor.id() : 0},
                          {"workflow", c.workflow},
                          {"restarts", c.total_restarts},
                          {"created_at_ns", c.created_at_ns}});
      }
      return nlohmann::json{{"kind", "supervisor"},
                            {"actor_id", self->id()},
                            {"mailbox", self->mailbox().size()},
                            {"runs_live", st.runs.size()},
                            {"runs_restarting", restarting},
                            {"runs", std::move(runs)}}
        .dump();
    },
    [self](runtime::crash_run& c) {
      auto& st = self->state;
      if (auto i = st.runs.find(c.run_id);
          i != st.runs.end() && live(st, i->second))
        self->send(i->second.actor, c);
    },
  };
}

} // namespace troupe::actors
