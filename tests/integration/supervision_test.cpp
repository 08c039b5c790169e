// The run supervisor: a crashed run actor restarts from its journal; too many
// crashes within the window fail the run instead of restarting it forever.

#include "tests/support/embedded_fixture.hpp"

#include <atomic>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using persistence::event_type;

namespace {

struct Supervision : test::embedded_fixture {
  /// A node that restarts a crashed run actor at most `max_restarts` times
  /// within a minute.
  std::unique_ptr<actors::embedded_node> open(int32_t max_restarts) {
    return embedded_fixture::open([&](actors::embedded_node::options& o) {
      o.engine.max_restarts = max_restarts;
      o.engine.restart_window = 60s;
    });
  }

  /// A node whose store refuses the appends `fail` names (it returns the
  /// error), restarting a crashed run actor at most `max_restarts` times.
  std::unique_ptr<actors::embedded_node> open_failing(
    int32_t max_restarts,
    std::function<std::string(const persistence::journal_store::append_op&)>
      fail) {
    return embedded_fixture::open([&](actors::embedded_node::options& o) {
      o.engine.max_restarts = max_restarts;
      o.tune_store = [fail](persistence::journal_store::options& so) {
        so.fail_append = fail;
      };
    });
  }
};

/// Whether `op` journals an event of type `t`.
bool holds(const persistence::journal_store::append_op& op, event_type t) {
  for (auto& e : op.events)
    if (e.type == t)
      return true;
  return false;
}

const char* sleepy = "name: sleepy\nnodes:\n  a: {kind: noop}\n  nap: {kind: "
                     "sleep, after: [a], duration: 600ms}\n  b: {kind: noop, "
                     "after: [nap]}\n";

} // namespace

TEST_F(Supervision, CrashedRunRestartsFromItsJournal) {
  auto node = open(5);
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self, sleepy);
    std::this_thread::sleep_for(150ms);
    node->crash(id);
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
  }
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::run_restarted), 1);
  // Restarting did not redo finished nodes, nor set the timer twice.
  EXPECT_EQ(count(events, event_type::node_completed), 3);
  EXPECT_EQ(count(events, event_type::timer_set), 1);
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::completed);
}

TEST_F(Supervision, TooManyCrashesFailTheRun) {
  auto node = open(2);
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self,
                "name: long\nnodes:\n  nap: {kind: sleep, duration: 1h}\n");
    for (int i = 0; i < 3; ++i) {
      std::this_thread::sleep_for(200ms);
      node->crash(id);
    }
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::failed);
    EXPECT_NE(f.reason.find("crashed 3 times within 1m"), std::string::npos)
      << f.reason;
  }
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::failed);
}

// A run submitted while the node recovers may be started twice (by its
// submission and by recovery); the supervisor keeps its one live actor.
TEST_F(Supervision, SecondStartOfALiveRunIsDropped) {
  auto node = open(5);
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self, sleepy);
    std::this_thread::sleep_for(100ms);
    // Recovery finds the run unfinished in the store and starts it again.
    auto recovered = node->recover(self);
    ASSERT_EQ(recovered.resumed, std::vector<std::string>{id});
    auto f = wait_finished(self);
    EXPECT_EQ(f.run_id, id);
    EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
    // No second ending: one actor ran it.
    bool again = false;
    self->receive([&](runtime::run_finished&) { again = true; },
                  caf::after(800ms) >> [] {});
    EXPECT_FALSE(again);
  }
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::run_completed), 1);
  EXPECT_EQ(count(events, event_type::run_restarted), 0);
  // Each node ran once.
  EXPECT_EQ(count(events, event_type::node_completed), 3);
}

// A journal write of a run fails: the run actor crashes, the writes it had
// queued behind the failed one are refused, and its supervisor's restart
// barrier lets the new actor write again. The run completes with a journal
// that has no hole.
TEST_F(Supervision, FailedJournalWriteRestartsTheRunWithoutAHole) {
  std::atomic<int> failures{0};
  auto node = open_failing(5, [&](const auto& op) {
    if (holds(op, event_type::timer_set) && failures++ == 0)
      return std::string{"injected failure"};
    return std::string{};
  });
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self, sleepy);
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
  }
  EXPECT_GE(failures.load(), 2);
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::run_restarted), 1);
  EXPECT_EQ(count(events, event_type::timer_set), 1);
  EXPECT_EQ(count(events, event_type::run_completed), 1);
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::completed);
}

// When every restart fails to write again, the supervisor gives up, and
// its run_failed is written although the run's writes were being refused.
TEST_F(Supervision, GivingUpAfterFailedWritesRecordsTheFailure) {
  auto node = open_failing(2, [](const auto& op) {
    return holds(op, event_type::attempt_started)
             ? std::string{"injected failure"}
             : std::string{};
  });
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self, sleepy);
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::failed);
    EXPECT_NE(f.reason.find("injected failure"), std::string::npos) << f.reason;
  }
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::failed);
  auto events = journal(*node, id);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, event_type::run_failed);
}

// A cancel that comes while a crashed run actor waits for its restart is
// not sent to the actor that is gone: the restarted actor gets it.
TEST_F(Supervision, CancelDuringARestartReachesTheRestartedRun) {
  auto node
    = embedded_fixture::open([](auto& o) { o.engine.restart_backoff = 500ms; });
  caf::scoped_actor self{node->system()};
  auto id = submit(*node, self,
                   "name: nap\nnodes:\n  nap: {kind: sleep, duration: 2s}\n");
  ASSERT_TRUE(node->inspect_run(id, 1s));
  node->crash(id);
  // Its actor is gone (it answers no more), its restart not due yet.
  bool gone = false;
  for (int i = 0; i < 100 && !gone; ++i) {
    gone = !node->inspect_run(id, 1s);
    if (!gone)
      std::this_thread::sleep_for(5ms);
  }
  ASSERT_TRUE(gone);
  node->cancel(id, "changed my mind");
  auto f = wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::cancelled) << f.reason;
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::run_restarted), 1);
}

// A cancel that reaches the run actor's mailbox behind what crashes it is
// never taken by that actor: the restarted actor gets it.
TEST_F(Supervision, CancelQueuedBehindACrashReachesTheRestartedRun) {
  auto node = open(5);
  caf::scoped_actor self{node->system()};
  auto id = submit(*node, self,
                   "name: nap\nnodes:\n  nap: {kind: sleep, duration: 2s}\n");
  ASSERT_TRUE(node->inspect_run(id, 1s));
  node->crash(id);
  node->cancel(id, "changed my mind");
  auto f = wait_finished(self);
  EXPECT_EQ(f.state, persistence::run_state::cancelled) << f.reason;
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::run_restarted), 1);
}
