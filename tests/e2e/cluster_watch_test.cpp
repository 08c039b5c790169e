// `troupe watch` across a failover: a run watched through one member while
// its leader is killed goes on being followed at its new leader, without
// showing an event twice, until it ends.

#include "tests/support/replicated_fixture.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

using namespace std::chrono_literals;
using json = nlohmann::json;
using troupe::test::wait_until;

namespace {

struct WatchFailover : troupe::test::replicated_fixture {};

} // namespace

TEST_F(WatchFailover, AWatchFollowsItsRunToItsNewLeader) {
  linked({"m1", "m2", "m3"});
  auto wf = chain(5, "0.4");
  auto r = cli("m1", {"submit", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err << all_logs();
  auto run = run_id(r.out);
  ASSERT_FALSE(run.empty());

  // Watched through m2 (the run is led by m1), as JSON lines.
  auto o = opts();
  o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members["m2"].port);
  o.env["TROUPE_TOKEN"] = viewer();
  troupe::test::background_process watch{args({"--json", "watch", run}), o,
                                         (dir.path() / "watch.out").string(),
                                         (dir.path() / "watch.err").string()};
  ASSERT_TRUE(wait_until(
    [&] { return watch.out().find("node_completed") != std::string::npos; },
    20s))
    << watch.out() << watch.err();
  kill("m1");

  auto code = watch.wait(40s);
  ASSERT_TRUE(code) << watch.out() << watch.err() << all_logs();
  EXPECT_EQ(*code, 0) << watch.out() << watch.err();
  // Every event once, in order, and the run's end.
  std::istringstream in{watch.out()};
  std::string line;
  int64_t last = 0;
  std::map<std::string, int> completed;
  bool ended = false;
  for (int i = 0; i < 100'000 && std::getline(in, line); ++i) {
    auto e = json::parse(line, nullptr, false);
    if (e.is_discarded())
      continue;
    if (e.contains("state") && e.contains("outputs"))
      ended = true;
    auto seq = e.value("seq", int64_t{0});
    if (seq > 0) {
      EXPECT_GT(seq, last) << line;
      last = seq;
    }
    if (e.value("type", "") == "node_completed")
      ++completed[e.value("node", "")];
  }
  EXPECT_EQ(completed.size(), 5u) << watch.out();
  for (auto& [node, n] : completed)
    EXPECT_EQ(n, 1) << node;
  EXPECT_TRUE(ended || watch.out().find("completed") != std::string::npos)
    << watch.out();
  // `troupe partitions` and the shell show the partitions, led by the
  // members left.
  auto table = cli("m2", {"partitions"}, troupe::runtime::auth::role::viewer);
  EXPECT_EQ(table.exit_code, 0) << table.err;
  for (auto word : {"cluster 'c1'", "replication 3", "min_insync 2",
                    "PARTITION", "LEADER", "EPOCH", "ISR", "REPLICAS"})
    EXPECT_TRUE(troupe::test::contains(table.out, word)) << word << table.out;
  {
    // No partition is led by the member killed.
    std::istringstream rows{table.out};
    std::string row, partition_no, leader;
    for (int i = 0; i < 1000 && std::getline(rows, row); ++i) {
      std::istringstream words{row};
      words >> partition_no >> leader;
      EXPECT_NE(leader, "m1") << row;
    }
  }
  auto one = cli("m3", {"shell", "-c", "inspect partition 0"},
                 troupe::runtime::auth::role::viewer);
  EXPECT_EQ(one.exit_code, 0) << one.err;
  EXPECT_TRUE(troupe::test::contains(one.out, "leader")) << one.out;
  EXPECT_TRUE(troupe::test::contains(one.out, "isr")) << one.out;
  // The members that took partitions over count it, and show their
  // partitions' replication.
  double failovers = 0;
  for (auto name : {"m2", "m3"})
    failovers += metric(name, "troupe_partition_failovers_total");
  EXPECT_GE(failovers, 1.0);
  auto text = troupe::test::http_get(members["m2"].http, "/metrics").second;
  for (auto series :
       {"troupe_failover_duration_seconds_count", "troupe_partition_isr_size{",
        "troupe_replication_lag_records{",
        "troupe_replication_commits_waiting{",
        "troupe_replication_records_total{", "troupe_partitions_led "})
    EXPECT_NE(text.find(series), std::string::npos) << series << "\n" << text;
  auto file = dir.path() / "metrics.prom";
  std::ofstream{file} << text;
  auto check = troupe::test::run_process(
    {"/bin/sh", "-c", "promtool check metrics < '" + file.string() + "'"});
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

namespace {

/// Three members, two copies of each partition, one needed in sync.
struct Unavailable : troupe::test::cluster_fixture {
  Unavailable() {
    replication = 2;
    min_insync = 1;
  }
};

} // namespace

TEST_F(Unavailable, APartitionWithNoInSyncReplicaUpWaitsAndSaysSo) {
  linked({"m1", "m2", "m3"});
  auto wf = (dir.path() / "nap.yaml").string();
  std::ofstream{wf} << "name: nap\nnodes:\n  a: {kind: noop}\n  b: {kind: "
                       "sleep, duration: 3s, after: [a]}\n";
  auto r = cli("m1", {"submit", wf});
  ASSERT_EQ(r.exit_code, 0) << r.err << all_logs();
  auto run = run_id(r.out);
  ASSERT_FALSE(run.empty());
  // Its partition (the two hex digits after the id's dash, modulo the
  // cluster's 64) and that partition's in-sync replicas, once both copies
  // are in sync.
  auto partition
    = static_cast<int>(std::stoul(run.substr(13, 2), nullptr, 16) % 64);
  json record;
  ASSERT_TRUE(wait_until(
    [&] {
      auto j = cli_json("m1", {"partitions"});
      for (auto& p : j.value("partitions", json::array()))
        if (p.value("partition", -1) == partition
            && p.value("isr", json::array()).size() == 2)
          record = p;
      return record.is_object();
    },
    15s))
    << cli("m1", {"--json", "partitions"}).out;
  std::set<std::string> isr;
  for (auto& m : record["isr"])
    isr.insert(m.get<std::string>());
  std::string survivor;
  for (auto name : {"m1", "m2", "m3"})
    if (!isr.count(name))
      survivor = name;
  ASSERT_FALSE(survivor.empty()) << record;
  // Both copies lost: no unclean election; the survivor says why it waits.
  for (auto& name : isr) {
    members[name].proc->signal(SIGKILL);
    members[name].proc->wait(5s);
  }
  json listed;
  EXPECT_TRUE(wait_until(
    [&] {
      listed = cli_json(survivor, {"members"});
      for (auto& p : listed.value("unavailable_partitions", json::array()))
        if (p.value("partition", -1) == partition)
          return true;
      return false;
    },
    15s))
    << listed;
  troupe::test::process_result status;
  EXPECT_TRUE(wait_until(
    [&] {
      status = cli(survivor, {"status", run});
      return status.exit_code == 3
             && troupe::test::contains(status.err, "partition "
                                                     + std::to_string(partition)
                                                     + " is unavailable");
    },
    10s))
    << status.out << status.err;
  // An in-sync replica back (the first one lost may have fallen out of the
  // ISR when the other took over): it leads the partition again, and the
  // run finishes.
  std::string back;
  for (auto& p :
       cli_json(survivor, {"partitions"}).value("partitions", json::array()))
    if (p.value("partition", -1) == partition
        && !p.value("isr", json::array()).empty())
      back = p["isr"][0].get<std::string>();
  ASSERT_TRUE(isr.count(back)) << back;
  join(back);
  ASSERT_FALSE(HasFatalFailure());
  json s;
  EXPECT_TRUE(wait_until(
    [&] {
      s = cli_json(survivor, {"status", run});
      return s.value("state", "") == "completed";
    },
    30s))
    << s << all_logs();
}
