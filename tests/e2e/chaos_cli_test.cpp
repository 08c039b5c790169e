// `troupe chaos --dry-run` as a child process: exit codes, the schedule as a
// table and as JSON, and errors with file, line and path.

#include "tests/e2e/chaos_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

using troupe::test::chaos_examples;
using troupe::test::contains;

namespace {

using ChaosCli = troupe::test::chaos_fixture;

} // namespace

TEST_F(ChaosCli, DryRunPrintsTheScheduleOfEachExample) {
  for (auto name :
       {"kill-leader", "stop-member", "partition-minority", "flapping-network",
        "slow-disk", "rolling-restart", "etcd-member-loss"}) {
    SCOPED_TRACE(name);
    auto r = troupe({"chaos", chaos_examples + name + ".yaml", "--dry-run"});
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "valid scenario")) << r.out;
    EXPECT_TRUE(contains(r.out, "seed 17:")) << r.out;
  }
  auto r = troupe({"chaos", chaos_examples + "kill-leader.yaml", "--dry-run"});
  // Every 5 s up to the workload's 60 s: 5s..55s.
  EXPECT_TRUE(contains(r.out, "11 faults scheduled")) << r.out;
  EXPECT_TRUE(contains(r.out, "leader_of: 0")) << r.out;
  EXPECT_TRUE(contains(r.out, "restart_after=2s")) << r.out;
}

TEST_F(ChaosCli, JsonScheduleFollowsTheSeed) {
  auto a = troupe({"chaos", chaos_examples + "flapping-network.yaml",
                   "--dry-run", "--json", "--seed", "5"});
  auto b = troupe({"chaos", chaos_examples + "flapping-network.yaml",
                   "--dry-run", "--json", "--seed", "5"});
  auto c = troupe({"chaos", chaos_examples + "flapping-network.yaml",
                   "--dry-run", "--json", "--seed", "6"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_EQ(a.out, b.out);
  auto ja = nlohmann::json::parse(a.out);
  auto jc = nlohmann::json::parse(c.out);
  EXPECT_EQ(ja.at("seed"), 5);
  EXPECT_EQ(ja.at("faults").size(), 14u); // every 4s below 60s
  EXPECT_EQ(ja.at("faults")[0].at("action"), "partition");
  EXPECT_TRUE(ja.at("faults")[0].at("random").get<bool>());
  std::vector<std::string> ta, tc;
  for (auto& f : ja.at("faults"))
    ta.push_back(f.at("target").get<std::string>());
  for (auto& f : jc.at("faults"))
    tc.push_back(f.at("target").get<std::string>());
  EXPECT_NE(ta, tc);
}

TEST_F(ChaosCli, BadScenarioExitsTwoWithLineAndPath) {
  dir.write("steps.yaml", "name: s\nnodes:\n  a:\n    kind: noop\n");
  auto file = dir.write("bad.yaml",
                        "workload:\n  workflows: [steps.yaml]\n  count: 10\n"
                        "faults:\n  - at: 1s\n    action: kill\n"
                        "    target: m8\n  - at: 2s\n    action: melt\n"
                        "    target: m1\ndeadline: 60s\n");
  auto r = troupe({"chaos", file.string(), "--dry-run"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "bad.yaml:7:")) << r.err;
  EXPECT_TRUE(contains(r.err, "faults[0].target")) << r.err;
  EXPECT_TRUE(contains(r.err, "bad.yaml:9:")) << r.err;
  EXPECT_TRUE(contains(r.err, "faults[1].action")) << r.err;
  EXPECT_TRUE(contains(r.err, "2 errors")) << r.err;

  auto j = troupe({"chaos", file.string(), "--dry-run", "--json"});
  EXPECT_EQ(j.exit_code, 2);
  auto report = nlohmann::json::parse(j.out);
  EXPECT_FALSE(report.at("valid").get<bool>());
  EXPECT_EQ(report.at("errors").size(), 2u);
}

TEST_F(ChaosCli, MissingFileExitsTwoNamingIt) {
  auto r = troupe({"chaos", "no-such-scenario.yaml", "--dry-run"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "no-such-scenario.yaml")) << r.err;
}

TEST_F(ChaosCli, ABadScenarioIsNotRun) {
  // Without --dry-run too, a bad scenario is refused before anything starts.
  dir.write("steps.yaml", "name: s\nnodes:\n  a:\n    kind: noop\n");
  auto file = dir.write("bad.yaml",
                        "workload:\n  workflows: [steps.yaml]\n  count: 10\n"
                        "faults:\n  - at: 1s\n    action: kill\n"
                        "    target: m8\ndeadline: 60s\n");
  auto r = troupe({"chaos", file.string()});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "faults[0].target")) << r.err;
  EXPECT_FALSE(contains(r.err, "starting")) << r.err;
}

TEST_F(ChaosCli, ASeedThatIsNotAWholeNumberExitsTwo) {
  for (std::string bad : {"-1", "x", "1.5"}) {
    auto r = troupe({"chaos", chaos_examples + "kill-leader.yaml", "--dry-run",
                     "--seed", bad});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(contains(r.err, "--seed")) << bad << ": " << r.err;
  }
}

TEST_F(ChaosCli, OptionsThatCannotWorkExitTwoBeforeAnythingStarts) {
  // A report that cannot be written is found out before the run, not after.
  auto r = troupe({"chaos", chaos_examples + "kill-leader.yaml", "--report",
                   (dir.path() / "no-such-folder" / "r.json").string()});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "--report")) << r.err;
  EXPECT_FALSE(contains(r.err, "starting")) << r.err;
  // --ledger-dir is for a cluster troupe chaos did not start.
  auto l = troupe({"chaos", chaos_examples + "kill-leader.yaml", "--ledger-dir",
                   dir.path().string()});
  EXPECT_EQ(l.exit_code, 2) << l.out << l.err;
  EXPECT_TRUE(contains(l.err, "--ledger-dir")) << l.err;
  // A partition needs network namespaces, which --loopback gives up.
  auto p = troupe(
    {"chaos", chaos_examples + "partition-minority.yaml", "--loopback"});
  EXPECT_EQ(p.exit_code, 2) << p.out << p.err;
  EXPECT_TRUE(contains(p.err, "faults[0]")) << p.err;
}
