// The fault hooks and the ledger of `troupe chaos` (docs/chaos.md, "Fault
// hooks and the ledger"), on real `troupe node start` processes: the
// `fault` control request, off unless the node was started with
// TROUPE_CHAOS_HOOKS=1, each hook's effect, and the ledger lines a node
// writes to TROUPE_CHAOS_LEDGER.

#include "tests/support/node_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_session.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

/// One ledger line, split at its spaces.
struct ledger_line {
  int64_t ns = 0;
  std::string member, event, run, node, attempt, partition, epoch;
};

std::vector<ledger_line> read_ledger(const std::string& path) {
  std::vector<ledger_line> out;
  std::ifstream in{path};
  std::string text;
  while (std::getline(in, text)) {
    std::istringstream words{text};
    ledger_line l;
    words >> l.ns >> l.member >> l.event >> l.run >> l.node >> l.attempt
      >> l.partition >> l.epoch;
    EXPECT_TRUE(words && l.ns > 0) << "bad ledger line: " << text;
    std::string more;
    EXPECT_FALSE(words >> more) << "a ninth field in: " << text;
    out.push_back(l);
  }
  return out;
}

struct ChaosHooks : troupe::test::node_process_fixture {
  /// Whether nodes start with TROUPE_CHAOS_HOOKS=1.
  bool hooks = true;
  std::string ledger = (dir.path() / "ledger").string();

  troupe::test::process_options opts() override {
    auto o = node_process_fixture::opts();
    o.env["TROUPE_CHAOS_HOOKS"]
      = hooks ? std::optional<std::string>{"1"} : std::nullopt;
    o.env["TROUPE_CHAOS_LEDGER"] = ledger;
    return o;
  }

  /// Sends a fault request `body` ({"hook": ...}) as an admin.
  json fault(json body) {
    troupe::test::raw_session admin{control_port, token("admin")};
    body["t"] = "fault";
    return admin.call(body);
  }

  /// Waits until `run` is completed; false after `limit`.
  bool completes(const std::string& run, std::chrono::milliseconds limit) {
    return wait_until([&] { return state_of(run) == "completed"; }, limit);
  }

  /// The journal events of `run`.
  json events(const std::string& run) {
    auto h = cli({"history", run, "--json"});
    auto j = json::parse(h.out, nullptr, false);
    return j.is_discarded() ? json::array() : j["events"];
  }

  /// Waits until `run` has set its sleep's timer (it is mid-run).
  bool sleeping(const std::string& run) {
    return wait_until(
      [&] {
        for (auto& e : events(run))
          if (e.value("type", "") == "timer_set")
            return true;
        return false;
      },
      std::chrono::seconds{10});
  }

  /// Waits until `run` has ended, completed or failed; false after `limit`.
  bool ends(const std::string& run, std::chrono::milliseconds limit) {
    return wait_until(
      [&] {
        auto s = state_of(run);
        return s == "completed" || s == "failed";
      },
      limit);
  }

  /// noop, sleep and exec nodes in a chain.
  std::string chain() {
    return workflow("chain", "nodes:\n  a: {kind: noop}\n  nap: {kind: sleep, "
                             "duration: 50ms, after: [a]}\n  c:\n    kind: "
                             "exec\n    command: [\"true\"]\n    after: "
                             "[nap]\n  d: {kind: noop, after: [c]}\n");
  }
};

/// The code of an error answer, or "" for any other.
std::string code_of(const json& answer) {
  return answer.value("t", "") == "error" ? answer.value("code", "") : "";
}

int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

// Without TROUPE_CHAOS_HOOKS=1 in its environment, a node refuses every
// fault request with hooks_off, saying why, and runs as usual.
TEST_F(ChaosHooks, FaultIsRefusedWithHooksOffWithoutTheVariable) {
  hooks = false;
  start_node();
  for (auto body :
       {json{{"hook", "slow_disk"}, {"delay_ms", 100}, {"for_ms", 1000}},
        json{{"hook", "fail_disk"}, {"error", "io_error"}, {"for_ms", 1000}},
        json{{"hook", "clock_jump"}, {"offset_ms", -5000}},
        json{{"hook", "rerun_completed"}}, json{{"hook", "clear"}}}) {
    auto a = fault(body);
    EXPECT_EQ(code_of(a), "hooks_off") << a;
    EXPECT_NE(a.value("message", "").find("TROUPE_CHAOS_HOOKS=1"),
              std::string::npos)
      << a;
  }
  // An operator may not ask at all.
  troupe::test::raw_session op{control_port, token("operator")};
  EXPECT_EQ(code_of(op.call({{"t", "fault"}, {"hook", "clear"}})), "forbidden");
  auto run = submit(chain());
  EXPECT_TRUE(completes(run, 20s));
}

// Bad fault requests get bad_request naming the field, and change nothing.
TEST_F(ChaosHooks, BadFaultRequestsNameTheField) {
  start_node();
  struct bad_case {
    json body;
    std::string names;
  };
  std::vector<bad_case> cases{
    {json::object(), "missing field 'hook'"},
    {{{"hook", 7}}, "field 'hook' must be a string"},
    {{{"hook", "slow_dsk"}}, "field 'hook' must be slow_disk"},
    {{{"hook", "slow_disk"}, {"for_ms", 1000}}, "missing field 'delay_ms'"},
    {{{"hook", "slow_disk"}, {"delay_ms", 100}}, "missing field 'for_ms'"},
    {{{"hook", "slow_disk"}, {"delay_ms", 100}, {"for_ms", -1}},
     "field 'for_ms' must be a whole number of ms from 0"},
    {{{"hook", "slow_disk"}, {"delay_ms", "100"}, {"for_ms", 1000}},
     "field 'delay_ms' must be a whole number"},
    {{{"hook", "slow_disk"}, {"delay_ms", 1.5}, {"for_ms", 1000}},
     "field 'delay_ms' must be a whole number"},
    {{{"hook", "fail_disk"}, {"for_ms", 1000}}, "missing field 'error'"},
    {{{"hook", "fail_disk"}, {"error", "disk_full"}, {"for_ms", 1000}},
     "field 'error' must be io_error or no_space"},
    {{{"hook", "fail_disk"}, {"error", "io_error"}, {"for_ms", true}},
     "field 'for_ms' must be a whole number"},
    {{{"hook", "clock_jump"}}, "missing field 'offset_ms'"},
    {{{"hook", "clock_jump"}, {"offset_ms", "1s"}},
     "field 'offset_ms' must be a whole number of ms from -86400000"},
    {{{"hook", "clear"}, {"delay_ms", 5}},
     "field 'delay_ms' is not taken by hook 'clear'"},
  };
  for (auto& c : cases) {
    auto a = fault(c.body);
    EXPECT_EQ(code_of(a), "bad_request") << c.body << " -> " << a;
    EXPECT_NE(a.value("message", "").find(c.names), std::string::npos)
      << c.body << " -> " << a << " (expected it to say: " << c.names << ")";
  }
  // A good one is taken, and says what is in force.
  auto ok = fault({{"hook", "clock_jump"}, {"offset_ms", -250}});
  ASSERT_EQ(ok.value("t", ""), "reply") << ok;
  EXPECT_EQ(ok["body"]["ok"], true) << ok;
  EXPECT_EQ(ok["body"]["hooks"]["clock_offset_ms"], -250) << ok;
  auto cleared = fault({{"hook", "clear"}});
  EXPECT_EQ(cleared["body"]["hooks"]["clock_offset_ms"], 0) << cleared;
}

// slow_disk: every write of the store waits the delay, so a submission
// (its journal write) takes at least that long; after clear it does not
// wait.
TEST_F(ChaosHooks, SlowDiskDelaysEveryStoreWrite) {
  start_node();
  auto text = "name: one\nnodes:\n  a: {kind: noop}\n";
  troupe::test::raw_session op{control_port, token("operator")};
  auto a
    = fault({{"hook", "slow_disk"}, {"delay_ms", 600}, {"for_ms", 60'000}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  EXPECT_EQ(a["body"]["hooks"]["slow_disk_ms"], 600) << a;
  auto began = std::chrono::steady_clock::now();
  auto r = op.call({{"t", "submit"}, {"workflow", text}}, 30s);
  auto took = std::chrono::steady_clock::now() - began;
  ASSERT_EQ(r.value("t", ""), "reply") << r;
  EXPECT_GE(took, 600ms);
  auto run = r["body"].value("run_id", "");
  EXPECT_TRUE(completes(run, 30s));
  auto c = fault({{"hook", "clear"}});
  EXPECT_EQ(c["body"]["hooks"]["slow_disk_ms"], 0) << c;
}

// fail_disk: while in force every store write fails as RocksDB's would
// (IOError), so a submission is refused; once it is over the node
// recovers by itself, and runs submitted then complete with whole
// journals; a run in flight through it ends (its actor is restarted from
// its journal) and nothing is corrupt.
TEST_F(ChaosHooks, ARunWhoseFailureCannotBeJournaledIsStartedAgain) {
  // Writes fail longer than the supervisor's restarts last: it gives the
  // run up, and the store refuses that too. Once the disk is back, the run
  // is started again from its journal and ends; it is not left running
  // with no actor.
  start_node();
  auto run = submit(sleeper("1s"));
  ASSERT_TRUE(sleeping(run));
  auto a
    = fault({{"hook", "fail_disk"}, {"error", "io_error"}, {"for_ms", 6000}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  EXPECT_TRUE(ends(run, 40s)) << state_of(run);
}

TEST_F(ChaosHooks, FailDiskFailsWritesThenTheNodeRecovers) {
  start_node();
  auto before = submit(sleeper("1500ms"));
  ASSERT_TRUE(sleeping(before));
  auto a
    = fault({{"hook", "fail_disk"}, {"error", "io_error"}, {"for_ms", 2000}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  EXPECT_EQ(a["body"]["hooks"]["fail_disk"], "io_error") << a;
  auto during = cli({"submit", chain()});
  EXPECT_NE(during.exit_code, 0) << during.out;
  EXPECT_NE(during.err.find("injected by the fail_disk fault hook"),
            std::string::npos)
    << during.err;
  // Over after 2 s: submissions are taken again and complete.
  std::string after;
  ASSERT_TRUE(wait_until(
    [&] {
      auto r = cli({"submit", chain()});
      if (r.exit_code != 0)
        return false;
      after = r.out.substr(0, r.out.find('\n'));
      return true;
    },
    20s));
  EXPECT_TRUE(completes(after, 30s));
  auto more = submit(chain());
  EXPECT_TRUE(completes(more, 30s));
  // Their journals are whole: submitted, each node completed once, done.
  for (auto& run : {after, more}) {
    auto evs = events(run);
    ASSERT_GE(evs.size(), 2u);
    EXPECT_EQ(evs.front().value("type", ""), "run_submitted") << evs;
    EXPECT_EQ(evs.back().value("type", ""), "run_completed") << evs;
    std::map<std::string, int> completed;
    for (auto& e : evs)
      if (e.value("type", "") == "node_completed")
        ++completed[e.value("node", "")];
    EXPECT_EQ(completed, (std::map<std::string, int>{
                           {"a", 1}, {"nap", 1}, {"c", 1}, {"d", 1}}))
      << evs;
  }
  // The run in flight ended (its restarts may have run out in the window).
  EXPECT_TRUE(ends(before, 30s)) << state_of(before);
  // The node restarts on its data dir: nothing it wrote is corrupt.
  node->signal(SIGTERM);
  node->wait(30s);
  start_node();
  EXPECT_EQ(state_of(after), "completed");
  EXPECT_EQ(state_of(more), "completed");
}

// fail_disk with no_space: the store takes it for a full disk (it holds
// appends and says the disk is low until a write goes through again), and
// once the window is over runs are taken and complete.
TEST_F(ChaosHooks, FailDiskNoSpaceHoldsWritesThenTheNodeRecovers) {
  start_node();
  auto a
    = fault({{"hook", "fail_disk"}, {"error", "no_space"}, {"for_ms", 1500}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  EXPECT_EQ(a["body"]["hooks"]["fail_disk"], "no_space") << a;
  auto began = std::chrono::steady_clock::now();
  std::string run;
  ASSERT_TRUE(wait_until(
    [&] {
      auto r = cli({"submit", chain()});
      if (r.exit_code != 0)
        return false;
      run = r.out.substr(0, r.out.find('\n'));
      return true;
    },
    30s));
  EXPECT_TRUE(completes(run, 30s));
  // Nothing was written before the window ended.
  auto evs = events(run);
  ASSERT_FALSE(evs.empty());
  EXPECT_GE(std::chrono::steady_clock::now() - began, 1500ms);
}

// clock_jump: the engine's wall clock moves by the offset, so the events
// journaled after it carry times shifted by about that much.
TEST_F(ChaosHooks, ClockJumpShiftsTheTimesOfNewEvents) {
  start_node();
  constexpr int64_t hour_ns = int64_t{3600} * 1'000'000'000;
  auto a = fault({{"hook", "clock_jump"}, {"offset_ms", 1'800'000}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  // Cumulative: two half hours.
  a = fault({{"hook", "clock_jump"}, {"offset_ms", 1'800'000}});
  EXPECT_EQ(a["body"]["hooks"]["clock_offset_ms"], 3'600'000) << a;
  auto now = unix_ns();
  auto run = submit(chain());
  ASSERT_TRUE(completes(run, 30s));
  auto evs = events(run);
  int64_t shifted = 0;
  for (auto& e : evs)
    if (e.value("type", "") == "node_completed") {
      auto at = e.value("at_ns", int64_t{0});
      EXPECT_NEAR(static_cast<double>(at - now), static_cast<double>(hour_ns),
                  60e9)
        << e;
      ++shifted;
    }
  EXPECT_EQ(shifted, 4) << evs;
  // clear takes the offset back.
  fault({{"hook", "clear"}});
  now = unix_ns();
  run = submit(chain());
  ASSERT_TRUE(completes(run, 30s));
  for (auto& e : events(run)) {
    if (e.value("type", "") != "node_completed")
      continue;
    EXPECT_NEAR(static_cast<double>(e.value("at_ns", int64_t{0}) - now), 0.0,
                60e9)
      << e;
  }
}

// The ledger: a start line (where each attempt begins) and a done line
// (once its completion is journaled) for every node of a completed run,
// in that order; a node alone writes `-` for its member, partition and
// epoch.
TEST_F(ChaosHooks, LedgerHasStartAndDoneForEveryNode) {
  hooks = false; // the ledger needs no hooks
  start_node();
  auto run = submit(chain());
  ASSERT_TRUE(completes(run, 30s));
  std::map<std::string, std::vector<ledger_line>> by_node;
  ASSERT_TRUE(wait_until(
    [&] {
      by_node.clear();
      for (auto& l : read_ledger(ledger))
        if (l.run == run)
          by_node[l.node].push_back(l);
      return by_node.size() == 4 && by_node["d"].size() == 2;
    },
    10s));
  for (auto node : {"a", "nap", "c", "d"}) {
    auto& lines = by_node[node];
    ASSERT_EQ(lines.size(), 2u) << node;
    EXPECT_EQ(lines[0].event, "start") << node;
    EXPECT_EQ(lines[1].event, "done") << node;
    EXPECT_LE(lines[0].ns, lines[1].ns) << node;
    for (auto& l : lines) {
      EXPECT_EQ(l.member, "-");
      EXPECT_EQ(l.attempt, "1");
      EXPECT_EQ(l.partition, "-");
      EXPECT_EQ(l.epoch, "-");
    }
  }
  // Nodes in order: each starts after the one before is done.
  EXPECT_LT(by_node["a"][1].ns, by_node["nap"][0].ns);
  EXPECT_LT(by_node["nap"][1].ns, by_node["c"][0].ns);
  EXPECT_LT(by_node["c"][1].ns, by_node["d"][0].ns);
}

// rerun_completed (the deliberately broken build): the next node that
// completes runs once more, seen in the ledger as a start line after its
// done line; the run still completes, and only one node runs again.
TEST_F(ChaosHooks, RerunCompletedRunsOneCompletedNodeAgain) {
  start_node();
  auto wf = workflow("two", "nodes:\n  first:\n    kind: exec\n    command: "
                            "[\"true\"]\n  second:\n    kind: exec\n    "
                            "command: [\"true\"]\n    after: [first]\n");
  auto a = fault({{"hook", "rerun_completed"}});
  ASSERT_EQ(a.value("t", ""), "reply") << a;
  EXPECT_EQ(a["body"]["hooks"]["rerun_armed"], true) << a;
  auto run = submit(wf);
  ASSERT_TRUE(completes(run, 30s));
  std::vector<ledger_line> again;
  ASSERT_TRUE(wait_until(
    [&] {
      again.clear();
      std::map<std::string, int64_t> done_at;
      for (auto& l : read_ledger(ledger)) {
        if (l.run != run)
          continue;
        if (l.event == "done")
          done_at[l.node] = l.ns;
        else if (l.event == "start" && done_at.count(l.node))
          again.push_back(l);
      }
      return !again.empty();
    },
    10s));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].node, "first");
  EXPECT_EQ(again[0].attempt, "2");
  // Armed once: the next run runs nothing again.
  auto next = submit(wf);
  ASSERT_TRUE(completes(next, 30s));
  int starts = 0;
  for (auto& l : read_ledger(ledger))
    if (l.run == next && l.event == "start")
      ++starts;
  EXPECT_EQ(starts, 2);
}
