// The circuit breaker actor: closed, open, half-open, driven through its
// messages with a scoped actor; and breakers as runs on an embedded node use
// them (timeouts, crashed trial calls, waiting callers).

#include "actors/breaker/breaker_actor.hpp"
#include "runtime/protocol/messages.hpp"
#include "tests/support/node_fixture.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <optional>
#include <thread>

using namespace std::chrono_literals;
using namespace troupe;

namespace {

/// Asks breaker `b` for a call as an actor of its own (ticket `ticket`), and
/// sends the answer to `to`; relays the breaker_reports it is sent to `b`, as
/// its own. Lives until killed.
caf::behavior asker(caf::event_based_actor* self, caf::actor b, caf::actor to,
                    uint64_t ticket) {
  self->request(b, caf::infinite, runtime::breaker_acquire{"w", "n", ticket})
    .then([self, to](bool allowed, int64_t retry_at, bool probe) {
      self->send(to, allowed, retry_at, probe);
    });
  return {
    [self, b](runtime::breaker_report& r) { self->send(b, r); },
  };
}

struct Breaker : ::testing::Test {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  actors::services_ptr svc = std::make_shared<actors::services>();
  std::vector<std::string> log;
  std::mutex log_mtx;
  /// Asks for calls and reports them.
  std::unique_ptr<caf::scoped_actor> caller;
  uint64_t next_ticket = 1;

  void SetUp() override {
    runtime::register_message_types(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
    caller = std::make_unique<caf::scoped_actor>(*sys);
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

  void TearDown() override {
    svc->breakers.stop_all();
    caller.reset();
  }

  struct answer {
    bool allowed = false;
    int64_t retry_at = 0;
    bool probe = false;
    uint64_t ticket = 0;
  };

  answer acquire(const caf::actor& b) {
    answer a;
    a.ticket = next_ticket++;
    (*caller)
      ->request(b, 5s, runtime::breaker_acquire{"r", "n", a.ticket})
      .receive(
        [&](bool allowed, int64_t retry_at, bool probe) {
          a.allowed = allowed, a.retry_at = retry_at, a.probe = probe;
        },
        [](caf::error& e) { FAIL() << caf::to_string(e); });
    return a;
  }

  void report(const caf::actor& b, const answer& a, bool ok,
              bool counted = true) {
    (*caller)->send(b, runtime::breaker_report{a.ticket, ok, counted});
  }

  /// An asker's answer, if one comes within `limit`.
  std::optional<answer> heard(std::chrono::milliseconds limit) {
    std::optional<answer> out;
    (*caller)->receive(
      [&](bool allowed, int64_t retry_at, bool probe) {
        out = answer{allowed, retry_at, probe, 0};
      },
      caf::after(limit) >> [] {});
    return out;
  }

  nlohmann::json inspect(const caf::actor& b) {
    nlohmann::json out;
    (*caller)
      ->request(b, 5s, runtime::inspect_actor{})
      .receive([&](std::string& s) { out = nlohmann::json::parse(s); },
               [](caf::error& e) { FAIL() << caf::to_string(e); });
    return out;
  }

  std::vector<std::string> lines() {
    std::lock_guard guard{log_mtx};
    return log;
  }

  /// Opens breaker `b` (threshold 1) and waits past its reset_timeout.
  void open_then_wait(const caf::actor& b, std::chrono::nanoseconds reset) {
    auto a = acquire(b);
    ASSERT_TRUE(a.allowed);
    report(b, a, false);
    ASSERT_FALSE(acquire(b).allowed);
    std::this_thread::sleep_for(reset + 50ms);
  }

  /// A breaker of `key` (threshold 1, reset_timeout 100ms) that opened and
  /// whose reset_timeout has passed: its next call is a trial call.
  caf::actor half_open(const std::string& key) {
    runtime::circuit_breaker_spec spec;
    spec.key = key;
    spec.failure_threshold = 1;
    spec.reset_timeout = 100ms;
    auto b = breaker(spec);
    open_then_wait(b, spec.reset_timeout);
    return b;
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
  for (int i = 0; i < 2; ++i) {
    auto a = acquire(b);
    EXPECT_TRUE(a.allowed);
    report(b, a, false);
  }
  auto refused = acquire(b);
  EXPECT_FALSE(refused.allowed);
  EXPECT_GT(refused.retry_at, actors::now_ns());
  EXPECT_LE(refused.retry_at, actors::now_ns() + 300'000'000);
  std::this_thread::sleep_for(350ms);
  // Half-open: one trial call.
  auto trial = acquire(b);
  EXPECT_TRUE(trial.allowed);
  EXPECT_TRUE(trial.probe);
  // The trial fails: open again; later a trial succeeds: closed.
  report(b, trial, false);
  EXPECT_FALSE(acquire(b).allowed);
  std::this_thread::sleep_for(350ms);
  trial = acquire(b);
  ASSERT_TRUE(trial.allowed);
  report(b, trial, true);
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
    auto a = acquire(b);
    ASSERT_TRUE(a.allowed);
    report(b, a, ok);
  }
  // 2 of 3 failed, but fewer than min_calls calls: still closed.
  auto a = acquire(b);
  ASSERT_TRUE(a.allowed);
  report(b, a, true);
  // 2 of 4: 50%: open.
  EXPECT_FALSE(acquire(b).allowed);
  EXPECT_EQ(lines().at(0), "circuit breaker 'rate': closed -> open (2 of 4 "
                           "calls failed within 1m)");
}

TEST_F(Breaker, UncountedReportsOnlyReleaseTrialSlots) {
  auto b = half_open("slots");
  auto trial = acquire(b);
  ASSERT_TRUE(trial.probe);
  // A cancelled trial frees its slot without deciding anything.
  report(b, trial, false, false);
  auto next = acquire(b);
  EXPECT_TRUE(next.allowed);
  EXPECT_TRUE(next.probe);
}

// A caller that finds every trial call taken is answered once, when the
// trial ends: refused with the reopen time when it failed, let through
// when it succeeded.
TEST_F(Breaker, WaitersAreAnsweredWhenTheTrialEnds) {
  auto b = half_open("waits");
  auto trial = acquire(b);
  ASSERT_TRUE(trial.probe);
  auto w1 = sys->spawn(asker, b, caf::actor{*caller}, uint64_t{1});
  EXPECT_FALSE(heard(200ms)) << "no answer while the trial runs";
  EXPECT_EQ(inspect(b)["queue"].size(), 1u);
  report(b, trial, false);
  auto refused = heard(2s);
  ASSERT_TRUE(refused);
  EXPECT_FALSE(refused->allowed);
  EXPECT_GT(refused->retry_at, actors::now_ns());
  std::this_thread::sleep_for(150ms);
  trial = acquire(b);
  ASSERT_TRUE(trial.probe);
  auto w2 = sys->spawn(asker, b, caf::actor{*caller}, uint64_t{1});
  EXPECT_FALSE(heard(100ms));
  report(b, trial, true);
  auto through = heard(2s);
  ASSERT_TRUE(through);
  EXPECT_TRUE(through->allowed);
  EXPECT_FALSE(through->probe);
  caf::anon_send_exit(w1, caf::exit_reason::kill);
  caf::anon_send_exit(w2, caf::exit_reason::kill);
}

// The holder of a trial call dies: the trial goes to the next waiter; a
// waiter that gives its place back leaves the queue.
TEST_F(Breaker, DeadHolderGivesItsTrialBack) {
  auto b = half_open("dies");
  auto self = caf::actor{*caller};
  auto holder = sys->spawn(asker, b, self, uint64_t{1});
  auto first = heard(2s);
  ASSERT_TRUE(first);
  ASSERT_TRUE(first->probe);
  auto waiter = sys->spawn(asker, b, self, uint64_t{1});
  auto quitter = sys->spawn(asker, b, self, uint64_t{2});
  ASSERT_FALSE(heard(100ms));
  // The quitter gives its place back: it is answered "not allowed".
  caf::anon_send(quitter, runtime::breaker_report{2, false, false});
  auto gone = heard(2s);
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->allowed);
  caf::anon_send_exit(holder, caf::exit_reason::kill);
  auto second = heard(2s);
  ASSERT_TRUE(second) << inspect(b).dump();
  EXPECT_TRUE(second->allowed);
  EXPECT_TRUE(second->probe);
  auto d = inspect(b);
  EXPECT_EQ(d["probes_in_flight"], 1) << d.dump();
  EXPECT_EQ(d["queue"], nlohmann::json::array()) << d.dump();
  // The new holder is killed too: the next caller gets the trial at once.
  caf::anon_send_exit(waiter, caf::exit_reason::kill);
  caf::anon_send_exit(quitter, caf::exit_reason::kill);
  ASSERT_TRUE(test::node_fixture::poll(
    [&] { return inspect(b)["probes_in_flight"] == 0; }, 2s));
  auto third = acquire(b);
  EXPECT_TRUE(third.allowed);
  EXPECT_TRUE(third.probe);
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

// The run actor holding the trial call dies: its supervisor restarts it, and
// the breaker, which saw its holder die, lets the resumed attempt try.
TEST_F(BreakerRuns, CrashedTrialHolderGivesTheTrialBack) {
  auto id = submit(flaky("holder", "flaky-svc", "2"));
  ASSERT_TRUE(wait_trial("flaky-svc")) << breaker("flaky-svc").dump();
  node->crash(id);
  ASSERT_TRUE(wait_finished(id, 15s)) << breaker("flaky-svc").dump();
  EXPECT_EQ(finished[id].state, persistence::run_state::completed);
  EXPECT_TRUE(logged_within("circuit breaker 'flaky-svc': half-open -> closed",
                            std::chrono::seconds{5}));
  int restarted = 0;
  for (auto& e : journal(id))
    restarted += e.type == persistence::event_type::run_restarted;
  EXPECT_EQ(restarted, 1);
}

// A node that waits while another holds the half-open breaker's trial call
// is answered when the state changes: it journals nothing meanwhile.
TEST_F(BreakerRuns, WaitingCallerJournalsOnlyStateChanges) {
  auto holder = submit(flaky("holder", "shared", "4"));
  ASSERT_TRUE(wait_trial("shared")) << breaker("shared").dump();
  auto waiter = submit(R"(name: waiter
nodes:
  call:
    kind: exec
    command: ["/bin/echo", "{}"]
    retry: {max_attempts: 5, initial_backoff: 10ms, jitter: none}
    circuit_breaker: {key: shared, failure_threshold: 1, reset_timeout: 200ms}
)");
  // Two seconds of waiting: today's polling journaled two events per 200ms.
  std::this_thread::sleep_for(2s);
  auto waited = journal(waiter).size();
  EXPECT_LE(waited, 3u);
  ASSERT_TRUE(wait_finished(holder, 15s));
  ASSERT_TRUE(wait_finished(waiter, 15s));
  EXPECT_EQ(finished[holder].state, persistence::run_state::completed);
  EXPECT_EQ(finished[waiter].state, persistence::run_state::completed);
  // It was let through once the trial call closed the breaker.
  EXPECT_EQ(failures(waiter, "circuit_open"), 0);
  EXPECT_LE(journal(waiter).size(), 6u);
}
