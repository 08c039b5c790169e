#include "actors/run/run_actor.hpp"

#include "actors/attempt/attempt_actor.hpp"
#include "actors/breaker/breaker_actor.hpp"
#include "actors/limiter/limiter_actor.hpp"
#include "actors/node_metrics.hpp"
#include "actors/timer/timer_service.hpp"
#include "persistence/chaos_hooks.hpp"

#include <caf/all.hpp>

namespace troupe::actors {

run_state::~run_state() {
  // What this run left in the timer service expires now, and can go before
  // it is due.
  timer_target.reset();
  if (svc && svc->timers)
    svc->timers->forget(timers_pending);
}

using json = nlohmann::json;
using persistence::event_record;
using persistence::event_type;
using runtime::node_state;

namespace {

using self_ptr = caf::stateful_actor<run_state>*;

std::chrono::nanoseconds until(int64_t deadline_ns) {
  return std::chrono::nanoseconds{std::max<int64_t>(0, deadline_ns - now_ns())};
}

/// Sends `t` to this actor at `deadline_ns` (wall clock). Through the node's
/// timer service, which holds the actor weakly: a run that ends does not
/// wait for its timers (an hour's timeout) to let its memory go.
void arm(self_ptr self, int64_t deadline_ns, runtime::run_timer t) {
  auto& st = self->state;
  if (auto* timers = st.svc->timers) {
    if (!st.timer_target)
      st.timer_target = timer_service::make_target(self->address());
    ++st.timers_pending;
    timers->schedule(until(deadline_ns), st.timer_target,
                     caf::make_message(std::move(t)));
  } else {
    self->delayed_send(self, until(deadline_ns), std::move(t));
  }
}

void notify(self_ptr self, const event_record& e, int64_t seq) {
  auto& st = self->state;
  if (!st.observer || !st.progress)
    return;
  // A map's first attempt carries its items: watchers learn how many.
  int64_t items = 0;
  if (e.type == event_type::attempt_started && !e.data.empty())
    items = static_cast<int64_t>(st.engine->map_items(e.node));
  self->send(st.observer,
             runtime::run_progress{st.engine->run_id(), e.node,
                                   std::string{persistence::to_string(e.type)},
                                   e.attempt, e.deadline_ns,
                                   e.message.empty() ? e.error_kind : e.message,
                                   seq, e.at_ns, e.error_kind, items});
}

/// Counts an ended attempt in the node's metrics.
void record_attempt(self_ptr self, const std::string& node, bool ok) {
  auto& st = self->state;
  auto* m = st.svc->metrics.get();
  if (!m)
    return;
  auto* spec = st.engine->node_spec_of(node);
  if (!spec)
    return;
  auto& status = st.engine->status(node);
  auto& series = m->of_kind(spec->kind);
  (ok ? series.ok : series.failed)->inc();
  if (status.started_at_ns != 0)
    series.seconds->observe(static_cast<double>(now_ns() - status.started_at_ns)
                            / 1e9);
  m->mailbox_depth.observe(static_cast<double>(self->mailbox().size()));
}

std::string cut(const std::string& s, size_t n) {
  return s.size() > n ? s.substr(0, n) + "..." : s;
}

/// The run actor's own account of itself, for the tooling shell.
json describe(self_ptr self, size_t max_text) {
  auto& st = self->state;
  auto& e = *st.engine;
  json nodes = json::array();
  json waiting = json::array();
  if (e.paused())
    waiting.push_back("paused: no attempt starts until resumed");
  auto add = [&](const std::string& id, const runtime::node_spec& spec) {
    auto& s = e.status(id);
    json n = {{"id", id},
              {"kind", spec.kind},
              {"state", runtime::to_string(s.state)},
              {"attempt", s.attempt}};
    if (s.started_at_ns != 0)
      n["started_at_ns"] = s.started_at_ns;
    if (s.attempt_deadline_ns != 0 && s.state == node_state::running)
      n["attempt_deadline_ns"] = s.attempt_deadline_ns;
    if (!s.last_error.empty()) {
      n["last_error_kind"] = s.last_error_kind;
      n["last_error"] = cut(s.last_error, max_text);
    }
    if (auto a = st.attempts.find(id); a != st.attempts.end())
      n["attempt_actor_id"] = a->second.id();
    if (s.state == node_state::waiting_retry && s.next_retry_ns != 0) {
      n["next_retry_ns"] = s.next_retry_ns;
      n["backoff_ms"]
        = std::max<int64_t>(0, s.next_retry_ns - now_ns()) / 1'000'000;
      waiting.push_back("retry of '" + id + "' (attempt "
                        + std::to_string(s.attempt + 1) + ")");
    }
    if (s.state == node_state::running) {
      if (auto f = st.fenced.find(id); f != st.fenced.end()
                                       && f->second == s.attempt
                                       && !st.attempts.count(id)) {
        auto why = st.svc->fence ? st.svc->fence() : std::string{};
        waiting.push_back((why.empty() ? std::string{"member fenced"} : why)
                          + " (attempt " + std::to_string(s.attempt) + " of '"
                          + id + "' waits to start)");
        n["fenced"] = true;
      } else if (st.awaiting_breaker.count(id))
        waiting.push_back("circuit breaker of '" + id + "'");
      else if (auto slot = st.slots.find(id);
               slot != st.slots.end() && !slot->second.granted)
        waiting.push_back("concurrency slot of '" + id + "'");
      else if (s.timer_deadline_ns != 0)
        waiting.push_back("timer of '" + id + "'");
      else
        waiting.push_back("attempt " + std::to_string(s.attempt) + " of '" + id
                          + "'");
      if (s.timer_deadline_ns != 0)
        n["timer_deadline_ns"] = s.timer_deadline_ns;
      std::string error;
      if (auto params = e.resolve_params_for(id, error))
        n["params"]
          = cut(params->dump(-1, ' ', false, json::error_handler_t::replace),
                max_text);
    }
    nodes.push_back(std::move(n));
  };
  for (auto& n : e.spec().nodes) {
    add(n.id, n);
    if (n.map_node)
      for (auto& item : e.item_ids(n.id))
        add(item, *n.map_node);
  }
  for (auto& [id, stopping] : st.stopping)
    waiting.push_back("attempt " + std::to_string(stopping.attempt) + " of '"
                      + id + "' to end (stopped"
                      + (stopping.timed_out ? " at its timeout" : "") + ")");
  return json{{"kind", "run"},
              {"actor_id", self->id()},
              {"mailbox", self->mailbox().size()},
              {"run_id", e.run_id()},
              {"workflow", e.spec().name},
              {"state", persistence::to_string(e.index_state())},
              {"compensating", e.compensating()},
              {"restarts", e.restarts()},
              {"created_at_ns", st.created_at_ns},
              {"journal_events", st.journal_size},
              {"unacked_writes", st.unacked.size()},
              {"inputs", cut(e.inputs().dump(-1, ' ', false,
                                             json::error_handler_t::replace),
                             max_text)},
              {"waiting_for", std::move(waiting)},
              {"nodes", std::move(nodes)}};
}

void launch(self_ptr self, const std::string& node);
caf::behavior run_behavior(self_ptr self);
void act_on(self_ptr self, const std::vector<event_record>& events,
            int64_t first_seq);

/// Appends `events` (already applied to the engine, possibly none) and
/// returns the write's tag. Every append is fenced: the store refuses it if
/// the journal is not as this actor knows it (another actor ran the run
/// since this one's journal was read), which ends this actor quietly.
uint64_t write(self_ptr self, std::vector<event_record> events) {
  auto& st = self->state;
  auto tag = st.next_tag++;
  persistence::journal_store::append_op op;
  op.run_id = st.engine->run_id();
  op.expected_seq = static_cast<uint32_t>(st.journal_size + 1);
  op.events = events;
  bool pause_changed = false;
  for (auto& e : events)
    pause_changed
      |= e.type == event_type::run_paused || e.type == event_type::run_resumed;
  if (st.engine->is_finished() || pause_changed) {
    auto& e = *st.engine;
    op.index = persistence::run_index_entry{e.run_id(),      e.spec().name,
                                            e.index_state(), st.created_at_ns,
                                            now_ns(),        e.reason()};
  }
  auto first_seq = st.journal_size + 1;
  st.journal_size += static_cast<int64_t>(events.size());
  st.unacked.emplace(tag, std::make_pair(first_seq, std::move(events)));
  auto me = caf::actor{self};
  auto* metrics = st.svc->metrics.get();
  auto began = metrics ? std::chrono::steady_clock::now()
                       : std::chrono::steady_clock::time_point{};
  st.svc->store->append(std::move(op), [me, tag, metrics,
                                        began](std::string error) {
    if (metrics)
      metrics->append_seconds.observe(std::chrono::steady_clock::now() - began);
    caf::anon_send(me, runtime::store_ack{tag, std::move(error)});
  });
  return tag;
}

/// Journals `events` (already applied to the engine); their effects follow
/// once the store has made them durable.
void persist(self_ptr self, std::vector<event_record> events) {
  if (!events.empty())
    write(self, std::move(events));
}

void step(self_ptr self) {
  persist(self, self->state.engine->decide(now_ns()));
}

/// Tells the circuit breaker that let `node`'s call through how it ended, or
/// gives back `node`'s place in the breaker's queue.
void report_breaker(self_ptr self, const std::string& node, bool ok,
                    bool counted) {
  auto& st = self->state;
  if (auto w = st.awaiting_breaker.find(node); w != st.awaiting_breaker.end()) {
    self->send(w->second.first,
               runtime::breaker_report{w->second.second, false, false});
    st.awaiting_breaker.erase(w);
  }
  auto i = st.breaker_calls.find(node);
  if (i == st.breaker_calls.end())
    return;
  if (i->second.first)
    self->send(i->second.first,
               runtime::breaker_report{i->second.second, ok, counted});
  st.breaker_calls.erase(i);
}

/// Gives back `node`'s concurrency slot, or its place in the queue.
void release_slot(self_ptr self, const std::string& node) {
  auto& st = self->state;
  auto i = st.slots.find(node);
  if (i == st.slots.end())
    return;
  if (i->second.limiter)
    self->send(i->second.limiter, runtime::limit_release{i->second.holder});
  st.slots.erase(i);
}

/// `attempt` of `node` succeeded with `output`: journal it with whatever
/// comes next.
/// Stamps the events that end an attempt of `node` with the cluster member
/// that ran it (none: a node alone).
std::vector<event_record> ran_on(std::vector<event_record> events,
                                 const std::string& node,
                                 const std::string& member) {
  if (!member.empty())
    for (auto& e : events)
      if (e.node == node
          && (e.type == event_type::node_completed
              || e.type == event_type::attempt_failed
              || e.type == event_type::node_failed
              || e.type == event_type::node_fell_back))
        e.member = member;
  return events;
}

void succeed(self_ptr self, const std::string& node, int32_t attempt,
             json output, const std::string& logs = {},
             const std::string& member = {}) {
  auto& st = self->state;
  record_attempt(self, node, true);
  report_breaker(self, node, true, true);
  release_slot(self, node);
  persist(self, ran_on(st.engine->on_attempt_succeeded(node, attempt, output,
                                                       now_ns(), logs),
                       node, member));
}

void on_failure(self_ptr self, const std::string& node, int32_t attempt,
                const std::string& kind, const std::string& message,
                int64_t retry_after_ms = 0, const std::string& logs = {},
                const std::string& member = {}) {
  auto& st = self->state;
  release_slot(self, node);
  // Failures of our own making say nothing about the service.
  report_breaker(self, node, false,
                 kind != "bad_template" && kind != "bad_params"
                   && kind != "crash");
  std::uniform_real_distribution<double> dist{0.0, 1.0};
  persist(self, ran_on(st.engine->on_attempt_failed(
                         node, attempt, kind, message, now_ns(), dist(st.rng),
                         retry_after_ms * 1'000'000, logs),
                       node, member));
}

/// Stops the attempt of `node` (timeout, cancel, the run's end) and gives
/// back its breaker call. Without an attempt actor (a sleep, a wait for a
/// slot or a breaker) it is over at once and so is its slot. An attempt
/// actor is asked to halt and is tracked as stopping until it is gone: an
/// exec attempt once its process group is, which may take the whole kill
/// grace. Until then the node keeps its slot, its next attempt waits, and
/// the run does not end. Returns whether it waits for one; `timed_out`
/// journals the attempt's timeout once it is gone.
bool stop_attempt(self_ptr self, const std::string& node,
                  bool timed_out = false) {
  auto& st = self->state;
  report_breaker(self, node, false, false);
  st.timers.erase(node);
  auto i = st.attempts.find(node);
  if (i == st.attempts.end()) {
    release_slot(self, node);
    return false;
  }
  auto& stopping = st.stopping[node];
  stopping = {i->second.address(), st.engine->status(node).attempt,
              std::nullopt, timed_out, false};
  if (auto s = st.slots.find(node); s != st.slots.end()) {
    stopping.held = std::move(s->second);
    st.slots.erase(s);
  }
  // It stays linked: its exit, whenever it comes, finds it stopped.
  if (auto l = st.attempt_nodes.find(i->second.address());
      l != st.attempt_nodes.end())
    l->second.stopped = true;
  self->send(i->second,
             runtime::halt_attempt{timed_out ? "timeout" : "stopped"});
  st.attempts.erase(i);
  return true;
}

/// The JSON an exec node reads on stdin by default: the run's inputs and the
/// outputs of the nodes it runs after.
std::string node_context(const runtime::run_engine& e,
                         const runtime::node_spec& n, const std::string& id) {
  json nodes = json::object();
  for (auto& dep : n.after)
    nodes[dep] = e.status(dep).output;
  json context = {{"inputs", e.inputs()}, {"nodes", nodes}};
  // A map item also gets its item.
  if (auto* item = e.item_of(id)) {
    context["item"] = *item;
    context["item_index"] = runtime::run_engine::split_item(id)->second;
  }
  return context.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// How often a node asks its limiter or breaker again when the one it asked
/// is gone (keyed actors retire when idle).
constexpr int max_keyed_tries = 3;

/// Arms the timer of `node`'s running attempt, if it has a deadline (its
/// timeout, or schedule_to_close).
void arm_attempt_timeout(self_ptr self, const std::string& node) {
  auto& status = self->state.engine->status(node);
  if (status.attempt_deadline_ns != 0)
    arm(self, status.attempt_deadline_ns,
        runtime::run_timer{runtime::run_timer::attempt_timeout, node,
                           status.attempt});
}

/// Queues `node` for a slot of concurrency key `key` (in order, across all
/// runs on the node); the attempt goes on once it has one.
void ask_limiter(self_ptr self, const std::string& node, const std::string& key,
                 int tries = 0) {
  auto& st = self->state;
  auto& e = *st.engine;
  auto limit = e.node_spec_of(node)->concurrency->limit;
  auto limiter = st.svc->limiters.get(key, [&] {
    return self->system().spawn(limiter_actor_impl, key, limit, st.svc);
  });
  auto holder = work_key(e.run_id(), node);
  // The ticket tells this request's answer from those of earlier requests of
  // the same holder that were given back.
  auto ticket = st.next_ticket++;
  st.slots[node] = {limiter, holder, false, ticket};
  auto attempt = e.status(node).attempt;
  self->request(limiter, caf::infinite, runtime::limit_acquire{holder})
    .then(
      [self, node, attempt, ticket](bool granted) {
        auto& st = self->state;
        auto i = st.slots.find(node);
        if (!granted || i == st.slots.end() || i->second.ticket != ticket)
          return; // given back meanwhile
        auto& status = st.engine->status(node);
        if (status.state != node_state::running || status.attempt != attempt) {
          release_slot(self, node);
          return;
        }
        i->second.granted = true;
        launch(self, node);
      },
      [self, node, key, ticket, tries](caf::error&) {
        auto& st = self->state;
        auto i = st.slots.find(node);
        if (i == st.slots.end() || i->second.ticket != ticket)
          return;
        // The limiter had retired, idle, after it was looked up: the key's
        // next one answers.
        if (tries < max_keyed_tries) {
          ask_limiter(self, node, key, tries + 1);
          return;
        }
        // A limiter that cannot answer must not stall the run.
        i->second = {caf::actor{}, "", true, 0};
        launch(self, node);
      });
}

/// Asks `node`'s circuit breaker to let its call through; the attempt goes on
/// once it does, or fails at once with circuit_open when it is open. A
/// half-open breaker with its trial calls taken answers once one is free or
/// its state changes.
void ask_breaker(self_ptr self, const std::string& node, int tries = 0) {
  auto& st = self->state;
  auto& e = *st.engine;
  auto& cb = *e.node_spec_of(node)->circuit_breaker;
  auto breaker = st.svc->breakers.get(cb.key, [&] {
    return self->system().spawn(breaker_actor_impl, cb, st.svc);
  });
  auto attempt = e.status(node).attempt;
  auto key = cb.key;
  // The ticket names the call to the breaker, and tells its answer from
  // those of earlier requests that were given back.
  auto ticket = st.next_ticket++;
  st.awaiting_breaker[node] = {breaker, ticket};
  // No timeout: the node may wait for a trial call as long as it lasts, and
  // gives its place back (report_breaker) when it stops waiting.
  self
    ->request(breaker, caf::infinite,
              runtime::breaker_acquire{e.run_id(), node, ticket})
    .then(
      [self, node, attempt, breaker, key, ticket](bool allowed,
                                                  int64_t retry_at, bool) {
        auto& st = self->state;
        auto i = st.awaiting_breaker.find(node);
        if (i == st.awaiting_breaker.end() || i->second.second != ticket)
          return; // given back meanwhile: the breaker freed the call
        st.awaiting_breaker.erase(i);
        auto& status = st.engine->status(node);
        if (status.state != node_state::running || status.attempt != attempt
            || st.attempts.count(node)) {
          if (allowed)
            self->send(breaker, runtime::breaker_report{ticket, false, false});
          return;
        }
        if (!allowed) {
          auto wait_ms = (retry_at - now_ns() + 999'999) / 1'000'000;
          on_failure(self, node, attempt, "circuit_open",
                     "circuit breaker '" + key + "' is open",
                     std::max<int64_t>(1, wait_ms));
          return;
        }
        st.breaker_calls[node] = {breaker, ticket};
        launch(self, node);
      },
      [self, node, ticket, tries](caf::error&) {
        auto& st = self->state;
        auto i = st.awaiting_breaker.find(node);
        if (i == st.awaiting_breaker.end() || i->second.second != ticket)
          return;
        st.awaiting_breaker.erase(i);
        // The breaker had retired, idle, after it was looked up: the key's
        // next one answers.
        if (tries < max_keyed_tries) {
          ask_breaker(self, node, tries + 1);
          return;
        }
        // A breaker that does not answer must not stall the run.
        st.breaker_calls[node] = {caf::actor{}, 0};
        launch(self, node);
      });
}

/// How often an attempt that waits while the member is fenced asks again.
constexpr auto fence_recheck = std::chrono::milliseconds{200};

/// Whether an attempt of `spec` does work that a fenced member must not
/// start (exec, http, a plugin kind): noop, sleep and fail are the run's own
/// bookkeeping and go on.
bool fenced_kind(const runtime::node_spec& spec) {
  return spec.kind != "noop" && spec.kind != "sleep" && spec.kind != "fail";
}

/// Whether the running attempt of `node` must wait because the member is
/// fenced; if so, it waits (asking again every fence_recheck), the wait
/// counting toward its deadline as a limiter's does. Once the member is
/// live again, it may start.
bool wait_if_fenced(self_ptr self, const std::string& node,
                    const runtime::node_spec& spec) {
  auto& st = self->state;
  if (!st.svc->fence || !fenced_kind(spec))
    return false;
  auto& status = st.engine->status(node);
  if (st.svc->fence().empty()) {
    st.fenced.erase(node);
    return false;
  }
  auto [i, fresh] = st.fenced.try_emplace(node, status.attempt);
  if (!fresh && i->second != status.attempt) {
    i->second = status.attempt;
    fresh = true;
  }
  if (fresh) {
    arm_attempt_timeout(self, node);
    if (st.svc->metrics)
      st.svc->metrics->fenced_waits.inc();
  }
  arm(
    self,
    now_ns()
      + std::chrono::duration_cast<std::chrono::nanoseconds>(fence_recheck)
          .count(),
    runtime::run_timer{runtime::run_timer::fence_check, node, status.attempt});
  return true;
}

/// A fenced attempt asks again whether it may start.
void on_fence_check(self_ptr self, const runtime::run_timer& t) {
  auto& st = self->state;
  auto i = st.fenced.find(t.node);
  if (i == st.fenced.end() || i->second != t.attempt)
    return; // stale: started, or that attempt ended otherwise
  auto& status = st.engine->status(t.node);
  if (status.state != node_state::running || status.attempt != t.attempt) {
    st.fenced.erase(i);
    return;
  }
  launch(self, t.node);
}

/// Spawns the attempt actor for the running attempt of `node`.
void launch(self_ptr self, const std::string& node) {
  auto& st = self->state;
  auto& e = *st.engine;
  auto& status = e.status(node);
  if (status.state != node_state::running || st.attempts.count(node)
      || st.awaiting_breaker.count(node) || st.timers.count(node))
    return;
  if (auto s = st.stopping.find(node); s != st.stopping.end()) {
    // Never beside the node's previous attempt: once it is gone.
    s->second.relaunch = true;
    return;
  }
  auto* spec = e.node_spec_of(node);
  if (spec->map_node) {
    // A map runs as its items; its own attempt only has a deadline.
    if (persistence::chaos::ledger_on())
      persistence::chaos::record("start", e.run_id(), node, status.attempt);
    if (status.attempt_deadline_ns != 0)
      arm(self, status.attempt_deadline_ns,
          runtime::run_timer{runtime::run_timer::attempt_timeout, node,
                             status.attempt});
    return;
  }
  // A fenced member starts no work (not even a slot's wait): its lease may
  // be gone, and its runs with it.
  if (wait_if_fenced(self, node, *spec))
    return;
  if (spec->concurrency) {
    auto i = st.slots.find(node);
    if (i != st.slots.end() && !i->second.granted)
      return; // waiting in the limiter's queue
    if (i == st.slots.end()) {
      // Wait for a slot first (in order, across all runs on the node).
      std::string error;
      auto key = e.resolve_text(*spec, spec->concurrency->key, error);
      if (!key) {
        on_failure(self, node, status.attempt, "bad_template",
                   "concurrency key: " + error);
        return;
      }
      // The wait counts toward the attempt's deadline (its timeout,
      // schedule_to_close): the timer runs from now.
      arm_attempt_timeout(self, node);
      ask_limiter(self, node, *key);
      return;
    }
  }
  if (spec->circuit_breaker && !st.breaker_calls.count(node)) {
    // Ask the breaker first; the attempt starts once it lets the call
    // through, or fails with circuit_open (not using up an attempt). The
    // wait counts toward the attempt's deadline, like a slot's.
    if (!st.slots.count(node))
      arm_attempt_timeout(self, node);
    ask_breaker(self, node);
    return;
  }
  std::string error;
  auto params = e.resolve_params_for(node, error);
  if (!params) {
    on_failure(self, node, status.attempt, "bad_template", error);
    return;
  }
  if (spec->kind == "noop") {
    // Nothing to wait for: it succeeds here, without an attempt actor.
    if (persistence::chaos::ledger_on())
      persistence::chaos::record("start", e.run_id(), node, status.attempt);
    succeed(self, node, status.attempt, std::move(*params));
    return;
  }
  if (spec->kind == "sleep") {
    // A timer of this actor; it fires as a run_timer of kind sleep.
    if (persistence::chaos::ledger_on())
      persistence::chaos::record("start", e.run_id(), node, status.attempt);
    st.timers.emplace(node, status.attempt);
    arm(self, status.timer_deadline_ns,
        runtime::run_timer{runtime::run_timer::sleep, node, status.attempt});
    if (status.attempt_deadline_ns != 0)
      arm(self, status.attempt_deadline_ns,
          runtime::run_timer{runtime::run_timer::attempt_timeout, node,
                             status.attempt});
    return;
  }
  runtime::attempt_spec a;
  a.run_id = e.run_id();
  a.node = node;
  a.kind = spec->kind;
  a.attempt = status.attempt;
  a.params = params->dump(-1, ' ', false, json::error_handler_t::replace);
  a.context = node_context(e, *spec, node);
  a.max_output_bytes = st.svc->options.max_output_bytes;
  a.kill_grace_ms = st.svc->options.kill_grace.count();
  // In a cluster, exec, http and plugin kinds may run on another member.
  auto child = st.svc->place && spec->kind != "fail"
                 ? st.svc->place(self, std::move(a), *spec)
                 : self->spawn<caf::linked>(attempt_actor_impl, std::move(a),
                                            caf::actor{self}, st.svc);
  st.svc->attempts.add(child, self->address());
  st.attempts.emplace(node, child);
  st.attempt_nodes.emplace(child.address(), run_state::attempt_link{node});
  if (status.attempt_deadline_ns != 0)
    arm(self, status.attempt_deadline_ns,
        runtime::run_timer{runtime::run_timer::attempt_timeout, node,
                           status.attempt});
}

/// Whether launching a node of `spec` affects nothing outside this actor:
/// a sleep or a noop (without a concurrency key or a breaker) and a map's
/// own attempt only arm timers and write to the journal.
bool stays_inside(const runtime::node_spec& spec) {
  if (spec.map_node)
    return true;
  return (spec.kind == "sleep" || spec.kind == "noop") && !spec.concurrency
         && !spec.circuit_breaker;
}

void finish(self_ptr self) {
  auto& st = self->state;
  auto& e = *st.engine;
  // Not while a stopped attempt's process may still run: this actor's end
  // gives its slots back too (its limiters watch it). The last one to go
  // finishes the run.
  if (!st.stopping.empty())
    return;
  if (st.observer && st.tell_end)
    self->send(st.observer, runtime::run_finished{
                              e.run_id(), e.spec().name, e.state(),
                              e.outputs().dump(-1, ' ', false,
                                               json::error_handler_t::replace),
                              e.reason(), e.failed_node()});
  self->quit();
}

/// The rerun_completed fault hook (`troupe chaos`'s deliberately broken
/// build): runs `node`, completed in attempt `attempt`, once more, here and
/// beside the run, whose engine never hears of it. Its result comes back
/// to the run actor as a stale attempt_result (the node has no attempt),
/// which it drops. noop, sleep and map nodes do nothing when run: only
/// their ledger line is written.
void rerun_completed(self_ptr self, const std::string& node, int32_t attempt) {
  auto& st = self->state;
  auto& e = *st.engine;
  auto* spec = e.node_spec_of(node);
  std::string error;
  auto params = spec ? e.resolve_params_for(node, error) : std::nullopt;
  if (st.svc->log)
    st.svc->log("rerun_completed fault hook: running node '" + node
                + "' of run " + e.run_id() + " again");
  if (!spec || !params || spec->map_node || spec->kind == "noop"
      || spec->kind == "sleep") {
    persistence::chaos::record("start", e.run_id(), node, attempt + 1);
    return;
  }
  runtime::attempt_spec a;
  a.run_id = e.run_id();
  a.node = node;
  a.kind = spec->kind;
  a.attempt = attempt + 1;
  a.params = params->dump(-1, ' ', false, json::error_handler_t::replace);
  a.context = node_context(e, *spec, node);
  a.max_output_bytes = st.svc->options.max_output_bytes;
  a.kill_grace_ms = st.svc->options.kill_grace.count();
  // Not linked: it outlives the run if need be, and ends with its work.
  self->system().spawn(attempt_actor_impl, std::move(a), caf::actor{self},
                       st.svc);
}

/// Carries out what durable events call for.
void act_on(self_ptr self, const std::vector<event_record>& events,
            int64_t first_seq) {
  auto& st = self->state;
  for (auto& e : events) {
    notify(self, e, first_seq++);
    switch (e.type) {
    case event_type::attempt_started:
      if (e.attempt > 1 && st.svc->metrics)
        if (auto* spec = st.engine->node_spec_of(e.node))
          st.svc->metrics->of_kind(spec->kind).retries->inc();
      launch(self, e.node);
      break;
    case event_type::attempt_failed:
      if (e.deadline_ns != 0)
        arm(self, e.deadline_ns,
            runtime::run_timer{runtime::run_timer::retry, e.node, e.attempt});
      break;
    case event_type::node_cancelled: stop_attempt(self, e.node); break;
    case event_type::node_completed:
      // Test-only hooks of `troupe chaos`; off, two relaxed loads.
      if (persistence::chaos::ledger_on())
        persistence::chaos::record("done", st.engine->run_id(), e.node,
                                   e.attempt);
      if (persistence::chaos::take_rerun())
        rerun_completed(self, e.node, e.attempt);
      break;
    default: break;
    }
  }
  if (st.engine->is_finished() && st.unacked.empty())
    finish(self);
}

/// A node's retry time has come.
void on_retry_due(self_ptr self, runtime::run_timer& t) {
  auto& st = self->state;
  step(self);
  auto& status = st.engine->status(t.node);
  // Timers may fire a little before the wall clock reaches the retry time;
  // wait for the rest. A paused run starts it on resume.
  if (!st.engine->paused() && status.state == node_state::waiting_retry
      && status.next_retry_ns != 0)
    arm(self, status.next_retry_ns, t);
}

/// A sleep node's time has come.
void on_sleep_done(self_ptr self, const runtime::run_timer& t) {
  auto& st = self->state;
  auto i = st.timers.find(t.node);
  if (i == st.timers.end() || i->second != t.attempt)
    return; // stale: from an attempt that ended otherwise
  st.timers.erase(i);
  auto& status = st.engine->status(t.node);
  if (status.state != node_state::running || status.attempt != t.attempt)
    return;
  succeed(self, t.node, t.attempt,
          json{{"deadline_ns", status.timer_deadline_ns}});
}

/// What the failure of an attempt of `node` that timed out says.
std::string timeout_message(self_ptr self, const std::string& node) {
  auto* spec = self->state.engine->node_spec_of(node);
  return "attempt timed out after "
         + config::format_duration(spec->timeout.value_or(config::duration{0}));
}

void on_attempt_timeout(self_ptr self, const runtime::run_timer& t) {
  auto& st = self->state;
  auto& status = st.engine->status(t.node);
  if (status.state != node_state::running || status.attempt != t.attempt)
    return;
  // Armed for an earlier try of this attempt (a call its breaker refused
  // does not use up the attempt's number), or early: wait for the deadline
  // of this one.
  if (status.attempt_deadline_ns > now_ns()) {
    arm(self, status.attempt_deadline_ns, t);
    return;
  }
  // Stopped already (its timer armed twice): its end is journaled when it
  // is gone.
  if (st.stopping.count(t.node))
    return;
  // A call that timed out failed: its breaker counts it (stop_attempt gives
  // the calls it stops back uncounted, as for a cancelled node).
  report_breaker(self, t.node, false, true);
  // The timeout is journaled once the attempt is gone (its process may
  // take the kill grace): its retry never runs beside it.
  if (!stop_attempt(self, t.node, true))
    on_failure(self, t.node, t.attempt, "timeout",
               timeout_message(self, t.node));
}

/// A stopped attempt of `node` is gone, and its process group with it: its
/// slot goes back, its timeout is journaled if that is what stopped it, and
/// what waited for it goes on.
void gone(self_ptr self, const std::string& node) {
  auto& st = self->state;
  auto i = st.stopping.find(node);
  auto was = std::move(i->second);
  st.stopping.erase(i);
  if (was.held && was.held->limiter)
    self->send(was.held->limiter, runtime::limit_release{was.held->holder});
  if (was.timed_out)
    on_failure(self, node, was.attempt, "timeout", timeout_message(self, node));
  if (was.relaunch)
    launch(self, node);
  if (st.engine->is_finished() && st.unacked.empty())
    finish(self);
}

void on_run_deadline(self_ptr self, runtime::run_timer& t) {
  auto& st = self->state;
  persist(self, st.engine->time_out(now_ns()));
  // Timers may fire a little before the wall clock reaches the deadline.
  if (!st.engine->is_finished())
    arm(self, st.engine->run_deadline_ns(), t);
}

} // namespace

caf::behavior run_actor_impl(caf::stateful_actor<run_state>* self,
                             runtime::start_run start, services_ptr svc) {
  // A bug in here must not take the node down: the actor dies with the
  // exception's text, and its supervisor restarts it from the journal.
  self->set_exception_handler(
    [](caf::scheduled_actor*, std::exception_ptr& eptr) -> caf::error {
      try {
        std::rethrow_exception(eptr);
      } catch (const std::exception& e) {
        return caf::make_error(caf::sec::runtime_error, e.what());
      } catch (...) {
        return caf::make_error(caf::sec::runtime_error, "unknown exception");
      }
    });
  auto& st = self->state;
  st.self = self;
  st.svc = std::move(svc);
  st.observer = std::move(start.observer);
  st.progress = start.progress;
  // Rebuild the run from its journal.
  auto& journal = start.journal;
  if (journal.empty() || journal.front().type != event_type::run_submitted)
    throw std::runtime_error("run " + start.run_id
                             + ": journal does not begin with run_submitted");
  std::string error;
  auto spec = st.svc->specs.get(journal.front().data, error);
  if (!spec)
    throw std::runtime_error("run " + start.run_id
                             + ": its workflow no longer parses: " + error);
  st.created_at_ns = journal.front().at_ns;
  st.journal_size = static_cast<int64_t>(journal.size());
  st.rng.seed(std::hash<std::string>{}(start.run_id)
              ^ static_cast<uint64_t>(now_ns()));
  auto inputs = json::parse(journal.front().data2, nullptr, false);
  st.engine = std::make_unique<runtime::run_engine>(
    start.run_id, std::move(spec),
    inputs.is_discarded() ? json::object() : std::move(inputs));
  for (auto& e : journal)
    st.engine->apply(e);
  self->set_exit_handler([self](caf::exit_msg& msg) {
    auto& st = self->state;
    auto i = st.attempt_nodes.find(msg.source);
    if (i == st.attempt_nodes.end()) {
      // Not an attempt of ours: the node stopping us.
      if (msg.reason != caf::exit_reason::normal)
        self->quit(msg.reason);
      return;
    }
    auto node = std::move(i->second.node);
    auto stopped = i->second.stopped;
    st.attempt_nodes.erase(i);
    // A stopped attempt is gone, whatever its reason: what waited for it
    // goes on.
    if (stopped) {
      if (auto s = st.stopping.find(node);
          s != st.stopping.end() && s->second.actor == msg.source)
        gone(self, node);
      return;
    }
    // An attempt ends normally only after sending its result, which may
    // still be on its way (exit messages can overtake it): keep the attempt
    // for it.
    if (msg.reason == caf::exit_reason::normal)
      return;
    auto a = st.attempts.find(node);
    if (a == st.attempts.end() || a->second.address() != msg.source)
      return; // it reported before it died
    st.attempts.erase(a);
    auto& status = st.engine->status(node);
    if (status.state == node_state::running)
      on_failure(self, node, status.attempt, "crash",
                 "the attempt died: " + describe_exit(msg.reason));
  });
  if (st.engine->is_finished()) {
    // The run ended already: this is a second start (a stale one from a
    // recovery scan, or one racing it), or a restart after the end was
    // journaled. Nothing is written and nothing runs. After a restart the
    // observer hears how the run ended, since the actor that ended it died
    // before it could say; otherwise whoever ended it has said.
    st.tell_end = start.restarts > 0;
    self->send(self, runtime::store_ack{0, ""});
    return run_behavior(self);
  }
  // Resume: journal the restart, re-run attempts that were in flight (at
  // least once), re-arm retry timers, then decide what comes next.
  if (start.restarts > 0) {
    event_record r{
      event_type::run_restarted, now_ns(), "", start.restarts, 0, "",
      start.restart_reason};
    st.engine->apply(r);
    persist(self, {std::move(r)});
  }
  // A run whose timeout passed while it was down ends before any attempt
  // starts again.
  persist(self, st.engine->time_out(now_ns()));
  if (!st.engine->is_finished()) {
    // What the journal says is in flight, gathered before anything is
    // launched: a noop succeeds as it is launched and may start the next
    // node in memory, which must wait until its start is durable (act_on
    // launches it then).
    std::vector<std::string> in_flight;
    auto resume = [&](const std::string& id) {
      auto& status = st.engine->status(id);
      if (status.state == node_state::running)
        in_flight.push_back(id);
      else if (status.state == node_state::waiting_retry
               && status.next_retry_ns != 0)
        arm(self, status.next_retry_ns,
            runtime::run_timer{runtime::run_timer::retry, id, status.attempt});
    };
    for (auto& n : st.engine->spec().nodes) {
      resume(n.id);
      // The items of a map in flight.
      for (size_t i = 0; i < st.engine->map_items(n.id); ++i)
        resume(n.id + "[" + std::to_string(i) + "]");
    }
    // What reaches outside this actor when launched (an attempt actor, a
    // concurrency slot, a breaker's call) runs again only once a fence has
    // shown that the journal is still as read: a recovery scan reads a
    // snapshot, and the run may have gone on, or ended, under another actor
    // since. The rest only arms timers or writes, and every write is fenced:
    // it resumes now, so that parked runs resume without a round trip to
    // the store.
    std::vector<std::string> fenced;
    auto now = now_ns();
    for (auto& id : in_flight) {
      if (!stays_inside(*st.engine->node_spec_of(id))) {
        fenced.push_back(id);
        continue;
      }
      st.engine->restart_attempt_timeout(id, now);
      launch(self, id);
    }
    if (!fenced.empty()) {
      st.resuming = std::make_unique<run_state::resume_plan>();
      st.resuming->nodes = std::move(fenced);
      st.resuming->announce = start.announce_resumed;
      st.resuming->fence = write(self, {});
    }
  }
  if (start.announce_resumed && st.observer && !st.resuming)
    self->send(st.observer,
               runtime::run_progress{start.run_id, "", "resumed", 0, 0, "",
                                     st.journal_size, now_ns(), ""});
  persist(self, st.engine->decide(now_ns()));
  if (auto deadline = st.engine->run_deadline_ns(); deadline != 0)
    arm(self, deadline, runtime::run_timer{runtime::run_timer::run_deadline});
  // A run that ends with nothing left to write ends now.
  if (st.unacked.empty() && st.engine->is_finished())
    self->send(self, runtime::store_ack{0, ""});
  return run_behavior(self);
}

namespace {

/// The fence of a resumed run passed: what was in flight runs again, each
/// from its start with its own timeout from now.
void relaunch(self_ptr self) {
  auto& st = self->state;
  auto plan = std::move(st.resuming);
  auto now = now_ns();
  for (auto& id : plan->nodes) {
    st.engine->restart_attempt_timeout(id, now);
    launch(self, id);
  }
  if (plan->announce && st.observer)
    self->send(st.observer,
               runtime::run_progress{st.engine->run_id(), "", "resumed", 0, 0,
                                     "", st.journal_size, now, ""});
}

caf::behavior run_behavior(self_ptr self) {
  return {
    [self](runtime::store_ack& ack) {
      auto& st = self->state;
      if (persistence::journal_store::is_stale(ack.error)) {
        // Another actor ran this run since its journal was read: leave it
        // be. Nothing of ours was written, launched or told.
        self->quit();
        return;
      }
      if (persistence::journal_store::is_not_leader(ack.error)) {
        // The run's partition is led by another member now, which resumes
        // the run from its copy of the journal: stop here, attempts and
        // all, without a restart.
        self->quit(caf::exit_reason::user_shutdown);
        return;
      }
      if (!ack.error.empty())
        throw std::runtime_error("journal write failed: " + ack.error);
      if (st.resuming && ack.tag == st.resuming->fence)
        relaunch(self);
      auto i = st.unacked.find(ack.tag);
      if (i == st.unacked.end()) {
        if (st.engine->is_finished() && st.unacked.empty())
          finish(self);
        return;
      }
      auto [first_seq, events] = std::move(i->second);
      st.unacked.erase(i);
      act_on(self, events, first_seq);
    },
    [self](runtime::attempt_result& r) {
      auto& st = self->state;
      auto i = st.attempts.find(r.node);
      if (i == st.attempts.end()
          || self->current_sender() != i->second.address())
        return; // stale: from an attempt that was stopped
      // In a cluster, the member that ran it (this one, when it ran here).
      auto member
        = !r.member.empty() || !st.svc->place ? r.member : st.svc->member;
      if (!r.ok)
        record_attempt(self, r.node, false);
      // (Its exit, which follows, finds it no longer in `attempts`.)
      st.attempts.erase(i);
      if (r.ok) {
        auto output = json::parse(r.output, nullptr, false);
        if (output.is_discarded())
          output = r.output;
        succeed(self, r.node, r.attempt, std::move(output), r.logs, member);
      } else {
        on_failure(self, r.node, r.attempt, r.error_kind, r.message,
                   r.retry_after_ms, r.logs, member);
      }
    },
    [self](runtime::run_timer& t) {
      auto& st = self->state;
      if (st.timers_pending > 0)
        --st.timers_pending;
      switch (t.kind) {
      case runtime::run_timer::retry: on_retry_due(self, t); break;
      case runtime::run_timer::sleep: on_sleep_done(self, t); break;
      case runtime::run_timer::attempt_timeout:
        on_attempt_timeout(self, t);
        break;
      case runtime::run_timer::run_deadline: on_run_deadline(self, t); break;
      case runtime::run_timer::fence_check: on_fence_check(self, t); break;
      default: break;
      }
    },
    [self](runtime::cancel_run& c) {
      persist(self, self->state.engine->cancel(c.reason, now_ns()));
    },
    [self](runtime::pause_run& p) {
      persist(self, self->state.engine->pause(p.reason, now_ns()));
    },
    [self](runtime::resume_run& r) {
      persist(self, self->state.engine->resume(r.who, now_ns()));
    },
    [self](const runtime::inspect_actor& q) -> std::string {
      return describe(self, q.max_text)
        .dump(-1, ' ', false, json::error_handler_t::replace);
    },
    [self](runtime::retry_now& r) {
      persist(self, self->state.engine->retry_now(r.node, now_ns()));
    },
    [self](runtime::crash_run&) {
      throw std::runtime_error("crash injected by request");
    },
  };
}

} // namespace

} // namespace troupe::actors
