// The run actor on an embedded node, driven message by message where the
// order of its messages matters: exits of attempts it stopped, starts from
// journals that are stale or finished, and the actors a finished run leaves
// behind.

#include "actors/node/embedded_node.hpp"
#include "actors/plugin/node_executor.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <future>
#include <mutex>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;
using persistence::event_type;

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

struct RunActor : ::testing::Test {
  test::temp_dir dir;

  std::unique_ptr<actors::embedded_node>
  open(size_t threads = 0, std::chrono::milliseconds kill_grace = 2s) {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.scheduler_threads = threads;
    o.supervisors = 1;
    o.engine.restart_backoff = 10ms;
    o.engine.kill_grace = kill_grace;
    std::string error;
    auto node = actors::embedded_node::open(o, error);
    EXPECT_TRUE(node) << error;
    return node;
  }

  static std::string submit(actors::embedded_node& node, caf::actor observer,
                            const std::string& source) {
    auto outcome = runtime::parse_workflow(source);
    EXPECT_TRUE(outcome.ok());
    std::string error;
    auto id
      = node.submit(source, *outcome.workflow, json::object(), observer, error);
    EXPECT_FALSE(id.empty()) << error;
    return id;
  }

  /// Waits (bounded) for the run to finish and returns how it ended.
  static runtime::run_finished wait_finished(caf::scoped_actor& self) {
    runtime::run_finished result;
    bool done = false;
    for (int i = 0; i < 300 && !done; ++i)
      self->receive([&](runtime::run_finished& f) { result = f, done = true; },
                    [](runtime::run_progress&) {}, caf::after(100ms) >> [] {});
    EXPECT_TRUE(done);
    return result;
  }

  static int count(const std::vector<persistence::event_record>& events,
                   event_type t, const std::string& node = "*") {
    int n = 0;
    for (auto& e : events)
      n += e.type == t && (node == "*" || e.node == node);
    return n;
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
