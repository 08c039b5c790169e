// The plugin API for node kinds (actors/plugin/node_executor.hpp): the
// example program that embeds Troupe with a kind of its own, run as a child
// process; kinds added in this process and run on an embedded node; and
// node_call on its own.

#include "actors/node/embedded_node.hpp"
#include "actors/plugin/node_executor.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;
using persistence::event_record;
using persistence::event_type;
using plugin::node_call;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// -- the example program ------------------------------------------------------

struct PluginExample : ::testing::Test {
  test::temp_dir dir;

  test::process_result example(std::vector<std::string> args) {
    args.insert(args.begin(), TROUPE_PLUGIN_EXAMPLE);
    test::process_options opts;
    opts.cwd = dir.path().string();
    auto r = test::run_process(args, opts);
    EXPECT_FALSE(r.timed_out);
    return r;
  }

  std::string data() const { return (dir.path() / "data").string(); }
};

TEST_F(PluginExample, CountsWordsAfterANoopNode) {
  auto r = example({data(), "--text", "to be or not to be"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto out = json::parse(r.out);
  EXPECT_EQ(out["words"], 6);
  EXPECT_EQ(out["text"], "to be or not to be");
  // The executor's log line, prefixed with its run, node and attempt.
  EXPECT_TRUE(contains(r.err, "node count attempt 1: counted 6 words"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "prepare  node_completed")) << r.err;
  EXPECT_TRUE(contains(r.err, "count  node_completed")) << r.err;
  // Again on the same data dir (which it recovers first), with the default
  // text.
  r = example({data()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["words"], 4);
}

TEST_F(PluginExample, ABadWordFailsTheRunWithoutRetry) {
  auto r = example({data(), "--fail-on", "brown"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(contains(r.err, "count  attempt_failed  attempt 1  word 3 is "
                              "'brown'"))
    << r.err;
  // bad_word is in retry.non_retryable: one attempt only.
  EXPECT_FALSE(contains(r.err, "attempt 2")) << r.err;
  EXPECT_TRUE(contains(r.err, "failed: node 'count': not retryable "
                              "(bad_word): word 3 is 'brown'"))
    << r.err;
  // A word that is not in the text fails nothing.
  r = example({data(), "--fail-on", "zebra"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(PluginExample, BadUsageExitsTwo) {
  EXPECT_EQ(example({}).exit_code, 2);
  EXPECT_EQ(example({data(), "--colour", "red"}).exit_code, 2);
}

// -- node_call on its own -----------------------------------------------------

TEST(NodeCall, CompletesOnceFromAnyThread) {
  std::vector<plugin::node_outcome> got;
  std::mutex mtx;
  auto call = std::make_shared<node_call>([&](plugin::node_outcome o) {
    std::lock_guard guard{mtx};
    got.push_back(std::move(o));
  });
  std::atomic<int> wins{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      bool won = i % 2 == 0 ? call->succeed({{"by", i}})
                            : call->fail("oops", "thread " + std::to_string(i));
      if (won)
        ++wins;
    });
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(wins, 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(call->completed());
  EXPECT_FALSE(call->cancelled());
  // Cancelling a completed call does nothing.
  bool ran = false;
  call->on_cancel([&] { ran = true; });
  call->cancel();
  EXPECT_FALSE(ran);
  EXPECT_FALSE(call->cancelled());
}

TEST(NodeCall, CancelRunsEachCallbackOnceAndDropsLaterOutcomes) {
  int delivered = 0;
  node_call call{[&](plugin::node_outcome) { ++delivered; }};
  int before = 0;
  int after = 0;
  call.on_cancel([&] { ++before; });
  call.on_cancel([] { throw std::runtime_error("dropped"); });
  call.cancel();
  call.cancel();
  EXPECT_EQ(before, 1);
  EXPECT_TRUE(call.cancelled());
  call.on_cancel([&] { ++after; }); // Already cancelled: runs at once.
  EXPECT_EQ(after, 1);
  EXPECT_FALSE(call.succeed({}));
  EXPECT_FALSE(call.fail("x", "y"));
  EXPECT_EQ(delivered, 0);
  EXPECT_FALSE(call.completed());
}

TEST(NodeCall, FailNormalisesItsArguments) {
  plugin::node_outcome got;
  node_call call{[&](plugin::node_outcome o) { got = std::move(o); }};
  EXPECT_TRUE(call.fail("", "no kind given", -5ms));
  EXPECT_FALSE(got.ok);
  EXPECT_EQ(got.error_kind, "error");
  EXPECT_EQ(got.message, "no kind given");
  EXPECT_EQ(got.retry_after, 0ms);
}

// -- kinds added in this process ----------------------------------------------

using start_fn = std::function<void(std::shared_ptr<node_call>)>;

/// Runs whatever function the current test gives it.
class test_executor : public plugin::node_executor {
 public:
  void set(start_fn fn) {
    std::lock_guard guard{mtx_};
    fn_ = std::move(fn);
  }

  void start(std::shared_ptr<node_call> call) override {
    start_fn fn;
    {
      std::lock_guard guard{mtx_};
      fn = fn_;
    }
    fn(std::move(call));
  }

 private:
  std::mutex mtx_;
  start_fn fn_;
};

/// Adds kind `name` (optional string `text`) once per process and makes it
/// run `fn`.
void use_kind(const std::string& name, start_fn fn) {
  static std::mutex mtx;
  static std::map<std::string, std::shared_ptr<test_executor>> kinds;
  std::lock_guard guard{mtx};
  auto& exec = kinds[name];
  if (!exec) {
    exec = std::make_shared<test_executor>();
    runtime::kind_spec kind;
    kind.name = name;
    kind.doc = "A kind of the plugin tests.";
    kind.params = {{"text", runtime::param_type::string, false, "Any text."}};
    ASSERT_TRUE(plugin::executor_registry::global().add(kind, exec));
  }
  exec->set(std::move(fn));
}

TEST(PluginApi, AddsKindsThatWorkflowsAreCheckedAgainst) {
  using pt = runtime::param_type;
  auto& registry = plugin::executor_registry::global();
  struct nothing : plugin::node_executor {
    void start(std::shared_ptr<node_call> call) override { call->succeed({}); }
  };
  auto exec = std::make_shared<nothing>();
  runtime::kind_spec kind{"plugin_test_greet",
                          "Greets.",
                          {{"text", pt::string, true, "Whom to greet."},
                           {"times", pt::integer, false, "How often.", 1, 10}},
                          false,
                          nullptr};
  if (!registry.find(kind.name)) { // Once per process (--gtest_repeat).
    ASSERT_TRUE(registry.add(kind, exec));
  }
  EXPECT_FALSE(registry.add(kind, exec)) << "the same name twice";
  EXPECT_FALSE(registry.add({"noop", "", {}, true, nullptr}, exec))
    << "a built-in kind";
  EXPECT_FALSE(registry.add({"plugin_test_null", "", {}, true, nullptr}, {}));
  EXPECT_FALSE(registry.find("plugin_test_null"));
  EXPECT_FALSE(runtime::kind_registry::global().find("plugin_test_null"));
  EXPECT_TRUE(runtime::kind_registry::global().find("plugin_test_greet"));
  auto names = registry.names();
  EXPECT_TRUE(std::count(names.begin(), names.end(), "plugin_test_greet"));

  // A missing required parameter, reported at the node, naming it.
  auto r = runtime::parse_workflow(R"(name: p
nodes:
  hi: {kind: plugin_test_greet}
)");
  ASSERT_FALSE(r.ok());
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].path, "nodes.hi");
  EXPECT_EQ(r.errors[0].code, "missing_field");
  EXPECT_TRUE(contains(r.errors[0].message, "needs 'text' (Whom to greet.)"))
    << r.errors[0].message;
  // A mistyped, an out-of-range and an unknown parameter, each at its path.
  r = runtime::parse_workflow(R"(name: p
nodes:
  hi: {kind: plugin_test_greet, text: [1], times: 11, colour: red}
)");
  ASSERT_FALSE(r.ok());
  std::set<std::string> paths;
  for (auto& d : r.errors)
    paths.insert(d.path);
  EXPECT_EQ(paths, (std::set<std::string>{"nodes.hi.text", "nodes.hi.times",
                                          "nodes.hi.colour"}));
  EXPECT_TRUE(runtime::parse_workflow(R"(name: p
nodes:
  hi: {kind: plugin_test_greet, text: world, times: 2}
)")
                .ok());
}

struct PluginNode : ::testing::Test {
  test::temp_dir dir;
  std::unique_ptr<actors::embedded_node> node;

  void SetUp() override {
    actors::embedded_node::options o;
    o.data_dir = (dir.path() / "data").string();
    o.scheduler_threads = 2;
    o.supervisors = 1;
    std::string error;
    node = actors::embedded_node::open(o, error);
    ASSERT_TRUE(node) << error;
  }

  struct outcome {
    std::string id;
    runtime::run_finished finished;
    json outputs;
  };

  /// Runs `source` to its end.
  outcome run(const std::string& source) {
    outcome out;
    auto spec = runtime::parse_workflow(source);
    if (!spec.ok()) {
      ADD_FAILURE() << spec.errors.front().to_string("workflow");
      return out;
    }
    std::vector<std::string> errors;
    auto inputs = runtime::bind_inputs(*spec.workflow, json::object(), errors);
    if (!inputs) {
      ADD_FAILURE() << errors.front();
      return out;
    }
    caf::scoped_actor self{node->system()};
    std::string error;
    out.id = node->submit(source, *spec.workflow, *inputs, self, error);
    if (out.id.empty()) {
      ADD_FAILURE() << error;
      return out;
    }
    bool done = false;
    for (int i = 0; i < 300 && !done; ++i)
      self->receive(
        [&](runtime::run_finished& f) {
          if (f.run_id == out.id)
            out.finished = f, done = true;
        },
        [](runtime::run_progress&) {}, caf::after(100ms) >> [] {});
    EXPECT_TRUE(done) << "the run did not end within 30s";
    out.outputs = json::parse(out.finished.outputs, nullptr, false);
    return out;
  }

  /// The attempt_failed events of run `id`.
  std::vector<event_record> failures(const std::string& id) {
    std::string error;
    auto journal = node->store().read_journal(id, error);
    EXPECT_TRUE(error.empty()) << error;
    std::vector<event_record> out;
    for (auto& e : journal)
      if (e.type == event_type::attempt_failed)
        out.push_back(e);
    return out;
  }
};

TEST_F(PluginNode, SucceedsFromAnotherThreadWithItsContext) {
  std::mutex mtx;
  std::vector<std::thread> threads;
  std::atomic<bool> second_ignored{false};
  use_kind("plugin_test_echo", [&](std::shared_ptr<node_call> call) {
    auto caller = std::this_thread::get_id();
    std::lock_guard guard{mtx};
    threads.emplace_back([&, call, caller] {
      call->log("echoing");
      auto ok
        = call->succeed({{"text", call->params.at("text")},
                         {"same_thread", std::this_thread::get_id() == caller},
                         {"run_id", call->run_id},
                         {"node", call->node},
                         {"kind", call->kind},
                         {"attempt", call->attempt},
                         {"context", call->context}});
      if (ok && !call->succeed({{"again", true}})
          && !call->fail("late", "too late"))
        second_ignored = true;
    });
  });
  auto r = run(R"(name: echo
inputs:
  who: {type: string, default: Ada}
nodes:
  a: {kind: noop, x: 1}
  e:
    kind: plugin_test_echo
    after: [a]
    text: "hello {{ inputs.who }}"
outputs:
  e: "{{ nodes.e.output }}"
)");
  {
    std::lock_guard guard{mtx};
    for (auto& t : threads)
      t.join();
  }
  ASSERT_EQ(r.finished.state, persistence::run_state::completed)
    << r.finished.reason;
  auto& e = r.outputs["e"];
  EXPECT_EQ(e["text"], "hello Ada");
  EXPECT_EQ(e["same_thread"], false);
  EXPECT_EQ(e["run_id"], r.id);
  EXPECT_EQ(e["node"], "e");
  EXPECT_EQ(e["kind"], "plugin_test_echo");
  EXPECT_EQ(e["attempt"], 1);
  EXPECT_EQ(e["context"], (json{{"inputs", {{"who", "Ada"}}},
                                {"nodes", {{"a", {{"x", 1}}}}}}));
  EXPECT_TRUE(second_ignored);
}

TEST_F(PluginNode, AFailureIsRetriedAfterItsRetryAfter) {
  use_kind("plugin_test_flaky", [](std::shared_ptr<node_call> call) {
    // Trivial work may complete right in start().
    if (call->attempt == 1)
      call->fail("flaky", "the first attempt fails", 300ms);
    else
      call->succeed({{"attempt", call->attempt}});
  });
  auto r = run(R"(name: flaky
nodes:
  f:
    kind: plugin_test_flaky
    retry: {max_attempts: 3, initial_backoff: 1ms, jitter: none}
outputs:
  attempt: "{{ nodes.f.output.attempt }}"
)");
  ASSERT_EQ(r.finished.state, persistence::run_state::completed)
    << r.finished.reason;
  EXPECT_EQ(r.outputs["attempt"], 2);
  auto failed = failures(r.id);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].attempt, 1);
  EXPECT_EQ(failed[0].error_kind, "flaky");
  EXPECT_EQ(failed[0].message, "the first attempt fails");
  // The retry waited for retry_after, not the 1ms backoff.
  EXPECT_GE(failed[0].deadline_ns - failed[0].at_ns, 300'000'000);
}

TEST_F(PluginNode, AThrowingStartIsACrash) {
  use_kind("plugin_test_throws", [](std::shared_ptr<node_call>) {
    throw std::runtime_error("boom");
  });
  auto r = run(R"(name: throws
nodes:
  t: {kind: plugin_test_throws, retry: {max_attempts: 1}}
)");
  EXPECT_EQ(r.finished.state, persistence::run_state::failed);
  EXPECT_EQ(r.finished.failed_node, "t");
  EXPECT_TRUE(contains(r.finished.reason, "boom")) << r.finished.reason;
  auto failed = failures(r.id);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].error_kind, "crash");
  EXPECT_EQ(failed[0].message,
            "the executor of kind 'plugin_test_throws' threw: boom");
}

TEST_F(PluginNode, ADroppedCallIsACrash) {
  use_kind("plugin_test_drops", [](std::shared_ptr<node_call>) {});
  auto r = run(R"(name: drops
nodes:
  d: {kind: plugin_test_drops, retry: {max_attempts: 1}}
)");
  EXPECT_EQ(r.finished.state, persistence::run_state::failed);
  auto failed = failures(r.id);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].error_kind, "crash");
  EXPECT_TRUE(contains(failed[0].message, "dropped the call"))
    << failed[0].message;
}

TEST_F(PluginNode, OnCancelRunsWhenTheAttemptTimesOut) {
  std::mutex mtx;
  std::vector<std::shared_ptr<node_call>> calls;
  std::atomic<int> cancels{0};
  use_kind("plugin_test_hangs", [&](std::shared_ptr<node_call> call) {
    call->on_cancel([&] { ++cancels; });
    std::lock_guard guard{mtx};
    calls.push_back(std::move(call)); // Kept, never completed.
  });
  auto r = run(R"(name: hangs
nodes:
  h:
    kind: plugin_test_hangs
    timeout: 200ms
    retry: {max_attempts: 1}
)");
  EXPECT_EQ(r.finished.state, persistence::run_state::failed);
  EXPECT_TRUE(contains(r.finished.reason, "timed out after 200ms"))
    << r.finished.reason;
  auto failed = failures(r.id);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].error_kind, "timeout");
  // The attempt actor may stop a little after the run ended.
  EXPECT_TRUE(test::wait_until([&] { return cancels == 1; }, 5000ms));
  std::lock_guard guard{mtx};
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_TRUE(calls[0]->cancelled());
  EXPECT_FALSE(calls[0]->succeed({})) << "too late";
  calls.clear();
  EXPECT_EQ(cancels, 1);
}

TEST_F(PluginNode, CallsInFlightAreCancelledWhenTheNodeStops) {
  std::mutex mtx;
  std::vector<std::shared_ptr<node_call>> calls;
  std::atomic<int> cancels{0};
  use_kind("plugin_test_waits", [&](std::shared_ptr<node_call> call) {
    call->on_cancel([&] { ++cancels; });
    std::lock_guard guard{mtx};
    calls.push_back(std::move(call));
  });
  auto source = std::string{R"(name: waits
nodes:
  w: {kind: plugin_test_waits}
)"};
  auto spec = runtime::parse_workflow(source);
  ASSERT_TRUE(spec.ok());
  std::string error;
  ASSERT_FALSE(
    node->submit(source, *spec.workflow, json::object(), {}, error).empty())
    << error;
  ASSERT_TRUE(test::wait_until(
    [&] {
      std::lock_guard guard{mtx};
      return !calls.empty();
    },
    5000ms));
  node.reset(); // Shutdown stops the attempt.
  EXPECT_EQ(cancels, 1);
  std::lock_guard guard{mtx};
  EXPECT_TRUE(calls[0]->cancelled());
  EXPECT_FALSE(calls[0]->succeed({})) << "the node is gone";
  calls.clear();
}

} // namespace
