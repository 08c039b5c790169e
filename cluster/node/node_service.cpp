#include "cluster/node/node_service.hpp"

#include "cluster/node/fault_request.hpp"
#include "cluster/node/run_views.hpp"
#include "runtime/auth/rate_limiter.hpp"
#include "runtime/engine/run_engine.hpp"
#include "runtime/log/log.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange

namespace troupe::cluster {

namespace asio = boost::asio;
using json = nlohmann::json;
using control::error_code;
using persistence::event_record;
using persistence::event_type;
using persistence::run_state;

namespace {

json progress_json(const runtime::run_progress& p) {
  json out = {{"seq", p.seq},
              {"type", p.event},
              {"at_ns", p.at_ns},
              {"run_id", p.run_id}};
  if (!p.node.empty())
    out["node"] = p.node;
  if (p.attempt != 0)
    out["attempt"] = p.attempt;
  if (p.next_retry_ns != 0)
    out["deadline_ns"] = p.next_retry_ns;
  if (!p.error_kind.empty())
    out["error_kind"] = p.error_kind;
  if (!p.message.empty())
    out["message"] = p.message;
  if (p.items != 0)
    out["items"] = p.items;
  return out;
}

json finished_json(const runtime::run_finished& f) {
  json out = {{"run_id", f.run_id},
              {"workflow", f.workflow},
              {"state", persistence::to_string(f.state)}};
  if (f.state == run_state::completed) {
    out["outputs"] = parse_or_text(f.outputs);
  } else {
    out["reason"] = f.reason;
    if (!f.failed_node.empty())
      out["failed_node"] = f.failed_node;
    auto how = parse_or_text(f.outputs);
    if (how.is_object() && how.contains("compensated"))
      out["compensation"] = how;
  }
  return out;
}

/// Refuses a submission whose journal write failed with `error`. A store
/// that no longer leads the run's partition refused it before writing
/// anything: the partition's leadership moved (a drain or a rebalance)
/// after the submission was admitted. That is not_ready, which clients
/// retry (a retry lands in a partition led here, or is refused by admission
/// until the move is over); any other failure is internal.
///
/// A submission whose record was written but discarded (a newer leader's
/// log replaced it while it waited for the in-sync replicas) does not
/// exist anywhere and never will: not_ready too, with the store's reason.
void journal_failed(const request_ptr& req, const std::string& error) {
  using store = persistence::journal_store;
  if (store::is_discarded(error))
    return req->fail(error_code::not_ready,
                     "submit: the run was not recorded, retry: "
                       + error.substr(store::discarded_prefix.size()),
                     json{{"retry_after_ms", 200}});
  if (!store::is_not_leader(error))
    return req->fail(error_code::internal, "cannot journal the run: " + error);
  // The store names the partition: "... is in partition N, ...".
  std::string partition = "the run's partition";
  if (auto at = error.find("partition "); at != std::string::npos) {
    auto digits = at + 10;
    auto end = digits;
    while (end < error.size() && error[end] >= '0' && error[end] <= '9')
      ++end;
    if (end > digits)
      partition = error.substr(at, end - at);
  }
  req->fail(error_code::not_ready,
            "submit: " + partition
              + " is no longer led by this member: its leadership is moving "
                "(a drain or a rebalance); retry shortly",
            json{{"retry_after_ms", 200}});
}

} // namespace

/// One open watch: the journal is read after subscribing, and live events
/// that overtake it wait until it is sent. Touched on the io thread only.
struct watch_state {
  request_ptr req;
  bool loaded = false;
  bool ended = false;
  int64_t last_seq = 0;
  std::vector<runtime::run_progress> early;
  std::optional<runtime::run_finished> early_end;
};

struct node_service::impl : std::enable_shared_from_this<impl> {
  impl(actors::embedded_node& n, asio::io_context& i, options o,
       node_service& s)
      : node(n), io(i), opts(std::move(o)), pool(opts.workers),
        submit_pool(opts.submit_workers), outer(s) {
    if (auto* r = opts.metrics) {
      submitted = &r->add_counter("troupe_runs_submitted_total",
                                  "Runs submitted, by workflow.");
      finished = &r->add_counter("troupe_runs_finished_total",
                                 "Runs that ended, by workflow and state.");
      r->add_gauge_callback(
        "troupe_watches_open", "Watches of runs open on the control port.",
        [this] { return static_cast<double>(open_watches); });
    }
    if (opts.submit_rate > 0)
      limiter = std::make_unique<runtime::auth::rate_limiter>(
        opts.submit_rate, std::max(1.0, opts.submit_burst));
  }

  void log(const std::string& line) const {
    runtime::log::info("control", line);
  }

  /// Runs `f` on the pool for reads, scans and inspections.
  template<class F>
  void work(const request_ptr& req, F f) {
    run_on(pool, req, std::move(f));
  }

  /// Runs `f` on the pool for submissions and changes of one run.
  template<class F>
  void quick(const request_ptr& req, F f) {
    run_on(submit_pool, req, std::move(f));
  }

  /// Runs `f` on `where`; an exception becomes an `internal` error.
  template<class F>
  void run_on(asio::thread_pool& where, const request_ptr& req, F f) {
    asio::post(where, [self = shared_from_this(), req, f = std::move(f)] {
      if (req->closed())
        return;
      try {
        f();
      } catch (const std::exception& e) {
        self->log(std::string{"request failed: "} + e.what());
        req->fail(error_code::internal,
                  std::string{"the node failed: "} + e.what());
      }
    });
  }

  // -- events from the runs (any thread) --------------------------------------

  void on_progress(runtime::run_progress p) {
    if (p.event == "attempt_failed" || p.event == "node_failed")
      runtime::log::warn("run", p.event,
                         {{"run_id", p.run_id},
                          {"node_id", p.node},
                          {"attempt", p.attempt},
                          {"error_kind", p.error_kind},
                          {"message", p.message.substr(0, 512)}});
    else if (runtime::log::enabled("run", runtime::log::level::debug))
      runtime::log::debug(
        "run", p.event,
        {{"run_id", p.run_id}, {"node_id", p.node}, {"attempt", p.attempt}});
    // Only a watched run's events cost a post to the io thread.
    if (!watched(p.run_id))
      return;
    ++progress_posts;
    asio::post(io, [self = shared_from_this(), p = std::move(p)]() mutable {
      auto i = self->watches.find(p.run_id);
      if (i == self->watches.end())
        return;
      for (auto& w : i->second)
        self->deliver(*w, p);
    });
  }

  void on_finished(runtime::run_finished f) {
    if (finished)
      finished
        ->with({{"workflow", f.workflow},
                {"state", std::string{persistence::to_string(f.state)}}})
        .inc();
    if (f.state == run_state::completed)
      runtime::log::info("run", "run completed",
                         {{"run_id", f.run_id}, {"workflow", f.workflow}});
    else
      runtime::log::warn("run",
                         "run " + std::string{persistence::to_string(f.state)},
                         {{"run_id", f.run_id},
                          {"workflow", f.workflow},
                          {"node_id", f.failed_node},
                          {"reason", f.reason.substr(0, 512)}});
    if (!watched(f.run_id))
      return;
    ++progress_posts;
    asio::post(io, [self = shared_from_this(), f = std::move(f)]() mutable {
      auto i = self->watches.find(f.run_id);
      if (i == self->watches.end())
        return;
      auto list = std::move(i->second);
      self->watches.erase(i);
      for (auto& w : list) {
        if (!w->loaded) {
          w->early_end = f;
          // Keep it listed until its journal arrives.
          self->watches[f.run_id].push_back(w);
          continue;
        }
        self->end_watch(*w, f);
      }
      self->sync_watched(f.run_id);
    });
  }

  // -- watches (io thread)
  // ------------------------------------------------------

  void deliver(watch_state& w, const runtime::run_progress& p) {
    if (w.ended)
      return;
    if (!w.loaded) {
      w.early.push_back(p);
      return;
    }
    if (p.seq <= w.last_seq)
      return;
    w.last_seq = p.seq;
    w.req->event(progress_json(p));
  }

  void end_watch(watch_state& w, const runtime::run_finished& f) {
    if (w.ended)
      return;
    w.ended = true;
    w.req->end(finished_json(f));
  }

  void forget_watch(const std::string& run_id, const watch_state* w) {
    auto i = watches.find(run_id);
    if (i == watches.end())
      return;
    std::erase_if(i->second, [&](auto& x) { return x.get() == w; });
    if (i->second.empty())
      watches.erase(i);
    sync_watched(run_id);
  }

  /// Whether `run_id` has a watch; from any thread.
  bool watched(const std::string& run_id) const {
    if (watched_count.load() == 0)
      return false;
    std::shared_lock guard{watched_mtx};
    return watched_runs.count(run_id) > 0;
  }

  /// Makes watched(run_id) follow `watches` (io thread). A run is listed
  /// before its journal is read for a new watch, so every event is either
  /// in that read or posted.
  void sync_watched(const std::string& run_id) {
    bool listed = watches.count(run_id) > 0;
    std::unique_lock guard{watched_mtx};
    if (listed)
      watched_runs.insert(run_id);
    else
      watched_runs.erase(run_id);
    watched_count = watched_runs.size();
  }

  void watch(const request_ptr& req, const std::string& run_id) {
    auto w = std::make_shared<watch_state>();
    w->req = req;
    watches[run_id].push_back(w);
    sync_watched(run_id);
    ++open_watches;
    req->on_close([self = shared_from_this(), run_id, raw = w.get()] {
      --self->open_watches;
      self->forget_watch(run_id, raw);
    });
    // Read the journal after subscribing, so nothing falls in between.
    work(req, [self = shared_from_this(), req, run_id, w] {
      auto& store = self->node.store();
      auto entry = store.find_run(run_id);
      std::string error;
      std::vector<event_record> events;
      std::optional<runtime::run_finished> finished;
      // Why there is nothing to watch: never there, or deleted.
      std::string missing;
      json detail;
      if (entry) {
        events = store.read_journal(run_id, error);
        if (persistence::is_terminal(entry->state))
          finished = self->node.finished_run(run_id);
      } else {
        missing = missing_run(store, run_id, &detail);
      }
      asio::post(
        self->io, [self, req, run_id, w, entry = std::move(entry),
                   events = std::move(events), error = std::move(error),
                   finished = std::move(finished), missing = std::move(missing),
                   detail = std::move(detail)]() mutable {
          if (w->ended)
            return; // the node began to stop meanwhile: answered already
          if (!entry) {
            self->forget_watch(run_id, w.get());
            if (detail.is_null())
              req->fail(error_code::not_found, missing);
            else
              req->fail(error_code::not_found, missing, std::move(detail));
            return;
          }
          req->event(json{{"seq", 0},
                          {"type", "watching"},
                          {"run_id", run_id},
                          {"workflow", entry->workflow},
                          {"state", persistence::to_string(entry->state)}});
          int64_t seq = 0;
          for (auto& e : events) {
            ++seq;
            // As a live event says which run it is of, so does a replayed one.
            auto ev = event_json(e, seq, 4 << 10);
            ev["run_id"] = run_id;
            req->event(std::move(ev));
          }
          w->last_seq = seq;
          w->loaded = true;
          if (!error.empty())
            req->event(
              json{{"seq", 0}, {"type", "journal_error"}, {"message", error}});
          for (auto& p : w->early)
            self->deliver(*w, p);
          w->early.clear();
          if (finished)
            w->early_end = std::move(finished);
          if (w->early_end) {
            self->end_watch(*w, *w->early_end);
            self->forget_watch(run_id, w.get());
          }
        });
    });
  }

  // -- requests ---------------------------------------------------------------

  void submit(const request_ptr& req, const json& msg);
  /// Counts, logs and answers a journaled submission.
  void submitted_run(const request_ptr& req, const std::string& id,
                     const std::string& workflow, bool existing);
  void status(const request_ptr& req, const json& msg);

  /// The members the node knows now; quick (a copy under a lock), so it is
  /// answered on the io_context thread.
  /// Each member's load, by name (node_service::set_loads).
  mutable std::mutex loads_mtx;
  std::function<std::map<std::string, json>()> loads;

  /// Whether a submission may be taken here now (node_service::set_admit).
  std::function<std::string(const std::string&)> admit;

  /// Which runs `list` shows (node_service::set_list_scope).
  std::function<bool(std::string_view)> list_scope;

  /// Which runs `cancel_many` acts on (node_service::set_cancel_scope).
  std::function<bool(std::string_view)> cancel_scope;

  /// What `leave` does (node_service::set_leave).
  std::function<std::string(const std::string&)> leave_hook;

  void leave(const request_ptr& req, const json& msg,
             const coordinator* c) const {
    control::fields f{msg};
    auto member = f.text("member", false, 256);
    if (!f.ok())
      return req->fail(error_code::bad_request, "leave: " + f.error());
    auto me = c ? c->self() : self_status{};
    std::function<std::string(const std::string&)> hook;
    {
      std::lock_guard guard{loads_mtx};
      hook = leave_hook;
    }
    if (me.cluster.empty() || !hook)
      return req->fail(error_code::bad_request,
                       "leave: this node runs alone, not in a cluster: stop "
                       "it with SIGTERM (its runs resume at its next start)");
    if (!member.empty() && member != me.member)
      return req->fail(error_code::not_found,
                       "leave: no member '" + member + "' in cluster '"
                         + me.cluster + "' is linked to member '" + me.member
                         + "'; `troupe members` lists them");
    if (auto why = hook(req->who().subject); !why.empty())
      return req->fail(error_code::not_ready, "leave: " + why);
    req->reply(
      json{{"member", me.member}, {"cluster", me.cluster}, {"leaving", true}});
  }

  /// The member's partitions (node_service::set_partitions).
  std::function<json(std::optional<uint32_t>, bool)> partitions_view;

  void partitions(const request_ptr& req, const json& msg,
                  const coordinator* c) {
    std::optional<uint32_t> one;
    if (auto i = msg.find("partition"); i != msg.end() && !i->is_null()) {
      auto count = c ? c->partition_count() : 0u;
      if (!i->is_number_integer() || i->get<int64_t>() < 0
          || (count > 0 && i->get<int64_t>() >= count))
        return req->fail(error_code::bad_request,
                         "partitions: field 'partition' must be a whole number "
                         "from 0 to "
                           + std::to_string(count > 0 ? count - 1 : 0)
                           + ", got " + i->dump());
      one = static_cast<uint32_t>(i->get<int64_t>());
    }
    control::fields f{msg};
    auto digest = f.flag("digest");
    if (!f.ok())
      return req->fail(error_code::bad_request, "partitions: " + f.error());
    std::function<json(std::optional<uint32_t>, bool)> view;
    {
      std::lock_guard guard{loads_mtx};
      view = partitions_view;
    }
    // A digest reads every run of a partition: off the io thread.
    work(req, [req, view, one, digest, c] {
      json body;
      if (view)
        body = view(one, digest);
      answer_partitions(req, std::move(body), one, c);
    });
  }

  static void answer_partitions(const request_ptr& req, json body,
                                std::optional<uint32_t> one,
                                const coordinator* c) {
    auto me = c ? c->self() : self_status{};
    if (!body.is_object()) {
      // Alone (or not joined yet): every run is this node's, in one copy.
      body = json{{"count", c ? c->partition_count() : 0},
                  {"replication", 1},
                  {"partitions", json::array()},
                  {"alone", me.cluster.empty()}};
    }
    body["cluster"] = me.cluster;
    body["member"] = me.member;
    if (one) {
      auto& list = body["partitions"];
      if (!list.is_array() || list.empty())
        return req->fail(error_code::not_found,
                         "partition " + std::to_string(*one)
                           + " has no record yet: no member leads it");
    }
    req->reply(std::move(body));
  }

  void members(const request_ptr& req, const coordinator* c) const {
    std::map<std::string, json> load;
    {
      std::lock_guard guard{loads_mtx};
      if (loads)
        load = loads();
    }
    json list = json::array();
    json body{{"cluster", ""}, {"member", ""}};
    if (c) {
      auto me = c->self();
      body["cluster"] = me.cluster;
      body["member"] = me.member;
      if (!me.detector.empty())
        body["detector"] = me.detector;
      auto now = now_ms();
      for (auto& m : c->members()) {
        auto j = m.to_json();
        j["state"] = m.state;
        if (!m.link.empty())
          j["link"] = m.link;
        if (!m.reason.empty())
          j["reason"] = m.reason;
        if (m.down_at_ms > 0)
          j["down_for_ms"] = now - m.down_at_ms;
        j["age_ms"] = m.joined_at_ms > 0 ? now - m.joined_at_ms : 0;
        j["self"] = m.name == me.member;
        if (auto l = load.find(m.name); l != load.end() && m.state != "down")
          for (auto& [k, v] : l->second.items())
            j[k] = v;
        list.push_back(std::move(j));
      }
    }
    body["members"] = std::move(list);
    if (c) {
      json down = json::array();
      for (auto& [p, why] : c->unavailable_partitions())
        down.push_back(json{{"partition", p}, {"reason", why}});
      if (!down.empty())
        body["unavailable_partitions"] = std::move(down);
    }
    req->reply(std::move(body));
  }
  void list(const request_ptr& req, const json& msg);
  void result(const request_ptr& req, const json& msg);
  void history(const request_ptr& req, const json& msg);
  void logs(const request_ptr& req, const json& msg);
  void change(const request_ptr& req, const std::string& type, const json& msg);
  void cancel_many(const request_ptr& req, const json& msg);
  void inspect(const request_ptr& req, const json& msg);
  void act(const request_ptr& req, const std::string& type, const json& msg);
  void gc(const request_ptr& req, const json& msg);

  /// Fails `req` with not_found for `run_id`, saying whether the run was
  /// deleted after retention or never existed. On a worker.
  void not_found(const request_ptr& req, const std::string& run_id) {
    json detail;
    auto text = missing_run(node.store(), run_id, &detail);
    if (detail.is_null())
      return req->fail(error_code::not_found, text);
    req->fail(error_code::not_found, text, std::move(detail));
  }

  /// Returns 0, or how long `subject` must wait to submit.
  int64_t throttle(const std::string& subject) {
    if (!limiter)
      return 0;
    return limiter->acquire(subject, std::chrono::steady_clock::now()).count();
  }

  actors::embedded_node& node;
  asio::io_context& io;
  options opts;
  /// Reads, scans and inspections.
  asio::thread_pool pool;
  /// Submissions and changes of one run.
  asio::thread_pool submit_pool;
  node_service& outer;
  caf::actor hub;
  std::unordered_map<std::string, std::vector<std::shared_ptr<watch_state>>>
    watches;
  std::unique_ptr<runtime::auth::rate_limiter> limiter;
  runtime::metrics::family<runtime::metrics::counter>* submitted = nullptr;
  runtime::metrics::family<runtime::metrics::counter>* finished = nullptr;
  std::atomic<size_t> open_watches{0};
  /// The runs in `watches`, readable from the hub's thread.
  mutable std::shared_mutex watched_mtx;
  std::unordered_set<std::string> watched_runs;
  std::atomic<size_t> watched_count{0};
  /// Run events posted to the io thread (for watches).
  std::atomic<uint64_t> progress_posts{0};
};

void node_service::impl::submit(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto source = f.text("workflow", true, 10 << 20);
  auto file = f.text("file", false, 4096);
  auto inputs = f.object("inputs");
  auto key = f.text("idempotency_key", false, 1024);
  if (!f.ok())
    return req->fail(error_code::bad_request, "submit: " + f.error());
  if (key.find('\0') != std::string::npos)
    return req->fail(error_code::bad_request,
                     "submit: field 'idempotency_key' must not hold NUL");
  if (outer.draining_)
    return req->fail(error_code::draining,
                     "the node is shutting down and takes no submissions");
  if (auto space = node.disk_space(); space.low)
    return req->fail(error_code::disk_low,
                     actors::describe_low_disk(space)
                       + ": the node takes no submissions and starts no "
                         "attempts until space is freed",
                     json{{"free_bytes", space.free_bytes},
                          {"min_free_bytes", space.min_free_bytes}});
  if (auto wait = throttle(req->who().subject); wait > 0)
    return req->fail(error_code::rate_limited,
                     "too many submissions from '" + req->who().subject
                       + "'; retry in " + std::to_string(wait) + "ms",
                     json{{"retry_after_ms", wait}});
  {
    std::function<std::string(const std::string&)> check;
    {
      std::lock_guard guard{loads_mtx};
      check = admit;
    }
    if (check)
      if (auto why = check(key); !why.empty())
        return req->fail(error_code::not_ready, "submit: " + why,
                         json{{"retry_after_ms", 500}});
  }
  quick(req, [self = shared_from_this(), req, source = std::move(source),
              file = file.empty() ? std::string{"workflow"} : file,
              inputs = std::move(inputs), key = std::move(key)] {
    // Parsed once per text: a client submitting the same workflow again
    // and again hits the node's spec cache (which its runs share).
    runtime::diagnostics diagnostics;
    auto spec = self->node.specs().get(source, diagnostics);
    if (!spec) {
      json errors = json::array();
      std::string text;
      for (auto& d : diagnostics) {
        errors.push_back(d.to_string(file));
        text += (text.empty() ? "" : "\n") + d.to_string(file);
      }
      return req->fail(error_code::invalid_workflow, text,
                       json{{"errors", errors}});
    }
    std::vector<std::string> problems;
    auto bound = runtime::bind_inputs(*spec, inputs, problems);
    if (!bound) {
      std::string text;
      for (auto& p : problems)
        text += (text.empty() ? "" : "\n") + p;
      return req->fail(error_code::invalid_workflow, text,
                       json{{"errors", problems}});
    }
    auto& workflow = spec->name;
    if (key.empty()) {
      // Without a key nothing needs looking up: journal the run without
      // holding this worker, and answer once it is durable (on the store's
      // writer thread; answers are safe from any thread).
      self->node.submit_async(
        source, *spec, *bound, self->hub,
        [self, req, workflow](const std::string& id, const std::string& error) {
          // On the store's writer thread: hand the rest (logs, metrics, the
          // answer) to the pool, so that nothing here slows the journal.
          asio::post(self->submit_pool, [self, req, workflow, id, error] {
            if (!error.empty())
              return journal_failed(req, error);
            self->submitted_run(req, id, workflow, false);
          });
        });
      return;
    }
    std::string error, conflict;
    bool existing = false;
    auto id = self->node.submit(source, *spec, *bound, self->hub, error, key,
                                &existing, &conflict);
    if (!conflict.empty())
      return req->fail(error_code::conflict, "submit: " + error,
                       json{{"run_id", conflict}});
    if (id.empty())
      return journal_failed(req, error);
    self->submitted_run(req, id, workflow, existing);
  });
}

void node_service::impl::submitted_run(const request_ptr& req,
                                       const std::string& id,
                                       const std::string& workflow,
                                       bool existing) {
  if (!existing) {
    if (submitted)
      submitted->with({{"workflow", workflow}}).inc();
    runtime::log::info("run", "run submitted",
                       {{"run_id", id},
                        {"workflow", workflow},
                        {"subject", req->who().subject}});
  }
  req->reply(
    json{{"run_id", id}, {"workflow", workflow}, {"existing", existing}});
}

void node_service::impl::status(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", true, 256);
  if (!f.ok())
    return req->fail(error_code::bad_request, "status: " + f.error());
  work(req, [self = shared_from_this(), req, run_id] {
    auto out = status_view(self->node.store(), self->node.specs(), run_id);
    if (!out)
      return self->not_found(req, run_id);
    req->reply(std::move(*out));
  });
}

void node_service::impl::list(const request_ptr& req, const json& msg) {
  // A page holds 1 to 1000 runs, as documented: 0 is no page size.
  if (auto i = msg.find("limit");
      i != msg.end() && !i->is_null()
      && !(i->is_number_integer() && i->get<int64_t>() >= 1
           && i->get<int64_t>() <= 1000))
    return req->fail(error_code::bad_request,
                     "list: field 'limit' must be a whole number from 1 to "
                     "1000");
  control::fields f{msg};
  auto state = f.text("state", false, 32);
  list_filter filter;
  filter.workflow = f.text("workflow", false, 1024);
  filter.after = f.text("after", false, 256);
  filter.limit = f.count("limit", 50, 1000);
  filter.max_scan = opts.max_list_scan;
  {
    std::lock_guard guard{loads_mtx};
    filter.keep = list_scope;
  }
  // A page merged across the members of a cluster continues after a run of
  // any of them: each member then says whether it knows the cursor
  // (`cursor_known`), and the merge refuses one that none knows.
  auto any_cursor = f.flag("any_cursor");
  if (!f.ok())
    return req->fail(error_code::bad_request, "list: " + f.error());
  if (!state.empty() && !(filter.state = parse_run_state(state)))
    return req->fail(error_code::bad_request,
                     "list: unknown state '" + state
                       + "'; states: running, paused, completed, failed, "
                         "cancelled");
  work(req, [self = shared_from_this(), req, filter, any_cursor] {
    auto bad = bad_list_cursor(self->node.store(), filter.after);
    if (!bad.empty() && !any_cursor)
      return req->fail(error_code::bad_request, "list: field 'after': " + bad);
    auto page = list_view(self->node.store(), filter);
    if (any_cursor)
      page["cursor_known"] = bad.empty();
    req->reply(std::move(page));
  });
}

void node_service::impl::result(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", true, 256);
  if (!f.ok())
    return req->fail(error_code::bad_request, "result: " + f.error());
  work(req, [self = shared_from_this(), req, run_id] {
    auto entry = self->node.store().find_run(run_id);
    if (!entry)
      return self->not_found(req, run_id);
    if (!persistence::is_terminal(entry->state))
      return req->fail(error_code::conflict,
                       "run " + run_id + " is still "
                         + std::string{persistence::to_string(entry->state)},
                       json{{"state", persistence::to_string(entry->state)}});
    auto f = self->node.finished_run(run_id);
    if (!f) // deleted since
      return self->not_found(req, run_id);
    req->reply(finished_json(*f));
  });
}

void node_service::impl::history(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", true, 256);
  auto after = f.count("after", 0, INT64_MAX);
  auto limit = f.count("limit", 1000, 100'000);
  if (!f.ok())
    return req->fail(error_code::bad_request, "history: " + f.error());
  work(req, [self = shared_from_this(), req, run_id, after, limit] {
    auto out = history_view(self->node.store(), run_id, after, limit,
                            self->opts.max_reply_bytes);
    if (!out)
      return self->not_found(req, run_id);
    req->reply(std::move(*out));
  });
}

void node_service::impl::logs(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", true, 256);
  auto node_id = f.text("node", false, 1024);
  if (!f.ok())
    return req->fail(error_code::bad_request, "logs: " + f.error());
  work(req, [self = shared_from_this(), req, run_id, node_id] {
    std::string error;
    auto out = logs_view(self->node.store(), run_id, node_id,
                         self->opts.max_reply_bytes, error);
    if (!out && error.empty())
      return self->not_found(req, run_id);
    if (!out)
      return req->fail(error_code::not_found, error);
    req->reply(std::move(*out));
  });
}

void node_service::impl::change(const request_ptr& req, const std::string& type,
                                const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", true, 256);
  auto reason = f.text("reason", false, 4096);
  if (!f.ok())
    return req->fail(error_code::bad_request, type + ": " + f.error());
  quick(req, [self = shared_from_this(), req, type, run_id, reason] {
    auto entry = self->node.store().find_run(run_id);
    if (!entry)
      return self->not_found(req, run_id);
    auto state = entry->state;
    auto state_name = std::string{persistence::to_string(state)};
    if (persistence::is_terminal(state))
      return req->fail(error_code::conflict,
                       "run " + run_id + " already ended " + state_name,
                       json{{"state", state_name}});
    auto who = type + "d by " + req->who().subject
               + (reason.empty() ? "" : ": " + reason);
    if (type == "pause" && state == run_state::paused)
      return req->fail(error_code::conflict,
                       "run " + run_id + " is paused already",
                       json{{"state", state_name}});
    if (type == "resume" && state != run_state::paused)
      return req->fail(error_code::conflict, "run " + run_id + " is not paused",
                       json{{"state", state_name}});
    if (type == "cancel")
      self->node.cancel(run_id, "cancelled by " + req->who().subject
                                  + (reason.empty() ? "" : ": " + reason));
    else if (type == "pause")
      self->node.pause(run_id, who);
    else
      self->node.resume(run_id, who);
    runtime::log::info("run", type + " requested",
                       {{"run_id", run_id}, {"subject", req->who().subject}});
    req->reply(json{{"run_id", run_id}, {"requested", type}});
  });
}

void node_service::impl::cancel_many(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto workflow = f.text("workflow", false, 1024);
  auto state_text = f.text("state", false, 32);
  auto dry_run = f.flag("dry_run");
  auto reason = f.text("reason", false, 4096);
  if (!f.ok())
    return req->fail(error_code::bad_request, "cancel_many: " + f.error());
  // The state is required: a bulk cancel says which runs it means.
  if (state_text.empty())
    return req->fail(error_code::bad_request,
                     "cancel_many: missing field 'state' (running or paused)");
  std::optional<run_state> state = parse_run_state(state_text);
  if (!state || persistence::is_terminal(*state))
    return req->fail(error_code::bad_request,
                     "cancel_many: state must be running or paused, not '"
                       + state_text + "'");
  std::function<bool(std::string_view)> scope;
  {
    std::lock_guard guard{loads_mtx};
    scope = cancel_scope;
  }
  work(req, [self = shared_from_this(), req, workflow, state, dry_run, reason,
             scope] {
    auto& store = self->node.store();
    std::vector<std::string> ids;
    std::string cursor;
    while (true) {
      auto batch = store.list_runs(cursor, 1000);
      for (auto& e : batch) {
        cursor = e.run_id;
        if (persistence::is_terminal(e.state) || (state && e.state != *state)
            || (!workflow.empty() && e.workflow != workflow)
            || (scope && !scope(e.run_id)))
          continue;
        ids.push_back(e.run_id);
      }
      if (batch.size() < 1000)
        break;
    }
    if (!dry_run) {
      auto why = "cancelled by " + req->who().subject
                 + (reason.empty() ? " (bulk)" : ": " + reason);
      for (auto& id : ids)
        self->node.cancel(id, why);
      runtime::log::info(
        "run", std::to_string(ids.size()) + " run(s) cancelled in bulk",
        {{"subject", req->who().subject}});
    }
    json sample = json::array();
    for (size_t i = 0; i < ids.size() && i < 100; ++i)
      sample.push_back(ids[i]);
    req->reply(json{{"count", ids.size()},
                    {"run_ids", std::move(sample)},
                    {"dry_run", dry_run}});
  });
}

void node_service::impl::inspect(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  auto what = f.text("what", true, 32);
  auto run_id = f.text("run_id", false, 256);
  auto node_id = f.text("node", false, 1024);
  auto key = f.text("key", false, 4096);
  auto actor_id = f.count("actor_id", 0, UINT64_MAX);
  auto limit = f.count("limit", 200, 10'000);
  if (!f.ok())
    return req->fail(error_code::bad_request, "inspect: " + f.error());
  static const std::vector<std::string> targets = {
    "actors", "run", "node", "actor", "breaker", "limits", "stats", "config"};
  if (std::find(targets.begin(), targets.end(), what) == targets.end())
    return req->fail(error_code::bad_request,
                     "inspect: unknown target '" + what
                       + "'; targets: actors, run, node, actor, breaker, "
                         "limits, stats, config");
  if ((what == "run" || what == "node") && run_id.empty())
    return req->fail(error_code::bad_request,
                     "inspect " + what + ": missing field 'run_id'");
  if (what == "node" && node_id.empty())
    return req->fail(error_code::bad_request,
                     "inspect node: missing field 'node'");
  if (what == "breaker" && key.empty())
    return req->fail(error_code::bad_request,
                     "inspect breaker: missing field 'key'");
  if (what == "actor" && actor_id == 0)
    return req->fail(error_code::bad_request,
                     "inspect actor: missing field 'actor_id'");
  work(req, [self = shared_from_this(), req, what, run_id, node_id, key,
             actor_id, limit] {
    auto timeout = self->opts.inspect_timeout;
    auto& n = self->node;
    if (what == "actors")
      return req->reply(n.inspect_actors(limit, timeout));
    if (what == "limits")
      return req->reply(json{{"limiters", n.inspect_limits(timeout)}});
    if (what == "config")
      return req->reply(self->opts.config);
    if (what == "stats") {
      auto tree = n.inspect_actors(0, timeout);
      size_t mailboxes = 0;
      for (auto& s : tree["supervisors"])
        mailboxes += s.value("mailbox", size_t{0});
      return req->reply(json{{"actors_running", tree["actors_running"]},
                             {"runs_live", tree["runs_live"]},
                             {"supervisor_mailboxes", mailboxes},
                             {"breakers", tree["breakers"].size()},
                             {"limiters", tree["limiters"].size()},
                             {"ready", self->outer.ready()},
                             {"inspect_asks", n.inspect_asks()},
                             {"draining", self->outer.draining_.load()},
                             {"watches_open", self->open_watches.load()},
                             {"progress_posts", self->progress_posts.load()}});
    }
    if (what == "breaker") {
      auto b = n.inspect_breaker(key, timeout);
      if (!b)
        return req->fail(error_code::not_found,
                         "no circuit breaker '" + key
                           + "' on this node (none of its nodes ran lately)");
      return req->reply(std::move(*b));
    }
    if (what == "actor") {
      auto a = n.inspect_actor(actor_id, timeout);
      if (!a)
        return req->fail(error_code::not_found,
                         "no live actor " + std::to_string(actor_id));
      return req->reply(std::move(*a));
    }
    auto r = n.inspect_run(run_id, timeout);
    if (!r) {
      auto entry = n.store().find_run(run_id);
      if (!entry)
        return self->not_found(req, run_id);
      return req->fail(error_code::not_found,
                       "run " + run_id + " is not live on this node (it is "
                         + std::string{persistence::to_string(entry->state)}
                         + "); its journal is in 'history " + run_id + "'",
                       json{{"state", persistence::to_string(entry->state)}});
    }
    if (what == "run")
      return req->reply(std::move(*r));
    for (auto& node : (*r)["nodes"])
      if (node.value("id", std::string{}) == node_id) {
        node["run_id"] = run_id;
        return req->reply(std::move(node));
      }
    req->fail(error_code::not_found,
              "run " + run_id + " has no node '" + node_id + "'");
  });
}

void node_service::impl::act(const request_ptr& req, const std::string& type,
                             const json& msg) {
  control::fields f{msg};
  auto run_id = f.text("run_id", type == "retry", 256);
  auto node_id = f.text("node", type == "retry", 1024);
  auto key = f.text("key", type == "breaker_reset", 4096);
  auto actor_id = f.count("actor_id", 0, UINT64_MAX);
  if (!f.ok())
    return req->fail(error_code::bad_request, type + ": " + f.error());
  if (type == "crash" && actor_id == 0)
    return req->fail(error_code::bad_request,
                     "crash: missing field 'actor_id'");
  work(req, [self = shared_from_this(), req, type, run_id, node_id, key,
             actor_id] {
    auto timeout = self->opts.inspect_timeout;
    auto& n = self->node;
    auto who = req->who().subject;
    if (type == "breaker_reset") {
      if (!n.reset_breaker(key, who))
        return req->fail(error_code::not_found,
                         "no circuit breaker '" + key + "' on this node");
      runtime::log::info("node", "circuit breaker reset by hand",
                         {{"key", key}, {"subject", who}});
      return req->reply(json{{"key", key}, {"requested", "breaker_reset"}});
    }
    if (type == "retry") {
      auto r = n.inspect_run(run_id, timeout);
      if (!r) {
        // Not live: no such run, or one that ended (a conflict, as for a
        // cancel), or one between actors.
        auto entry = n.store().find_run(run_id);
        if (!entry)
          return self->not_found(req, run_id);
        auto state = std::string{persistence::to_string(entry->state)};
        if (persistence::is_terminal(entry->state))
          return req->fail(error_code::conflict,
                           "run " + run_id + " already ended " + state
                             + "; nothing waits for a retry",
                           json{{"state", state}});
        return req->fail(error_code::not_found,
                         "run " + run_id + " is not live on this node (it is "
                           + state + ")",
                         json{{"state", state}});
      }
      for (auto& node : (*r)["nodes"])
        if (node.value("id", std::string{}) == node_id) {
          if (node.value("state", std::string{}) != "waiting_retry")
            return req->fail(error_code::conflict,
                             "node '" + node_id + "' is "
                               + node.value("state", std::string{})
                               + ", not waiting for a retry",
                             json{{"state", node["state"]}});
          n.retry_now(run_id, node_id);
          runtime::log::info(
            "run", "retry now requested",
            {{"run_id", run_id}, {"node_id", node_id}, {"subject", who}});
          return req->reply(json{
            {"run_id", run_id}, {"node", node_id}, {"requested", "retry"}});
        }
      return req->fail(error_code::not_found,
                       "run " + run_id + " has no node '" + node_id + "'");
    }
    // crash: only run actors are supervised, so only they are crashed.
    auto a = n.inspect_actor(actor_id, timeout);
    if (!a)
      return req->fail(error_code::not_found,
                       "no live actor " + std::to_string(actor_id));
    if (a->value("kind", std::string{}) != "run")
      return req->fail(error_code::conflict,
                       "actor " + std::to_string(actor_id) + " is a "
                         + a->value("kind", std::string{"?"})
                         + "; only run actors are supervised, so only they "
                           "can be crashed",
                       json{{"kind", (*a)["kind"]}});
    auto id = a->value("run_id", std::string{});
    n.crash(id);
    runtime::log::warn("run", "crash injected by hand",
                       {{"run_id", id}, {"subject", who}});
    req->reply(
      json{{"actor_id", actor_id}, {"run_id", id}, {"requested", "crash"}});
  });
}

void node_service::impl::gc(const request_ptr& req, const json& msg) {
  control::fields f{msg};
  constexpr uint64_t absent = UINT64_MAX;
  auto older_than_ms
    = f.count("older_than_ms", absent, uint64_t{INT64_MAX} / 1'000'000);
  if (!f.ok())
    return req->fail(error_code::bad_request, "gc: " + f.error());
  std::chrono::nanoseconds older_than = node.retention();
  if (older_than_ms != absent)
    older_than = std::chrono::milliseconds{static_cast<int64_t>(older_than_ms)};
  else if (older_than.count() == 0)
    // Nothing is past a retention that keeps every run: done, as asked.
    return req->reply(json{{"runs", 0},
                           {"events", 0},
                           {"keys", 0},
                           {"tombstones", 0},
                           {"kept_all", true}});
  runtime::log::info(
    "node", "collection requested",
    {{"subject", req->who().subject},
     {"older_than_ms",
      std::chrono::duration_cast<std::chrono::milliseconds>(older_than)
        .count()}});
  // On the node's retention thread, which answers when done.
  node.collect_now(
    older_than, [req, older_than](persistence::journal_store::gc_report r) {
      if (!r.error.empty())
        return req->fail(error_code::internal, "gc: " + r.error);
      if (r.stopped)
        return req->fail(error_code::draining,
                         "gc: the node is shutting down; stopped early");
      req->reply(
        json{{"runs", r.runs},
             {"events", r.events},
             {"keys", r.keys},
             {"tombstones", r.tombstones},
             {"older_than_ms",
              std::chrono::duration_cast<std::chrono::milliseconds>(older_than)
                .count()}});
    });
}

// -- node_service -------------------------------------------------------------

namespace {

/// Receives every run's progress and hands it to the service.
caf::behavior hub_impl(caf::event_based_actor*,
                       std::weak_ptr<node_service::impl> svc) {
  return {
    [svc](runtime::run_progress& p) {
      if (auto s = svc.lock())
        s->on_progress(std::move(p));
    },
    [svc](runtime::run_finished& f) {
      if (auto s = svc.lock())
        s->on_finished(std::move(f));
    },
  };
}

} // namespace

node_service::node_service(actors::embedded_node& node, asio::io_context& io,
                           options opts)
    : impl_(std::make_shared<impl>(node, io, std::move(opts), *this)) {
  impl_->hub = node.system().spawn(hub_impl, std::weak_ptr<impl>{impl_});
}

node_service::~node_service() {
  stop();
}

void node_service::stop() {
  impl_->pool.join();
  impl_->submit_pool.join();
  if (impl_->hub) {
    caf::anon_send_exit(impl_->hub, caf::exit_reason::user_shutdown);
    impl_->hub = nullptr;
  }
}

void node_service::set_loads(std::function<std::map<std::string, json>()> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->loads = std::move(f);
}

void node_service::set_partitions(
  std::function<json(std::optional<uint32_t>, bool digest)> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->partitions_view = std::move(f);
}

void node_service::set_admit(std::function<std::string(const std::string&)> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->admit = std::move(f);
}

void node_service::set_list_scope(std::function<bool(std::string_view)> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->list_scope = std::move(f);
}

void node_service::set_cancel_scope(std::function<bool(std::string_view)> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->cancel_scope = std::move(f);
}

void node_service::set_leave(std::function<std::string(const std::string&)> f) {
  std::lock_guard guard{impl_->loads_mtx};
  impl_->leave_hook = std::move(f);
}

void node_service::end_watches() {
  asio::post(impl_->io, [self = impl_] {
    auto all = std::move(self->watches);
    self->watches.clear();
    for (auto& [run_id, list] : all) {
      for (auto& w : list) {
        if (w->ended)
          continue;
        w->ended = true;
        w->req->fail(error_code::draining,
                     "the node is shutting down; run " + run_id
                       + " goes on at its next start: watch it again then");
      }
      self->sync_watched(run_id);
    }
  });
}

actors::embedded_node::recovery
node_service::resume_partition(uint32_t partition, uint32_t count) {
  return impl_->node.resume_partition(partition, count, impl_->hub);
}

actors::embedded_node::recovery
node_service::recover(const std::function<bool(std::string_view)>& only) {
  auto r = impl_->node.recover(impl_->hub, false, only);
  // Every resumed run's start is queued at its supervisor now, ahead of any
  // request acted on from here on.
  recovered_ = true;
  return r;
}

std::optional<std::string> node_service::not_ready_reason() const {
  if (!recovered_.load())
    return "the node is still recovering its unfinished runs";
  return std::nullopt;
}

std::optional<json> node_service::unavailable() const {
  if (draining_.load())
    return json{{"status", "draining"},
                {"reason", "the node is shutting down: it takes no new work"}};
  auto space = impl_->node.disk_space();
  if (!space.low)
    return std::nullopt;
  return json{{"status", "disk_low"},
              {"reason", actors::describe_low_disk(space)},
              {"free_bytes", space.free_bytes},
              {"min_free_bytes", space.min_free_bytes}};
}

namespace {

/// Whether a request changes state (runs, breakers, actors), so that it must
/// wait until the node is ready. Reads are served meanwhile: they see the
/// store, which recovery does not change but to fail corrupt runs.
bool changes_state(const std::string& type, const json& msg) {
  if (type == "cancel_many") {
    auto dry = msg.find("dry_run");
    return dry == msg.end() || !dry->is_boolean() || !dry->get<bool>();
  }
  return type == "submit" || type == "cancel" || type == "pause"
         || type == "resume" || type == "retry" || type == "breaker_reset"
         || type == "crash" || type == "gc";
}

} // namespace

void node_service::handle(const request_ptr& req, const std::string& type,
                          const json& msg) {
  auto& i = *impl_;
  if (type == "ping") {
    // What GET /ready answers: not ready while recovering, nor while the
    // node takes no new work.
    json body{{"ready", true}};
    if (auto why = not_ready_reason())
      body = {{"ready", false}, {"status", "starting"}, {"reason", *why}};
    else if (auto off = unavailable()) {
      body = std::move(*off);
      body["ready"] = false;
    }
    if (auto* c = cluster_.load()) {
      auto me = c->self();
      if (!me.cluster.empty())
        body["cluster"] = json{{"name", me.cluster},
                               {"member", me.member},
                               {"joined", me.joined},
                               {"incarnation", me.incarnation}};
    }
    return req->reply(std::move(body));
  }
  if (type == "members")
    return i.members(req, cluster_.load());
  if (type == "partitions")
    return i.partitions(req, msg, cluster_.load());
  if (type == "leave")
    return i.leave(req, msg, cluster_.load());
  if (type == "fault")
    // The chaos fault hooks: answered at once, whatever the node's state.
    return answer_fault(req, msg);
  if (draining_.load() && (changes_state(type, msg) || type == "watch"))
    // Nothing new is taken on while the node stops: safe to send again to
    // the node once it is back (a watch would only be cut).
    return req->fail(error_code::draining,
                     "the node is shutting down: it takes no " + type
                       + " now; send it again once the node is back");
  if (changes_state(type, msg))
    if (auto why = not_ready_reason())
      // Acted on now, a submission could be started twice (by the recovery
      // scan too) and a cancel could reach no actor: refuse, to be retried.
      return req->fail(error_code::not_ready, *why,
                       json{{"retry_after_ms", 200}});
  if (type == "submit")
    return i.submit(req, msg);
  if (type == "status")
    return i.status(req, msg);
  if (type == "list")
    return i.list(req, msg);
  if (type == "result")
    return i.result(req, msg);
  if (type == "history")
    return i.history(req, msg);
  if (type == "logs")
    return i.logs(req, msg);
  if (type == "cancel" || type == "pause" || type == "resume")
    return i.change(req, type, msg);
  if (type == "cancel_many")
    return i.cancel_many(req, msg);
  if (type == "inspect")
    return i.inspect(req, msg);
  if (type == "retry" || type == "breaker_reset" || type == "crash")
    return i.act(req, type, msg);
  if (type == "gc")
    return i.gc(req, msg);
  if (type == "watch") {
    control::fields f{msg};
    auto run_id = f.text("run_id", true, 256);
    if (!f.ok())
      return req->fail(error_code::bad_request, "watch: " + f.error());
    return i.watch(req, run_id);
  }
  req->fail(error_code::unknown_type, "unknown message type '" + type + "'");
}

} // namespace troupe::cluster
