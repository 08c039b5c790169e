// The replicator (cluster/replication): three members in one process, each
// with a real store, linked by memory. A stand-in controller keeps each
// partition's record {leader, epoch, isr, replicas} and tells the members,
// as the controller in etcd does; it acts on the ISR changes they ask for.

#include "cluster/mesh/mesh.hpp"
#include "cluster/replication/mesh_transport.hpp"
#include "cluster/replication/replicator.hpp"
#include "persistence/journal_store.hpp"
#include "persistence/rocksdb/partition_log.hpp"
#include "tests/support/applied_state.hpp"
#include "tests/support/temp_dir.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace troupe::persistence;
using namespace troupe::cluster::replication;
using namespace std::chrono_literals;
using troupe::test::applied_state;
using troupe::test::temp_dir;

namespace {

constexpr uint32_t partitions = 4;

/// Test run ids name their partition: "r<digit>-...".
uint32_t test_partition(std::string_view run_id, std::string_view) {
  if (run_id.size() >= 2 && run_id[0] == 'r' && run_id[1] >= '0'
      && run_id[1] <= '9')
    return static_cast<uint32_t>(run_id[1] - '0');
  return 0;
}

event_record event(event_type type, int32_t attempt) {
  event_record e;
  e.type = type;
  e.at_ns = 1'000 + attempt;
  e.node = "n";
  e.attempt = attempt;
  e.message = "m" + std::to_string(attempt);
  return e;
}

journal_store::append_op submit(const std::string& run_id) {
  journal_store::append_op op;
  op.run_id = run_id;
  op.events = {event(event_type::run_submitted, 0)};
  run_index_entry e;
  e.run_id = run_id;
  e.workflow = "wf";
  e.state = run_state::running;
  e.created_at_ns = 1;
  e.updated_at_ns = 5;
  op.index = e;
  op.idempotency_key = "key-" + run_id;
  return op;
}

journal_store::append_op step(const std::string& run_id, int32_t attempt) {
  journal_store::append_op op;
  op.run_id = run_id;
  op.events = {event(event_type::attempt_started, attempt),
               event(event_type::node_completed, attempt)};
  return op;
}

/// An append's answer, which comes when its record commits.
struct answer {
  std::shared_ptr<std::promise<std::string>> promise
    = std::make_shared<std::promise<std::string>>();
  std::shared_future<std::string> future = promise->get_future().share();

  std::function<void(std::string)> callback() const {
    return [p = promise](std::string e) { p->set_value(std::move(e)); };
  }
  bool ready() const {
    return future.wait_for(0s) == std::future_status::ready;
  }
  /// The answer, or "(no answer)" after `within`.
  std::string get(std::chrono::milliseconds within = 10s) const {
    if (future.wait_for(within) != std::future_status::ready)
      return "(no answer)";
    return future.get();
  }
};

/// Polls `pred` every 10 ms for at most `within`.
template<class F>
bool eventually(F&& pred, std::chrono::milliseconds within = 10s) {
  auto until = std::chrono::steady_clock::now() + within;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(10ms);
  }
}

struct ReplicatorTest : ::testing::Test {
  struct member {
    std::unique_ptr<journal_store> store;
    records_hook hook;
    std::unique_ptr<replicator> repl;
    /// Not told the controller's records (cut off from etcd).
    bool blind = false;
  };

  struct record {
    std::string leader;
    uint64_t epoch = 0;
    std::vector<std::string> isr;
    std::vector<std::string> replicas;
  };

  temp_dir dir;
  memory_network net;
  std::recursive_mutex mu;
  std::map<std::string, member> members;
  std::map<uint32_t, record> records;
  /// (partition, member, reason) asked by shrink_isr; (partition, member)
  /// by expand_isr.
  std::vector<std::tuple<uint32_t, std::string, std::string>> shrinks;
  std::vector<std::pair<uint32_t, std::string>> expands;
  std::vector<std::tuple<uint32_t, uint64_t, uint64_t>> depositions;
  /// Whether the stand-in controller applies the ISR changes asked.
  bool act_on_isr = true;
  std::chrono::milliseconds replica_lag = 10s;
  uint32_t min_insync = 2;
  std::chrono::milliseconds retry = 100ms;
  size_t max_in_flight = 4;
  /// replicator_options::log_retain_records and snapshot_chunk_bytes.
  uint64_t log_retain = 10'000;
  size_t chunk_bytes = size_t{256} << 10;
  std::vector<std::string> warnings;

  ~ReplicatorTest() override {
    for (auto& [name, m] : members)
      close(name);
    if (HasFailure())
      for (auto& w : warnings)
        std::cerr << "warning: " << w << "\n";
  }

  std::string path(const std::string& name) const {
    return (dir.path() / name).string();
  }

  void open(const std::string& name) {
    auto& m = members[name];
    journal_store::options opts;
    opts.path = path(name);
    opts.replication.partitions = partitions;
    opts.replication.partition_of = test_partition;
    opts.replication.on_records = m.hook.callback();
    std::string error;
    m.store = journal_store::open(opts, error);
    ASSERT_TRUE(m.store) << error;
    replicator_options ro;
    ro.member = name;
    ro.min_insync = min_insync;
    ro.replica_lag = replica_lag;
    ro.heartbeat = 20ms;
    ro.retry = retry;
    ro.max_in_flight = max_in_flight;
    ro.log_retain_records = log_retain;
    ro.snapshot_chunk_bytes = chunk_bytes;
    ro.shrink_isr = [this](uint32_t p, uint64_t epoch, const std::string& who,
                           const std::string& why) {
      std::lock_guard lock{mu};
      shrinks.emplace_back(p, who, why);
      auto& r = records[p];
      if (!act_on_isr || r.epoch != epoch)
        return;
      std::erase(r.isr, who);
      publish(p);
    };
    ro.expand_isr = [this](uint32_t p, uint64_t epoch, const std::string& who) {
      std::lock_guard lock{mu};
      expands.emplace_back(p, who);
      auto& r = records[p];
      if (!act_on_isr || r.epoch != epoch
          || std::find(r.isr.begin(), r.isr.end(), who) != r.isr.end())
        return;
      r.isr.push_back(who);
      publish(p);
    };
    ro.deposed = [this](uint32_t p, uint64_t epoch, uint64_t newer) {
      std::lock_guard lock{mu};
      depositions.emplace_back(p, epoch, newer);
    };
    ro.warn = [this](const std::string& w) {
      std::lock_guard lock{mu};
      warnings.push_back(w);
    };
    m.repl = std::make_unique<replicator>(*m.store, net.endpoint(name), ro);
    m.hook.attach(m.repl.get());
    net.join(name, m.repl.get());
    std::lock_guard lock{mu};
    for (auto& [p, r] : records)
      if (!m.blind)
        m.repl->assign(p, r.leader, r.epoch, r.isr, r.replicas);
  }

  /// Stops a member as a crash would, between two writes: its store is
  /// closed, its replicator gone.
  void close(const std::string& name) {
    auto& m = members[name];
    m.hook.attach(nullptr);
    net.leave(name);
    m.repl.reset();
    m.store.reset();
  }

  /// Tells every member that is up and not blind partition p's record.
  void publish(uint32_t p) {
    std::lock_guard lock{mu};
    const auto& r = records[p];
    for (auto& [name, m] : members)
      if (m.repl && !m.blind)
        m.repl->assign(p, r.leader, r.epoch, r.isr, r.replicas);
  }

  void set(uint32_t p, record r) {
    std::lock_guard lock{mu};
    records[p] = std::move(r);
    publish(p);
  }

  replicator& repl(const std::string& name) { return *members[name].repl; }
  journal_store& store(const std::string& name) { return *members[name].store; }

  answer append(const std::string& name, journal_store::append_op op) {
    answer a;
    store(name).append(std::move(op), a.callback());
    return a;
  }

  uint64_t committed(const std::string& name, uint32_t p) {
    return store(name).log_state(p)->committed;
  }
  uint64_t log_end(const std::string& name, uint32_t p) {
    return store(name).log_state(p)->log_end;
  }

  /// Three members, partition p led by `leader` at `epoch` with all three
  /// in sync, and writable.
  void three(uint32_t p = 1, const std::string& leader = "a",
             uint64_t epoch = 5) {
    for (auto n : {"a", "b", "c"})
      open(n);
    set(p, {leader, epoch, {"a", "b", "c"}, {"a", "b", "c"}});
    ASSERT_TRUE(eventually([&] { return repl(leader).writable(p).writable; }))
      << repl(leader).writable(p).reason;
  }

  /// Waits until every member that is up has committed what `leader` did
  /// of partition p, then closes all and compares their applied state.
  void expect_identical(uint32_t p, const std::string& leader) {
    EXPECT_TRUE(eventually([&] {
      auto want = committed(leader, p);
      for (auto& [name, m] : members)
        if (m.store && committed(name, p) != want)
          return false;
      return want > 0;
    }))
      << "the replicas did not commit what the leader did";
    std::vector<std::string> names;
    for (auto& [name, m] : members)
      names.push_back(name);
    for (auto& n : names)
      close(n);
    auto want = applied_state(path(leader));
    EXPECT_GT(want.size(), 3u);
    for (auto& n : names)
      EXPECT_EQ(applied_state(path(n)), want) << "member " << n;
  }
};

TEST_F(ReplicatorTest, AppendsAreAnsweredOnlyOnceEveryInSyncReplicaHasThem) {
  three();
  auto first = append("a", submit("r1-a"));
  EXPECT_EQ(first.get(), "");
  EXPECT_EQ(log_end("b", 1), 1u);
  EXPECT_EQ(log_end("c", 1), 1u);

  // c gets nothing: b has the record, the leader does not commit it.
  net.cut("a", "c");
  auto second = append("a", step("r1-a", 1));
  EXPECT_TRUE(eventually([&] { return log_end("b", 1) == 2; }));
  std::this_thread::sleep_for(400ms);
  EXPECT_FALSE(second.ready());
  EXPECT_EQ(committed("a", 1), 1u);
  EXPECT_EQ(log_end("c", 1), 1u);

  // Once c has it too (shipped again after the retry), it is answered.
  net.cut("a", "c", false);
  EXPECT_EQ(second.get(), "");
  EXPECT_EQ(log_end("c", 1), 2u);
  EXPECT_EQ(committed("a", 1), 2u);
  for (int i = 2; i < 20; ++i)
    EXPECT_EQ(append("a", step("r1-a", i)).get(), "");
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, RecordsGoOutBeforeEarlierOnesAreAnsweredUpToALimit) {
  // No shipment is sent again in this test's time: only the limit of
  // shipments on their way decides what the followers get.
  retry = 1h;
  max_in_flight = 3;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  // The followers' answers are lost from here on: nothing commits.
  net.cut("b", "a");
  net.cut("c", "a");
  std::vector<answer> pending;
  for (int i = 1; i <= 3; ++i) {
    pending.push_back(append("a", step("r1-a", i)));
    // Each append its own record, shipped while the earlier ones wait.
    EXPECT_TRUE(eventually(
      [&] { return log_end("b", 1) == 1u + i && log_end("c", 1) == 1u + i; }))
      << "record " << 1 + i << " did not reach the followers";
  }
  // A fourth record waits for an answer: three shipments are on their way.
  pending.push_back(append("a", step("r1-a", 4)));
  EXPECT_TRUE(eventually([&] { return log_end("a", 1) == 5u; }));
  ASSERT_TRUE(repl("a").drain(5s));
  ASSERT_TRUE(repl("b").drain(5s));
  ASSERT_TRUE(repl("c").drain(5s));
  EXPECT_EQ(log_end("b", 1), 4u);
  EXPECT_EQ(log_end("c", 1), 4u);
  for (auto& a : pending)
    EXPECT_FALSE(a.ready());
  EXPECT_EQ(committed("a", 1), 1u);
  // Answers again: what waited goes out, and all commit.
  net.cut("b", "a", false);
  net.cut("c", "a", false);
  EXPECT_EQ(append("a", step("r1-a", 5)).get(), "");
  for (auto& a : pending)
    EXPECT_EQ(a.get(), "");
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, ReplicasOfManyPartitionsAndLeadersAreByteIdentical) {
  for (auto n : {"a", "b", "c"})
    open(n);
  // a leads 0 and 1, b leads 2, c leads 3.
  const char* leaders[] = {"a", "a", "b", "c"};
  for (uint32_t p = 0; p < partitions; ++p)
    set(p, {leaders[p], 3, {"a", "b", "c"}, {"a", "b", "c"}});
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(
      eventually([&] { return repl(leaders[p]).writable(p).writable; }));
  std::vector<answer> answers;
  for (int i = 0; i < 30; ++i)
    for (uint32_t p = 0; p < partitions; ++p) {
      auto run = "r" + std::to_string(p) + "-" + std::to_string(i % 5);
      answers.push_back(append(leaders[p], i < 5 ? submit(run) : step(run, i)));
    }
  for (auto& a : answers)
    EXPECT_EQ(a.get(), "");
  for (uint32_t p = 0; p < partitions; ++p)
    EXPECT_TRUE(eventually([&] {
      auto want = committed(leaders[p], p);
      return committed("a", p) == want && committed("b", p) == want
             && committed("c", p) == want;
    }));
  std::vector<std::string> names = {"a", "b", "c"};
  for (auto& n : names)
    close(n);
  auto want = applied_state(path("a"));
  EXPECT_GT(want.size(), 40u);
  EXPECT_EQ(applied_state(path("b")), want);
  EXPECT_EQ(applied_state(path("c")), want);
}

TEST_F(ReplicatorTest, AGroupCommitOverManyPartitionsIsOneMessagePerFollower) {
  for (auto n : {"a", "b", "c"})
    open(n);
  for (uint32_t p = 0; p < partitions; ++p)
    set(p, {"a", 3, {"a", "b", "c"}, {"a", "b", "c"}});
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(eventually([&] { return repl("a").writable(p).writable; }));
  // One record per partition in one group commit: the writer is held by a
  // note's callback while the four appends queue.
  std::promise<void> hold, entered;
  auto held = hold.get_future().share();
  journal_store::append_op note;
  note.notes = {{"n", "v"}};
  store("a").append(note, [&entered, held](std::string) {
    entered.set_value();
    held.wait();
  });
  ASSERT_EQ(entered.get_future().wait_for(10s), std::future_status::ready);
  auto before = repl("a").counters();
  std::vector<answer> answers;
  for (uint32_t p = 0; p < partitions; ++p)
    answers.push_back(append("a", submit("r" + std::to_string(p) + "-x")));
  hold.set_value();
  for (auto& a : answers)
    EXPECT_EQ(a.get(), "");
  ASSERT_TRUE(repl("a").drain(5s));
  auto after = repl("a").counters();
  EXPECT_EQ(after.records_shipped - before.records_shipped, 2 * partitions);
  // The shipments (one per follower) and the committed offsets (one per
  // follower), with heartbeats of 20 ms around them: a message per
  // partition and follower would be 8 for the shipments alone.
  EXPECT_LT(after.messages_sent - before.messages_sent, 2 * partitions)
    << "records shipped in " << after.messages_sent - before.messages_sent
    << " messages";
}

TEST_F(ReplicatorTest, AFollowerThatLagsMoreThanReplicaLagIsShrunk) {
  replica_lag = 300ms;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  net.cut("a", "c");
  auto began = std::chrono::steady_clock::now();
  auto a = append("a", step("r1-a", 1));
  // The lag shows, in records and time, before c is dropped.
  EXPECT_TRUE(eventually([&] {
    auto m = repl("a").metrics(1);
    for (const auto& f : m ? m->followers : std::vector<follower_metrics>{})
      if (f.member == "c" && f.lag_records == 1 && f.lag_ms >= 100)
        return m->max_lag_records == 1 && m->waiting == 1;
    return false;
  }));
  // Not answered while c is in the ISR; answered once it is dropped.
  EXPECT_EQ(a.get(), "");
  EXPECT_GE(std::chrono::steady_clock::now() - began, 300ms);
  std::lock_guard lock{mu};
  ASSERT_FALSE(shrinks.empty());
  EXPECT_EQ(std::get<1>(shrinks.front()), "c");
  EXPECT_NE(std::get<2>(shrinks.front()).find("cluster.replica_lag"),
            std::string::npos)
    << std::get<2>(shrinks.front());
  EXPECT_EQ(records[1].isr, (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(eventually([&] { return repl("a").metrics(1)->isr_size == 2; }));
}

TEST_F(ReplicatorTest,
       AFollowerSilentLongerThanReplicaLagIsShrunkWithoutWrites) {
  replica_lag = 300ms;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  // Nothing is written from here on: only c's silence can tell.
  net.isolate("c");
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock{mu};
    return records[1].isr == std::vector<std::string>{"a", "b"};
  }));
  std::lock_guard lock{mu};
  ASSERT_FALSE(shrinks.empty());
  EXPECT_EQ(std::get<1>(shrinks.front()), "c");
  EXPECT_NE(std::get<2>(shrinks.front()).find("has not answered"),
            std::string::npos)
    << std::get<2>(shrinks.front());
}

TEST_F(ReplicatorTest, AFollowerThatWasDownCatchesUpAndIsExpandedBack) {
  replica_lag = 300ms;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  close("c");
  // Answered once c is dropped from the ISR.
  for (int i = 1; i < 10; ++i)
    EXPECT_EQ(append("a", step("r1-a", i)).get(), "");
  {
    std::lock_guard lock{mu};
    EXPECT_EQ(records[1].isr, (std::vector<std::string>{"a", "b"}));
  }
  // c comes back, is told the record and catches up from the stream; the
  // leader then asks to add it back.
  open("c");
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock{mu};
    return records[1].isr.size() == 3;
  }))
    << "c was not added back to the ISR";
  EXPECT_EQ(log_end("c", 1), log_end("a", 1));
  {
    std::lock_guard lock{mu};
    ASSERT_FALSE(expands.empty());
    EXPECT_EQ(expands.back().second, "c");
  }
  // Back in the ISR: the next append waits for it again.
  net.cut("a", "c");
  act_on_isr = false;
  auto next = append("a", step("r1-a", 10));
  EXPECT_EQ(next.get(400ms), "(no answer)");
  net.cut("a", "c", false);
  EXPECT_EQ(next.get(), "");
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, WithBothFollowersDownAndMinInsyncTwoWritesAreRefused) {
  replica_lag = 300ms;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  close("b");
  close("c");
  auto pending = append("a", step("r1-a", 1));
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock{mu};
    return records[1].isr == std::vector<std::string>{"a"};
  }));
  EXPECT_TRUE(eventually([&] { return !repl("a").writable(1).writable; }));
  auto why = repl("a").writable(1).reason;
  EXPECT_NE(why.find("cluster.min_insync (2)"), std::string::npos) << why;
  EXPECT_NE(why.find("partition 1"), std::string::npos) << why;
  // One copy is never enough: the append stays uncommitted.
  EXPECT_EQ(pending.get(500ms), "(no answer)");
  EXPECT_EQ(committed("a", 1), 1u);
  EXPECT_EQ(log_end("a", 1), 2u);
  auto m = repl("a").metrics(1);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->waiting, 1u);
  EXPECT_EQ(m->isr_size, 1u);
  EXPECT_FALSE(repl("a").writable(1).writable);
}

TEST_F(ReplicatorTest, ADeposedLeaderIsRefusedStopsAndLosesItsTail) {
  three(1, "a", 1);
  act_on_isr = false;
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  EXPECT_TRUE(eventually([&] { return committed("b", 1) == 1; }));
  // a is cut off from everyone (etcd included): its next write stays
  // pending, and b is made leader at a newer epoch.
  net.isolate("a");
  {
    std::lock_guard lock{mu};
    members["a"].blind = true;
  }
  auto lost = append("a", submit("r1-lost"));
  EXPECT_TRUE(eventually([&] { return log_end("a", 1) == 2; }));
  set(1, {"b", 2, {"b", "c"}, {"a", "b", "c"}});
  ASSERT_TRUE(eventually([&] { return repl("b").writable(1).writable; }))
    << repl("b").writable(1).reason;
  EXPECT_EQ(append("b", submit("r1-b")).get(), "");
  EXPECT_EQ(append("b", step("r1-b", 1)).get(), "");
  EXPECT_FALSE(lost.ready());

  // Back on the network, still believing it leads: its shipments are
  // refused as stale, and it stops leading.
  net.isolate("a", false);
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock{mu};
    return !depositions.empty();
  }));
  {
    std::lock_guard lock{mu};
    EXPECT_EQ(depositions.front(), std::make_tuple(1u, 1ul, 2ul));
  }
  EXPECT_FALSE(repl("a").writable(1).writable);
  auto refused = append("a", submit("r1-refused"));
  EXPECT_TRUE(journal_store::is_not_leader(refused.get()));

  // Told the record, it follows b: its tail is truncated by epoch, the
  // append it held fails, and it catches up.
  {
    std::lock_guard lock{mu};
    members["a"].blind = false;
  }
  publish(1);
  auto why = lost.get();
  EXPECT_NE(why, "");
  EXPECT_NE(why, "(no answer)");
  EXPECT_TRUE(eventually([&] { return log_end("a", 1) == log_end("b", 1); }));
  EXPECT_GE(repl("a").counters().truncated, 1u);
  EXPECT_FALSE(store("a").find_run("r1-lost"));
  expect_identical(1, "b");
}

TEST_F(ReplicatorTest, AnEpochOnlyOneReplicaHadIsTruncatedToTheEpochBefore) {
  three(1, "a", 1);
  act_on_isr = false;
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  EXPECT_TRUE(eventually([&] { return committed("b", 1) == 1; }));
  auto blind = [&](const std::string& m, bool on) {
    std::lock_guard lock{mu};
    members[m].blind = on;
    net.isolate(m, on);
  };
  // c gets record 2 of epoch 1 (x), b does not.
  net.cut("a", "b");
  auto x = append("a", step("r1-a", 1));
  EXPECT_TRUE(eventually([&] { return log_end("c", 1) == 2; }));
  // b leads epoch 2 alone, cut off: it records y at offset 2.
  blind("a", true);
  blind("c", true);
  set(1, {"b", 2, {"b", "c"}, {"a", "b", "c"}});
  ASSERT_TRUE(eventually([&] { return repl("b").writable(1).writable; }));
  auto y = append("b", step("r1-a", 1));
  EXPECT_TRUE(eventually([&] { return log_end("b", 1) == 2; }));
  // c leads epoch 3 with a; b is away.
  blind("b", true);
  blind("a", false);
  blind("c", false);
  net.cut("a", "b", false);
  set(1, {"c", 3, {"c", "a"}, {"a", "b", "c"}});
  ASSERT_TRUE(eventually([&] { return repl("c").writable(1).writable; }));
  EXPECT_EQ(append("c", step("r1-a", 2)).get(), "");
  EXPECT_EQ(x.get(), "") << "x was held by c and a, and committed with them";
  // b comes back: c never had epoch 2, so b keeps only what both logs hold
  // of epoch 1 (offset 1), and y fails.
  blind("b", false);
  publish(1);
  auto why = y.get();
  EXPECT_NE(why, "");
  EXPECT_NE(why, "(no answer)");
  EXPECT_TRUE(eventually([&] { return log_end("b", 1) == log_end("c", 1); }));
  expect_identical(1, "c");
}

TEST_F(ReplicatorTest, ADeposedLeaderNoLongerAReplicaFailsItsPendingAppends) {
  three(1, "a", 1);
  act_on_isr = false;
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  net.isolate("a");
  {
    std::lock_guard lock{mu};
    members["a"].blind = true;
  }
  auto lost = append("a", submit("r1-lost"));
  EXPECT_TRUE(eventually([&] { return log_end("a", 1) == 2; }));
  // The partition moves to b and c alone.
  set(1, {"b", 2, {"b", "c"}, {"b", "c"}});
  EXPECT_FALSE(lost.ready());
  {
    std::lock_guard lock{mu};
    members["a"].blind = false;
  }
  publish(1);
  auto why = lost.get();
  EXPECT_NE(why, "");
  EXPECT_NE(why, "(no answer)");
  EXPECT_EQ(log_end("a", 1), 1u);
  EXPECT_TRUE(eventually([&] { return !repl("a").writable(1).writable; }));
  EXPECT_TRUE(
    journal_store::is_not_leader(append("a", submit("r1-refused")).get()));
}

TEST_F(ReplicatorTest, DelayedMessagesStillReplicateInOrder) {
  three();
  // Everything a sends b arrives 150 ms late (and in order).
  net.delay("a", "b", 150ms);
  std::vector<answer> answers;
  answers.push_back(append("a", submit("r1-a")));
  for (int i = 1; i < 30; ++i)
    answers.push_back(append("a", step("r1-a", i)));
  for (auto& x : answers)
    EXPECT_EQ(x.get(), "");
  EXPECT_EQ(log_end("b", 1), log_end("a", 1));
  EXPECT_EQ(net.dropped(), 0u);
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, MalformedMessagesAreDroppedWithAWarning) {
  three();
  auto before = repl("b").counters().malformed;
  repl("b").on_message("a", std::string{"\x01\x05\x00\x00\x00\x01", 6});
  repl("b").on_message("a", "");
  ASSERT_TRUE(repl("b").drain(5s));
  EXPECT_EQ(repl("b").counters().malformed, before + 2);
  {
    std::lock_guard lock{mu};
    bool named = false;
    for (auto& w : warnings)
      named = named
              || (w.find("malformed message from member a") != std::string::npos
                  && w.find("truncated") != std::string::npos);
    EXPECT_TRUE(named);
  }
  // The partition still replicates.
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
}

TEST_F(ReplicatorTest, LogsAreTrimmedToWhatEveryReplicaHoldsLessTheMargin) {
  log_retain = 10;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  for (int i = 1; i < 30; ++i)
    EXPECT_EQ(append("a", step("r1-a", i)).get(), "");
  // Every replica has all 30: each log keeps the last 10 and a few more
  // (trimmed in steps of a quarter of the margin).
  for (auto n : {"a", "b", "c"})
    EXPECT_TRUE(eventually([&] {
      auto s = store(n).log_state(1);
      return s->committed == 30 && s->log_start > 15 && s->log_start <= 21;
    }))
      << n << "'s log starts at " << store(n).log_state(1)->log_start;
  // A follower in the ISR that lacks records holds the leader's trimming
  // back: nothing it needs is trimmed.
  act_on_isr = false;
  net.cut("a", "c");
  std::vector<answer> waiting;
  for (int i = 30; i < 60; ++i)
    waiting.push_back(append("a", step("r1-a", i)));
  // (Appends made at once may share a record.)
  EXPECT_TRUE(eventually([&] {
    return log_end("a", 1) > 30 && log_end("b", 1) == log_end("a", 1);
  }));
  std::this_thread::sleep_for(700ms);
  EXPECT_LE(store("a").log_state(1)->log_start, 21u);
  EXPECT_FALSE(waiting.back().ready());
  net.cut("a", "c", false);
  for (auto& a : waiting)
    EXPECT_EQ(a.get(), "");
  EXPECT_EQ(repl("c").counters().snapshots_installed, 0u);
  EXPECT_GT(repl("a").counters().trimmed, 0u);
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, AFollowerBehindATrimmedLogGetsASnapshotThenTheStream) {
  replica_lag = 300ms;
  log_retain = 5;
  // Several chunks per snapshot.
  chunk_bytes = 200;
  three();
  for (auto run : {"r1-a", "r1-b", "r1-c"})
    EXPECT_EQ(append("a", submit(run)).get(), "");
  close("c");
  // Without c: its records go, and are trimmed from a's and b's logs.
  for (int i = 1; i < 40; ++i)
    EXPECT_EQ(append("a", step(i % 2 ? "r1-a" : "r1-b", i)).get(), "");
  EXPECT_TRUE(
    eventually([&] { return store("a").log_state(1)->log_start > 10; }))
    << "a's log was not trimmed";
  std::vector<log_record> kept;
  EXPECT_EQ(store("a").read_records(1, 4, 1 << 20, kept).code,
            plog_errc::trimmed);
  // c comes back: what it lacks is gone from the log, so it gets a
  // snapshot, then the stream, and joins the ISR again.
  open("c");
  EXPECT_TRUE(eventually([&] {
    std::lock_guard lock{mu};
    return records[1].isr.size() == 3;
  }))
    << "c was not added back to the ISR";
  EXPECT_GE(repl("a").counters().snapshots_sent, 1u);
  EXPECT_GE(repl("c").counters().snapshots_installed, 1u);
  for (int i = 40; i < 50; ++i)
    EXPECT_EQ(append("a", step("r1-c", i)).get(), "");
  EXPECT_TRUE(eventually([&] {
    return store("c").digest_partition(1)->digest
           == store("a").digest_partition(1)->digest;
  }));
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, AWipedFollowerIsBroughtUpFromASnapshot) {
  replica_lag = 300ms;
  log_retain = 3;
  three();
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
  for (int i = 1; i < 20; ++i)
    EXPECT_EQ(append("a", step("r1-a", i)).get(), "");
  EXPECT_TRUE(
    eventually([&] { return store("a").log_state(1)->log_start > 5; }));
  close("c");
  std::filesystem::remove_all(path("c"));
  open("c");
  EXPECT_TRUE(eventually([&] {
    return committed("c", 1) == committed("a", 1)
           && repl("c").counters().snapshots_installed == 1;
  }))
    << "c committed " << committed("c", 1);
  EXPECT_EQ(append("a", step("r1-a", 20)).get(), "");
  expect_identical(1, "a");
}

TEST_F(ReplicatorTest, MalformedSnapshotMessagesAreDroppedWithAWarning) {
  three();
  auto before = repl("b").counters().malformed;
  // A snapshot chunk cut short, and one whose last flag is neither 0 nor 1.
  std::string chunk{"\x01\x01\x00\x00\x00\x05\x01\x00\x00\x00", 10};
  repl("b").on_message("a", chunk);
  std::string flag{"\x01\x01\x00\x00\x00\x05", 6};
  flag += std::string(4 + 8 * 4 + 4, '\0');
  flag += '\x07';
  flag += std::string(4, '\0');
  repl("b").on_message("a", flag);
  // A snapshot answer cut short.
  repl("a").on_message("b", std::string{"\x01\x01\x00\x00\x00\x06\x01", 7});
  ASSERT_TRUE(repl("b").drain(5s));
  ASSERT_TRUE(repl("a").drain(5s));
  EXPECT_EQ(repl("b").counters().malformed, before + 2);
  EXPECT_GE(repl("a").counters().malformed, 1u);
  {
    std::lock_guard lock{mu};
    int named = 0;
    for (auto& w : warnings)
      if (w.find("malformed message from member a") != std::string::npos
          && (w.find("truncated epoch") != std::string::npos
              || w.find("bad last flag 7") != std::string::npos))
        ++named;
    EXPECT_EQ(named, 2);
  }
  EXPECT_EQ(append("a", submit("r1-a")).get(), "");
}

/// One member of a two-member cluster in this process: its own actor
/// system with the middleman, the mesh, a store and a replicator on the
/// mesh transport.
struct mesh_member {
  std::string name;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::unique_ptr<journal_store> store;
  records_hook hook;
  std::unique_ptr<mesh_transport> transport;
  std::unique_ptr<troupe::cluster::mesh> mesh;
  std::unique_ptr<replicator> repl;

  mesh_member(std::string n, const std::string& path) : name(std::move(n)) {
    troupe::cluster::configure_mesh(cfg, 200ms, 2s);
    cfg.set("scheduler.max-threads", 2);
    sys = std::make_unique<caf::actor_system>(cfg);
    journal_store::options opts;
    opts.path = path;
    opts.replication.partitions = partitions;
    opts.replication.partition_of = test_partition;
    opts.replication.on_records = hook.callback();
    std::string error;
    store = journal_store::open(opts, error);
    EXPECT_TRUE(store) << error;
    transport = std::make_unique<mesh_transport>(
      *sys, name, [this](const std::string& member) {
        return mesh ? mesh->peer(member) : caf::actor{};
      });
    troupe::cluster::mesh_options mo;
    mo.cluster = "c1";
    mo.member = name;
    mo.secret = "replication test secret";
    mo.replicator = transport->actor();
    mesh = std::make_unique<troupe::cluster::mesh>(*sys, mo);
    auto why = mesh->listen();
    EXPECT_EQ(why, "");
  }

  void replicate() {
    replicator_options ro;
    ro.member = name;
    ro.min_insync = 2;
    ro.heartbeat = 20ms;
    ro.retry = 100ms;
    repl = std::make_unique<replicator>(*store, *transport, ro);
    hook.attach(repl.get());
    transport->attach(repl.get());
  }

  void close() {
    hook.attach(nullptr);
    if (transport)
      transport->attach(nullptr);
    repl.reset();
    if (mesh)
      mesh->stop();
    store.reset();
  }

  ~mesh_member() {
    close();
    transport.reset();
    mesh.reset();
    sys.reset();
  }
};

TEST(ReplicationMesh, TwoMembersReplicateThroughTheMeshOfTwoActorSystems) {
  temp_dir dir;
  auto a = std::make_unique<mesh_member>("a", (dir.path() / "a").string());
  auto b = std::make_unique<mesh_member>("b", (dir.path() / "b").string());
  auto info = [](const mesh_member& m) {
    troupe::cluster::member_info i;
    i.name = m.name;
    i.incarnation = m.name + "-1";
    i.peer_address = "127.0.0.1:" + std::to_string(m.mesh->port());
    return i;
  };
  std::vector<troupe::cluster::member_info> listed = {info(*a), info(*b)};
  for (auto* m : {a.get(), b.get()})
    m->mesh->start([listed] { return listed; }, [m] { return m->name + "-1"; });
  ASSERT_TRUE(eventually([&] {
    auto la = a->mesh->links(), lb = b->mesh->links();
    return la["b"].state == "connected" && lb["a"].state == "connected";
  }))
    << "the two members did not link";
  a->replicate();
  b->replicate();
  for (auto* m : {a.get(), b.get()})
    m->repl->assign(1, "a", 1, {"a", "b"}, {"a", "b"});
  ASSERT_TRUE(eventually([&] { return a->repl->writable(1).writable; }))
    << a->repl->writable(1).reason;
  std::vector<answer> answers;
  for (int i = 0; i < 10; ++i) {
    answer x;
    a->store->append(i == 0 ? submit("r1-m") : step("r1-m", i), x.callback());
    answers.push_back(x);
  }
  for (auto& x : answers)
    EXPECT_EQ(x.get(), "");
  EXPECT_EQ(b->store->log_state(1)->log_end, a->store->log_state(1)->log_end);
  EXPECT_TRUE(eventually([&] {
    return b->store->log_state(1)->committed
           == a->store->log_state(1)->committed;
  }));
  EXPECT_GT(b->repl->counters().messages_received, 0u);
  a->close();
  b->close();
  auto want = applied_state((dir.path() / "a").string());
  EXPECT_GT(want.size(), 3u);
  EXPECT_EQ(applied_state((dir.path() / "b").string()), want);
  a.reset();
  b.reset();
}

} // namespace
