#pragma once

// A test fixture for integration tests of an embedded node: a node on a
// temp dir, an observer that collects how runs end, the node's notices
// (breaker state changes) and bounded waits.

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
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace troupe::test {

struct node_fixture : ::testing::Test {
  temp_dir dir;
  std::unique_ptr<actors::embedded_node> node;
  /// Receives every run's progress and end.
  std::unique_ptr<caf::scoped_actor> observer;
  /// How runs ended, by run id, as the observer heard it.
  std::map<std::string, runtime::run_finished> finished;
  std::mutex log_mtx;
  std::vector<std::string> log;

  /// Options with the data dir in the temp dir and the notices collected.
  actors::embedded_node::options options() {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.engine.kill_grace = std::chrono::milliseconds{100};
    o.engine.restart_backoff = std::chrono::milliseconds{10};
    o.log = [this](const std::string& line) {
      std::lock_guard guard{log_mtx};
      log.push_back(line);
    };
    return o;
  }

  void open(const actors::embedded_node::options& o) {
    std::string error;
    node = actors::embedded_node::open(o, error);
    ASSERT_TRUE(node) << error;
    observer = std::make_unique<caf::scoped_actor>(node->system());
  }

  void TearDown() override {
    observer.reset();
    node.reset();
  }

  /// Submits a run of `source` and returns its id (empty on failure).
  std::string submit(const std::string& source,
                     const nlohmann::json& inputs = nlohmann::json::object()) {
    auto outcome = runtime::parse_workflow(source);
    EXPECT_TRUE(outcome.ok()) << source;
    if (!outcome.ok())
      return {};
    std::string error;
    auto id = node->submit(source, *outcome.workflow, inputs, *observer, error);
    EXPECT_FALSE(id.empty()) << error;
    return id;
  }

  /// Waits at most `limit` for run `id` to end; returns whether it did.
  bool wait_finished(const std::string& id, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!finished.count(id) && std::chrono::steady_clock::now() < until)
      (*observer)->receive(
        [&](runtime::run_finished& f) { finished[f.run_id] = f; },
        [](runtime::run_progress&) {},
        caf::after(std::chrono::milliseconds{50}) >> [] {});
    return finished.count(id) > 0;
  }

  /// Waits at most `limit` for `pred`, polling every 20ms.
  static bool poll(const std::function<bool()>& pred,
                   std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      if (pred())
        return true;
      if (std::chrono::steady_clock::now() >= until)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds{20});
    }
  }

  std::vector<persistence::event_record> journal(const std::string& id) {
    std::string error;
    auto events = node->store().read_journal(id, error);
    EXPECT_TRUE(error.empty()) << error;
    return events;
  }

  /// Counts the attempt_failed events of `id` with `error_kind`.
  int failures(const std::string& id, const std::string& error_kind) {
    int n = 0;
    for (auto& e : journal(id))
      n += e.type == persistence::event_type::attempt_failed
           && e.error_kind == error_kind;
    return n;
  }

  std::vector<std::string> lines() {
    std::lock_guard guard{log_mtx};
    return log;
  }

  /// Whether a notice contains `text`.
  bool logged(const std::string& text) {
    for (auto& l : lines())
      if (l.find(text) != std::string::npos)
        return true;
    return false;
  }

  /// Whether a notice contains `text` within `limit`: notices of other
  /// actors (a breaker's state change) may come a moment after what the
  /// test waited for.
  bool logged_within(const std::string& text, std::chrono::milliseconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    for (int i = 0; i < 10'000; ++i) {
      if (logged(text))
        return true;
      if (std::chrono::steady_clock::now() >= until)
        return false;
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    }
    return logged(text);
  }
};

} // namespace troupe::test
