// The run actor on an embedded node, driven message by message where the
// order of its messages matters: exits of attempts it stopped, starts from
// journals that are stale or finished, and the actors a finished run leaves
// behind.

#include "actors/plugin/node_executor.hpp"
#include "actors/supervisor/run_supervisor.hpp"
#include "tests/support/embedded_fixture.hpp"

#include <algorithm>
#include <future>
#include <map>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;
using persistence::event_type;
using test::count_lines;

namespace {

/// A plugin kind whose attempts block the thread that starts them until the
/// test lets them go: with one scheduler thread, nothing else of the node
/// runs meanwhile, which orders what comes next.
struct gate_executor : plugin::node_executor {
  std::mutex mtx;
  std::promise<void> entered;
  std::shared_future<void> released;
  bool armed = false;

  void start(std::shared_ptr<plugin::node_call> call) override {
    std::unique_lock lock{mtx};
    if (armed) {
      armed = false;
      entered.set_value();
      auto wait = released;
      lock.unlock();
      // Bounded: a broken test must not hang.
      wait.wait_for(10s);
    }
    call->succeed(json::object());
  }

  /// The next attempt blocks until `release` is set; returns when it has
  /// begun to.
  std::future<void> arm(std::shared_future<void> release) {
    std::lock_guard lock{mtx};
    entered = {};
    released = std::move(release);
    armed = true;
    return entered.get_future();
  }
};

std::shared_ptr<gate_executor> gate() {
  static auto exec = [] {
    auto e = std::make_shared<gate_executor>();
    runtime::kind_spec kind;
    kind.name = "test_gate";
    kind.doc = "Blocks its starting thread until the test lets it go.";
    plugin::executor_registry::global().add(kind, e);
    return e;
  }();
  return exec;
}

/// The parts of a node, put together by hand: a journal store, one run
/// supervisor, and the services its run actors share. Unlike
/// embedded_node, it lets a test send the supervisor any start_run.
struct bare_node {
  std::unique_ptr<persistence::journal_store> store;
  actors::process_runner runner;
  actors::http_client http;
  actors::services_ptr svc = std::make_shared<actors::services>();
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  caf::actor supervisor;

  explicit bare_node(const std::string& data_dir) {
    persistence::journal_store::options so;
    so.path = data_dir;
    std::string error;
    store = persistence::journal_store::open(so, error);
    EXPECT_TRUE(store) << error;
    svc->store = store.get();
    svc->runner = &runner;
    svc->http = &http;
    runtime::register_message_types(cfg);
    cfg.set("scheduler.policy", caf::atom("sharing"));
    sys = std::make_unique<caf::actor_system>(cfg);
    supervisor = sys->spawn(actors::run_supervisor_impl, svc);
  }

  ~bare_node() {
    caf::anon_send_exit(supervisor, caf::exit_reason::user_shutdown);
    supervisor = nullptr;
    sys->await_all_actors_done();
    store->flush();
    sys.reset();
  }

  /// Journals a new run of `source` and returns its start.
  runtime::start_run submit(const std::string& id, const std::string& source,
                            caf::actor observer) {
    auto outcome = runtime::parse_workflow(source);
    EXPECT_TRUE(outcome.ok());
    persistence::journal_store::append_op op;
    op.run_id = id;
    op.events.push_back(persistence::event_record{event_type::run_submitted,
                                                  actors::now_ns(), "", 0, 0,
                                                  "", "", source, "{}"});
    op.index = persistence::run_index_entry{
      id, outcome.workflow->name, persistence::run_state::running, 1, 1, ""};
    std::promise<std::string> done;
    auto result = done.get_future();
    store->append(op, [&done](std::string e) { done.set_value(std::move(e)); });
    EXPECT_EQ(result.get(), "");
    return runtime::start_run{id, op.events, std::move(observer), 0, ""};
  }

  std::vector<persistence::event_record> journal(const std::string& id) {
    store->flush();
    std::string error;
    auto events = store->read_journal(id, error);
    EXPECT_TRUE(error.empty()) << error;
    return events;
  }

  /// Waits (bounded) until the supervisor has no actor for `id`: asked
  /// after the messages `self` sent it before, so a start it was sent is
  /// handled first.
  bool wait_gone(caf::scoped_actor& self, const std::string& id) {
    for (int i = 0; i < 500; ++i) {
      caf::actor a;
      self->request(supervisor, 2s, runtime::find_run{id})
        .receive([&](caf::actor& x) { a = std::move(x); }, [](caf::error&) {});
      if (!a)
        return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
};

/// Returns the types of `events`, for comparing journals.
std::vector<event_type>
types(const std::vector<persistence::event_record>& events) {
  std::vector<event_type> out;
  for (auto& e : events)
    out.push_back(e.type);
  return out;
}

struct RunActor : test::embedded_fixture {
  /// A node with one supervisor, `threads` scheduler threads (0: the
  /// default) and a kill grace of `kill_grace`.
  std::unique_ptr<actors::embedded_node>
  open(size_t threads = 0, std::chrono::milliseconds kill_grace = 2s) {
    return embedded_fixture::open([&](actors::embedded_node::options& o) {
      o.scheduler_threads = threads;
      o.supervisors = 1;
      o.engine.kill_grace = kill_grace;
    });
  }

  /// A run that marks a file as its exec node runs, then completes.
  std::string marked() const {
    return R"(name: marked
nodes:
  a:
    kind: exec
    command: ["/bin/sh", "-c", "echo a >> )"
           + (dir.path() / "marks").string() + R"("]
  b: {kind: noop, after: [a]}
)";
  }

  /// Runs `marked()` as run `id` on `node` to its end and until its actor is
  /// gone; returns its journal.
  std::vector<persistence::event_record>
  run_to_end(bare_node& node, caf::scoped_actor& self, const std::string& id) {
    self->send(node.supervisor, node.submit(id, marked(), self));
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
    EXPECT_TRUE(node.wait_gone(self, id));
    auto journal = node.journal(id);
    EXPECT_EQ(journal.back().type, event_type::run_completed);
    return journal;
  }

  /// Whether a run_finished is in `self`'s mailbox (progress is dropped).
  static bool heard_end(caf::scoped_actor& self) {
    bool heard = false;
    for (bool more = true; more;)
      self->receive([&](runtime::run_finished&) { heard = true; },
                    [](runtime::run_progress&) {},
                    caf::after(0ms) >> [&] { more = false; });
    return heard;
  }
};

} // namespace

// An attempt dies (its exit message is queued) while its run actor stops it
// for another reason (here its timeout): the run actor no longer tracks it
// when the exit arrives, and must not take it for the node stopping it.
TEST_F(RunActor, ExitOfAnAttemptItStoppedDoesNotEndTheRunActor) {
  auto exec = gate();
  // One scheduler thread: while the gate holds it, no actor runs.
  auto node = open(1);
  std::promise<void> release;
  auto entered = exec->arm(release.get_future().share());
  caf::scoped_actor self{node->system()};
  // `g` is spawned first and holds the thread; `x` throws as it starts,
  // after the run actor has a timeout for it in its mailbox.
  auto id = submit(*node, self, R"(name: stale-exit
nodes:
  g: {kind: test_gate}
  x: {kind: fail, exception: true, retry: {max_attempts: 1}}
)");
  ASSERT_EQ(entered.wait_for(10s), std::future_status::ready);
  // The run actor sent its progress before it launched the attempts.
  caf::actor run;
  for (int i = 0; i < 50 && !run; ++i)
    self->receive(
      [&](runtime::run_progress&) {
        run = caf::actor_cast<caf::actor>(self->current_sender());
      },
      caf::after(100ms) >> [] {});
  ASSERT_TRUE(run);
  caf::anon_send(
    run, runtime::run_timer{runtime::run_timer::attempt_timeout, "x", 1});
  release.set_value();
  auto f = wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::failed) << f.reason;
  std::string error;
  auto journal = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  // The run actor lived on: no restart, and x ended by its timeout once.
  EXPECT_EQ(count(journal, event_type::run_restarted), 0);
  ASSERT_EQ(count(journal, event_type::attempt_failed, "x"), 1);
  for (auto& e : journal) {
    if (e.type == event_type::attempt_failed && e.node == "x") {
      EXPECT_EQ(e.error_kind, "timeout");
    }
  }
}

// A start of a run whose journal says it ended writes nothing and runs
// nothing: after a restart it only tells the observer how the run ended;
// otherwise (a second start) it says nothing at all.
TEST_F(RunActor, StartOfAFinishedRunLeavesItsJournalUnchanged) {
  bare_node node{(dir.path() / "data").string()};
  caf::scoped_actor self{*node.sys};
  auto journal = run_to_end(node, self, "r1");
  heard_end(self);
  // As the supervisor restarts a run: after it crashed.
  self->send(node.supervisor,
             runtime::start_run{"r1", journal, self, 1, "crashed"});
  auto f = wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::completed);
  ASSERT_TRUE(node.wait_gone(self, "r1"));
  // As a recovery scan or a submission would: a second start.
  self->send(node.supervisor, runtime::start_run{"r1", journal, self, 0, ""});
  ASSERT_TRUE(node.wait_gone(self, "r1"));
  EXPECT_FALSE(heard_end(self));
  EXPECT_EQ(types(node.journal("r1")), types(journal));
  EXPECT_EQ(count_lines(dir.path() / "marks", "a"), 1);
}

// A recovery scan reads a snapshot: a run can go on and end between the
// snapshot and its start. That start must leave the run as it is, and not
// run its in-flight node again.
TEST_F(RunActor, StaleStartOfARunThatEndedSinceLeavesItsJournalUnchanged) {
  bare_node node{(dir.path() / "data").string()};
  caf::scoped_actor self{*node.sys};
  auto journal = run_to_end(node, self, "r2");
  heard_end(self);
  // The journal as a snapshot taken while `a` ran.
  ASSERT_EQ(journal[1].type, event_type::attempt_started);
  std::vector<persistence::event_record> stale{journal.begin(),
                                               journal.begin() + 2};
  self->send(node.supervisor, runtime::start_run{"r2", stale, self, 0, ""});
  ASSERT_TRUE(node.wait_gone(self, "r2"));
  // And one from the moment after `a` completed (nothing in flight).
  ASSERT_EQ(journal[2].type, event_type::node_completed);
  stale.push_back(journal[2]);
  self->send(node.supervisor, runtime::start_run{"r2", stale, self, 0, ""});
  ASSERT_TRUE(node.wait_gone(self, "r2"));
  EXPECT_FALSE(heard_end(self));
  EXPECT_EQ(types(node.journal("r2")), types(journal));
  EXPECT_EQ(count_lines(dir.path() / "marks", "a"), 1);
}

// Runs whose timers (run timeout, node timeouts, a retry, a sleep) would
// fire in an hour end now: their actors must go now, not in an hour.
TEST_F(RunActor, FinishedRunsWithLongTimeoutsLeaveNoActorBehind) {
  auto node = open();
  caf::scoped_actor self{node->system()};
  auto source = R"(name: long-timeouts
timeout: 1h
nodes:
  flaky:
    kind: fail
    times: 1
    timeout: 1h
    retry: {max_attempts: 2, initial_backoff: 1ms, jitter: none}
  nap: {kind: sleep, duration: 1ms, timeout: 1h, after: [flaky]}
)";
  constexpr int runs = 20;
  for (int i = 0; i < runs; ++i)
    submit(*node, self, source);
  // Their actors, known weakly (from whom their messages came).
  std::vector<caf::actor_addr> actors;
  int finished = 0;
  for (int i = 0; i < 600 && finished < runs; ++i)
    self->receive(
      [&](runtime::run_finished& f) {
        EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
        ++finished;
        actors.push_back(
          caf::actor_cast<caf::actor_addr>(self->current_sender()));
      },
      [](runtime::run_progress&) {}, caf::after(100ms) >> [] {});
  ASSERT_EQ(finished, runs);
  heard_end(self); // drops what is left, and the references it holds
  auto alive = [&] {
    return std::count_if(actors.begin(), actors.end(), [](auto& a) {
      return caf::actor_cast<caf::strong_actor_ptr>(a) != nullptr;
    });
  };
  // Bounded: the actors go as soon as the last messages about them are
  // handled, not when their timers come due.
  for (int i = 0; i < 500 && alive() > 0; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(alive(), 0);
}

namespace {

/// An exec node that holds `lock` (flock -n: it fails at once, exit code 1,
/// when the lock is taken), creates `held` once it has it, and sleeps,
/// ignoring SIGTERM (flock leads its process group and lives on): a stopped
/// attempt lives on through the whole kill grace.
std::string stubborn(const std::string& lock, const std::string& held,
                     const std::string& rest) {
  return R"(    kind: exec
    command: ["sh", "-c", "trap '' TERM; exec flock -n )"
         + lock + " sh -c 'touch " + held + R"(; exec sleep 30'"]
)" + rest;
}

/// Waits (bounded) until `path` exists.
bool exists_soon(const std::filesystem::path& path) {
  for (int i = 0; i < 500 && !std::filesystem::exists(path); ++i)
    std::this_thread::sleep_for(10ms);
  return std::filesystem::exists(path);
}

/// A run that needs `lock` at once (flock -n: it fails, exit code 1, when
/// the lock is taken), behind a slot of the `limit: 1` key "the-lock".
std::string waiter(const std::string& lock) {
  return R"(name: waiter
nodes:
  take:
    kind: exec
    command: ["flock", "-n", ")"
         + lock + R"(", "true"]
    retry: {max_attempts: 1}
    concurrency: {key: the-lock, limit: 1}
)";
}

} // namespace

// An attempt stopped at its timeout ignores SIGTERM and keeps its lock for
// the kill grace: its retry starts only once it is gone, so it gets the
// lock (and times out in turn) instead of failing at once beside it.
TEST_F(RunActor, RetryWaitsUntilTheStoppedAttemptsProcessIsGone) {
  auto node = open(0, 700ms);
  caf::scoped_actor self{node->system()};
  auto lock = (dir.path() / "lock").string();
  auto held = (dir.path() / "held").string();
  auto id = submit(*node, self,
                   "name: stubborn\nnodes:\n  hold:\n"
                     + stubborn(lock, held, R"(    timeout: 300ms
    retry: {max_attempts: 2, initial_backoff: 1ms, jitter: none}
)"));
  auto f = wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::failed);
  std::string error;
  auto journal = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  std::vector<std::string> kinds;
  std::map<int32_t, int64_t> started;
  for (auto& e : journal) {
    if (e.type == event_type::attempt_failed && e.node == "hold")
      kinds.push_back(e.error_kind);
    if (e.type == event_type::attempt_started)
      started[e.attempt] = e.at_ns;
  }
  EXPECT_EQ(kinds, (std::vector<std::string>{"timeout", "timeout"}));
  // The first attempt ended when its process did: at its timeout (300 ms)
  // and the kill grace (700 ms) after it, when SIGKILL came.
  ASSERT_EQ(started.size(), 2u);
  EXPECT_GE(started[2] - started[1], 900'000'000);
}

// A `limit: 1` key: the run waiting for the slot gets it only once the
// process of the attempt that held it (stopped at its timeout) is gone.
TEST_F(RunActor, ConcurrencySlotWaitsUntilTheStoppedAttemptsProcessIsGone) {
  auto node = open(0, 700ms);
  caf::scoped_actor self{node->system()};
  auto lock = (dir.path() / "lock").string();
  auto held = (dir.path() / "held").string();
  auto first = submit(*node, self,
                      "name: holder\nnodes:\n  hold:\n"
                        + stubborn(lock, held, R"(    timeout: 300ms
    retry: {max_attempts: 1}
    concurrency: {key: the-lock, limit: 1}
)"));
  // The second asks for the slot once the first holds it (and the lock).
  ASSERT_TRUE(exists_soon(held));
  auto second = submit(*node, self, waiter(lock));
  auto ended = wait_finished(self, 2);
  EXPECT_EQ(ended[first].state, persistence::run_state::failed);
  EXPECT_EQ(ended[second].state, persistence::run_state::completed)
    << ended[second].reason;
}

namespace {

/// An exec node like `stubborn`, whose first process (the one that creates
/// `held`) sleeps holding `lock`, and whose later ones output `{}` at once
/// once they get it (and fail, exit code 1, when it is still taken).
std::string stubborn_once(const std::string& lock, const std::string& held,
                          const std::string& rest) {
  return R"(    kind: exec
    command: ["sh", "-c", "trap '' TERM; exec flock -n )"
         + lock + " sh -c 'if [ -e " + held + " ]; then echo {}; else touch "
         + held + R"(; exec sleep 30; fi'"]
)" + rest;
}

/// Waits (bounded) until the run `id` on `node` says it waits for `what`.
bool waits_for(actors::embedded_node& node, const std::string& id,
               const std::string& what) {
  for (int i = 0; i < 500; ++i) {
    if (auto d = node.inspect_run(id, 1s))
      for (auto& w : (*d)["waiting_for"])
        if (w.get<std::string>().find(what) != std::string::npos)
          return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

} // namespace

namespace {

/// Crashes the actor of run `id` on `node` once the run `waits` (while its
/// node `work`, `stubborn_once`, has its first process), and expects the
/// restarted run to complete without a failed attempt: its attempt ran
/// again only once the first process was gone, and got the lock.
void crash_and_complete(RunActor& t, actors::embedded_node& node,
                        caf::scoped_actor& self, const std::string& id,
                        const std::function<bool()>& waits) {
  ASSERT_TRUE(waits());
  node.crash(id);
  auto f = t.wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
  auto journal = t.journal(node, id);
  EXPECT_EQ(t.count(journal, event_type::run_restarted), 1);
  EXPECT_EQ(t.count(journal, event_type::attempt_failed, "work"), 0);
}

} // namespace

// The run actor crashes while its exec attempt runs: the attempt actor dies
// with it, and its process gets SIGTERM (ignored here) and the kill grace.
// The restarted run runs the attempt again only once that process is gone:
// it then gets the lock, instead of failing at once beside the old one.
TEST_F(RunActor, RestartedRunWaitsUntilTheCrashedRunsProcessIsGone) {
  auto node = open(0, 700ms);
  caf::scoped_actor self{node->system()};
  auto lock = (dir.path() / "lock").string();
  auto held = dir.path() / "held";
  auto id = submit(
    *node, self,
    "name: crashy\nnodes:\n  work:\n"
      + stubborn_once(lock, held.string(), "    retry: {max_attempts: 1}\n"));
  crash_and_complete(*this, *node, self, id, [&] { return exists_soon(held); });
}

// The same while the attempt is stopping (its timeout stopped it, and its
// process lives out the kill grace): the restarted run's attempt, with a
// timeout of its own from its new start, waits too.
TEST_F(RunActor, RestartedRunWaitsUntilTheProcessOfAStoppingAttemptIsGone) {
  auto node = open(0, 400ms);
  caf::scoped_actor self{node->system()};
  auto lock = (dir.path() / "lock").string();
  auto held = (dir.path() / "held").string();
  auto id = submit(
    *node, self,
    "name: crashy\nnodes:\n  work:\n"
      + stubborn_once(lock, held,
                      "    timeout: 1s\n    retry: {max_attempts: 1}\n"));
  crash_and_complete(*this, *node, self, id, [&] {
    return waits_for(*node, id, "to end (stopped at its timeout)");
  });
}

// A `limit: 1` key whose holder's run actor crashes while its process runs:
// the limiter keeps the slot until that process is gone (the restarted run
// takes it over), so the run waiting for it never runs beside the old
// process.
TEST_F(RunActor, SlotOfACrashedRunIsFreeOnlyOnceItsProcessIsGone) {
  auto node = open(0, 700ms);
  caf::scoped_actor self{node->system()};
  auto lock = (dir.path() / "lock").string();
  auto held = (dir.path() / "held").string();
  auto first
    = submit(*node, self,
             "name: holder\nnodes:\n  hold:\n"
               + stubborn_once(lock, held, R"(    retry: {max_attempts: 1}
    concurrency: {key: the-lock, limit: 1}
)"));
  ASSERT_TRUE(exists_soon(held));
  auto second = submit(*node, self, waiter(lock));
  ASSERT_TRUE(waits_for(*node, second, "concurrency slot of 'take'"));
  node->crash(first);
  auto ended = wait_finished(self, 2);
  EXPECT_EQ(ended[first].state, persistence::run_state::completed)
    << ended[first].reason;
  EXPECT_EQ(ended[second].state, persistence::run_state::completed)
    << ended[second].reason;
}
