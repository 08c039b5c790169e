// Retention through the partition logs, with three real members (R=3,
// min_insync 2): finished runs are deleted by their partitions' leaders as
// records of the logs, so every replica deletes the same, and `troupe gc`
// through any member covers the whole cluster. A run still running is
// never deleted.

#include "tests/support/replicated_fixture.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;

namespace {

struct Retention : troupe::test::replicated_fixture {
  /// The runs member `name` holds in its copies of the partitions (their
  /// index entries), or -1 when it does not answer.
  int64_t runs_held(const std::string& name) {
    auto body = json::parse(cli(name, {"--json", "partitions", "--digest"},
                                troupe::runtime::auth::role::viewer)
                              .out,
                            nullptr, false);
    if (body.is_discarded() || !body.contains("partitions"))
      return -1;
    int64_t n = 0;
    for (auto& p : body["partitions"])
      if (p.contains("digest"))
        n += p["digest"].value("runs", int64_t{0});
    return n;
  }

  /// Submits finished-soon runs through every member and one long run
  /// through m2; waits until the short ones completed. {short, long}.
  std::pair<std::vector<std::string>, std::string> some_finished() {
    auto quick = chain(2, "0");
    std::vector<std::string> runs;
    for (auto via : {"m1", "m2", "m3"})
      for (auto& id : submit(via, quick, 2))
        runs.push_back(id);
    auto slow_wf = (dir.path() / "slow.yaml").string();
    {
      std::ofstream out{slow_wf};
      out
        << "name: slow\nnodes:\n  s:\n    kind: exec\n    command: [\"sleep\", "
           "\"120\"]\n";
    }
    auto slow = submit("m2", slow_wf, 1);
    EXPECT_EQ(runs.size(), 6u);
    EXPECT_EQ(slow.size(), 1u);
    all_complete("m1", runs);
    return {runs, slow.empty() ? std::string{} : slow.front()};
  }

  /// Every member holds only the long run, every replica agrees, each
  /// short run is reported deleted and the long one is still running.
  void only_the_long_run_is_left(const std::vector<std::string>& runs,
                                 const std::string& slow) {
    for (auto name : {"m1", "m2", "m3"})
      EXPECT_TRUE(wait_until([&] { return runs_held(name) == 1; }, 20s))
        << name << " holds " << runs_held(name) << " run(s)" << all_logs();
    copies_agree({"m1", "m2", "m3"});
    for (auto via : {"m1", "m2", "m3"}) {
      for (auto& id : runs) {
        auto r = cli(via, {"status", id});
        EXPECT_NE(r.exit_code, 0) << via << " " << id << ": " << r.out;
        EXPECT_NE(r.err.find("deleted after retention"), std::string::npos)
          << via << " " << id << ": " << r.err;
      }
      EXPECT_EQ(status(via, slow).value("state", ""), "running") << via;
    }
  }
};

} // namespace

TEST_F(Retention, FinishedRunsPastStorageRetentionGoOnEveryReplica) {
  extra_args
    = {"--set", "storage.retention=3s", "--set", "storage.gc_interval=200ms"};
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto [runs, slow] = some_finished();
  ASSERT_FALSE(HasFailure());
  only_the_long_run_is_left(runs, slow);
  // Nor do the members say that they keep their finished runs.
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_EQ(
      members[name].proc->err().find("storage.retention is not applied"),
      std::string::npos);
}

TEST_F(Retention, GcThroughOneMemberCoversTheClusterAndNamesAMemberLost) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto [runs, slow] = some_finished();
  ASSERT_FALSE(HasFailure());
  copies_agree({"m1", "m2", "m3"});
  // Asked of m3 alone, every member deletes the runs of the partitions it
  // leads, and the answer sums them.
  auto r = cli("m3", {"--json", "gc", "--older-than", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto body = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << r.out;
  EXPECT_EQ(body.value("runs", 0), 6) << body;
  EXPECT_GE(body.value("events", 0), 6 * 4) << body;
  EXPECT_EQ(body.value("members", json::array()).size(), 3u) << body;
  EXPECT_FALSE(body.contains("failed_members")) << body;
  only_the_long_run_is_left(runs, slow);

  // A member lost: the others still collect, and the answer names it.
  auto more = submit("m1", chain(2, "0"), 2);
  all_complete("m1", more);
  kill("m3");
  auto t0 = std::chrono::steady_clock::now();
  r = cli("m1", {"gc", "--older-than", "0s"});
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  EXPECT_EQ(r.exit_code, 3) << r.err << r.out;
  EXPECT_NE(r.err.find("member m3"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("2 of 3 collected"), std::string::npos) << r.out;
}

TEST_F(Retention, CancelManyThroughOneMemberCancelsTheRunsOfEveryLeaderOnce) {
  ASSERT_NO_FATAL_FAILURE(three_in_sync());
  auto slow_wf = (dir.path() / "slow.yaml").string();
  {
    std::ofstream out{slow_wf};
    out << "name: slow\nnodes:\n  s:\n    kind: exec\n    command: [\"sleep\", "
           "\"120\"]\n";
  }
  std::vector<std::string> runs;
  for (auto via : {"m1", "m2", "m3"})
    for (auto& id : submit(via, slow_wf, 2))
      runs.push_back(id);
  ASSERT_EQ(runs.size(), 6u);
  for (auto& id : runs)
    ASSERT_TRUE(wait_until(
      [&] { return status("m1", id).value("state", "") == "running"; }, 20s))
      << id;
  // Asked of m2 alone, each run is counted once, by its leader.
  auto r = cli("m2", {"--json", "cancel", "--state", "running", "--yes"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto body = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(body.is_discarded()) << r.out;
  EXPECT_EQ(body.value("count", 0), 6) << body;
  EXPECT_EQ(body.value("members", json::array()).size(), 3u) << body;
  EXPECT_EQ(body.value("run_ids", json::array()).size(), 6u) << body;
  for (auto& id : runs)
    EXPECT_TRUE(wait_until(
      [&] { return status("m3", id).value("state", "") == "cancelled"; }, 20s))
      << id << ": " << status("m3", id);
}
