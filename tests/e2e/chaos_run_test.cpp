// `troupe chaos SCENARIO` run for real: its own etcd and members, the
// workload, the faults, the invariants and the report. One example scenario
// of 60 s runs whole; a build broken on purpose (--break rerun_completed)
// must fail the invariant it breaks and name the run.

#include "tests/e2e/chaos_fixture.hpp"
#include "tests/support/node_process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using nlohmann::json;
using troupe::test::chaos_examples;
using troupe::test::contains;
using troupe::test::process_options;

namespace {

struct ChaosRun : troupe::test::chaos_fixture {
  void SetUp() override {
    if (!troupe::test::etcd_on_path())
      GTEST_SKIP() << "etcd is not on PATH: run tools/bootstrap.sh";
  }

  /// The invariant named `name` in a JSON report.
  static json invariant(const json& report, const std::string& name) {
    for (auto& i : report.value("invariants", json::array()))
      if (i.value("name", "") == name)
        return i;
    return nullptr;
  }
};

} // namespace

TEST_F(ChaosRun, KillLeaderExampleHoldsEveryInvariant) {
  // examples/chaos/kill-leader.yaml: 600 runs over 60 s while the leader of
  // partition 0 is killed every 5 s and restarted 2 s later.
  auto report_file = (dir.path() / "report.json").string();
  auto r = troupe({"--json", "chaos", chaos_examples + "kill-leader.yaml",
                   "--report", report_file},
                  std::chrono::minutes{4});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto report = json::parse(r.out);
  EXPECT_TRUE(report.at("passed").get<bool>());
  // Every invariant was checked (the members wrote their ledgers).
  ASSERT_EQ(report.at("invariants").size(), 6u) << report.dump(2);
  for (auto& i : report["invariants"])
    EXPECT_EQ(i.at("result"), "pass") << i.dump(2);
  // The faults were injected and seen.
  size_t injected = 0, detected = 0;
  for (auto& f : report.at("faults")) {
    injected += f.at("outcome") == "injected";
    detected += f.at("detected_after_ms").is_number();
  }
  EXPECT_GE(injected, 8u) << report["faults"].dump(2);
  EXPECT_GE(detected, 8u) << report["faults"].dump(2);
  auto& runs = report.at("runs");
  EXPECT_EQ(runs.at("planned"), 600);
  EXPECT_GE(runs.at("accepted").get<int64_t>(), 500) << runs.dump(2);
  EXPECT_GT(report.at("ledger").at("lines").get<int64_t>(),
            runs.at("accepted").get<int64_t>());
  // --report wrote the same report.
  std::ifstream in{report_file};
  ASSERT_TRUE(in.good());
  EXPECT_EQ(json::parse(in), report);
}

TEST_F(ChaosRun, ABrokenBuildFailsTheRerunInvariantNamingTheRun) {
  // A fault hook that runs a completed node again, armed on every member:
  // the checks must catch it, exit 1, and name the run.
  dir.write("steps.yaml", "name: two\nnodes:\n  a:\n    kind: noop\n"
                          "  b:\n    kind: noop\n    after: [a]\n");
  auto file = dir.write("broken.yaml",
                        "name: broken\ncluster:\n  members: 3\n  config:\n"
                        "    cluster.partitions: 4\nworkload:\n"
                        "  workflows: [steps.yaml]\n  runs_per_second: 5\n"
                        "  count: 10\nfaults: []\ndeadline: 60s\n");
  auto r
    = troupe({"--json", "chaos", file.string(), "--break", "rerun_completed"},
             std::chrono::minutes{3});
  ASSERT_EQ(r.exit_code, 1) << r.out << r.err;
  auto report = json::parse(r.out);
  EXPECT_FALSE(report.at("passed").get<bool>());
  auto rerun = invariant(report, "no_completed_node_rerun");
  ASSERT_TRUE(rerun.is_object()) << report.dump(2);
  EXPECT_EQ(rerun.at("result"), "fail") << rerun.dump(2);
  ASSERT_FALSE(rerun.at("offenders").empty());
  // The run named is one the workload submitted, and the text says which
  // node ran again.
  auto named = rerun["offenders"][0].at("run").get<std::string>();
  EXPECT_FALSE(named.empty());
  EXPECT_TRUE(contains(rerun["offenders"][0].at("seen"), "after it completed"))
    << rerun.dump(2);
  // The other promises still hold: it is this one that broke.
  for (auto name : {"final_by_deadline", "none_lost", "one_run_per_key",
                    "replicas_identical"})
    EXPECT_EQ(invariant(report, name).value("result", ""), "pass")
      << name << ": " << report.dump(2);
  // The logs are kept for a failed run, and their folder named.
  EXPECT_TRUE(report.contains("logs_kept_in")) << report.dump(2);
}

TEST_F(ChaosRun, ABreakHookItDoesNotKnowExitsTwo) {
  auto r = troupe(
    {"chaos", chaos_examples + "kill-leader.yaml", "--break", "melt_cpu"},
    std::chrono::seconds{30});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--break")) << r.err;
}

namespace {

/// A node of its own, started with the fault hooks on and a ledger, for
/// `troupe chaos --target`.
struct ChaosTarget : troupe::test::node_process_fixture {
  process_options opts() override {
    auto o = node_process_fixture::opts();
    o.env["TROUPE_CHAOS_HOOKS"] = "1";
    o.env["TROUPE_CHAOS_LEDGER"] = (dir.path() / "ledgers" / "node").string();
    o.env["TMPDIR"] = dir.path().string();
    return o;
  }
};

} // namespace

TEST_F(ChaosTarget, RunsOnARunningClusterWithTheFaultsItCanInject) {
  std::filesystem::create_directories(dir.path() / "ledgers");
  start_node();
  dir.write("slow.yaml", "name: slow\nnodes:\n  a:\n    kind: noop\n"
                         "  b:\n    kind: sleep\n    after: [a]\n"
                         "    duration: 2s\n  c:\n    kind: noop\n"
                         "    after: [b]\n");
  auto file = dir.write(
    "target.yaml",
    "name: on-target\ncluster:\n  members: 1\n  replication: 1\n"
    "  min_insync: 1\nworkload:\n  workflows: [slow.yaml]\n"
    "  runs_per_second: 5\n  count: 10\nfaults:\n  - at: 1500ms\n"
    "    action: crash_actor\n    target: {owner_of: 5}\n  - at: 1600ms\n"
    "    action: slow_disk\n    target: m1\n    delay: 20ms\n"
    "    duration: 1s\ndeadline: 60s\n");
  time_limit = std::chrono::minutes{2};
  auto r = cli({"--json", "chaos", file.string(), "--target", address(),
                "--ledger-dir", (dir.path() / "ledgers").string()},
               token("admin"));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto report = json::parse(r.out);
  EXPECT_EQ(report.at("target"), address());
  ASSERT_EQ(report.at("faults").size(), 2u);
  for (auto& f : report["faults"])
    EXPECT_EQ(f.at("outcome"), "injected") << f.dump(2);
  // The crash restarted the run's actor from its journal, and the run
  // still completed once per node.
  EXPECT_EQ(report["runs"]["accepted"], 10);
  EXPECT_EQ(report["runs"]["final_states"]["completed"], 10);
  EXPECT_GE(report["ledger"]["lines"].get<int64_t>(), 30);
  for (auto& i : report["invariants"]) {
    // One copy of each partition: nothing to compare, and no epochs.
    if (i["name"] == "replicas_identical"
        || i["name"] == "no_attempt_on_fenced_member")
      EXPECT_EQ(i["result"], "not checked") << i.dump(2);
    else
      EXPECT_EQ(i["result"], "pass") << i.dump(2);
  }
}

TEST_F(ChaosTarget, RefusesFaultsOnProcessesItDidNotStart) {
  start_node();
  dir.write("one.yaml", "name: one\nnodes:\n  a:\n    kind: noop\n");
  auto file = dir.write("kill.yaml",
                        "cluster:\n  members: 1\n  replication: 1\n"
                        "  min_insync: 1\nworkload:\n  workflows: [one.yaml]\n"
                        "  count: 1\nfaults:\n  - at: 1s\n    action: kill\n"
                        "    target: m1\ndeadline: 30s\n");
  auto r = cli({"chaos", file.string(), "--target", address()}, token("admin"));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "faults[0]")) << r.err;
  EXPECT_TRUE(contains(r.err, "--target")) << r.err;
}
