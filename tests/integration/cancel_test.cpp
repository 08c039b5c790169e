// Cancelling a run on an embedded node: its running attempts stop (an exec
// child is killed), completed nodes are compensated, the run ends
// cancelled, and all of it is journaled.

#include "actors/node/embedded_node.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;

TEST(Cancel, StopsTheRunCompensatesAndJournalsIt) {
  test::temp_dir dir;
  actors::embedded_node::options o;
  o.data_dir = (dir.path() / "data").string();
  o.engine.kill_grace = 100ms;
  std::string error;
  auto node = actors::embedded_node::open(o, error);
  ASSERT_TRUE(node) << error;
  auto pidfile = (dir.path() / "pid").string();
  auto source = R"(name: c
nodes:
  book: {kind: noop, compensate: unbook}
  work:
    kind: exec
    after: [book]
    command: ["/bin/sh", "-c", "echo $$ > )"
                + pidfile + R"(; exec sleep 60"]
  unbook: {kind: noop}
)";
  auto spec = runtime::parse_workflow(source);
  ASSERT_TRUE(spec.ok());
  caf::scoped_actor self{node->system()};
  auto id = node->submit(source, *spec.workflow, json::object(), self, error);
  ASSERT_FALSE(id.empty()) << error;
  // Wait until the exec child runs.
  pid_t child = 0;
  for (int i = 0; i < 500 && child == 0; ++i) {
    std::ifstream in{pidfile};
    in >> child;
    if (child == 0)
      std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(child, 0);
  node->cancel(id, "stopped by the operator");
  runtime::run_finished f;
  bool done = false;
  for (int i = 0; i < 300 && !done; ++i)
    self->receive([&](runtime::run_finished& x) { f = x, done = true; },
                  [](runtime::run_progress&) {}, caf::after(100ms) >> [] {});
  ASSERT_TRUE(done);
  EXPECT_EQ(f.state, persistence::run_state::cancelled);
  EXPECT_EQ(f.reason, "stopped by the operator; compensated by unbook");
  EXPECT_EQ(json::parse(f.outputs)["compensated"], true);
  // The child was killed.
  bool gone = false;
  for (int i = 0; i < 300 && !gone; ++i) {
    gone = ::kill(child, 0) != 0;
    if (!gone)
      std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(gone);
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::cancelled);
}
