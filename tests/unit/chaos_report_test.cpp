// What `troupe chaos` concludes from what it gathered: the ledger's parser,
// each invariant over small hand-made ledgers and submissions, the retry
// count, and the report as JSON and as text. No cluster is started.

#include "tools/chaos/report.hpp"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

using namespace troupe::chaos;
using verdict = invariant_result::verdict;
using json = nlohmann::json;

namespace {

constexpr int64_t ms = 1'000'000;

ledger_line line(int64_t ns, std::string member, std::string event,
                 std::string run, std::string node, int64_t attempt = -1,
                 int64_t partition = -1, int64_t epoch = -1) {
  ledger_line l;
  l.ns = ns;
  l.member = std::move(member);
  l.event = std::move(event);
  l.run = std::move(run);
  l.node = std::move(node);
  l.attempt = attempt;
  l.partition = partition;
  l.epoch = epoch;
  return l;
}

/// A `lead` line: `member` leads `partition` with `epoch`.
ledger_line lead(int64_t ns, std::string member, int64_t partition,
                 int64_t epoch) {
  return line(ns, std::move(member), "lead", "", "", -1, partition, epoch);
}

submission sub(std::string run_id, std::string key, std::string final_state) {
  submission s;
  s.key = std::move(key);
  s.run_id = std::move(run_id);
  if (!s.run_id.empty())
    s.ids_seen.insert(s.run_id);
  s.final_state = std::move(final_state);
  return s;
}

/// A submission no answer named a run for.
submission refused(std::string key, std::string code) {
  submission s;
  s.key = std::move(key);
  s.refused = std::move(code);
  return s;
}

std::vector<std::string> offender_names(const invariant_result& r) {
  std::vector<std::string> out;
  for (auto& [what, why] : r.offenders)
    out.push_back(what);
  return out;
}

/// What was seen of `name`, "" when it is not an offender.
std::string seen(const invariant_result& r, const std::string& name) {
  for (auto& [what, why] : r.offenders)
    if (what == name)
      return why;
  return {};
}

using names = std::vector<std::string>;

} // namespace

// -- parse_ledger -------------------------------------------------------------

TEST(ChaosReport, ParseLedgerReadsEveryField) {
  size_t bad = 99;
  auto out = parse_ledger("100 m1 start r1 n1 2 3 4\n"
                          "200 m2 lead - - - 5 6\n",
                          &bad);
  EXPECT_EQ(bad, 0u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].ns, 100);
  EXPECT_EQ(out[0].member, "m1");
  EXPECT_EQ(out[0].event, "start");
  EXPECT_EQ(out[0].run, "r1");
  EXPECT_EQ(out[0].node, "n1");
  EXPECT_EQ(out[0].attempt, 2);
  EXPECT_EQ(out[0].partition, 3);
  EXPECT_EQ(out[0].epoch, 4);
  // `-` reads as "" in a text field and -1 in a number.
  EXPECT_EQ(out[1].ns, 200);
  EXPECT_EQ(out[1].member, "m2");
  EXPECT_EQ(out[1].event, "lead");
  EXPECT_EQ(out[1].run, "");
  EXPECT_EQ(out[1].node, "");
  EXPECT_EQ(out[1].attempt, -1);
  EXPECT_EQ(out[1].partition, 5);
  EXPECT_EQ(out[1].epoch, 6);
}

TEST(ChaosReport, ParseLedgerSkipsAndCountsBadLines) {
  size_t bad = 0;
  auto out = parse_ledger("100 m1 start r1 n1 1 0 1\n"
                          "150 m1 sta\n"                 // cut short
                          "1x0 m1 start r1 n1 1 0 1\n"   // ns
                          "- m1 start r1 n1 1 0 1\n"     // no ns
                          "160 m1 start r1 n1 one 0 1\n" // attempt
                          "170 m1 start r1 n1 1 p 1\n"   // partition
                          "180 m1 start r1 n1 1 0 1e\n"  // epoch
                          "190 m1 start r1 n1 1 0 1 9\n" // one too many
                          "195 m1 start r1 n1 1 0\n"     // one too few
                          "\n"                           // empty: no line
                          "200 m2 done r1 n1 1 0 1\n"
                          "300 m2 start r2 n", // cut at the end
                          &bad);
  EXPECT_EQ(bad, 9u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].ns, 100);
  EXPECT_EQ(out[0].event, "start");
  EXPECT_EQ(out[1].ns, 200);
  EXPECT_EQ(out[1].event, "done");
  EXPECT_EQ(out[1].member, "m2");
}

TEST(ChaosReport, ParseLedgerSortsByTime) {
  // Members' ledgers are concatenated, so times interleave.
  auto out = parse_ledger("300 m1 start r1 n1 1 0 1\n"
                          "100 m2 lead - - - 0 1\n"
                          "200 m1 done r1 n0 1 0 1\n"
                          "200 m3 done r1 n9 1 0 1\n"
                          "50 m3 lead - - - 1 1\n");
  ASSERT_EQ(out.size(), 5u);
  EXPECT_EQ(out[0].ns, 50);
  EXPECT_EQ(out[1].ns, 100);
  EXPECT_EQ(out[2].ns, 200);
  EXPECT_EQ(out[3].ns, 200);
  EXPECT_EQ(out[4].ns, 300);
  // Lines at the same time keep their order.
  EXPECT_EQ(out[2].node, "n0");
  EXPECT_EQ(out[3].node, "n9");
}

TEST(ChaosReport, ParseLedgerOfNothing) {
  size_t bad = 99;
  EXPECT_TRUE(parse_ledger("", &bad).empty());
  EXPECT_EQ(bad, 0u);
  bad = 99;
  EXPECT_TRUE(parse_ledger("\n\n", &bad).empty());
  EXPECT_EQ(bad, 0u);
  // `bad` is optional.
  EXPECT_EQ(parse_ledger("1 m1 start r1 n1 1 0 1\nx\n").size(), 1u);
}

// -- check_final --------------------------------------------------------------

TEST(ChaosReport, FinalPassesOnEveryFinalState) {
  auto r = check_final({sub("r1", "k1", "completed"), sub("r2", "k2", "failed"),
                        sub("r3", "k3", "cancelled")});
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "3 accepted run(s)");
}

TEST(ChaosReport, FinalFailsNamingRunsNotEnded) {
  auto r = check_final({sub("r1", "k1", "completed"),
                        sub("r2", "k2", "running"), sub("r3", "k3", "")});
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r2", "r3"}));
  EXPECT_EQ(seen(r, "r2"), "still running");
  EXPECT_EQ(seen(r, "r3"), "still unasked");
}

TEST(ChaosReport, FinalIgnoresRefusedSubmissions) {
  auto r = check_final({sub("r1", "k1", "completed"),
                        refused("k2", "overloaded"), refused("k3", "")});
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "1 accepted run(s)");
}

// -- check_not_lost -----------------------------------------------------------

TEST(ChaosReport, NotLostFailsOnUnknownRun) {
  auto gone = refused("k3", "timeout");
  gone.final_state = "unknown"; // no run: not an accepted run lost
  auto r = check_not_lost(
    {sub("r1", "k1", "completed"), sub("r2", "k2", "unknown"), gone});
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r2"}));
  EXPECT_NE(seen(r, "r2").find("k2"), std::string::npos) << seen(r, "r2");
  EXPECT_EQ(r.detail, "2 accepted run(s) asked for");

  auto ok = check_not_lost({sub("r1", "k1", "completed"), gone});
  EXPECT_EQ(ok.outcome, verdict::pass);
  EXPECT_TRUE(ok.offenders.empty());
}

// -- check_no_rerun -----------------------------------------------------------

TEST(ChaosReport, NoRerunFailsOnStartAfterDone) {
  std::vector<submission> subs{sub("r1", "k1", "completed"),
                               sub("r2", "k2", "completed")};
  std::vector<ledger_line> ledger{
    line(100 * ms, "m1", "start", "r1", "fetch", 1, 0, 1),
    line(200 * ms, "m1", "done", "r1", "fetch", 1, 0, 1),
    line(210 * ms, "m1", "start", "r2", "fetch", 1, 0, 1),
    line(220 * ms, "m1", "done", "r2", "fetch", 1, 0, 1),
    line(250 * ms, "m3", "start", "r1", "fetch", 2, 0, 2),
  };
  auto r = check_no_rerun(ledger, subs);
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r1"}));
  auto why = seen(r, "r1");
  EXPECT_NE(why.find("'fetch'"), std::string::npos) << why;
  EXPECT_NE(why.find("m3"), std::string::npos) << why;
  EXPECT_NE(why.find("attempt 2"), std::string::npos) << why;
  EXPECT_NE(why.find("50ms after"), std::string::npos) << why;
}

TEST(ChaosReport, NoRerunFailsOnDoneTwice) {
  std::vector<ledger_line> ledger{
    line(100, "m1", "start", "r1", "a", 1, 0, 1),
    line(200, "m1", "done", "r1", "a", 1, 0, 1),
    line(300, "m2", "done", "r1", "a", 1, 0, 2),
  };
  auto r = check_no_rerun(ledger, {sub("r1", "k1", "completed")});
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r1"}));
  auto why = seen(r, "r1");
  EXPECT_NE(why.find("'a'"), std::string::npos) << why;
  EXPECT_NE(why.find("twice"), std::string::npos) << why;
  EXPECT_NE(why.find("m2"), std::string::npos) << why;
}

TEST(ChaosReport, NoRerunPassesOnRetriesBeforeDone) {
  std::vector<ledger_line> ledger{
    line(100, "m1", "start", "r1", "a", 1, 0, 1),
    line(150, "m2", "start", "r1", "a", 2, 0, 2), // a retry after a kill
    line(200, "m2", "done", "r1", "a", 2, 0, 2),
    line(250, "m2", "start", "r1", "b", 1, 0, 2), // another node
    line(300, "m2", "done", "r1", "b", 1, 0, 2),
    line(350, "m2", "start", "r2", "a", 1, 0, 2), // the same node, another run
    line(400, "m2", "done", "r2", "a", 1, 0, 2),
    lead(450, "m3", 0, 3),
  };
  auto r = check_no_rerun(
    ledger, {sub("r1", "k1", "completed"), sub("r2", "k2", "completed")});
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "4 attempt(s) and 3 completion(s) in the ledger");
}

TEST(ChaosReport, NoRerunIgnoresRunsNotSubmitted) {
  // r9 is no accepted run's (a run of another client, or of a refused
  // submission), so its lines are no evidence either way.
  std::vector<ledger_line> ledger{
    line(100, "m1", "start", "r1", "a", 1, 0, 1),
    line(200, "m1", "done", "r1", "a", 1, 0, 1),
    line(300, "m1", "start", "r9", "a", 1, 0, 1),
    line(400, "m1", "done", "r9", "a", 1, 0, 1),
    line(500, "m2", "start", "r9", "a", 2, 0, 2),
    line(600, "m2", "done", "r9", "a", 2, 0, 2),
  };
  auto r = check_no_rerun(
    ledger, {sub("r1", "k1", "completed"), refused("k2", "overloaded")});
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "1 attempt(s) and 1 completion(s) in the ledger");
}

TEST(ChaosReport, NoRerunWithoutLedgerIsNotChecked) {
  auto r = check_no_rerun({}, {sub("r1", "k1", "completed")});
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_FALSE(r.detail.empty());
}

// -- check_one_run_per_key ----------------------------------------------------

TEST(ChaosReport, OneRunPerKeyFailsOnTwoIdsForAKey) {
  auto twice = sub("r1", "k1", "completed");
  twice.ids_seen.insert("r1b");
  auto r = check_one_run_per_key({twice, sub("r2", "k2", "completed")}, {},
                                 std::set<std::string>{"r1", "r1b", "r2"});
  EXPECT_EQ(r.outcome, verdict::fail);
  ASSERT_FALSE(r.offenders.empty());
  EXPECT_EQ(r.offenders[0].first, "r1");
  auto why = r.offenders[0].second;
  EXPECT_NE(why.find("k1"), std::string::npos) << why;
  EXPECT_NE(why.find("r1b"), std::string::npos) << why;
  EXPECT_EQ(seen(r, "r2"), "");
}

TEST(ChaosReport, OneRunPerKeyFailsWhenSentAgainMakesAnotherRun) {
  auto r = check_one_run_per_key(
    {sub("r1", "k1", "completed"), sub("r2", "k2", "completed"),
     sub("r3", "k3", "completed")},
    // k2 named its run again; k3's second send failed, which proves nothing.
    {{"k1", "r7"}, {"k2", "r2"}, {"k3", ""}}, std::nullopt);
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r1"}));
  auto why = seen(r, "r1");
  EXPECT_NE(why.find("k1"), std::string::npos) << why;
  EXPECT_NE(why.find("r7"), std::string::npos) << why;
}

TEST(ChaosReport, OneRunPerKeyFailsOnAListedRunNoKeyMade) {
  auto r = check_one_run_per_key(
    {sub("r1", "k1", "completed"), sub("r2", "k2", "completed"),
     refused("k3", "overloaded")},
    {{"k1", "r1"}, {"k2", "r2"}}, std::set<std::string>{"r1", "r2", "stray"});
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"stray"}));
  EXPECT_NE(r.detail.find("3 run(s) listed"), std::string::npos) << r.detail;
}

TEST(ChaosReport, OneRunPerKeyPassesWhenAllIsWell) {
  auto r = check_one_run_per_key(
    {sub("r1", "k1", "completed"), sub("r2", "k2", "failed"),
     refused("k3", "overloaded")},
    {{"k1", "r1"}, {"k2", "r2"}}, std::set<std::string>{"r1", "r2"});
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "2 key(s), 2 run(s) listed");
}

// -- check_copies -------------------------------------------------------------

TEST(ChaosReport, CopiesPassWhenDigestsAreEqual) {
  json d0{{"offset", 42}, {"digest", "abc"}};
  json d1{{"offset", 7}, {"digest", "def"}};
  auto r = check_copies(
    {{0, {{"m1", d0}, {"m2", d0}, {"m3", d0}}}, {1, {{"m2", d1}, {"m3", d1}}}},
    {}, true);
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "2 partition(s) compared");
}

TEST(ChaosReport, CopiesFailNamingThePartitionThatDiffers) {
  json d{{"offset", 42}, {"digest", "abc"}};
  json other{{"offset", 42}, {"digest", "abd"}};
  auto r = check_copies(
    {{0, {{"m1", d}, {"m2", d}}}, {3, {{"m1", d}, {"m2", other}, {"m3", d}}}},
    {}, true);
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"partition 3"}));
  auto why = seen(r, "partition 3");
  EXPECT_NE(why.find("m2"), std::string::npos) << why;
  EXPECT_NE(why.find("abd"), std::string::npos) << why;
}

TEST(ChaosReport, CopiesNotCheckedWhenNothingCouldBeCompared) {
  json d{{"digest", "abc"}};
  auto r = check_copies({{0, {{"m1", d}}}}, {0, 1}, true);
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_NE(r.detail.find("0 partition(s) compared"), std::string::npos)
    << r.detail;
  EXPECT_NE(r.detail.find("2 partition(s) had replicas that did not answer"),
            std::string::npos)
    << r.detail;

  // With one partition compared, the others' silence does not void it.
  auto some = check_copies({{0, {{"m1", d}, {"m2", d}}}}, {1}, true);
  EXPECT_EQ(some.outcome, verdict::pass);
}

TEST(ChaosReport, CopiesDoNotCompareASingleCopy) {
  json d{{"digest", "abc"}};
  json lone{{"digest", "zzz"}};
  auto r = check_copies({{0, {{"m1", d}, {"m2", d}}}, {1, {{"m3", lone}}}}, {},
                        false);
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_NE(r.detail.find("1 partition(s) compared"), std::string::npos)
    << r.detail;
  // Not settled: the detail says so.
  EXPECT_NE(r.detail.find("did not settle"), std::string::npos) << r.detail;
}

TEST(ChaosReport, CopiesOfOneReplicaEachAreNotChecked) {
  // Replication 1: nothing to compare, which is not a pass.
  json d{{"digest", "abc"}};
  auto r = check_copies({{0, {{"m1", d}}}, {1, {{"m2", d}}}}, {}, true);
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_NE(r.detail.find("0 partition(s) compared"), std::string::npos)
    << r.detail;
}

// -- check_fencing ------------------------------------------------------------

TEST(ChaosReport, FencingFailsOnStartUnderAnOldEpoch) {
  std::vector<ledger_line> ledger{
    lead(100, "mA", 0, 1),
    line(150, "mA", "start", "r1", "a", 1, 0, 1), // while A leads: fine
    lead(200, "mB", 0, 2),
    line(250, "mB", "start", "r2", "a", 1, 0, 2), // the new leader: fine
    line(300, "mA", "start", "r3", "b", 4, 0, 1), // A, fenced
  };
  auto r = check_fencing(ledger);
  EXPECT_EQ(r.outcome, verdict::fail);
  EXPECT_EQ(offender_names(r), (names{"r3"}));
  auto why = seen(r, "r3");
  EXPECT_NE(why.find("'b'"), std::string::npos) << why;
  EXPECT_NE(why.find("attempt 4"), std::string::npos) << why;
  EXPECT_NE(why.find("mA under epoch 1 of partition 0"), std::string::npos)
    << why;
  EXPECT_NE(why.find("mB led it with epoch 2"), std::string::npos) << why;
  EXPECT_EQ(r.detail, "3 attempt(s) run by their partition's leader checked");
}

TEST(ChaosReport, FencingPassesOnStartBeforeTheNewLead) {
  std::vector<ledger_line> ledger{
    lead(100, "mA", 0, 1),
    line(150, "mA", "start", "r1", "a", 1, 0, 1),
    lead(200, "mB", 0, 2),
    line(250, "mB", "start", "r1", "a", 2, 0, 2),
    // A leads another partition, whose epoch is its own.
    lead(260, "mA", 1, 1),
    line(300, "mA", "start", "r2", "a", 1, 1, 1),
  };
  auto r = check_fencing(ledger);
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "3 attempt(s) run by their partition's leader checked");
}

TEST(ChaosReport, FencingDoesNotCheckRemoteSteps) {
  // mC never led partition 0: its attempt runs a step for the leader, under
  // the leader's epoch, and fencing mC is not what epochs do.
  std::vector<ledger_line> ledger{
    lead(100, "mA", 0, 1),
    lead(200, "mB", 0, 2),
    line(300, "mC", "start", "r1", "a", 1, 0, 1),
  };
  auto r = check_fencing(ledger);
  // Nothing checked is not a pass.
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_EQ(r.detail, "0 attempt(s) run by their partition's leader checked");
}

TEST(ChaosReport, FencingWithoutLedgerIsNotChecked) {
  auto r = check_fencing({});
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_TRUE(r.offenders.empty());
}

// -- count_retries ------------------------------------------------------------

namespace {

std::vector<ledger_line> retry_ledger() {
  return {
    line(100, "m1", "start", "r1", "a", 1, 0, 1), // first of r1/a
    line(110, "m1", "start", "r1", "b", 1, 0, 1), // first of r1/b
    line(120, "m1", "start", "r2", "a", 1, 0, 1), // first of r2/a
    line(130, "m1", "done", "r1", "b", 1, 0, 1),
    line(200, "m2", "start", "r1", "a", 2, 0, 2), // retry
    line(300, "m2", "start", "r1", "a", 3, 0, 2), // retry
    line(310, "m2", "start", "r3", "a", 1, 0, 2), // first of r3/a
    line(400, "m2", "start", "r2", "a", 2, 0, 2), // retry
    lead(500, "m3", 0, 3),
  };
}

} // namespace

TEST(ChaosReport, CountRetriesSkipsTheFirstStartOfEachNode) {
  EXPECT_EQ(count_retries(retry_ledger(), {}), 3);
  EXPECT_EQ(count_retries({}, {}), 0);
}

TEST(ChaosReport, CountRetriesFromATime) {
  // The first starts before 250 still count as first.
  EXPECT_EQ(count_retries(retry_ledger(), {}, 250), 2);
  EXPECT_EQ(count_retries(retry_ledger(), {}, 300), 2);
  EXPECT_EQ(count_retries(retry_ledger(), {}, 301), 1);
  EXPECT_EQ(count_retries(retry_ledger(), {}, 401), 0);
}

TEST(ChaosReport, CountRetriesOfSomeRuns) {
  EXPECT_EQ(count_retries(retry_ledger(), {"r1"}), 2);
  EXPECT_EQ(count_retries(retry_ledger(), {"r2"}), 1);
  EXPECT_EQ(count_retries(retry_ledger(), {"r3"}), 0);
  EXPECT_EQ(count_retries(retry_ledger(), {"r2", "r3"}), 1);
  EXPECT_EQ(count_retries(retry_ledger(), {"r1"}, 250), 1);
}

// -- to_json / to_text --------------------------------------------------------

namespace {

constexpr int64_t t0 = 5'000 * ms;

report failing_report() {
  report r;
  r.scenario = "kill-leader";
  r.file = "kill-leader.yaml";
  r.seed = 7;
  r.members = 3;
  r.etcd_members = 1;
  r.runs_planned = 3;
  r.workload_ms = 10'000;
  r.deadline_ms = 30'000;
  r.elapsed_ms = 12'345;
  fault_record f;
  f.at_ms = 2'000;
  f.action = "kill";
  f.target = "leader_of: 0";
  f.resolved = "m2";
  f.outcome = "injected";
  f.injected_ns = t0 + 2'000 * ms;
  f.detected_ns = f.injected_ns + 1'500 * ms;
  f.ended = "restarted";
  f.ended_ns = t0 + 4'000 * ms;
  f.partitions = {0};
  f.affected = {"run-b"};
  f.retries = 2;
  r.faults.push_back(f);
  r.runs = {sub("run-a", "k1", "completed"), sub("run-b", "k2", "completed"),
            refused("k3", "overloaded")};
  r.retries = 2;
  r.ledger_lines = 12;
  r.ledger_bad_lines = 1;
  r.invariants.push_back(check_final(r.runs));
  std::vector<ledger_line> ledger{
    line(t0 + 1'000 * ms, "m2", "start", "run-b", "a", 1, 0, 1),
    line(t0 + 1'100 * ms, "m2", "done", "run-b", "a", 1, 0, 1),
    line(t0 + 3'000 * ms, "m1", "start", "run-b", "a", 2, 0, 2),
  };
  r.invariants.push_back(check_no_rerun(ledger, r.runs));
  r.invariants.push_back(check_fencing({}));
  return r;
}

} // namespace

TEST(ChaosReport, JsonOfAFailingReport) {
  auto r = failing_report();
  ASSERT_FALSE(r.passed());
  auto j = to_json(r, t0);
  ASSERT_EQ(j["faults"].size(), 1u);
  auto& f = j["faults"][0];
  EXPECT_EQ(f["action"], "kill");
  EXPECT_EQ(f["resolved"], "m2");
  EXPECT_EQ(f["injected_ms"], 2'000);
  EXPECT_EQ(f["detected_after_ms"], 1'500);
  EXPECT_TRUE(f["resumed_after_ms"].is_null());
  EXPECT_EQ(f["ended_ms"], 4'000);
  EXPECT_EQ(f["affected_runs"], json::array({"run-b"}));
  EXPECT_EQ(f["retries"], 2);
  ASSERT_EQ(j["invariants"].size(), 3u);
  EXPECT_EQ(j["invariants"][0]["result"], "pass");
  EXPECT_EQ(j["invariants"][1]["name"], "no_completed_node_rerun");
  EXPECT_EQ(j["invariants"][1]["result"], "fail");
  ASSERT_EQ(j["invariants"][1]["offenders"].size(), 1u);
  EXPECT_EQ(j["invariants"][1]["offenders"][0]["run"], "run-b");
  EXPECT_EQ(j["invariants"][2]["result"], "not checked");
  EXPECT_EQ(j["passed"], false);
  EXPECT_EQ(j["runs"]["planned"], 3);
  EXPECT_EQ(j["runs"]["submitted"], 3);
  EXPECT_EQ(j["runs"]["accepted"], 2);
  EXPECT_EQ(j["runs"]["refused"]["overloaded"], 1);
  EXPECT_EQ(j["runs"]["final_states"]["completed"], 2);
  EXPECT_EQ(j["seed"], 7);
  EXPECT_EQ(j["ledger"]["lines"], 12);
  EXPECT_EQ(j["ledger"]["bad_lines"], 1);
  EXPECT_FALSE(j.contains("target"));
}

TEST(ChaosReport, TextOfAFailingReport) {
  auto text = to_text(failing_report(), t0);
  EXPECT_NE(text.find("FAIL  no_completed_node_rerun"), std::string::npos)
    << text;
  EXPECT_NE(text.find("run-b: node 'a' started again"), std::string::npos)
    << text;
  EXPECT_NE(text.find("1 invariant violated"), std::string::npos) << text;
  EXPECT_EQ(text.find("every invariant holds"), std::string::npos) << text;
  // The fault's row: its target as resolved and as written, and detection.
  EXPECT_NE(text.find("m2 (leader_of: 0)"), std::string::npos) << text;
  EXPECT_NE(text.find("+1500ms"), std::string::npos) << text;
  EXPECT_NE(text.find("3 submitted, 2 accepted, 1 refused (overloaded)"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("ledger: 12 line(s), 1 cut short"), std::string::npos)
    << text;
}

TEST(ChaosReport, TextOfAPassingReport) {
  auto r = failing_report();
  r.invariants.erase(r.invariants.begin() + 1);
  ASSERT_TRUE(r.passed());
  EXPECT_EQ(to_json(r, t0)["passed"], true);
  auto text = to_text(r, t0);
  EXPECT_NE(text.find("every invariant holds"), std::string::npos) << text;
  EXPECT_EQ(text.find("FAIL"), std::string::npos) << text;
  EXPECT_EQ(text.find("violated"), std::string::npos) << text;
  EXPECT_NE(text.find("PASS  final_by_deadline"), std::string::npos) << text;
}

TEST(ChaosReport, ReportOfNothing) {
  // A scenario whose cluster never came up: no faults, runs or invariants.
  report r;
  r.file = "empty.yaml";
  ASSERT_TRUE(r.passed());
  auto j = to_json(r, 0);
  EXPECT_EQ(j["runs"]["accepted"], 0);
  EXPECT_TRUE(j["runs"]["refused"].empty());
  EXPECT_TRUE(j["faults"].is_array());
  EXPECT_TRUE(j["faults"].empty());
  EXPECT_EQ(j["passed"], true);
  auto text = to_text(r, 0);
  EXPECT_NE(text.find("chaos: empty.yaml (seed 0)"), std::string::npos) << text;
  EXPECT_NE(text.find("Faults\n  none\n"), std::string::npos) << text;
  EXPECT_NE(text.find("0 submitted, 0 accepted\n"), std::string::npos) << text;
  EXPECT_NE(text.find("final states: none"), std::string::npos) << text;
  EXPECT_NE(text.find("every invariant holds"), std::string::npos) << text;
}

TEST(ChaosReport, NoRerunWithNoLineOfAnAcceptedRunIsNotChecked) {
  std::vector<ledger_line> ledger{
    line(300, "m1", "start", "r9", "a", 1, 0, 1),
  };
  auto r = check_no_rerun(ledger, {sub("r1", "k1", "completed")});
  EXPECT_EQ(r.outcome, verdict::not_checked);
}

TEST(ChaosReport, OneRunPerKeyWithoutTheWholeListIsNotChecked) {
  auto r = check_one_run_per_key({sub("r1", "k1", "completed")}, {{"k1", "r1"}},
                                 std::nullopt);
  EXPECT_EQ(r.outcome, verdict::not_checked);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_NE(r.detail.find("could not be had"), std::string::npos) << r.detail;
  // A listed entry without an id names no run.
  auto whole
    = check_one_run_per_key({sub("r1", "k1", "completed")}, {{"k1", "r1"}},
                            std::set<std::string>{"r1", ""});
  EXPECT_EQ(whole.outcome, verdict::pass);
}

TEST(ChaosReport, CopiesAtDifferentAppliedOffsetsAreBehindNotDifferent) {
  json ahead{{"applied", 12}, {"digest", "abc"}};
  json behind{{"applied", 10}, {"digest", "xyz"}};
  json same{{"applied", 7}, {"digest", "d"}};
  auto r = check_copies(
    {{0, {{"m1", ahead}, {"m2", behind}}}, {1, {{"m1", same}, {"m2", same}}}},
    {}, false);
  EXPECT_EQ(r.outcome, verdict::pass);
  EXPECT_TRUE(r.offenders.empty());
  EXPECT_NE(r.detail.find("partition(s) 0 had copies at different applied"),
            std::string::npos)
    << r.detail;
  // At the same offset, different digests are a divergence.
  json twin{{"applied", 12}, {"digest", "abd"}};
  auto bad = check_copies({{0, {{"m1", ahead}, {"m2", twin}}}}, {}, true);
  EXPECT_EQ(bad.outcome, verdict::fail);
}

TEST(ChaosReport, NoRerunUsesTheJournalsWhereTheLedgerHasNoDone) {
  // The `done` line of r1's node a was never written (its member was
  // killed after the ack); the journal says attempt 1 completed it, so an
  // attempt 2 ran it again.
  std::vector<ledger_line> ledger{
    line(100, "m1", "start", "r1", "a", 1, 0, 1),
    line(900, "m2", "start", "r1", "a", 2, 0, 2),
  };
  journal_completions journals{{{"r1", "a"}, {1, 1}}};
  auto subs = std::vector<submission>{sub("r1", "k1", "completed")};
  auto r = check_no_rerun(ledger, subs, &journals);
  EXPECT_EQ(r.outcome, verdict::fail);
  ASSERT_EQ(r.offenders.size(), 1u);
  EXPECT_NE(r.offenders[0].second.find("completed by attempt 1"),
            std::string::npos)
    << r.offenders[0].second;
  // Without the journals, the ledger alone cannot see it.
  EXPECT_EQ(check_no_rerun(ledger, subs).outcome, verdict::pass);
  // The attempt that completed it, and those before, are no rerun.
  journal_completions second{{{"r1", "a"}, {2, 1}}};
  EXPECT_EQ(check_no_rerun(ledger, subs, &second).outcome, verdict::pass);
  // A node completed twice in its journal is.
  journal_completions twice{{{"r1", "a"}, {2, 2}}};
  auto t = check_no_rerun(ledger, subs, &twice);
  EXPECT_EQ(t.outcome, verdict::fail);
  EXPECT_NE(t.offenders[0].second.find("2 times in its journal"),
            std::string::npos);
}
