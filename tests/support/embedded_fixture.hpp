#pragma once

#include "actors/node/embedded_node.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::test {

/// A test with an embedded node in a temp dir, driven from the test's
/// thread through a scoped actor that observes its runs.
struct embedded_fixture : ::testing::Test {
  temp_dir dir;

  /// Options for a node on `dir`/data whose crashed run actors restart
  /// after 10ms.
  actors::embedded_node::options options() const {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.engine.restart_backoff = std::chrono::milliseconds{10};
    return o;
  }

  /// Opens a node with `options()`, changed by `tweak` first.
  std::unique_ptr<actors::embedded_node>
  open(const std::function<void(actors::embedded_node::options&)>& tweak = {}) {
    auto o = options();
    if (tweak)
      tweak(o);
    std::string error;
    auto node = actors::embedded_node::open(o, error);
    EXPECT_TRUE(node) << error;
    return node;
  }

  /// Submits a run of `source` (without inputs) that `observer` watches;
  /// returns its id.
  static std::string submit(actors::embedded_node& node, caf::actor observer,
                            const std::string& source) {
    auto outcome = runtime::parse_workflow(source);
    EXPECT_TRUE(outcome.ok());
    std::string error;
    auto id = node.submit(source, *outcome.workflow, nlohmann::json::object(),
                          observer, error);
    EXPECT_FALSE(id.empty()) << error;
    return id;
  }

  /// Waits (bounded, 30s) until `n` runs have finished; returns how each
  /// ended, by run id. Progress is dropped.
  static std::map<std::string, runtime::run_finished>
  wait_finished(caf::scoped_actor& self, size_t n) {
    std::map<std::string, runtime::run_finished> ended;
    for (int i = 0; i < 300 && ended.size() < n; ++i)
      self->receive([&](runtime::run_finished& f) { ended[f.run_id] = f; },
                    [](runtime::run_progress&) {},
                    caf::after(std::chrono::milliseconds{100}) >> [] {});
    EXPECT_EQ(ended.size(), n);
    return ended;
  }

  /// Waits (bounded) for a run to finish and returns how it ended.
  static runtime::run_finished wait_finished(caf::scoped_actor& self) {
    auto ended = wait_finished(self, 1);
    return ended.empty() ? runtime::run_finished{} : ended.begin()->second;
  }

  /// The journal of run `id` in `node`'s store.
  static std::vector<persistence::event_record>
  journal(actors::embedded_node& node, const std::string& id) {
    std::string error;
    auto events = node.store().read_journal(id, error);
    EXPECT_TRUE(error.empty()) << error;
    return events;
  }

  /// Counts the events of type `t` in `events`, of `node` ("*": any).
  static int count(const std::vector<persistence::event_record>& events,
                   persistence::event_type t, const std::string& node = "*") {
    int n = 0;
    for (auto& e : events)
      n += e.type == t && (node == "*" || e.node == node);
    return n;
  }
};

} // namespace troupe::test
