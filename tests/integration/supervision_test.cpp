// The run supervisor: a crashed run actor restarts from its journal; too many
// crashes within the window fail the run instead of restarting it forever.

#include "actors/node/embedded_node.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;

namespace {

struct Supervision : ::testing::Test {
  test::temp_dir dir;

  std::unique_ptr<actors::embedded_node> open(int32_t max_restarts) {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.engine.max_restarts = max_restarts;
    o.engine.restart_backoff = 10ms;
    o.engine.restart_window = 60s;
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
                   persistence::event_type t) {
    int n = 0;
    for (auto& e : events)
      n += e.type == t;
    return n;
  }
};

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
  std::string error;
  auto events = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(count(events, persistence::event_type::run_restarted), 1);
  // Restarting did not redo finished nodes, nor set the timer twice.
  EXPECT_EQ(count(events, persistence::event_type::node_completed), 3);
  EXPECT_EQ(count(events, persistence::event_type::timer_set), 1);
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
  std::string error;
  auto journal = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(count(journal, persistence::event_type::run_completed), 1);
  EXPECT_EQ(count(journal, persistence::event_type::run_restarted), 0);
  // Each node ran once.
  EXPECT_EQ(count(journal, persistence::event_type::node_completed), 3);
}

namespace {

/// Whether `op` journals an event of type `t`.
bool holds(const persistence::journal_store::append_op& op,
           persistence::event_type t) {
  for (auto& e : op.events)
    if (e.type == t)
      return true;
  return false;
}

} // namespace

// A journal write of a run fails: the run actor crashes, the writes it had
// queued behind the failed one are refused, and its supervisor's restart
// barrier lets the new actor write again. The run completes with a journal
// that has no hole.
TEST_F(Supervision, FailedJournalWriteRestartsTheRunWithoutAHole) {
  std::atomic<int> failures{0};
  actors::embedded_node::options o;
  o.data_dir = (dir.path() / "data").string();
  o.engine.max_restarts = 5;
  o.engine.restart_backoff = 10ms;
  o.tune_store = [&](persistence::journal_store::options& so) {
    so.fail_append = [&](const persistence::journal_store::append_op& op) {
      if (holds(op, persistence::event_type::timer_set) && failures++ == 0)
        return std::string{"injected failure"};
      return std::string{};
    };
  };
  std::string error;
  auto node = actors::embedded_node::open(o, error);
  ASSERT_TRUE(node) << error;
  std::string id;
  {
    caf::scoped_actor self{node->system()};
    id = submit(*node, self, sleepy);
    auto f = wait_finished(self);
    EXPECT_EQ(f.state, persistence::run_state::completed) << f.reason;
  }
  EXPECT_GE(failures.load(), 2);
  auto events = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(count(events, persistence::event_type::run_restarted), 1);
  EXPECT_EQ(count(events, persistence::event_type::timer_set), 1);
  EXPECT_EQ(count(events, persistence::event_type::run_completed), 1);
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::completed);
}

// When every restart fails to write again, the supervisor gives up, and
// its run_failed is written although the run's writes were being refused.
TEST_F(Supervision, GivingUpAfterFailedWritesRecordsTheFailure) {
  actors::embedded_node::options o;
  o.data_dir = (dir.path() / "data").string();
  o.engine.max_restarts = 2;
  o.engine.restart_backoff = 10ms;
  o.tune_store = [&](persistence::journal_store::options& so) {
    so.fail_append = [&](const persistence::journal_store::append_op& op) {
      if (holds(op, persistence::event_type::attempt_started))
        return std::string{"injected failure"};
      return std::string{};
    };
  };
  std::string error;
  auto node = actors::embedded_node::open(o, error);
  ASSERT_TRUE(node) << error;
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
  auto events = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().type, persistence::event_type::run_failed);
}

// A cancel that comes while a crashed run actor waits for its restart is
// not sent to the actor that is gone: the restarted actor gets it.
TEST_F(Supervision, CancelDuringARestartReachesTheRestartedRun) {
  actors::embedded_node::options o;
  o.data_dir = (dir.path() / "data").string();
  o.engine.restart_backoff = 500ms;
  std::string error;
  auto node = actors::embedded_node::open(o, error);
  ASSERT_TRUE(node) << error;
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
  auto events = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(count(events, persistence::event_type::run_restarted), 1);
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
  std::string error;
  auto events = node->store().read_journal(id, error);
  ASSERT_TRUE(error.empty()) << error;
  EXPECT_EQ(count(events, persistence::event_type::run_restarted), 1);
}
