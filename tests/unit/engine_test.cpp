#include "runtime/engine/backoff.hpp"
#include "runtime/engine/resolve.hpp"
#include "runtime/engine/run_engine.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <gtest/gtest.h>

#include <map>

using namespace troupe::runtime;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

constexpr int64_t ms = 1'000'000;

std::shared_ptr<const workflow_spec> spec_of(const std::string& yaml) {
  auto r = parse_workflow(yaml);
  EXPECT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].message);
  return std::make_shared<const workflow_spec>(*r.workflow);
}

/// Returns "type:node" for each event, for compact assertions.
std::vector<std::string> kinds(const std::vector<event_record>& events) {
  std::vector<std::string> out;
  for (auto& e : events)
    out.push_back(std::string{troupe::persistence::to_string(e.type)}
                  + (e.node.empty() ? "" : ":" + e.node));
  return out;
}

using strings = std::vector<std::string>;

} // namespace

TEST(Backoff, GrowsByTheMultiplierAndCaps) {
  retry_policy p;
  p.initial_backoff = 100ms;
  p.multiplier = 2;
  p.max_backoff = 1s;
  p.jitter = jitter_mode::none;
  EXPECT_EQ(backoff_delay(p, 1, 0.3), 100ms);
  EXPECT_EQ(backoff_delay(p, 2, 0.3), 200ms);
  EXPECT_EQ(backoff_delay(p, 4, 0.3), 800ms);
  EXPECT_EQ(backoff_delay(p, 5, 0.3), 1s);
  EXPECT_EQ(backoff_delay(p, 10'000, 0.3), 1s); // no overflow
}

TEST(Backoff, JitterModes) {
  retry_policy p;
  p.initial_backoff = 1s;
  p.max_backoff = 1s;
  p.jitter = jitter_mode::full;
  EXPECT_EQ(backoff_delay(p, 1, 0.0), 0s);
  EXPECT_EQ(backoff_delay(p, 1, 0.25), 250ms);
  p.jitter = jitter_mode::equal;
  EXPECT_EQ(backoff_delay(p, 1, 0.0), 500ms);
  EXPECT_EQ(backoff_delay(p, 1, 0.5), 750ms);
  EXPECT_EQ(backoff_delay(p, 1, 1.0), 1s);
}

TEST(Backoff, RetryableKinds) {
  retry_policy p;
  p.non_retryable = {"card_declined"};
  EXPECT_TRUE(is_retryable(p, "exit_code"));
  EXPECT_TRUE(is_retryable(p, "timeout"));
  EXPECT_FALSE(is_retryable(p, "card_declined"));
  EXPECT_FALSE(is_retryable(p, "bad_template"));
  EXPECT_FALSE(is_retryable(p, "cancelled"));
}

TEST(Backoff, UnitIntervalIsUniformEnough) {
  double sum = 0;
  for (uint64_t i = 0; i < 10'000; ++i) {
    auto u = unit_interval(i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 10'000, 0.5, 0.02);
}

TEST(RunEngine, RunsAChainInOrderAndResolvesOutputs) {
  run_engine e{"r1", spec_of(R"(name: chain
inputs: {who: {type: string}}
nodes:
  a: {kind: noop, v: "{{ inputs.who }}"}
  b: {kind: noop, after: [a], v: "{{ nodes.a.output.v }}!"}
outputs: {greeting: "{{ nodes.b.output.v }}", n: "{{ nodes.a.output.n }}"}
)"),
               json{{"who", "ann"}}};
  EXPECT_EQ(kinds(e.decide(0)), (strings{"attempt_started:a"}));
  EXPECT_EQ(kinds(e.decide(0)), strings{}); // a is running
  std::string err;
  auto pa = e.resolve_params(*e.spec().find_node("a"), err);
  ASSERT_TRUE(pa) << err;
  EXPECT_EQ((*pa)["v"], "ann");
  EXPECT_EQ(kinds(e.on_attempt_succeeded("a", 1, {{"v", "ann"}, {"n", 7}}, 1)),
            (strings{"node_completed:a", "attempt_started:b"}));
  auto pb = e.resolve_params(*e.spec().find_node("b"), err);
  EXPECT_EQ((*pb)["v"], "ann!");
  EXPECT_EQ(kinds(e.on_attempt_succeeded("b", 1, {{"v", "ann!"}}, 2)),
            (strings{"node_completed:b", "run_completed"}));
  EXPECT_EQ(e.state(), run_state::completed);
  EXPECT_EQ(e.outputs(), (json{{"greeting", "ann!"}, {"n", 7}}));
}

TEST(RunEngine, RespectsMaxConcurrency) {
  run_engine e{"r", spec_of(R"(name: fan
max_concurrency: 2
nodes:
  a: {kind: noop}
  b: {kind: noop}
  c: {kind: noop}
  j: {kind: noop, after: [a, b, c]}
)"),
               json::object()};
  EXPECT_EQ(kinds(e.decide(0)),
            (strings{"attempt_started:a", "attempt_started:b"}));
  EXPECT_EQ(e.running(), 2u);
  EXPECT_EQ(kinds(e.on_attempt_succeeded("b", 1, {}, 1)),
            (strings{"node_completed:b", "attempt_started:c"}));
  e.on_attempt_succeeded("a", 1, {}, 2);
  EXPECT_EQ(kinds(e.on_attempt_succeeded("c", 1, {}, 3)),
            (strings{"node_completed:c", "attempt_started:j"}));
}

TEST(RunEngine, RetriesWithBackoffThenGivesUp) {
  run_engine e{"r", spec_of(R"(name: retry
nodes:
  a:
    kind: noop
    retry: {max_attempts: 3, initial_backoff: 100ms, multiplier: 2,
            max_backoff: 1s, jitter: none}
  b: {kind: sleep, duration: 1h}
)"),
               json::object()};
  e.decide(0);
  auto f1 = e.on_attempt_failed("a", 1, "exit_code", "boom", 10 * ms, 0.9);
  ASSERT_EQ(kinds(f1), (strings{"attempt_failed:a"}));
  EXPECT_EQ(f1[0].deadline_ns, 110 * ms);
  EXPECT_EQ(e.status("a").state, node_state::waiting_retry);
  EXPECT_EQ(e.next_wakeup_ns(), 110 * ms);
  EXPECT_TRUE(e.decide(109 * ms).empty());
  auto s2 = e.decide(110 * ms);
  ASSERT_EQ(kinds(s2), (strings{"attempt_started:a"}));
  EXPECT_EQ(s2[0].attempt, 2);
  auto f2 = e.on_attempt_failed("a", 2, "exit_code", "boom", 120 * ms, 0.9);
  EXPECT_EQ(f2[0].deadline_ns, 320 * ms); // 200ms: doubled
  e.decide(320 * ms);
  auto f3 = e.on_attempt_failed("a", 3, "exit_code", "boom again", 400 * ms, 0);
  EXPECT_EQ(kinds(f3), (strings{"attempt_failed:a", "node_failed:a",
                                "node_cancelled:b", "run_failed:a"}));
  EXPECT_EQ(e.state(), run_state::failed);
  EXPECT_EQ(e.failed_node(), "a");
  EXPECT_NE(e.reason().find("gave up after 3 attempts: boom again"),
            std::string::npos)
    << e.reason();
  EXPECT_EQ(e.status("b").state, node_state::cancelled);
}

TEST(RunEngine, NonRetryableErrorsFailAtOnce) {
  run_engine e{"r", spec_of(R"(name: nr
nodes:
  a: {kind: noop, retry: {max_attempts: 5, non_retryable: [declined]}}
)"),
               json::object()};
  e.decide(0);
  auto f = e.on_attempt_failed("a", 1, "declined", "card declined", 1, 0.5);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:a", "node_failed:a", "run_failed:a"}));
  EXPECT_NE(e.reason().find("not retryable (declined)"), std::string::npos);
}

TEST(RunEngine, StaleResultsAreIgnored) {
  run_engine e{"r", spec_of("name: s\nnodes: {a: {kind: noop}}\n"),
               json::object()};
  e.decide(0);
  EXPECT_TRUE(e.on_attempt_succeeded("a", 2, {}, 1).empty());
  EXPECT_TRUE(e.on_attempt_failed("zz", 1, "x", "y", 1, 0).empty());
  EXPECT_FALSE(e.on_attempt_succeeded("a", 1, {}, 1).empty());
  EXPECT_TRUE(e.on_attempt_succeeded("a", 1, {}, 1).empty());
}

TEST(RunEngine, SleepSetsItsTimerOnceAndTimeoutsGiveDeadlines) {
  auto spec = spec_of(R"(name: t
nodes:
  nap: {kind: sleep, duration: 2s, timeout: 10s}
)");
  run_engine e{"r", spec, json::object()};
  auto first = e.decide(5 * ms);
  ASSERT_EQ(kinds(first), (strings{"timer_set:nap", "attempt_started:nap"}));
  EXPECT_EQ(first[0].deadline_ns, 5 * ms + 2'000 * ms);
  EXPECT_EQ(first[1].deadline_ns, 5 * ms + 10'000 * ms);
  // A retry after a timeout keeps the original timer.
  e.on_attempt_failed("nap", 1, "timeout", "t", 20 * ms, 0.0);
  auto again = e.decide(30'000 * ms);
  ASSERT_EQ(kinds(again), (strings{"attempt_started:nap"}));
  EXPECT_EQ(e.status("nap").timer_deadline_ns, 5 * ms + 2'000 * ms);
}

TEST(RunEngine, ReplayRebuildsTheSameState) {
  auto spec = spec_of(R"(name: replay
nodes:
  a: {kind: noop, retry: {jitter: none, initial_backoff: 1s}}
  b: {kind: sleep, duration: 1m}
  c: {kind: noop, after: [a]}
)");
  run_engine live{"r", spec, json{{"k", 1}}};
  std::vector<event_record> journal;
  auto take = [&](std::vector<event_record> events) {
    journal.insert(journal.end(), events.begin(), events.end());
  };
  take(live.decide(0));
  take(live.on_attempt_failed("a", 1, "exit_code", "x", 1 * ms, 0.5));
  take(live.decide(1'001 * ms));
  take(live.on_attempt_succeeded("a", 2, {{"ok", true}}, 1'100 * ms));
  run_engine replayed{"r", spec, json{{"k", 1}}};
  for (auto& e : journal)
    replayed.apply(e);
  for (auto id : {"a", "b", "c"}) {
    auto& x = live.status(id);
    auto& y = replayed.status(id);
    EXPECT_EQ(x.state, y.state) << id;
    EXPECT_EQ(x.attempt, y.attempt) << id;
    EXPECT_EQ(x.timer_deadline_ns, y.timer_deadline_ns) << id;
    EXPECT_EQ(x.output, y.output) << id;
  }
  EXPECT_EQ(replayed.running(), live.running());
  // Nothing new to start after replay: c is running already.
  EXPECT_TRUE(replayed.decide(1'200 * ms).empty());
}

TEST(RunEngine, CancelStopsRunningNodes) {
  run_engine e{"r",
               spec_of("name: c\nnodes: {a: {kind: sleep, duration: "
                       "1h}, b: {kind: noop, after: [a]}}\n"),
               json::object()};
  e.decide(0);
  EXPECT_EQ(kinds(e.cancel("user asked", 1)),
            (strings{"node_cancelled:a", "run_cancelled"}));
  EXPECT_EQ(e.state(), run_state::cancelled);
  EXPECT_TRUE(e.decide(2).empty());
}

TEST(RunEngine, BadOutputTemplateFailsTheRun) {
  run_engine e{"r", spec_of(R"(name: o
nodes: {a: {kind: noop}}
outputs: {x: "{{ nodes.a.output.missing }}"}
)"),
               json::object()};
  e.decide(0);
  auto done = e.on_attempt_succeeded("a", 1, {{"present", 1}}, 1);
  EXPECT_EQ(kinds(done), (strings{"node_completed:a", "run_failed"}));
  EXPECT_NE(e.reason().find("has no field 'missing'"), std::string::npos)
    << e.reason();
}

TEST(Resolve, KeepsTypesOfWholeExpressionsAndWritesTextOtherwise) {
  json inputs = {{"n", 3}, {"list", {10, 20}}, {"s", "x"}};
  json outputs = {{"a", {{"obj", {{"k", true}}}}}};
  template_scope scope{&inputs, &outputs, "run-1", "wf", "node-1", 2};
  std::string err;
  auto v = resolve_templates(
    json{{"n", "{{ inputs.n }}"},
         {"text", "n={{ inputs.n }} obj={{ nodes.a.output.obj }}"},
         {"item", "{{ inputs.list.1 }}"},
         {"ids", {"{{ run.id }}", "{{ node.id }}#{{ node.attempt }}"}},
         {"plain", 5}},
    scope, err);
  ASSERT_TRUE(v) << err;
  EXPECT_EQ((*v)["n"], 3);
  EXPECT_EQ((*v)["text"], "n=3 obj={\"k\":true}");
  EXPECT_EQ((*v)["item"], 20);
  EXPECT_EQ((*v)["ids"], (json{"run-1", "node-1#2"}));
  EXPECT_EQ((*v)["plain"], 5);
}

TEST(Resolve, ExplainsWhatIsMissing) {
  json inputs = {{"list", {1}}};
  json outputs = json::object();
  template_scope scope{&inputs, &outputs, "r", "w", "n", 1};
  std::string err;
  EXPECT_FALSE(resolve_templates("{{ inputs.list.5 }}", scope, err));
  EXPECT_NE(err.find("has no item 5 (it holds 1)"), std::string::npos) << err;
  EXPECT_FALSE(resolve_templates("{{ nodes.b.output.x }}", scope, err));
  EXPECT_NE(err.find("node 'b' has not completed"), std::string::npos) << err;
  EXPECT_FALSE(resolve_templates("{{ inputs.list.x }}", scope, err));
  EXPECT_NE(err.find("is a list"), std::string::npos) << err;
}

TEST(RunEngine, FallbackStandsInForAFailedNode) {
  run_engine e{"r", spec_of(R"(name: fb
nodes:
  charge: {kind: noop, retry: {max_attempts: 2, initial_backoff: 10ms,
           jitter: none}, fallback: invoice}
  invoice: {kind: noop, fallback: manual, retry: {max_attempts: 1}}
  manual: {kind: noop}
  ship: {kind: noop, after: [charge], what: "{{ nodes.charge.output }}"}
)"),
               json::object()};
  // Fallbacks do not run on their own.
  EXPECT_EQ(kinds(e.decide(0)), (strings{"attempt_started:charge"}));
  e.on_attempt_failed("charge", 1, "exit_code", "boom", 1 * ms, 0);
  EXPECT_EQ(kinds(e.decide(100 * ms)), (strings{"attempt_started:charge"}));
  auto f = e.on_attempt_failed("charge", 2, "exit_code", "boom", 20 * ms, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:charge", "node_fell_back:charge",
                               "attempt_started:invoice"}));
  EXPECT_EQ(f[1].data, "invoice");
  EXPECT_NE(f[1].message.find("gave up after 2 attempts"), std::string::npos);
  EXPECT_EQ(e.status("charge").state, node_state::fell_back);
  // The fallback fails too: its own fallback takes over (a chain).
  f = e.on_attempt_failed("invoice", 1, "declined", "no", 30 * ms, 0);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:invoice", "node_fell_back:invoice",
                     "attempt_started:manual"}));
  EXPECT_EQ(e.status("invoice").state, node_state::fell_back);
  EXPECT_EQ(e.status("manual").state, node_state::running);
  // The end of the chain completes; the nodes it stood in for complete with
  // its output, and downstream sees it as charge's output.
  f = e.on_attempt_succeeded("manual", 1, json{{"by", "hand"}}, 1'000'000 * ms);
  EXPECT_EQ(kinds(f),
            (strings{"node_completed:manual", "node_completed:invoice",
                     "node_completed:charge", "attempt_started:ship"}));
  EXPECT_EQ(f[2].message, "output of fallback 'invoice'");
  EXPECT_EQ(json::parse(f[2].data), (json{{"by", "hand"}}));
  std::string error;
  auto params = e.resolve_params(*e.spec().find_node("ship"), error);
  ASSERT_TRUE(params) << error;
  EXPECT_EQ((*params)["what"], (json{{"by", "hand"}}));
  f = e.on_attempt_succeeded("ship", 1, json::object(), 1'000'001 * ms);
  EXPECT_EQ(kinds(f), (strings{"node_completed:ship", "run_completed"}));
}

TEST(RunEngine, RunWithUnusedFallbacksCompletesAndFailedChainNamesThePrimary) {
  auto spec = spec_of(R"(name: fb
nodes:
  a: {kind: noop, fallback: b, retry: {non_retryable: [x]}}
  b: {kind: noop, retry: {non_retryable: [x]}}
)");
  run_engine ok{"r", spec, json::object()};
  ok.decide(0);
  EXPECT_EQ(kinds(ok.on_attempt_succeeded("a", 1, json::object(), 1)),
            (strings{"node_completed:a", "run_completed"}));
  run_engine bad{"r", spec, json::object()};
  bad.decide(0);
  bad.on_attempt_failed("a", 1, "x", "first", 1, 0);
  auto f = bad.on_attempt_failed("b", 1, "x", "second", 2, 0);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:b", "node_failed:b", "run_failed:b"}));
  EXPECT_NE(bad.reason().find("node 'b': not retryable (x): second; it was "
                              "the fallback of 'a'"),
            std::string::npos)
    << bad.reason();
}

TEST(RunEngine, FallbackSurvivesReplay) {
  auto spec = spec_of(R"(name: fb
nodes:
  a: {kind: noop, fallback: b, retry: {max_attempts: 1}}
  b: {kind: noop}
  c: {kind: noop, after: [a]}
)");
  run_engine live{"r", spec, json::object()};
  std::vector<event_record> journal;
  auto keep = [&](std::vector<event_record> es) {
    journal.insert(journal.end(), es.begin(), es.end());
  };
  keep(live.decide(0));
  keep(live.on_attempt_failed("a", 1, "exit_code", "boom", 1, 0));
  // The node restarts here: replay, then the in-flight fallback finishes.
  run_engine replayed{"r", spec, json::object()};
  for (auto& ev : journal)
    replayed.apply(ev);
  EXPECT_EQ(replayed.status("a").state, node_state::fell_back);
  EXPECT_EQ(replayed.status("b").state, node_state::running);
  EXPECT_TRUE(replayed.decide(2).empty());
  EXPECT_EQ(
    kinds(replayed.on_attempt_succeeded("b", 1, json{{"v", 1}}, 3)),
    (strings{"node_completed:b", "node_completed:a", "attempt_started:c"}));
}

TEST(RunEngine, ScheduleToCloseBoundsTheNodeAcrossAttempts) {
  run_engine e{"r", spec_of(R"(name: stc
nodes:
  a: {kind: noop, timeout: 10s, schedule_to_close: 1s, fallback: b,
      retry: {max_attempts: 10, initial_backoff: 300ms, multiplier: 1,
              jitter: none}}
  b: {kind: noop}
)"),
               json::object()};
  // The first attempt's deadline is the nearer of timeout and the close.
  auto s = e.decide(0);
  ASSERT_EQ(kinds(s), (strings{"attempt_started:a"}));
  EXPECT_EQ(s[0].deadline_ns, 1000 * ms);
  EXPECT_EQ(e.status("a").close_deadline_ns, 1000 * ms);
  EXPECT_EQ(kinds(e.on_attempt_failed("a", 1, "exit_code", "x", 100 * ms, 0)),
            (strings{"attempt_failed:a"}));
  // Later attempts keep the first attempt's close deadline.
  s = e.decide(400 * ms);
  EXPECT_EQ(s[0].deadline_ns, 1000 * ms);
  // A retry that would start after the close gives up now (here: 500 + 300
  // is before 1s, so it retries; 800 + 300 is not).
  EXPECT_EQ(kinds(e.on_attempt_failed("a", 2, "exit_code", "x", 500 * ms, 0)),
            (strings{"attempt_failed:a"}));
  e.decide(800 * ms);
  auto f = e.on_attempt_failed("a", 3, "exit_code", "boom", 800 * ms, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:a", "node_fell_back:a",
                               "attempt_started:b"}));
  EXPECT_EQ(f[1].error_kind, "schedule_to_close");
  EXPECT_NE(f[1].message.find("gave up after 3 attempts: the next would start "
                              "after its schedule_to_close of 1s; last "
                              "attempt: exit_code: boom"),
            std::string::npos)
    << f[1].message;
}

TEST(RunEngine, AnAttemptEndingAtTheCloseFailsTheNode) {
  run_engine e{"r", spec_of(R"(name: stc
nodes:
  a: {kind: noop, schedule_to_close: 1s, retry: {max_attempts: 5}}
)"),
               json::object()};
  e.decide(0);
  auto f
    = e.on_attempt_failed("a", 1, "timeout", "attempt timed out", 1000 * ms, 0);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:a", "node_failed:a", "run_failed:a"}));
  EXPECT_EQ(e.status("a").last_error_kind, "schedule_to_close");
}

TEST(RunEngine, RunTimeoutFailsTheRunAndCancelsWhatRuns) {
  auto spec = spec_of(R"(name: rt
timeout: 2s
nodes:
  a: {kind: sleep, duration: 1h}
)");
  run_engine e{"r", spec, json::object()};
  e.apply({event_type::run_submitted, 5 * ms});
  EXPECT_EQ(e.run_deadline_ns(), 2005 * ms);
  e.decide(10 * ms);
  EXPECT_TRUE(e.time_out(2004 * ms).empty());
  auto f = e.time_out(2005 * ms);
  EXPECT_EQ(kinds(f), (strings{"node_cancelled:a", "run_failed"}));
  EXPECT_EQ(e.reason(), "the run timed out after 2s");
  EXPECT_EQ(f[0].message, "run failed: the run timed out after 2s");
  EXPECT_TRUE(e.time_out(3000 * ms).empty());
}

namespace {

const char* branching = R"(name: br
inputs: {n: {type: integer}}
nodes:
  route:
    kind: switch
    cases:
      - {when: "inputs.n > 100", goto: [big]}
      - {when: "inputs.n in [1, 2, 3]", goto: [tiny, tiny2]}
    default: [normal]
  big: {kind: noop}
  tiny: {kind: noop}
  tiny2: {kind: noop}
  normal: {kind: noop}
  after_big: {kind: noop, after: [big]}
  any: {kind: noop, after: [big, normal], trigger: one_success}
  all: {kind: noop, after: [big, tiny, normal], trigger: all_done}
)";

} // namespace

TEST(RunEngine, SwitchTakesTheFirstCaseThatHoldsAndSkipsTheRest) {
  auto spec = spec_of(branching);
  run_engine e{"r", spec, json{{"n", 500}}};
  auto d = e.decide(0);
  EXPECT_EQ(kinds(d), (strings{"node_completed:route", "node_skipped:tiny",
                               "node_skipped:tiny2", "node_skipped:normal",
                               "attempt_started:big"}));
  EXPECT_EQ(json::parse(d[0].data), (json{{"case", 1}, {"goto", {"big"}}}));
  EXPECT_EQ(d[1].message, "branch not taken by switch 'route'");
  auto f = e.on_attempt_succeeded("big", 1, json::object(), 1);
  // one_success starts as soon as big is done; all_done waits for nothing
  // more (tiny and normal were skipped).
  EXPECT_EQ(kinds(f),
            (strings{"node_completed:big", "attempt_started:after_big",
                     "attempt_started:any", "attempt_started:all"}));
}

TEST(RunEngine, SkippingPropagatesByTriggerRule) {
  auto spec = spec_of(branching);
  run_engine e{"r", spec, json{{"n", 2}}};
  auto d = e.decide(0);
  // big is skipped, so after_big (all_success) is skipped too; `any`
  // (one_success) waits for normal, which is skipped: skipped as well.
  EXPECT_EQ(kinds(d), (strings{"node_completed:route", "node_skipped:big",
                               "node_skipped:normal", "node_skipped:after_big",
                               "node_skipped:any", "attempt_started:tiny",
                               "attempt_started:tiny2"}));
  EXPECT_EQ(d[3].message, "upstream 'big' was skipped");
  EXPECT_EQ(d[4].message, "every upstream node was skipped");
  // all_done: big and normal were skipped, tiny completes: done.
  auto f = e.on_attempt_succeeded("tiny", 1, json::object(), 1);
  EXPECT_EQ(kinds(f), (strings{"node_completed:tiny", "attempt_started:all"}));
  e.on_attempt_succeeded("tiny2", 1, json::object(), 2);
  f = e.on_attempt_succeeded("all", 1, json::object(), 3);
  EXPECT_EQ(kinds(f), (strings{"node_completed:all", "run_completed"}));
}

TEST(RunEngine, DefaultBranchAndBadExpressionsAtRunTime) {
  auto spec = spec_of(branching);
  run_engine e{"r", spec, json{{"n", 50}}};
  auto d = e.decide(0);
  EXPECT_EQ(json::parse(d[0].data),
            (json{{"case", "default"}, {"goto", {"normal"}}}));
  // A comparison that cannot be made fails the switch, not the node.
  run_engine bad{"r", spec, json{{"n", "text"}}};
  d = bad.decide(0);
  EXPECT_EQ(kinds(d), (strings{"node_failed:route", "run_failed:route"}));
  EXPECT_EQ(d[0].error_kind, "bad_expression");
  EXPECT_NE(d[0].message.find("case 1 ('inputs.n > 100')"), std::string::npos)
    << d[0].message;
}

TEST(RunEngine, FailedRunCompensatesCompletedNodesInReverseOrder) {
  auto spec = spec_of(R"(name: saga
nodes:
  reserve: {kind: noop, compensate: release}
  charge: {kind: noop, after: [reserve], compensate: refund,
           retry: {non_retryable: [declined]}}
  email: {kind: noop, after: [reserve]}
  ship: {kind: noop, after: [charge]}
  release: {kind: noop, after: [reserve], id: "{{ nodes.reserve.output }}"}
  refund: {kind: noop, retry: {max_attempts: 2, initial_backoff: 10ms, jitter: none}}
)");
  run_engine e{"r", spec, json::object()};
  EXPECT_EQ(kinds(e.decide(0)), (strings{"attempt_started:reserve"}));
  e.on_attempt_succeeded("reserve", 1, json{{"slot", 7}}, 1);
  e.on_attempt_succeeded("charge", 1, json::object(), 2);
  // ship fails for good while email still runs: email is cancelled, then
  // compensations run newest first: refund (charge), then release.
  auto f = e.on_attempt_failed("ship", 1, "declined", "no", 3, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:ship"}))
    << "declined is only non-retryable for charge";
  e.decide(10'000 * ms);
  f = e.on_attempt_failed("ship", 2, "x", "no", 20'000 * ms, 0);
  e.decide(30'000 * ms);
  f = e.on_attempt_failed("ship", 3, "x", "truck on fire", 40'000 * ms, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:ship", "node_failed:ship",
                               "node_cancelled:email", "run_compensating:ship",
                               "attempt_started:refund"}));
  EXPECT_TRUE(e.compensating());
  EXPECT_FALSE(e.is_finished());
  // refund fails once, is retried by its own policy, then completes.
  f = e.on_attempt_failed("refund", 1, "io", "flaky", 41'000 * ms, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:refund"}));
  EXPECT_EQ(kinds(e.decide(42'000 * ms)), (strings{"attempt_started:refund"}));
  f = e.on_attempt_succeeded("refund", 2, json::object(), 43'000 * ms);
  EXPECT_EQ(kinds(f),
            (strings{"node_completed:refund", "attempt_started:release"}));
  std::string error;
  auto params = e.resolve_params(*e.spec().find_node("release"), error);
  EXPECT_EQ((*params)["id"], (json{{"slot", 7}}));
  f = e.on_attempt_succeeded("release", 1, json::object(), 44'000 * ms);
  EXPECT_EQ(kinds(f), (strings{"node_completed:release", "run_failed:ship"}));
  EXPECT_EQ(e.state(), run_state::failed);
  EXPECT_EQ(e.reason(), "node 'ship': gave up after 3 attempts: truck on fire; "
                        "compensated by refund, release");
  EXPECT_EQ(e.outputs(),
            (json{{"compensated", true},
                  {"compensations",
                   {{"refund", "completed"}, {"release", "completed"}}}}));
}

TEST(RunEngine, FailedCompensationIsReportedAndTheOthersStillRun) {
  auto spec = spec_of(R"(name: saga
nodes:
  a: {kind: noop, compensate: undo_a}
  b: {kind: noop, after: [a], compensate: undo_b}
  c: {kind: noop, after: [b], retry: {max_attempts: 1}}
  undo_a: {kind: noop}
  undo_b: {kind: noop, retry: {max_attempts: 1}}
)");
  run_engine e{"r", spec, json::object()};
  e.decide(0);
  e.on_attempt_succeeded("a", 1, json::object(), 1);
  e.on_attempt_succeeded("b", 1, json::object(), 2);
  e.on_attempt_failed("c", 1, "x", "boom", 3, 0);
  auto f = e.on_attempt_failed("undo_b", 1, "x", "cannot undo", 4, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:undo_b", "node_failed:undo_b",
                               "attempt_started:undo_a"}));
  f = e.on_attempt_succeeded("undo_a", 1, json::object(), 5);
  EXPECT_EQ(kinds(f), (strings{"node_completed:undo_a", "run_failed:c"}));
  EXPECT_NE(e.reason().find("; compensation failed: undo_b (gave up after 1 "
                            "attempt: cannot undo)"),
            std::string::npos)
    << e.reason();
  EXPECT_EQ(e.outputs()["compensated"], false);
}

TEST(RunEngine, CompensationResumesAfterReplay) {
  auto spec = spec_of(R"(name: saga
nodes:
  a: {kind: noop, compensate: undo_a}
  b: {kind: noop, after: [a], retry: {max_attempts: 1}}
  undo_a: {kind: noop}
)");
  run_engine live{"r", spec, json::object()};
  std::vector<event_record> journal;
  auto keep = [&](std::vector<event_record> es) {
    journal.insert(journal.end(), es.begin(), es.end());
  };
  keep(live.decide(0));
  keep(live.on_attempt_succeeded("a", 1, json::object(), 1));
  keep(live.on_attempt_failed("b", 1, "x", "boom", 2, 0));
  run_engine again{"r", spec, json::object()};
  for (auto& ev : journal)
    again.apply(ev);
  EXPECT_TRUE(again.compensating());
  EXPECT_EQ(again.status("undo_a").state, node_state::running);
  EXPECT_TRUE(again.decide(3).empty());
  EXPECT_EQ(kinds(again.on_attempt_succeeded("undo_a", 1, json::object(), 4)),
            (strings{"node_completed:undo_a", "run_failed:b"}));
}

TEST(RunEngine, CircuitOpenWaitsWithoutUsingUpAttempts) {
  run_engine e{"r", spec_of(R"(name: co
nodes:
  a: {kind: noop, retry: {max_attempts: 2, initial_backoff: 10ms, jitter: none}}
)"),
               json::object()};
  e.decide(0);
  // Refused three times by the breaker: each waits for the breaker's reset,
  // and the attempt number stays 1.
  for (int i = 0; i < 3; ++i) {
    auto f = e.on_attempt_failed("a", 1, "circuit_open", "open", i * 1000 * ms,
                                 0, 500 * ms);
    ASSERT_EQ(kinds(f), (strings{"attempt_failed:a"}));
    EXPECT_EQ(f[0].deadline_ns, i * 1000 * ms + 500 * ms);
    auto s = e.decide(i * 1000 * ms + 500 * ms);
    ASSERT_EQ(kinds(s), (strings{"attempt_started:a"}));
    EXPECT_EQ(s[0].attempt, 1);
  }
  // Real failures still count: attempt 1 fails, attempt 2 is the last.
  e.on_attempt_failed("a", 1, "exit_code", "x", 5000 * ms, 0);
  e.decide(6000 * ms);
  EXPECT_EQ(e.status("a").attempt, 2);
  // A Retry-After longer than the backoff wins.
  auto f = e.on_attempt_failed("a", 2, "http_429", "slow down", 7000 * ms, 0,
                               3000 * ms);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:a", "node_failed:a", "run_failed:a"}));
}

TEST(RunEngine, RetryAfterStretchesTheBackoff) {
  run_engine e{"r", spec_of(R"(name: ra
nodes:
  a: {kind: noop, retry: {max_attempts: 3, initial_backoff: 10ms, jitter: none}}
)"),
               json::object()};
  e.decide(0);
  auto f
    = e.on_attempt_failed("a", 1, "http_429", "slow down", 0, 0, 2000 * ms);
  EXPECT_EQ(f[0].deadline_ns, 2000 * ms);
}

TEST(RunEngine, CancelRunsCompensationsThenEndsCancelled) {
  auto spec = spec_of(R"(name: saga
nodes:
  a: {kind: noop, compensate: undo_a}
  b: {kind: sleep, after: [a], duration: 1h}
  undo_a: {kind: noop}
)");
  run_engine e{"r", spec, json::object()};
  e.decide(0);
  e.on_attempt_succeeded("a", 1, json::object(), 1);
  auto c = e.cancel("no longer needed", 2);
  EXPECT_EQ(kinds(c), (strings{"node_cancelled:b", "run_compensating",
                               "attempt_started:undo_a"}));
  EXPECT_FALSE(e.is_finished());
  // A second cancel while compensating changes nothing.
  EXPECT_TRUE(e.cancel("again", 3).empty());
  auto f = e.on_attempt_succeeded("undo_a", 1, json::object(), 4);
  EXPECT_EQ(kinds(f), (strings{"node_completed:undo_a", "run_cancelled"}));
  EXPECT_EQ(e.state(), run_state::cancelled);
  EXPECT_EQ(e.reason(), "no longer needed; compensated by undo_a");
  EXPECT_EQ(e.outputs()["compensated"], true);
  // Without compensations a cancel ends the run at once.
  run_engine plain{
    "r", spec_of("name: p\nnodes: {s: {kind: sleep, duration: 1h}}\n"),
    json::object()};
  plain.decide(0);
  EXPECT_EQ(kinds(plain.cancel("stop", 1)),
            (strings{"node_cancelled:s", "run_cancelled"}));
}

TEST(RunEngine, MapRunsItsNodePerItemWithinItsConcurrency) {
  auto spec = spec_of(R"(name: m
nodes:
  each:
    kind: map
    items: [10, 20, 30]
    max_concurrency: 2
    node: {kind: noop, v: "{{ item }}", i: "{{ item_index }}",
           retry: {max_attempts: 2, initial_backoff: 10ms, jitter: none}}
  after_it: {kind: noop, after: [each], all: "{{ nodes.each.output }}"}
)");
  run_engine e{"r", spec, json::object()};
  auto d = e.decide(0);
  EXPECT_EQ(kinds(d),
            (strings{"attempt_started:each", "attempt_started:each[0]",
                     "attempt_started:each[1]"}));
  EXPECT_EQ(json::parse(d[0].data), (json{10, 20, 30}));
  std::string error;
  auto p = e.resolve_params_for("each[1]", error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(*p, (json{{"v", 20}, {"i", 1}}));
  // An item fails and is retried by the inner policy; the third starts in
  // the freed slot.
  auto f = e.on_attempt_failed("each[0]", 1, "x", "boom", 1 * ms, 0);
  EXPECT_EQ(kinds(f),
            (strings{"attempt_failed:each[0]", "attempt_started:each[2]"}));
  e.on_attempt_succeeded("each[1]", 1, json{"b"}, 2 * ms);
  EXPECT_EQ(kinds(e.decide(20 * ms)), (strings{"attempt_started:each[0]"}));
  e.on_attempt_succeeded("each[2]", 1, json{"c"}, 21 * ms);
  f = e.on_attempt_succeeded("each[0]", 2, json{"a"}, 22 * ms);
  EXPECT_EQ(kinds(f), (strings{"node_completed:each[0]", "node_completed:each",
                               "attempt_started:after_it"}));
  EXPECT_EQ(json::parse(f[1].data), (json{{"a"}, {"b"}, {"c"}}));
  // Replaying the journal rebuilds the map.
}

TEST(RunEngine, AFailedItemFailsTheMapAndCancelsTheOthers) {
  auto spec = spec_of(R"(name: m
nodes:
  each:
    kind: map
    items: [1, 2, 3]
    node: {kind: noop, retry: {max_attempts: 1}}
    fallback: instead
  instead: {kind: noop, ok: true}
)");
  run_engine e{"r", spec, json::object()};
  e.decide(0);
  e.on_attempt_succeeded("each[0]", 1, json::object(), 1);
  auto f = e.on_attempt_failed("each[1]", 1, "x", "bad item", 2, 0);
  EXPECT_EQ(kinds(f), (strings{"attempt_failed:each[1]", "node_failed:each[1]",
                               "node_cancelled:each[2]", "node_fell_back:each",
                               "attempt_started:instead"}));
  EXPECT_EQ(f[3].message, "item 1: gave up after 1 attempt: bad item");
}

TEST(RunEngine, AMapWhoseOutputOutgrowsTheCapFails) {
  auto spec = spec_of(R"(name: m
nodes:
  each:
    kind: map
    items: [1, 2, 3]
    node: {kind: noop}
    fallback: instead
  instead: {kind: noop, ok: true}
)");
  run_engine e{"r", spec, json::object()};
  e.decide(0);
  // Three items of 6 MiB each: 18 MiB in one map output.
  json big = std::string(size_t{6} << 20, 'x');
  e.on_attempt_succeeded("each[0]", 1, big, 1);
  e.on_attempt_succeeded("each[1]", 1, big, 2);
  auto f = e.on_attempt_succeeded("each[2]", 1, big, 3);
  EXPECT_EQ(kinds(f), (strings{"node_completed:each[2]", "node_fell_back:each",
                               "attempt_started:instead"}));
  EXPECT_EQ(f[1].error_kind, "output_too_large");
  EXPECT_NE(f[1].message.find("may hold at most 16777216"), std::string::npos)
    << f[1].message;
  // Just under the cap, the map completes.
  run_engine fits{"r", spec, json::object()};
  fits.decide(0);
  json part = std::string(size_t{5} << 20, 'x');
  fits.on_attempt_succeeded("each[0]", 1, part, 1);
  fits.on_attempt_succeeded("each[1]", 1, part, 2);
  f = fits.on_attempt_succeeded("each[2]", 1, part, 3);
  ASSERT_GE(f.size(), 2u);
  EXPECT_EQ(kinds(f)[1], "node_completed:each");
}

TEST(RunEngine, MapItemsMustBeAListAndEmptyListsComplete) {
  auto spec = spec_of(R"(name: m
inputs: {xs: {type: any}}
nodes:
  each: {kind: map, items: "{{ inputs.xs }}", node: {kind: noop}}
)");
  run_engine bad{"r", spec, json{{"xs", "nope"}}};
  auto d = bad.decide(0);
  EXPECT_EQ(kinds(d), (strings{"node_failed:each", "run_failed:each"}));
  EXPECT_NE(d[0].message.find("map: items resolved to string, not a list"),
            std::string::npos);
  run_engine empty{"r", spec, json{{"xs", json::array()}}};
  EXPECT_EQ(
    kinds(empty.decide(0)),
    (strings{"attempt_started:each", "node_completed:each", "run_completed"}));
}

TEST(RunEngine, MapSurvivesReplay) {
  auto spec = spec_of(R"(name: m
nodes:
  each: {kind: map, items: [1, 2, 3], max_concurrency: 1, node: {kind: noop}}
)");
  run_engine live{"r", spec, json::object()};
  std::vector<event_record> journal;
  auto keep = [&](std::vector<event_record> es) {
    journal.insert(journal.end(), es.begin(), es.end());
  };
  keep(live.decide(0));
  keep(live.on_attempt_succeeded("each[0]", 1, json{1}, 1));
  run_engine again{"r", spec, json::object()};
  for (auto& ev : journal)
    again.apply(ev);
  EXPECT_EQ(again.map_items("each"), 3u);
  EXPECT_EQ(again.status("each[0]").state, node_state::completed);
  EXPECT_EQ(again.status("each[1]").state, node_state::running);
  EXPECT_TRUE(again.decide(2).empty());
  again.on_attempt_succeeded("each[1]", 1, json{2}, 3);
  auto f = again.on_attempt_succeeded("each[2]", 1, json{3}, 4);
  EXPECT_EQ(kinds(f), (strings{"node_completed:each[2]", "node_completed:each",
                               "run_completed"}));
}

TEST(RunEngine, PausedRunStartsNoAttemptsUntilResumed) {
  auto spec = spec_of(R"(name: pausing
nodes:
  a:
    kind: noop
    retry: {max_attempts: 3, initial_backoff: 100ms, jitter: none}
  b: {kind: noop, after: [a]}
)");
  run_engine e{"r", spec, json::object()};
  e.decide(0);
  auto p = e.pause("paused by ops", 5 * ms);
  ASSERT_EQ(kinds(p), (strings{"run_paused"}));
  EXPECT_TRUE(e.paused());
  EXPECT_EQ(e.index_state(), run_state::paused);
  EXPECT_TRUE(e.pause("again", 6 * ms).empty()); // already paused
  // The running attempt finishes, but neither its retry nor b starts.
  auto f = e.on_attempt_failed("a", 1, "exit_code", "boom", 10 * ms, 0);
  ASSERT_EQ(kinds(f), (strings{"attempt_failed:a"}));
  EXPECT_TRUE(e.decide(500 * ms).empty());
  // Resuming starts the retry that came due meanwhile.
  auto r = e.resume("by ops", 600 * ms);
  ASSERT_EQ(kinds(r), (strings{"run_resumed", "attempt_started:a"}));
  EXPECT_FALSE(e.paused());
  EXPECT_EQ(e.index_state(), run_state::running);
  EXPECT_TRUE(e.resume("twice", 601 * ms).empty());
  auto ok = e.on_attempt_succeeded("a", 2, json::object(), 700 * ms);
  EXPECT_EQ(kinds(ok), (strings{"node_completed:a", "attempt_started:b"}));

  // Replaying the journal rebuilds the paused state.
  run_engine replay{"r", spec, json::object()};
  std::vector<event_record> journal;
  for (auto& ev : p)
    journal.push_back(ev);
  for (auto& ev : journal)
    replay.apply(ev);
  EXPECT_TRUE(replay.paused());
}

TEST(RunEngine, CancellingAPausedRunRunsItsCompensations) {
  run_engine e{"r", spec_of(R"(name: saga
nodes:
  reserve: {kind: noop, compensate: release}
  release: {kind: noop}
  charge: {kind: noop, after: [reserve]}
)"),
               json::object()};
  e.decide(0);
  e.on_attempt_succeeded("reserve", 1, json::object(), 1 * ms);
  e.pause("hold", 2 * ms);
  auto c = e.cancel("stop", 3 * ms);
  EXPECT_EQ(kinds(c), (strings{"node_cancelled:charge", "run_compensating",
                               "attempt_started:release"}));
  EXPECT_FALSE(e.paused());
  EXPECT_TRUE(e.pause("too late", 4 * ms).empty());
}

TEST(RunEngine, RetryNowSkipsTheRestOfTheBackoff) {
  run_engine e{"r", spec_of(R"(name: retry
nodes:
  a:
    kind: noop
    retry: {max_attempts: 3, initial_backoff: 1h, max_backoff: 1h,
            jitter: none}
)"),
               json::object()};
  e.decide(0);
  EXPECT_TRUE(e.retry_now("a", 1 * ms).empty()); // running, not waiting
  e.on_attempt_failed("a", 1, "exit_code", "boom", 2 * ms, 0);
  EXPECT_TRUE(e.decide(3 * ms).empty());
  auto r = e.retry_now("a", 4 * ms);
  ASSERT_EQ(kinds(r), (strings{"attempt_started:a"}));
  EXPECT_EQ(r[0].attempt, 2);
  EXPECT_TRUE(e.retry_now("nope", 5 * ms).empty());
}

TEST(RunEngine, RestartedAttemptTimesItsTimeoutFromItsNewStart) {
  auto spec = spec_of(R"(name: t
nodes:
  a: {kind: noop, timeout: 2s}
  b: {kind: noop, timeout: 2s, schedule_to_close: 5s}
)");
  run_engine e{"r", spec, json::object()};
  auto started = e.decide(0);
  ASSERT_EQ(kinds(started),
            (strings{"attempt_started:a", "attempt_started:b"}));
  // The node was down from 1 s to 4 s: each attempt gets 2 s from 4 s, but
  // not past b's schedule_to_close, which keeps its first deadline.
  run_engine replayed{"r", spec, json::object()};
  for (auto& ev : started)
    replayed.apply(ev);
  EXPECT_EQ(replayed.status("a").attempt_deadline_ns, 2000 * ms);
  EXPECT_EQ(replayed.restart_attempt_timeout("a", 4000 * ms), 6000 * ms);
  EXPECT_EQ(replayed.status("a").attempt_deadline_ns, 6000 * ms);
  EXPECT_EQ(replayed.restart_attempt_timeout("b", 4000 * ms), 5000 * ms);
  EXPECT_EQ(replayed.status("a").attempt, 1);
  // A node that is not running has no attempt to restart.
  replayed.on_attempt_succeeded("a", 1, json::object(), 4100 * ms);
  EXPECT_EQ(replayed.restart_attempt_timeout("a", 4200 * ms), 0);
}

TEST(RunEngine, ReadyNodesAndDueRetriesStartInFileOrderWithinTheLimit) {
  auto spec = spec_of(R"(name: order
max_concurrency: 2
nodes:
  e: {kind: noop, after: [z]}
  a:
    kind: fail
    times: 1
    retry: {initial_backoff: 10ms, jitter: none}
  b: {kind: noop}
  c: {kind: noop}
  d: {kind: noop}
  z: {kind: noop}
)");
  run_engine e{"r", spec, json::object()};
  std::vector<event_record> journal;
  auto keep = [&](std::vector<event_record> events) {
    journal.insert(journal.end(), events.begin(), events.end());
    return events;
  };
  EXPECT_EQ(kinds(keep(e.decide(0))),
            (strings{"attempt_started:a", "attempt_started:b"}));
  // a waits for its retry; the ready nodes go on in file order.
  EXPECT_EQ(kinds(keep(e.on_attempt_failed("a", 1, "injected", "x", 1, 0.5))),
            (strings{"attempt_failed:a", "attempt_started:c"}));
  EXPECT_EQ(e.next_wakeup_ns(), 1 + 10 * ms);
  EXPECT_EQ(kinds(keep(e.on_attempt_succeeded("b", 1, {}, 2))),
            (strings{"node_completed:b", "attempt_started:d"}));
  // The retry is due and z is ready: a comes first in the file, then the
  // limit holds z back.
  auto replay_at = journal.size();
  EXPECT_EQ(kinds(keep(e.on_attempt_succeeded("c", 1, {}, 20 * ms))),
            (strings{"node_completed:c", "attempt_started:a"}));
  EXPECT_EQ(e.next_wakeup_ns(), 0);
  // A run rebuilt from its journal decides what the live one did.
  run_engine again{"r", spec, json::object()};
  for (size_t i = 0; i < replay_at; ++i)
    again.apply(journal[i]);
  EXPECT_EQ(kinds(again.on_attempt_succeeded("c", 1, {}, 20 * ms)),
            (strings{"node_completed:c", "attempt_started:a"}));
  for (auto* run : {&e, &again}) {
    EXPECT_EQ(kinds(run->on_attempt_succeeded("d", 1, {}, 21 * ms)),
              (strings{"node_completed:d", "attempt_started:z"}));
    EXPECT_EQ(kinds(run->on_attempt_succeeded("z", 1, {}, 22 * ms)),
              (strings{"node_completed:z", "attempt_started:e"}));
    run->on_attempt_succeeded("a", 2, {}, 23 * ms);
    EXPECT_EQ(kinds(run->on_attempt_succeeded("e", 1, {}, 24 * ms)),
              (strings{"node_completed:e", "run_completed"}));
  }
}

TEST(RunEngine, AWideJoinNamesTheFirstSkippedNodeItWaitsOn) {
  // 300 nodes behind one switch that skips them all but the first; the
  // join (all_success) names the first skipped one in its `after` order.
  std::string text = "name: wide\nnodes:\n  s:\n    kind: switch\n"
                     "    cases: [{when: 'true', goto: [n0]}]\n"
                     "    default: [";
  std::string after;
  for (int i = 0; i < 300; ++i) {
    text += (i ? ", n" : "n") + std::to_string(i);
    after += (i ? ", n" : "n") + std::to_string(299 - i);
  }
  text += "]\n";
  for (int i = 0; i < 300; ++i)
    text += "  n" + std::to_string(i) + ": {kind: noop}\n";
  text += "  join: {kind: noop, after: [" + after + "]}\n";
  text += "  any: {kind: noop, after: [" + after + "], trigger: one_success}\n";
  run_engine e{"r", spec_of(text), json::object()};
  auto d = e.decide(0);
  ASSERT_GE(d.size(), 302u);
  EXPECT_EQ(kinds(d).front(), "node_completed:s");
  std::map<std::string, std::string> skipped;
  for (auto& ev : d)
    if (ev.type == event_type::node_skipped)
      skipped[ev.node] = ev.message;
  EXPECT_EQ(skipped.size(), 300u); // n1..n299 and join
  EXPECT_EQ(skipped["join"], "upstream 'n299' was skipped");
  EXPECT_FALSE(skipped.count("any"));
  EXPECT_EQ(kinds(e.on_attempt_succeeded("n0", 1, {}, 1)),
            (strings{"node_completed:n0", "attempt_started:any"}));
}

TEST(RunEngine, ASpecWithoutAnIndexRunsTheSame) {
  // A spec put together by hand (no index): the engine indexes a copy.
  auto parsed = spec_of(R"(name: plain
nodes:
  a: {kind: noop}
  b: {kind: fail, times: 1, after: [a], fallback: c}
  c: {kind: noop, after: [a]}
  d: {kind: noop, after: [b]}
)");
  auto bare = std::make_shared<workflow_spec>(*parsed);
  bare->index.reset();
  ASSERT_FALSE(bare->indexed());
  EXPECT_EQ(bare->find_node("c")->id, "c");
  EXPECT_EQ(bare->primary_of("c")->id, "b");
  run_engine e{"r", bare, json::object()};
  EXPECT_EQ(kinds(e.decide(0)), (strings{"attempt_started:a"}));
  EXPECT_EQ(kinds(e.on_attempt_succeeded("a", 1, {}, 1)),
            (strings{"node_completed:a", "attempt_started:b"}));
  EXPECT_EQ(
    kinds(e.on_attempt_failed("b", 1, "bad_params", "no", 2, 0.5)),
    (strings{"attempt_failed:b", "node_fell_back:b", "attempt_started:c"}));
  EXPECT_EQ(
    kinds(e.on_attempt_succeeded("c", 1, {{"k", 1}}, 3)),
    (strings{"node_completed:c", "node_completed:b", "attempt_started:d"}));
  EXPECT_THROW(e.status("nope"), std::out_of_range);
  EXPECT_EQ(e.find_status("b[0]"), nullptr);
}

namespace {

/// A chain of `n` noop nodes, each after the one before.
std::string chain_yaml(size_t n, const std::string& extra = {}) {
  std::string text = "name: chain\n" + extra + "nodes:\n  n0: {kind: noop}\n";
  for (size_t i = 1; i < n; ++i)
    text += "  n" + std::to_string(i) + ": {kind: noop, after: [n"
            + std::to_string(i - 1) + "]}\n";
  return text;
}

/// Runs a chain of `n` nodes to its end; returns the readiness checks made.
uint64_t checks_to_run_chain(size_t n) {
  run_engine e{"r", spec_of(chain_yaml(n)), json::object()};
  auto d = e.decide(0);
  for (size_t i = 0; i < n; ++i)
    d = e.on_attempt_succeeded("n" + std::to_string(i), 1, json::object(),
                               static_cast<int64_t>(i + 1));
  EXPECT_EQ(e.state(), run_state::completed);
  return e.readiness_checks();
}

} // namespace

TEST(RunEngine, AStepChecksOnlyTheNodesItMayHaveMadeReady) {
  // Each completion looks at the nodes that run after it, not at every
  // node: the checks per step stay the same however long the chain (a scan
  // of the pending nodes made them grow with it).
  auto small = checks_to_run_chain(100);
  auto large = checks_to_run_chain(2'000);
  EXPECT_LE(small, 2u * 100);
  EXPECT_LE(large, 2u * 2'000);
  EXPECT_EQ(large / 2'000, small / 100);
  // Ready nodes held back by max_concurrency wait in a list: starting one
  // when a slot frees is not a scan either.
  std::string wide = "name: wide\nmax_concurrency: 1\nnodes:\n";
  for (int i = 0; i < 1'000; ++i)
    wide += "  n" + std::to_string(i) + ": {kind: noop}\n";
  run_engine e{"r", spec_of(wide), json::object()};
  EXPECT_EQ(kinds(e.decide(0)), (strings{"attempt_started:n0"}));
  for (int i = 0; i < 999; ++i)
    EXPECT_EQ(kinds(e.on_attempt_succeeded("n" + std::to_string(i), 1,
                                           json::object(), i + 1)),
              (strings{"node_completed:n" + std::to_string(i),
                       "attempt_started:n" + std::to_string(i + 1)}));
  e.on_attempt_succeeded("n999", 1, json::object(), 1'000);
  EXPECT_EQ(e.state(), run_state::completed);
  EXPECT_LE(e.readiness_checks(), 2u * 1'000);
}

TEST(RunEngine, MapItemRetriesStartWhenDueInItemOrder) {
  auto spec = spec_of(R"(name: m
nodes:
  each:
    kind: map
    items: [a, b, c, d]
    max_concurrency: 4
    node: {kind: noop, retry: {max_attempts: 3, initial_backoff: 10ms,
                               max_backoff: 10ms, jitter: none}}
)");
  run_engine e{"r", spec, json::object()};
  std::vector<event_record> journal;
  auto keep = [&](std::vector<event_record> events) {
    journal.insert(journal.end(), events.begin(), events.end());
    return events;
  };
  keep(e.decide(0));
  // d fails first and c last: their retries are due in that order, but
  // start in item order once both are.
  keep(e.on_attempt_failed("each[3]", 1, "x", "boom", 1 * ms, 0));
  keep(e.on_attempt_failed("each[1]", 1, "x", "boom", 2 * ms, 0));
  keep(e.on_attempt_failed("each[2]", 1, "x", "boom", 3 * ms, 0));
  EXPECT_EQ(e.next_wakeup_ns(), 11 * ms);
  EXPECT_EQ(kinds(keep(e.decide(12 * ms))),
            (strings{"attempt_started:each[1]", "attempt_started:each[3]"}));
  EXPECT_EQ(e.next_wakeup_ns(), 13 * ms);
  // A replayed run waits for the same retry.
  run_engine again{"r", spec, json::object()};
  for (auto& ev : journal)
    again.apply(ev);
  EXPECT_EQ(again.next_wakeup_ns(), 13 * ms);
  for (auto* run : {&e, &again}) {
    // Started now, it is waited for no longer.
    EXPECT_EQ(kinds(run->retry_now("each[2]", 12 * ms)),
              (strings{"attempt_started:each[2]"}));
    EXPECT_EQ(run->next_wakeup_ns(), 0);
    EXPECT_TRUE(run->decide(20 * ms).empty());
  }
}

TEST(RunEngine, ALongChainCompensatesNewestFirst) {
  // Each of 300 nodes has a compensation; the run fails at the end and
  // they run one at a time, newest first.
  std::string text = "name: undo\nnodes:\n";
  for (int i = 0; i < 300; ++i) {
    text += "  n" + std::to_string(i) + ": {kind: noop"
            + (i ? ", after: [n" + std::to_string(i - 1) + "]" : "")
            + ", compensate: u" + std::to_string(i) + "}\n";
    text += "  u" + std::to_string(i) + ": {kind: noop}\n";
  }
  text += "  last: {kind: noop, after: [n299]}\n";
  run_engine e{"r", spec_of(text), json::object()};
  e.decide(0);
  for (int i = 0; i < 300; ++i)
    e.on_attempt_succeeded("n" + std::to_string(i), 1, json::object(), i + 1);
  auto f = e.on_attempt_failed("last", 1, "bad_params", "no", 400, 0);
  ASSERT_FALSE(f.empty());
  EXPECT_EQ(kinds(f).back(), "attempt_started:u299");
  for (int i = 299; i > 0; --i)
    EXPECT_EQ(kinds(e.on_attempt_succeeded("u" + std::to_string(i), 1,
                                           json::object(), 1'000 - i)),
              (strings{"node_completed:u" + std::to_string(i),
                       "attempt_started:u" + std::to_string(i - 1)}));
  f = e.on_attempt_succeeded("u0", 1, json::object(), 1'000);
  EXPECT_EQ(kinds(f), (strings{"node_completed:u0", "run_failed:last"}));
  EXPECT_EQ(e.state(), run_state::failed);
}
