// Chaos scenario files: every example parses, each kind of bad scenario is
// reported at the right path and line, and the schedule depends on the seed
// alone.

#include "tools/chaos/scenario.hpp"
#include "tools/chaos/schedule.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

using namespace troupe::chaos;
using namespace std::chrono_literals;

namespace {

const std::filesystem::path examples
  = std::filesystem::path{TROUPE_SOURCE_DIR} / "examples" / "chaos";

scenario_outcome parse(const std::string& text) {
  return parse_scenario(text, examples);
}

std::string describe(const scenario_outcome& o) {
  std::string out;
  for (auto& d : o.errors)
    out += d.to_string("scenario") + "\n";
  return out;
}

} // namespace

TEST(ChaosScenario, EveryExampleIsValid) {
  std::vector<std::string> names;
  for (auto& entry : std::filesystem::directory_iterator{examples}) {
    auto name = entry.path().filename().string();
    if (name == "steps.yaml")
      continue;
    names.push_back(name);
    auto o = load_scenario_file(entry.path());
    EXPECT_TRUE(o.ok()) << name << ":\n" << describe(o);
    if (!o.ok())
      continue;
    schedule plan;
    EXPECT_EQ(make_schedule(*o.value, default_seed, plan), "") << name;
    EXPECT_FALSE(plan.faults.empty()) << name;
  }
  // The seven scenarios the examples promise.
  EXPECT_EQ(names.size(), 7u);
}

TEST(ChaosScenario, ReadsEveryField) {
  auto o = parse(R"(name: all
cluster:
  members: 5
  etcd_members: 3
  replication: 3
  min_insync: 2
  config:
    cluster.partitions: 16
    engine.max_restarts: 50
workload:
  workflows: [steps.yaml]
  inputs: {order: o-9}
  runs_per_second: 4
  count: 100
faults:
  - every: 5s
    action: kill
    target: {leader_of: 15}
    restart_after: 1s
  - at: 3s
    action: clock_jump
    target: m5
    offset: -2s
  - at: 4s
    action: partition
    members: [[m1], [m2, m3, m4, m5, etcd]]
    duration: 2s
  - at: 6s
    action: kill_etcd
    target: etcd3
deadline: 60s
)");
  ASSERT_TRUE(o.ok()) << describe(o);
  auto& s = *o.value;
  EXPECT_EQ(s.name, "all");
  EXPECT_EQ(s.cluster.members, 5);
  EXPECT_EQ(s.cluster.etcd_members, 3);
  EXPECT_EQ(s.cluster.partitions, 16);
  EXPECT_EQ(s.cluster.config.at("engine.max_restarts"), "50");
  EXPECT_EQ(s.workload.total_runs(), 100);
  EXPECT_EQ(s.workload.end(), 25s);
  EXPECT_EQ(s.workload.inputs.at("order"), "o-9");
  ASSERT_EQ(s.faults.size(), 4u);
  EXPECT_EQ(s.faults[0].target.what, target::kind::leader_of);
  EXPECT_EQ(s.faults[0].target.number, 15);
  EXPECT_EQ(s.faults[0].restart_after, 1s);
  EXPECT_EQ(s.faults[1].offset, -2s);
  ASSERT_EQ(s.faults[2].members.size(), 2u);
  EXPECT_EQ(s.faults[2].members[1].back(), "etcd");
  EXPECT_EQ(s.faults[3].target.name, "etcd3");
  EXPECT_EQ(s.deadline, 60s);
}

namespace {

/// A valid scenario, its lines numbered; each bad case changes one part.
///  1 cluster:
///  2   members: 3
///  3 workload:
///  4   workflows: [steps.yaml]
///  5   runs_per_second: 10
///  6   duration: 20s
///  7 faults:
///  8   - at: 5s
///  9     action: kill
/// 10     target: m1
/// 11 deadline: 60s
std::string scenario_with(const std::string& members = "3",
                          const std::string& workflows = "[steps.yaml]",
                          const std::string& length = "duration: 20s",
                          const std::string& fault = "at: 5s",
                          const std::string& action = "kill",
                          const std::string& target = "m1",
                          const std::string& tail = "deadline: 60s") {
  return "cluster:\n  members: " + members + "\nworkload:\n  workflows: "
         + workflows + "\n  runs_per_second: 10\n  " + length
         + "\nfaults:\n  - " + fault + "\n    action: " + action
         + "\n    target: " + target + "\n" + tail + "\n";
}

struct bad_case {
  const char* what;
  std::string text;
  std::string path;
  int line;
  std::string code;
};

} // namespace

TEST(ChaosScenario, TheBaseOfTheBadCasesIsValid) {
  auto o = parse(scenario_with());
  EXPECT_TRUE(o.ok()) << describe(o);
}

TEST(ChaosScenario, BadScenariosNameThePathAndLine) {
  std::vector<bad_case> cases{
    {"unknown top-level field",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill", "m1",
                   "deadline: 60s\ncolour: red"),
     "colour", 12, "unknown_field"},
    {"too many members", scenario_with("12"), "cluster.members", 2,
     "out_of_range"},
    {"members not a number", scenario_with("three"), "cluster.members", 2,
     "wrong_type"},
    {"missing workflow file", scenario_with("3", "[nope.yaml]"),
     "workload.workflows[0]", 4, "missing_file"},
    {"count and duration",
     scenario_with("3", "[steps.yaml]", "duration: 20s\n  count: 5"),
     "workload.duration", 6, "conflict"},
    {"count that outlasts a day",
     scenario_with("3", "[steps.yaml]", "count: 1000000"), "workload.count", 6,
     "out_of_range"},
    {"bad duration", scenario_with("3", "[steps.yaml]", "duration: soon"),
     "workload.duration", 6, "bad_duration"},
    {"at and every",
     scenario_with("3", "[steps.yaml]", "duration: 20s",
                   "at: 5s\n    every: 2s"),
     "faults[0].every", 9, "conflict"},
    {"unknown action",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "explode"),
     "faults[0].action", 9, "unknown_action"},
    {"unknown member",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill",
                   "m7"),
     "faults[0].target", 10, "unknown_member"},
    {"partition out of range",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill",
                   "{leader_of: 64}"),
     "faults[0].target.leader_of", 10, "out_of_range"},
    {"run out of range",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s",
                   "crash_actor", "{owner_of: 201}"),
     "faults[0].target.owner_of", 10, "out_of_range"},
    {"unknown target kind",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill",
                   "{follower_of: 1}"),
     "faults[0].target.follower_of", 10, "unknown_field"},
    {"parameter of another action",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill",
                   "m1\n    delay: 1s"),
     "faults[0].delay", 11, "unknown_field"},
    {"slow_disk without delay",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "slow_disk",
                   "m1\n    duration: 2s"),
     "faults[0].delay", 8, "missing_field"},
    {"fail_disk with an unknown error",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "fail_disk",
                   "m1\n    duration: 2s\n    error: boom"),
     "faults[0].error", 12, "bad_value"},
    {"clock_jump with a bad offset",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "clock_jump",
                   "m1\n    offset: later"),
     "faults[0].offset", 11, "bad_duration"},
    {"partition with both a target and sets",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "partition",
                   "m1\n    duration: 2s\n    members: [[m1], [m2]]"),
     "faults[0].target", 10, "conflict"},
    {"fault after the deadline",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 90s"),
     "faults[0].at", 8, "out_of_range"},
    {"deadline before the workload ends",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill", "m1",
                   "deadline: 10s"),
     "deadline", 11, "out_of_range"},
    {"unknown config key",
     scenario_with("3\n  config:\n    engine.nonsense: 1"),
     "cluster.config.engine.nonsense", 4, "unknown_key"},
    {"config value out of its limits",
     scenario_with("3\n  config:\n    cluster.partitions: 0"),
     "cluster.config.cluster.partitions", 4, "bad_value"},
    {"replication above the members", scenario_with("3\n  replication: 4"),
     "cluster.replication", 3, "out_of_range"},
    {"kill_etcd of a member",
     scenario_with("3", "[steps.yaml]", "duration: 20s", "at: 5s", "kill_etcd",
                   "m1"),
     "faults[0].target", 10, "unknown_member"},
    {"not YAML", "cluster: [\n", "", 2, "syntax"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto o = parse(c.text);
    ASSERT_FALSE(o.ok()) << c.text;
    ASSERT_EQ(o.errors.size(), 1u) << describe(o);
    EXPECT_EQ(o.errors[0].path, c.path) << describe(o);
    EXPECT_EQ(o.errors[0].line, c.line) << describe(o);
    if (c.code != "syntax") {
      EXPECT_EQ(o.errors[0].code, c.code) << describe(o);
    }
  }
}

TEST(ChaosScenario, ListsProblemsInFileOrder) {
  // The cluster is read before the faults, yet reported after them.
  auto o = parse("faults:\n  - at: 1s\n    action: melt\nworkload:\n"
                 "  workflows: [steps.yaml]\n  count: 10\ndeadline: 60s\n"
                 "cluster:\n  members: 0\n");
  ASSERT_EQ(o.errors.size(), 2u) << describe(o);
  EXPECT_EQ(o.errors[0].path, "faults[0].action");
  EXPECT_EQ(o.errors[1].path, "cluster.members");
}

TEST(ChaosScenario, AnEmptyFileAsksForAScenario) {
  auto o = parse("# nothing yet\n");
  ASSERT_EQ(o.errors.size(), 1u) << describe(o);
  EXPECT_NE(o.errors[0].message.find("expected a scenario"), std::string::npos)
    << describe(o);
}

TEST(ChaosScenario, ReportsEveryProblemAtOnce) {
  auto o = parse(scenario_with("12", "[nope.yaml]", "duration: soon", "at: 5s",
                               "explode", "m1", "deadline: 60s"));
  ASSERT_FALSE(o.ok());
  std::vector<std::string> paths;
  for (auto& d : o.errors)
    paths.push_back(d.path);
  EXPECT_EQ(
    paths, (std::vector<std::string>{"cluster.members", "workload.workflows[0]",
                                     "workload.duration", "faults[0].action"}))
    << describe(o);
}

TEST(ChaosScenario, PartitionSetsNameKnownMembers) {
  auto p = parse("workload:\n  workflows: [steps.yaml]\n  count: 10\n"
                 "faults:\n  - at: 1s\n    action: partition\n"
                 "    duration: 2s\n    members: [[m1], [m9, m1]]\n"
                 "deadline: 60s\n");
  ASSERT_FALSE(p.ok());
  ASSERT_EQ(p.errors.size(), 2u) << describe(p);
  EXPECT_EQ(p.errors[0].path, "faults[0].members[1][0]");
  EXPECT_EQ(p.errors[0].code, "unknown_member");
  EXPECT_EQ(p.errors[1].path, "faults[0].members[1][1]");
  EXPECT_EQ(p.errors[1].code, "duplicate_member");
}

namespace {

scenario random_kills() {
  auto o = parse("cluster:\n  members: 5\nworkload:\n"
                 "  workflows: [steps.yaml]\n  runs_per_second: 10\n"
                 "  duration: 60s\nfaults:\n  - every: 1s\n    action: kill\n"
                 "    target: random\n  - at: 2500ms\n    action: stop\n"
                 "    target: m2\ndeadline: 90s\n");
  EXPECT_TRUE(o.ok()) << describe(o);
  return o.ok() ? *o.value : scenario{};
}

std::vector<std::string> targets(const schedule& s) {
  std::vector<std::string> out;
  for (auto& f : s.faults)
    out.push_back(f.target.to_string());
  return out;
}

} // namespace

TEST(ChaosSchedule, EveryExpandsUpToTheWorkloadsEndInTimeOrder) {
  auto s = random_kills();
  schedule plan;
  ASSERT_EQ(make_schedule(s, 1, plan), "");
  // 1s..59s, and the stop at 2.5s between the second and third kill.
  ASSERT_EQ(plan.faults.size(), 60u);
  EXPECT_EQ(plan.faults[0].at, 1s);
  EXPECT_EQ(plan.faults[1].at, 2s);
  EXPECT_EQ(plan.faults[2].at, 2500ms);
  EXPECT_EQ(plan.faults[2].action, action::stop);
  EXPECT_EQ(plan.faults[2].target.name, "m2");
  EXPECT_FALSE(plan.faults[2].chosen_at_random);
  EXPECT_EQ(plan.faults.back().at, 59s);
  for (auto& f : plan.faults)
    EXPECT_EQ(f.target.what, target::kind::member);
}

TEST(ChaosSchedule, TheSameSeedGivesTheSameSchedule) {
  auto s = random_kills();
  schedule a, b;
  ASSERT_EQ(make_schedule(s, 42, a), "");
  ASSERT_EQ(make_schedule(s, 42, b), "");
  EXPECT_EQ(to_json(a), to_json(b));
  EXPECT_EQ(to_table(a), to_table(b));
}

TEST(ChaosSchedule, ADifferentSeedChoosesOtherTargets) {
  auto s = random_kills();
  schedule a, b;
  ASSERT_EQ(make_schedule(s, 42, a), "");
  ASSERT_EQ(make_schedule(s, 43, b), "");
  EXPECT_NE(targets(a), targets(b));
  // The times do not depend on the seed.
  ASSERT_EQ(a.faults.size(), b.faults.size());
  for (size_t i = 0; i < a.faults.size(); ++i)
    EXPECT_EQ(a.faults[i].at, b.faults[i].at);
  // Every member is chosen sometimes over 59 draws.
  auto drawn = targets(a);
  std::set<std::string> chosen(drawn.begin(), drawn.end());
  EXPECT_EQ(chosen.size(), 5u);
}

TEST(ChaosSchedule, TheGeneratorIsPinned) {
  // The draws depend only on std::mt19937_64, which the standard defines
  // exactly; these values must not change between builds or libraries.
  seeded_random r{default_seed};
  std::vector<uint64_t> got;
  for (int i = 0; i < 10; ++i)
    got.push_back(r.below(5));
  EXPECT_EQ(got, (std::vector<uint64_t>{4, 0, 4, 4, 4, 1, 4, 3, 4, 4}));
  seeded_random one{7};
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(one.below(1), 0u);
}
