// Handing a partition's runs over: a node that no longer leads a partition
// stops its runs there without a journal write or a restart, and the node
// that comes to lead it resumes them from the journals it holds. In a
// cluster the two are different members with replicated stores; here one
// node plays both, fencing and leading its own store's partition.

#include "runtime/ids/partition.hpp"
#include "tests/support/embedded_fixture.hpp"

#include <thread>

using namespace std::chrono_literals;
using namespace troupe;
using persistence::event_type;

namespace {

constexpr uint32_t partitions = 4;

struct Handover : test::embedded_fixture {
  /// A node whose store has replicated partitions, each record committed
  /// as soon as it is written (a partition with no other replica).
  std::unique_ptr<actors::embedded_node> open_replicated() {
    return open([](actors::embedded_node::options& o) {
      o.partition_for = [](const std::string&) { return 2u; };
      o.tune_store = [](persistence::journal_store::options& so) {
        so.replication.partitions = partitions;
        so.replication.partition_of
          = [](std::string_view id, std::string_view) {
              return runtime::partition_of_run(id, partitions);
            };
        so.replication.commit_on_record = true;
      };
    });
  }

  /// Polls (bounded, 10s) until `pred` holds.
  template<class Pred>
  static bool eventually(Pred pred) {
    for (int i = 0; i < 200; ++i) {
      if (pred())
        return true;
      std::this_thread::sleep_for(50ms);
    }
    return pred();
  }
};

const char* napping
  = "name: napping\nnodes:\n  a: {kind: noop}\n  nap: {kind: sleep, after: "
    "[a], duration: 700ms}\n  b: {kind: noop, after: [nap]}\n";

} // namespace

TEST_F(Handover, ReleasedRunsStopUntouchedAndTheNewLeaderResumesThem) {
  auto node = open_replicated();
  ASSERT_TRUE(node);
  caf::scoped_actor self{node->system()};
  auto id = submit(*node, self, napping);
  ASSERT_EQ(runtime::partition_of_run(id, partitions), 2u);
  ASSERT_TRUE(eventually(
    [&] { return count(journal(*node, id), event_type::timer_set) == 1; }));
  ASSERT_TRUE(node->inspect_run(id, 2s));

  // Another member leads partition 2 now: this one stops its runs there.
  ASSERT_TRUE(node->store().fence(2, 7).ok());
  EXPECT_EQ(node->release_partition(3, partitions), 0u);
  EXPECT_EQ(node->release_partition(2, partitions), 1u);
  EXPECT_TRUE(eventually([&] { return !node->inspect_run(id, 1s); }));
  auto before = journal(*node, id);
  EXPECT_EQ(count(before, event_type::run_failed), 0);
  EXPECT_EQ(count(before, event_type::run_restarted), 0);

  // It leads the partition again: the run resumes where it was.
  ASSERT_TRUE(node->store().lead(2, 9).ok());
  auto other = node->resume_partition(3, partitions, self);
  EXPECT_TRUE(other.resumed.empty());
  auto back = node->resume_partition(2, partitions, self);
  ASSERT_EQ(back.resumed, std::vector<std::string>{id});
  auto ended = wait_finished(self);
  EXPECT_EQ(ended.run_id, id);
  EXPECT_EQ(ended.state, persistence::run_state::completed);
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::node_completed, "a"), 1);
  EXPECT_EQ(count(events, event_type::timer_set, "nap"), 1);
  EXPECT_EQ(count(events, event_type::node_completed, "b"), 1);
}

TEST_F(Handover, AWriteRefusedAsNotLeaderStopsTheRunWithoutARestart) {
  auto node = open_replicated();
  ASSERT_TRUE(node);
  caf::scoped_actor self{node->system()};
  auto id = submit(*node, self, napping);
  ASSERT_TRUE(eventually(
    [&] { return count(journal(*node, id), event_type::timer_set) == 1; }));
  // Deposed while its timer runs: the write of the nap's end is refused.
  ASSERT_TRUE(node->store().fence(2, 3).ok());
  EXPECT_TRUE(eventually([&] { return !node->inspect_run(id, 1s); }));
  // Stopped for good here: not restarted, not failed, still unfinished.
  std::this_thread::sleep_for(300ms);
  EXPECT_FALSE(node->inspect_run(id, 1s));
  auto entry = node->store().find_run(id);
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->state, persistence::run_state::running);
  auto events = journal(*node, id);
  EXPECT_EQ(count(events, event_type::node_completed, "nap"), 0);
  EXPECT_EQ(count(events, event_type::run_failed), 0);
  EXPECT_EQ(count(events, event_type::run_restarted), 0);

  ASSERT_TRUE(node->store().lead(2, 4).ok());
  ASSERT_EQ(node->resume_partition(2, partitions, self).resumed.size(), 1u);
  auto ended = wait_finished(self);
  EXPECT_EQ(ended.state, persistence::run_state::completed);
  EXPECT_EQ(count(journal(*node, id), event_type::node_completed, "a"), 1);
}
