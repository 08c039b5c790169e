#include "actors/node/embedded_node.hpp"

#include "actors/supervisor/run_supervisor.hpp"
#include "actors/timer/timer_service.hpp"
#include "runtime/ids/partition.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/document.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <future>
#include <thread>

namespace troupe::actors {

using json = nlohmann::json;
using persistence::event_record;
using persistence::event_type;

std::string
describe_low_disk(const persistence::journal_store::disk_space& space) {
  if (space.write_failed && space.free_bytes >= space.min_free_bytes)
    return "the data dir's filesystem ran out of space (a journal write "
           "failed; "
           + config::format_size(space.free_bytes)
           + " free now, storage.min_free "
           + config::format_size(space.min_free_bytes) + ")";
  return "the data dir's filesystem has "
         + config::format_size(space.free_bytes)
         + " free, below storage.min_free ("
         + config::format_size(space.min_free_bytes) + ")";
}

std::unique_ptr<embedded_node> embedded_node::open(const options& opts,
                                                   std::string& error) {
  std::unique_ptr<embedded_node> node{new embedded_node};
  node->opts_ = opts;
  persistence::journal_store::options so;
  so.path = opts.data_dir;
  so.sync = opts.sync;
  so.max_batch = opts.max_batch;
  so.block_cache_mb = opts.block_cache_mb;
  std::shared_ptr<node_metrics> metrics;
  if (opts.metrics)
    metrics = std::make_shared<node_metrics>(*opts.metrics);
  if (metrics || opts.on_commit)
    so.on_commit = [m = metrics.get(), hook = opts.on_commit](
                     size_t appends, std::chrono::nanoseconds took) {
      if (m) {
        m->commit_seconds.observe(took);
        m->commit_appends.observe(static_cast<double>(appends));
      }
      if (hook)
        hook(appends, took);
    };
  so.min_free = opts.min_free;
  so.on_space_change
    = [log = opts.log](const persistence::journal_store::disk_space& space) {
        if (!log)
          return;
        if (space.low)
          log("data dir low on space: " + describe_low_disk(space)
              + "; journal writes are held (no attempt starts) and submissions "
                "refused until space is freed");
        else
          log("data dir space is back: " + config::format_size(space.free_bytes)
              + " free, floor " + config::format_size(space.min_free_bytes)
              + " (storage.min_free); resuming");
      };
  if (opts.tune_store)
    opts.tune_store(so);
  node->store_ = persistence::journal_store::open(so, error);
  if (!node->store_)
    return nullptr;
  // Opened after the store, which holds the data dir's lock: the groups
  // recorded in it are those of an earlier node on this data dir, killed
  // here before recovery can start any attempt again.
  process_runner_options runner_opts;
  runner_opts.state_dir = opts.data_dir + "/procs";
  runner_opts.log = opts.log;
  node->runner_ = std::make_unique<process_runner>(std::move(runner_opts));
  node->svc_ = std::make_shared<services>();
  node->svc_->store = node->store_.get();
  node->svc_->runner = node->runner_.get();
  node->http_ = std::make_unique<http_client>();
  node->svc_->http = node->http_.get();
  node->timers_ = std::make_unique<timer_service>();
  node->svc_->timers = node->timers_.get();
  node->svc_->options = opts.engine;
  node->svc_->specs.set_limits(opts.engine.spec_cache_entries,
                               opts.engine.spec_cache_bytes);
  node->svc_->log = opts.log;
  node->svc_->member = opts.member;
  node->svc_->metrics = metrics;
  auto& cfg = *(node->cfg_ = std::make_unique<caf::actor_system_config>());
  // `sharing` avoids the work-stealing scheduler's quadratic cost when one
  // actor spawns many (recovery spawns a run actor per unfinished run).
  cfg.set("scheduler.policy", caf::atom("sharing"));
  auto threads = opts.scheduler_threads;
  if (threads == 0)
    threads = std::max(2u, std::thread::hardware_concurrency());
  cfg.set("scheduler.max-threads", threads);
  runtime::register_message_types(cfg);
  if (opts.tune_system)
    opts.tune_system(cfg);
  node->system_ = std::make_unique<caf::actor_system>(cfg);
  if (opts.metrics)
    opts.metrics->add_gauge_callback(
      "troupe_actors_running", "Actors alive in the node's actor system.",
      [sys = node->system_.get()] {
        return static_cast<double>(sys->registry().running());
      });
  if (opts.metrics) {
    auto* store = node->store_.get();
    auto gauge = [&](const char* name, const char* help, auto field) {
      opts.metrics->add_gauge_callback(name, help, [store, field] {
        return static_cast<double>(field(store->space()));
      });
    };
    using space = persistence::journal_store::disk_space;
    gauge("troupe_disk_free_bytes",
          "Bytes free on the data dir's filesystem, as last read.",
          [](const space& s) { return s.free_bytes; });
    gauge("troupe_disk_min_free_bytes",
          "storage.min_free in bytes on the data dir's filesystem.",
          [](const space& s) { return s.min_free_bytes; });
    gauge("troupe_disk_low",
          "1 while free space is below storage.min_free: journal writes are "
          "held (no attempt starts) and submissions refused.",
          [](const space& s) { return s.low ? 1 : 0; });
    gauge("troupe_journal_queued_appends",
          "Journal appends waiting for the writer (held ones included).",
          [](const space& s) { return s.queued; });
  }
  for (size_t i = 0; i < std::max<size_t>(1, opts.supervisors); ++i)
    node->supervisors_.push_back(
      node->system_->spawn(run_supervisor_impl, node->svc_));
  return node;
}

embedded_node::~embedded_node() {
  // A collection under way stops after its current batch.
  retention_.reset();
  stop();
  // Writes still queued call back into the actor system (acknowledgements,
  // runs starting): let them finish while it exists.
  if (store_)
    store_->flush();
  // No actor is left to receive a timer.
  timers_.reset();
  // The system's destructor waits for every actor; then no callback can
  // reach an actor, and the runner and the store can go.
  system_.reset();
  http_.reset();
  runner_.reset();
  store_.reset();
}

void embedded_node::stop() {
  if (stopped_ || !system_)
    return;
  stopped_ = true;
  for (auto& s : supervisors_)
    caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  supervisors_.clear();
  svc_->breakers.stop_all();
  svc_->limiters.stop_all();
  system_->await_all_actors_done();
}

std::optional<std::string> embedded_node::disk_low() {
  auto space = store_->space();
  if (!space.low)
    return std::nullopt;
  return describe_low_disk(space);
}

persistence::journal_store::disk_space embedded_node::disk_space() {
  return store_->space();
}

caf::actor_system& embedded_node::system() {
  return *system_;
}

persistence::journal_store& embedded_node::store() {
  return *store_;
}

const caf::actor& embedded_node::supervisor_for(const std::string& id) const {
  return supervisors_[std::hash<std::string>{}(id) % supervisors_.size()];
}

std::string embedded_node::new_run_id(uint32_t partition) {
  return runtime::new_run_id(partition);
}

uint32_t embedded_node::partition_for(const std::string& key) const {
  if (opts_.partition_for)
    return opts_.partition_for(key);
  return key.empty() ? runtime::random_partition()
                     : runtime::partition_of_key(key, runtime::max_partitions);
}

std::vector<uint32_t> embedded_node::partitions_held(uint32_t count) {
  std::vector<bool> seen(std::clamp(count, 1u, runtime::max_partitions));
  std::string after;
  for (;;) {
    auto page = store_->list_runs(after, 4096);
    for (auto& entry : page)
      seen[runtime::partition_of_run(entry.run_id,
                                     static_cast<uint32_t>(seen.size()))]
        = true;
    if (page.size() < 4096)
      break;
    after = page.back().run_id;
  }
  std::vector<uint32_t> out;
  for (uint32_t p = 0; p < seen.size(); ++p)
    if (seen[p])
      out.push_back(p);
  return out;
}

embedded_node::recovery
embedded_node::recover(const caf::actor& observer, bool announce,
                       const std::function<bool(std::string_view)>& only) {
  auto out = resume_if(only, observer, announce);
  start_retention();
  return out;
}

embedded_node::recovery
embedded_node::resume_partition(uint32_t partition, uint32_t count,
                                const caf::actor& observer, bool announce) {
  return resume_if(
    [partition, count](std::string_view id) {
      return runtime::partition_of_run(id, count) == partition;
    },
    observer, announce);
}

uint64_t embedded_node::release_partition(uint32_t partition, uint32_t count,
                                          std::chrono::milliseconds timeout) {
  uint64_t stopped = 0;
  caf::scoped_actor self{*system_};
  for (auto& sup : supervisors_)
    self->request(sup, timeout, runtime::release_runs{partition, count})
      .receive([&](uint64_t n) { stopped += n; }, [](caf::error&) {});
  return stopped;
}

embedded_node::recovery
embedded_node::resume_if(const std::function<bool(std::string_view)>& only,
                         const caf::actor& observer, bool announce) {
  recovery out;
  store_->scan_unfinished_if(
    only, [&](const persistence::run_index_entry& entry,
              std::vector<event_record> events, const std::string& error) {
      if (!error.empty()) {
        // Journal unreadable: fail this run, keep its records as they are,
        // and go on with the others.
        out.problems.push_back(error);
        auto at = now_ns();
        persistence::journal_store::append_op op;
        op.run_id = entry.run_id;
        op.events.push_back(event_record{event_type::run_failed, at, "", 0, 0,
                                         "corrupt_journal", error});
        op.index = persistence::run_index_entry{entry.run_id,
                                                entry.workflow,
                                                persistence::run_state::failed,
                                                entry.created_at_ns,
                                                at,
                                                error};
        store_->append(std::move(op), [](const std::string&) {});
        return;
      }
      out.resumed.push_back(entry.run_id);
      caf::anon_send(supervisor_for(entry.run_id),
                     runtime::start_run{entry.run_id, std::move(events),
                                        observer, 0, "", announce});
    });
  // On a disk low on space the writes above are held, and a flush would
  // fail them: let them land when space returns instead.
  if (!store_->space().low)
    store_->flush();
  return out;
}

void embedded_node::start_retention() {
  if (retention_)
    return;
  persistence::retention_worker::options ro;
  ro.retention = opts_.retention;
  ro.tombstone_retention = opts_.tombstone_retention;
  ro.interval = opts_.gc_interval;
  ro.on_collect
    = [log = opts_.log](const persistence::journal_store::gc_report& r) {
        if (!log)
          return;
        if (!r.error.empty())
          log("retention: " + r.error);
        else if (r.runs > 0 || r.tombstones > 0)
          log("retention: deleted " + std::to_string(r.runs)
              + " finished run(s) with " + std::to_string(r.events)
              + " journal event(s) and " + std::to_string(r.keys)
              + " idempotency key(s); " + std::to_string(r.tombstones)
              + " tombstone(s) expired");
      };
  retention_
    = std::make_unique<persistence::retention_worker>(*store_, std::move(ro));
}

void embedded_node::collect_now(
  std::chrono::nanoseconds older_than,
  std::function<void(persistence::journal_store::gc_report)> done) {
  if (!retention_) {
    persistence::journal_store::gc_report r;
    r.error = "the node has not recovered its runs yet";
    if (done)
      done(std::move(r));
    return;
  }
  retention_->collect_now(older_than, std::move(done));
}

namespace {

/// The append that journals a new run: its run_submitted event (pinning the
/// workflow source) and its index entry.
persistence::journal_store::append_op
submission(const std::string& id, const std::string& source,
           const runtime::workflow_spec& spec, const json& inputs) {
  auto at = now_ns();
  persistence::journal_store::append_op op;
  op.run_id = id;
  op.events.push_back(
    event_record{event_type::run_submitted, at, "", 0, 0, "", "", source,
                 inputs.dump(-1, ' ', false, json::error_handler_t::replace)});
  op.index = persistence::run_index_entry{
    id, spec.name, persistence::run_state::running, at, at, ""};
  return op;
}

} // namespace

std::string embedded_node::submit_async(
  const std::string& source, const runtime::workflow_spec& spec,
  const json& inputs, const caf::actor& observer,
  std::function<void(const std::string& run_id, const std::string& error)> done,
  bool progress) {
  auto id = new_run_id(partition_for({}));
  auto op = submission(id, source, spec, inputs);
  auto start
    = runtime::start_run{id, op.events, observer, 0, "", false, progress};
  store_->append(std::move(op),
                 [sup = supervisor_for(id), start = std::move(start),
                  done = std::move(done)](std::string error) mutable {
                   auto run_id = start.run_id;
                   if (error.empty())
                     caf::anon_send(sup, std::move(start));
                   if (done)
                     done(run_id, error);
                 });
  return id;
}

namespace {

/// Why a submission of `source` with `inputs_text` may not have the
/// idempotency key `key` that run `holder` holds: what differs from the
/// workflow and inputs that run was submitted with (its run_submitted event,
/// the journal's first). Empty when they are the same, and when that event
/// cannot be read (a store of any age journals it, so the key is then
/// trusted as before keys were compared).
std::string key_mismatch(persistence::journal_store& store,
                         const std::string& key, const std::string& holder,
                         const std::string& source,
                         const std::string& inputs_text) {
  std::string error;
  auto first = store.read_event(holder, 1, error);
  if (!first || first->type != event_type::run_submitted)
    return {};
  bool same_workflow = runtime::same_workflow_text(first->data, source);
  bool same_inputs = first->data2 == inputs_text;
  if (!same_inputs) {
    auto a = json::parse(first->data2, nullptr, false);
    auto b = json::parse(inputs_text, nullptr, false);
    same_inputs = !a.is_discarded() && !b.is_discarded() && a == b;
  }
  if (same_workflow && same_inputs)
    return {};
  return "idempotency key '" + key + "' is held by run " + holder
         + ", which was submitted with "
         + (same_workflow ? "" : "a different workflow")
         + (same_workflow || same_inputs ? "" : " and ")
         + (same_inputs ? "" : "different inputs")
         + "; give another key, or the same workflow and inputs to get that "
           "run";
}

} // namespace

std::string embedded_node::submit(
  const std::string& source, const runtime::workflow_spec& spec,
  const json& inputs, const caf::actor& observer, std::string& error,
  const std::string& idempotency_key, bool* existing, std::string* conflict) {
  if (existing)
    *existing = false;
  if (conflict)
    conflict->clear();
  auto op = submission({}, source, spec, inputs);
  // The key's holder, if it may be given this submission's answer: else
  // sets `error` and `*conflict`.
  auto held = [&]() -> std::optional<std::string> {
    if (idempotency_key.empty())
      return std::nullopt;
    auto holder = store_->find_idempotency_key(idempotency_key);
    if (!holder)
      return holder;
    auto why = key_mismatch(*store_, idempotency_key, *holder, source,
                            op.events.front().data2);
    if (!why.empty()) {
      error = std::move(why);
      if (conflict)
        *conflict = *holder;
      return std::string{};
    }
    if (existing)
      *existing = true;
    return holder;
  };
  if (auto id = held())
    return *id;
  auto id = new_run_id(partition_for(idempotency_key));
  op.run_id = id;
  op.index->run_id = id;
  op.idempotency_key = idempotency_key;
  auto submitted = op.events.front();
  std::promise<std::string> done;
  auto result = done.get_future();
  store_->append(std::move(op),
                 [&done](std::string e) { done.set_value(std::move(e)); });
  error = result.get();
  if (!error.empty()) {
    // Another submission with the same key won the race.
    auto journal_error = std::move(error);
    error.clear();
    if (auto other = held())
      return *other;
    error = std::move(journal_error);
    return {};
  }
  caf::anon_send(supervisor_for(id),
                 runtime::start_run{id, {submitted}, observer, 0, ""});
  return id;
}

void embedded_node::cancel(const std::string& run_id,
                           const std::string& reason) {
  caf::anon_send(supervisor_for(run_id), runtime::cancel_run{run_id, reason});
}

void embedded_node::pause(const std::string& run_id,
                          const std::string& reason) {
  caf::anon_send(supervisor_for(run_id), runtime::pause_run{run_id, reason});
}

void embedded_node::resume(const std::string& run_id, const std::string& who) {
  caf::anon_send(supervisor_for(run_id), runtime::resume_run{run_id, who});
}

spec_cache& embedded_node::specs() {
  return svc_->specs;
}

namespace {

/// Asks `a` for its state, counting the question in `asked`; nothing when
/// it does not answer in time.
std::optional<json> ask(caf::scoped_actor& self, const caf::actor& a,
                        std::chrono::milliseconds timeout,
                        std::atomic<uint64_t>& asked) {
  std::optional<json> out;
  if (!a)
    return out;
  asked.fetch_add(1, std::memory_order_relaxed);
  self->request(a, timeout, runtime::inspect_actor{})
    .receive(
      [&](std::string& text) {
        auto v = json::parse(text, nullptr, false);
        if (!v.is_discarded())
          out = std::move(v);
      },
      [](caf::error&) {});
  return out;
}

} // namespace

json embedded_node::inspect_actors(size_t limit,
                                   std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*system_};
  json supervisors = json::array();
  size_t described = 0, live = 0;
  for (auto& sup : supervisors_) {
    auto s = ask(self, sup, timeout, inspect_asks_);
    if (!s)
      continue;
    live += s->value("runs_live", size_t{0});
    s->erase("runs");
    json children = json::array();
    std::vector<caf::actor> runs;
    self
      ->request(sup, timeout,
                runtime::list_children{static_cast<uint32_t>(limit)})
      .receive([&](std::vector<caf::actor>& v) { runs = std::move(v); },
               [](caf::error&) {});
    for (auto& r : runs) {
      if (described >= limit)
        break;
      if (auto d = ask(self, r, timeout, inspect_asks_)) {
        ++described;
        children.push_back(std::move(*d));
      }
    }
    (*s)["children"] = std::move(children);
    supervisors.push_back(std::move(*s));
  }
  auto keyed = [&](keyed_actors& k) {
    json out = json::array();
    for (auto& [_, a] : k.all())
      if (auto d = ask(self, a, timeout, inspect_asks_))
        out.push_back(std::move(*d));
    return out;
  };
  return json{{"kind", "node"},
              {"actors_running", system_->registry().running()},
              {"runs_live", live},
              {"runs_described", described},
              {"supervisors", std::move(supervisors)},
              {"breakers", keyed(svc_->breakers)},
              {"limiters", keyed(svc_->limiters)}};
}

std::optional<json>
embedded_node::inspect_run(const std::string& run_id,
                           std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*system_};
  caf::actor run;
  self->request(supervisor_for(run_id), timeout, runtime::find_run{run_id})
    .receive([&](caf::actor& a) { run = std::move(a); }, [](caf::error&) {});
  return ask(self, run, timeout, inspect_asks_);
}

std::optional<json>
embedded_node::inspect_actor(uint64_t actor_id,
                             std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*system_};
  for (auto& [_, a] : svc_->breakers.all())
    if (a.id() == actor_id)
      return ask(self, a, timeout, inspect_asks_);
  for (auto& [_, a] : svc_->limiters.all())
    if (a.id() == actor_id)
      return ask(self, a, timeout, inspect_asks_);
  for (auto& sup : supervisors_)
    if (sup.id() == actor_id)
      return ask(self, sup, timeout, inspect_asks_);
  // An attempt: one question, to the run that owns it.
  if (auto owner = caf::actor_cast<caf::actor>(svc_->attempts.find(actor_id))) {
    auto d = ask(self, owner, timeout, inspect_asks_);
    if (!d)
      return std::nullopt;
    for (auto& n : (*d)["nodes"])
      if (n.value("attempt_actor_id", uint64_t{0}) == actor_id) {
        json a = n;
        a["kind"] = "attempt";
        a["actor_id"] = actor_id;
        a["run_id"] = (*d)["run_id"];
        a["run_actor_id"] = (*d)["actor_id"];
        return a;
      }
    return std::nullopt;
  }
  // A run actor: each supervisor looks the id up in its own table, and
  // only the run found is asked; an id that is not live asks no run.
  for (auto& sup : supervisors_) {
    caf::actor run;
    self->request(sup, timeout, runtime::find_actor{actor_id})
      .receive([&](caf::actor& a) { run = std::move(a); }, [](caf::error&) {});
    if (run)
      return ask(self, run, timeout, inspect_asks_);
  }
  return std::nullopt;
}

std::optional<json>
embedded_node::inspect_breaker(const std::string& key,
                               std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*system_};
  for (auto& [k, a] : svc_->breakers.all())
    if (k == key)
      return ask(self, a, timeout, inspect_asks_);
  return std::nullopt;
}

json embedded_node::inspect_limits(std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*system_};
  json out = json::array();
  for (auto& [_, a] : svc_->limiters.all())
    if (auto d = ask(self, a, timeout, inspect_asks_))
      out.push_back(std::move(*d));
  return out;
}

void embedded_node::retry_now(const std::string& run_id,
                              const std::string& node) {
  caf::anon_send(supervisor_for(run_id), runtime::retry_now{run_id, node});
}

bool embedded_node::reset_breaker(const std::string& key,
                                  const std::string& who) {
  for (auto& [k, a] : svc_->breakers.all())
    if (k == key) {
      caf::anon_send(a, runtime::reset_breaker{who});
      return true;
    }
  return false;
}

void embedded_node::crash(const std::string& run_id) {
  caf::anon_send(supervisor_for(run_id), runtime::crash_run{run_id});
}

std::optional<runtime::run_finished>
embedded_node::finished_run(const std::string& run_id) {
  auto entry = store_->find_run(run_id);
  if (!entry || !persistence::is_terminal(entry->state))
    return std::nullopt;
  std::string error;
  auto events = store_->read_journal(run_id, error);
  runtime::run_finished f{run_id, entry->workflow, entry->state,
                          "null", entry->reason,   ""};
  for (auto i = events.rbegin(); i != events.rend(); ++i) {
    if (i->type == event_type::run_completed
        || i->type == event_type::run_failed
        || i->type == event_type::run_cancelled) {
      if (!i->data.empty())
        f.outputs = i->data;
      if (i->type != event_type::run_completed)
        f.reason = i->message, f.failed_node = i->node;
      break;
    }
  }
  return f;
}

} // namespace troupe::actors
