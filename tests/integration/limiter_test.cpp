// Concurrency limits as runs on an embedded node use them: the wait for a
// slot counts toward the attempt's timeout and schedule_to_close; and the
// node's keyed actors (limiters, breakers) stop once idle and come back on
// use.

#include "actors/breaker/breaker_actor.hpp"
#include "actors/limiter/limiter_actor.hpp"
#include "tests/support/node_fixture.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;

namespace {

struct LimiterRuns : test::node_fixture {
  void SetUp() override { open(options()); }

  /// A workflow whose one exec node runs `command` under concurrency key
  /// "acct-{{ inputs.k }}" with limit 1; `extra` adds node fields.
  static std::string guarded(const std::string& name,
                             const std::string& command,
                             const std::string& extra = {}) {
    return "name: " + name + R"(
inputs: {k: {type: string}}
nodes:
  work:
    kind: exec
    command: )"
           + command + R"(
    concurrency: {key: "acct-{{ inputs.k }}", limit: 1}
)" + extra;
  }

  /// The limiter of "acct-a" as it describes itself, or null.
  json limiter() {
    for (auto& l : node->inspect_limits(2s))
      if (l["key"] == "acct-a")
        return l;
    return json{};
  }
};

} // namespace

// Behind a 4s holder of the same key, a waiter with `timeout: 300ms` fails
// with `timeout` at about 300ms, and leaves the limiter's queue; likewise a
// waiter whose schedule_to_close passes.
TEST_F(LimiterRuns, WaitForASlotCountsTowardTimeouts) {
  auto holder = submit(guarded("hold", R"(["sleep", "4"])"), {{"k", "a"}});
  ASSERT_TRUE(poll([&] { return limiter()["holders"].size() == 1; }, 10s));
  auto began = std::chrono::steady_clock::now();
  auto timed
    = submit(guarded("timed", R"(["/bin/echo", "{}"])",
                     "    timeout: 300ms\n    retry: {max_attempts: 1}\n"),
             {{"k", "a"}});
  auto closed = submit(
    guarded("closed", R"(["/bin/echo", "{}"])",
            "    schedule_to_close: 300ms\n    retry: {max_attempts: 3}\n"),
    {{"k", "a"}});
  ASSERT_TRUE(wait_finished(timed, 10s));
  ASSERT_TRUE(wait_finished(closed, 10s));
  auto took = std::chrono::steady_clock::now() - began;
  // At its deadline: well before the holder's 4s are over.
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 2500ms);
  EXPECT_EQ(finished[timed].state, persistence::run_state::failed);
  EXPECT_EQ(finished[closed].state, persistence::run_state::failed);
  EXPECT_EQ(failures(timed, "timeout"), 1);
  bool gave_up = false;
  for (auto& e : journal(closed))
    gave_up |= e.type == persistence::event_type::node_failed
               && e.error_kind == "schedule_to_close";
  EXPECT_TRUE(gave_up);
  // Neither still waits in the queue; the holder still holds its slot.
  auto l = limiter();
  EXPECT_EQ(l["queue"], json::array()) << l.dump();
  EXPECT_EQ(l["holders"].size(), 1u) << l.dump();
  ASSERT_TRUE(wait_finished(holder, 15s));
  EXPECT_EQ(finished[holder].state, persistence::run_state::completed);
}

namespace {

struct KeyedActors : test::node_fixture {
  void SetUp() override {
    auto o = options();
    o.engine.keyed_idle = 2s;
    open(o);
  }

  /// A noop guarded by concurrency key "c-{{ inputs.k }}" and by breaker
  /// `breaker` (whose window is short, so that it empties soon).
  static std::string guarded(const std::string& breaker) {
    return R"(name: keyed
inputs: {k: {type: string}}
nodes:
  a:
    kind: noop
    concurrency: {key: "c-{{ inputs.k }}", limit: 2}
    circuit_breaker: {key: )"
           + breaker + R"(, window: 100ms}
)";
  }

  size_t live_keyed() {
    auto a = node->inspect_actors(0, 2s);
    return a["breakers"].size() + a["limiters"].size();
  }
};

} // namespace

// Many distinct keys, each used once: their limiters and breakers stop once
// idle, and a key used again gets a fresh actor that works.
TEST_F(KeyedActors, IdleOnesStopAndComeBackOnUse) {
  auto& registry = node->system().registry();
  auto baseline = registry.running();
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i)
    ids.push_back(submit(guarded("b-" + std::to_string(i % 5)),
                         {{"k", std::to_string(i)}}));
  for (auto& id : ids) {
    ASSERT_TRUE(wait_finished(id, 10s));
    EXPECT_EQ(finished[id].state, persistence::run_state::completed);
  }
  // 40 limiters and 5 breakers, until they have been idle for a while.
  EXPECT_GT(live_keyed(), 0u);
  EXPECT_TRUE(poll([&] { return live_keyed() == 0; }, 15s)) << live_keyed();
  EXPECT_TRUE(poll([&] { return registry.running() == baseline; }, 5s))
    << registry.running() << " actors, " << baseline << " before";
  // Used again: a new limiter and breaker, and the run goes through.
  auto again = submit(guarded("b-3"), {{"k", "7"}});
  ASSERT_TRUE(wait_finished(again, 10s));
  EXPECT_EQ(finished[again].state, persistence::run_state::completed);
  EXPECT_EQ(live_keyed(), 2u);
  EXPECT_TRUE(poll([&] { return live_keyed() == 0; }, 15s)) << live_keyed();
}

namespace {

/// Keyed actors in an actor system of their own, idle after 100ms.
struct IdleKeyedActors : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  actors::services_ptr svc = std::make_shared<actors::services>();
  std::unique_ptr<caf::scoped_actor> self;

  void SetUp() override {
    runtime::register_message_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    self = std::make_unique<caf::scoped_actor>(*sys);
    svc->options.keyed_idle = 100ms;
  }

  void TearDown() override {
    svc->limiters.stop_all();
    svc->breakers.stop_all();
    self.reset();
  }

  caf::actor limiter(const std::string& key) {
    return svc->limiters.get(
      key, [&] { return sys->spawn(actors::limiter_actor_impl, key, 1, svc); });
  }

  /// Asks `l` for a slot for `holder`; returns the answer or the error.
  std::string acquire(const caf::actor& l, const std::string& holder) {
    std::string out;
    (*self)
      ->request(l, 2s, runtime::limit_acquire{holder})
      .receive([&](bool granted) { out = granted ? "granted" : "refused"; },
               [&](caf::error& e) { out = caf::to_string(e); });
    return out;
  }
};

} // namespace

// A limiter that holds a slot stays; once free and idle it retires, is no
// longer handed out, and its key's next use gets a fresh one.
TEST_F(IdleKeyedActors, LimiterRetiresOnlyWhenFree) {
  auto l = limiter("k");
  ASSERT_EQ(acquire(l, "run/a"), "granted");
  std::this_thread::sleep_for(400ms);
  ASSERT_EQ(svc->limiters.all().size(), 1u);
  EXPECT_EQ(limiter("k"), l);
  (*self)->send(l, runtime::limit_release{"run/a"});
  ASSERT_TRUE(
    test::node_fixture::poll([&] { return svc->limiters.all().empty(); }, 5s));
  // Who kept the old handle hears that it is gone.
  EXPECT_EQ(acquire(l, "run/b"),
            caf::to_string(caf::make_error(caf::sec::request_receiver_down)));
  auto fresh = limiter("k");
  EXPECT_NE(fresh, l);
  EXPECT_EQ(acquire(fresh, "run/b"), "granted");
}

// An open breaker never retires, however long it sits idle.
TEST_F(IdleKeyedActors, OpenBreakerStays) {
  runtime::circuit_breaker_spec spec;
  spec.key = "down";
  spec.failure_threshold = 1;
  spec.window = 10ms;
  spec.reset_timeout = 1h;
  auto b = svc->breakers.get(spec.key, [&] {
    return sys->spawn(actors::breaker_actor_impl, spec, svc);
  });
  (*self)
    ->request(b, 2s, runtime::breaker_acquire{"run", "a", 1})
    .receive([](bool allowed, int64_t, bool) { EXPECT_TRUE(allowed); },
             [](caf::error& e) { FAIL() << caf::to_string(e); });
  (*self)->send(b, runtime::breaker_report{1, false, true});
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(svc->breakers.all().size(), 1u);
  std::string state;
  (*self)
    ->request(b, 2s, runtime::inspect_actor{})
    .receive([&](std::string& s) { state = json::parse(s)["state"]; },
             [](caf::error& e) { FAIL() << caf::to_string(e); });
  EXPECT_EQ(state, "open");
}
