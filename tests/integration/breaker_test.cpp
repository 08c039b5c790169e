// The circuit breaker actor: closed, open, half-open, driven through its
// messages with a scoped actor; and breakers as runs on an embedded node use
// them (timeouts, crashed trial calls, waiting callers).

#include "actors/breaker/breaker_actor.hpp"
#include "runtime/protocol/messages.hpp"
#include "tests/support/node_fixture.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <thread>

using namespace std::chrono_literals;
using namespace troupe;

namespace {

struct Breaker : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  actors::services_ptr svc = std::make_shared<actors::services>();
  std::vector<std::string> log;
  std::mutex log_mtx;

  void SetUp() override {
    runtime::register_message_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    svc->log = [this](const std::string& line) {
      std::lock_guard guard{log_mtx};
      log.push_back(line);
    };
  }

  caf::actor breaker(const runtime::circuit_breaker_spec& spec) {
    return svc->breakers.get(spec.key, [&] {
      return sys->spawn(actors::breaker_actor_impl, spec, svc);
    });
  }

  void TearDown() override { svc->breakers.stop_all(); }

  struct answer {
    bool allowed = false;
    int64_t retry_at = 0;
    bool probe = false;
  };

  answer acquire(const caf::actor& b) {
    caf::scoped_actor self{*sys};
    answer a;
    self->request(b, 5s, runtime::breaker_acquire{"r", "n"})
      .receive(
        [&](bool allowed, int64_t retry_at, bool probe) {
          a = {allowed, retry_at, probe};
        },
        [](caf::error& e) { FAIL() << caf::to_string(e); });
    return a;
  }

  void report(const caf::actor& b, bool ok, bool probe = false) {
    caf::anon_send(b, runtime::breaker_report{ok, true, probe});
  }

  std::vector<std::string> lines() {
    std::lock_guard guard{log_mtx};
    return log;
  }
};

} // namespace

TEST_F(Breaker, OpensAtTheThresholdAndRecoversThroughHalfOpen) {
  runtime::circuit_breaker_spec spec;
  spec.key = "payments";
  spec.failure_threshold = 2;
  spec.reset_timeout = 300ms;
  auto b = breaker(spec);
  // The same key gives the same breaker.
  EXPECT_EQ(breaker(spec), b);
  EXPECT_TRUE(acquire(b).allowed);
  report(b, false);
  EXPECT_TRUE(acquire(b).allowed);
  report(b, false);
  auto refused = acquire(b);
  EXPECT_FALSE(refused.allowed);
  EXPECT_GT(refused.retry_at, actors::now_ns());
  EXPECT_LE(refused.retry_at, actors::now_ns() + 300'000'000);
  std::this_thread::sleep_for(350ms);
  // Half-open: one trial call; a second caller waits.
  auto trial = acquire(b);
  EXPECT_TRUE(trial.allowed);
  EXPECT_TRUE(trial.probe);
  EXPECT_FALSE(acquire(b).allowed);
  // The trial fails: open again; later a trial succeeds: closed.
  report(b, false, true);
  EXPECT_FALSE(acquire(b).allowed);
  std::this_thread::sleep_for(350ms);
  trial = acquire(b);
  ASSERT_TRUE(trial.allowed);
  report(b, true, true);
  auto after = acquire(b);
  EXPECT_TRUE(after.allowed);
  EXPECT_FALSE(after.probe);
  auto l = lines();
  ASSERT_EQ(l.size(), 5u);
  EXPECT_EQ(l[0], "circuit breaker 'payments': closed -> open (2 failures "
                  "within 1m)");
  EXPECT_EQ(l[1], "circuit breaker 'payments': open -> half-open "
                  "(reset_timeout of 300ms passed)");
  EXPECT_EQ(l[2], "circuit breaker 'payments': half-open -> open (a trial "
                  "call failed)");
  EXPECT_EQ(l[4], "circuit breaker 'payments': half-open -> closed (a trial "
                  "call succeeded)");
}

TEST_F(Breaker, OpensOnTheErrorRateOnceThereAreEnoughCalls) {
  runtime::circuit_breaker_spec spec;
  spec.key = "rate";
  spec.failure_threshold = 1000;
  spec.error_rate = 0.5;
  spec.min_calls = 4;
  auto b = breaker(spec);
  for (bool ok : {false, false, true}) {
    ASSERT_TRUE(acquire(b).allowed);
    report(b, ok);
  }
  // 2 of 3 failed, but fewer than min_calls calls: still closed.
  ASSERT_TRUE(acquire(b).allowed);
  report(b, true);
  // 2 of 4: 50%: open.
  EXPECT_FALSE(acquire(b).allowed);
  EXPECT_EQ(lines().at(0), "circuit breaker 'rate': closed -> open (2 of 4 "
                           "calls failed within 1m)");
}

TEST_F(Breaker, UncountedReportsOnlyReleaseTrialSlots) {
  runtime::circuit_breaker_spec spec;
  spec.key = "slots";
  spec.failure_threshold = 1;
  spec.reset_timeout = 100ms;
  auto b = breaker(spec);
  acquire(b);
  report(b, false);
  std::this_thread::sleep_for(150ms);
  auto trial = acquire(b);
  ASSERT_TRUE(trial.probe);
  // A cancelled trial frees its slot without deciding anything.
  caf::anon_send(b, runtime::breaker_report{false, false, true});
  auto next = acquire(b);
  EXPECT_TRUE(next.allowed);
  EXPECT_TRUE(next.probe);
}

namespace {

struct BreakerRuns : test::node_fixture {
  void SetUp() override { open(options()); }

  /// An exec node guarded by breaker `key` (threshold 1, reset 200ms) that
  /// fails the first time it runs and then sleeps `secs` and succeeds.
  std::string flaky(const std::string& name, const std::string& key,
                    const std::string& secs) {
    auto mark = (dir.path() / (name + ".mark")).string();
    return "name: " + name + R"(
nodes:
  call:
    kind: exec
    command: ["/bin/sh", "-c", "if [ -e )"
           + mark + " ]; then sleep " + secs + "; echo '{}'; else touch " + mark
           + R"(; exit 1; fi"]
    retry: {max_attempts: 5, initial_backoff: 10ms, jitter: none}
    circuit_breaker: {key: )"
           + key + R"(, failure_threshold: 1, reset_timeout: 200ms}
)";
  }

  /// The breaker's own account of itself, or null.
  nlohmann::json breaker(const std::string& key) {
    auto d = node->inspect_breaker(key, std::chrono::seconds{2});
    return d ? *d : nlohmann::json{};
  }

  /// Waits until breaker `key` is half-open with its trial call in flight.
  bool wait_trial(const std::string& key) {
    return poll(
      [&] {
        auto b = breaker(key);
        return b.is_object() && b["state"] == "half-open"
               && b["probes_in_flight"] == 1;
      },
      10s);
  }
};

} // namespace

// An attempt that times out is a failed call: two timeouts open the breaker,
// and a trial call that times out opens it again.
TEST_F(BreakerRuns, TimeoutsCountAsFailures) {
  auto id = submit(R"(name: slow
nodes:
  call:
    kind: exec
    command: ["sleep", "5"]
    timeout: 100ms
    retry: {max_attempts: 5, initial_backoff: 10ms, jitter: none}
    circuit_breaker: {key: slow-svc, failure_threshold: 2, reset_timeout: 300ms}
)");
  ASSERT_TRUE(wait_finished(id, 20s));
  EXPECT_EQ(finished[id].state, persistence::run_state::failed);
  EXPECT_EQ(failures(id, "timeout"), 5);
  EXPECT_GE(failures(id, "circuit_open"), 1);
  EXPECT_TRUE(logged("circuit breaker 'slow-svc': closed -> open (2 failures "
                     "within 1m)"));
  EXPECT_TRUE(
    logged("circuit breaker 'slow-svc': half-open -> open (a trial call "
           "failed)"));
}
