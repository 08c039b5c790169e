// The partition agent: a member's changes of leadership, carried out in
// order on the agent's thread, each once, and never an older one after a
// newer.

#include "cluster/node/partition_agent.hpp"
#include "runtime/metrics/registry.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <vector>

using namespace troupe;

namespace {

struct recorder {
  std::mutex mtx;
  std::vector<std::string> calls;
  std::set<uint32_t> not_ready;

  cluster::partition_agent_options options() {
    cluster::partition_agent_options o;
    o.count = 8;
    o.resume = [this](uint32_t p) -> std::optional<size_t> {
      std::lock_guard lk{mtx};
      calls.push_back("resume " + std::to_string(p));
      if (not_ready.count(p) != 0)
        return std::nullopt;
      return size_t{p};
    };
    o.release = [this](uint32_t p) {
      std::lock_guard lk{mtx};
      calls.push_back("release " + std::to_string(p));
      return uint64_t{1};
    };
    return o;
  }
};

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

} // namespace

TEST(PartitionAgent, LeadsResumeAndFollowsReleaseInOrderOnce) {
  recorder r;
  cluster::partition_agent agent{r.options()};
  agent.lead(3, 10);
  agent.lead(3, 10); // the same epoch again: nothing new
  agent.lead(5, 11);
  agent.settle();
  EXPECT_EQ(agent.led(), (std::vector<uint32_t>{3, 5}));
  EXPECT_TRUE(agent.leads(3));
  EXPECT_FALSE(agent.leads(4));
  EXPECT_EQ(agent.describe(5)["role"], "leader");
  EXPECT_EQ(agent.describe(5)["resumed"], 5);
  agent.follow(3, 12);
  agent.follow(3, 9); // older than what it knows: ignored
  agent.lead(3, 11);  // older too
  agent.settle();
  EXPECT_EQ(agent.led(), std::vector<uint32_t>{5});
  EXPECT_EQ(agent.describe(3)["role"], "follower");
  EXPECT_EQ(agent.describe(3)["epoch"], 12);
  EXPECT_EQ(agent.describe(7)["role"], "none");
  std::lock_guard lk{r.mtx};
  EXPECT_EQ(r.calls,
            (std::vector<std::string>{"resume 3", "resume 5", "release 3"}));
}

TEST(PartitionAgent, AChangeOvertakenBeforeItRunsIsSkipped) {
  recorder r;
  std::mutex gate;
  std::unique_lock held{gate};
  auto o = r.options();
  // The first resume waits until the test has queued the rest.
  auto resume = o.resume;
  o.resume = [&, resume](uint32_t p) {
    if (p == 1)
      std::lock_guard wait{gate};
    return resume(p);
  };
  cluster::partition_agent agent{o};
  agent.lead(1, 1);
  agent.lead(2, 2);
  agent.follow(2, 3); // deposed before its runs were resumed
  held.unlock();
  agent.settle();
  EXPECT_EQ(agent.led(), std::vector<uint32_t>{1});
  std::lock_guard lk{r.mtx};
  EXPECT_EQ(r.calls, (std::vector<std::string>{"resume 1", "release 2"}));
}

TEST(PartitionAgent, ATakeoverCountsAFailoverAndItsDuration) {
  recorder r;
  runtime::metrics::registry metrics;
  auto o = r.options();
  o.metrics = &metrics;
  cluster::partition_agent agent{o};
  agent.lead(4, 20, now_ms() - 300);
  agent.lead(6, 21); // first leader of a partition: no failover
  agent.settle();
  auto text = metrics.render();
  EXPECT_NE(text.find("troupe_partition_failovers_total 1"), std::string::npos)
    << text;
  EXPECT_NE(text.find("troupe_failover_duration_seconds_count 1"),
            std::string::npos)
    << text;
  // 300ms ago: in the 0.5s bucket, not the 0.25s one.
  EXPECT_NE(text.find("troupe_failover_duration_seconds_bucket{le=\"0.25\"} 0"),
            std::string::npos)
    << text;
  agent.stop();
  agent.lead(7, 30); // stopped: nothing more is carried out
  EXPECT_FALSE(agent.leads(7));
}

TEST(PartitionAgent, APartitionNotReadyIsTriedAgainAtTheSameEpoch) {
  recorder r;
  r.not_ready.insert(2);
  cluster::partition_agent agent{r.options()};
  agent.lead(2, 5);
  agent.settle();
  EXPECT_FALSE(agent.leads(2));
  EXPECT_EQ(agent.describe(2)["role"], "waiting");
  {
    std::lock_guard lk{r.mtx};
    r.not_ready.clear();
  }
  agent.lead(2, 5);
  agent.settle();
  EXPECT_TRUE(agent.leads(2));
  agent.lead(2, 5); // resumed: the same epoch again does nothing
  agent.settle();
  std::lock_guard lk{r.mtx};
  EXPECT_EQ(r.calls, (std::vector<std::string>{"resume 2", "resume 2"}));
}
