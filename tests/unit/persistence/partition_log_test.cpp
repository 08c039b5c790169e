// Partition logs of a store with replicated partitions: appends become
// records, take effect when committed, and replicas fed the same records
// hold the same bytes (journal_store.hpp, "partition logs").

#include "persistence/journal_store.hpp"
#include "persistence/rocksdb/partition_log.hpp"
#include "tests/support/applied_state.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <chrono>
#include <future>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

using namespace troupe::persistence;
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

event_record event(event_type type, int32_t attempt, std::string node = "n") {
  event_record e;
  e.type = type;
  e.at_ns = 1'000 + attempt;
  e.node = std::move(node);
  e.attempt = attempt;
  e.message = "m" + std::to_string(attempt);
  return e;
}

run_index_entry index(const std::string& run_id, run_state state,
                      int64_t updated = 5) {
  run_index_entry e;
  e.run_id = run_id;
  e.workflow = "wf";
  e.state = state;
  e.created_at_ns = 1;
  e.updated_at_ns = updated;
  return e;
}

/// An append's answer, which may come long after the append (at commit).
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
  /// The answer, or "(no answer)" after 10 s.
  std::string get() const {
    if (future.wait_for(10s) != std::future_status::ready) {
      ADD_FAILURE() << "the append was not answered within 10 s";
      return "(no answer)";
    }
    return future.get();
  }
};

answer append(journal_store& store, journal_store::append_op op) {
  answer a;
  store.append(std::move(op), a.callback());
  return a;
}

journal_store::append_op submit(const std::string& run_id,
                                std::string key = {}) {
  journal_store::append_op op;
  op.run_id = run_id;
  op.events = {event(event_type::run_submitted, 0)};
  op.index = index(run_id, run_state::running);
  op.idempotency_key = std::move(key);
  return op;
}

journal_store::append_op step(const std::string& run_id, int32_t attempt) {
  journal_store::append_op op;
  op.run_id = run_id;
  op.events = {event(event_type::attempt_started, attempt),
               event(event_type::node_completed, attempt)};
  return op;
}

journal_store::append_op finish(const std::string& run_id) {
  journal_store::append_op op;
  op.run_id = run_id;
  op.events = {event(event_type::run_completed, 0)};
  op.index = index(run_id, run_state::completed, 9);
  return op;
}

struct PartitionLogTest : ::testing::Test {
  temp_dir dir;

  std::string path(const std::string& name) const {
    return (dir.path() / name).string();
  }

  std::unique_ptr<journal_store>
  open(const std::string& name, bool replicated = true,
       const std::function<void(journal_store::options&)>& tweak = {}) {
    journal_store::options opts;
    opts.path = path(name);
    if (replicated) {
      opts.replication.partitions = partitions;
      opts.replication.partition_of = test_partition;
    }
    if (tweak)
      tweak(opts);
    std::string error;
    auto store = journal_store::open(opts, error);
    EXPECT_TRUE(store) << error;
    return store;
  }

  /// Appends two runs' submissions and steps (r1-a in partition 1, with
  /// key-a, and r2-b in partition 2) to `store`, one record per append, and
  /// the same to `direct`, whose appends must succeed: `store`'s answers,
  /// in order (partition 1's records: 0, 1, 3, 4; partition 2's: 2, 5).
  static std::vector<answer> two_runs(journal_store& store,
                                      journal_store& direct) {
    std::vector<journal_store::append_op> ops
      = {submit("r1-a", "key-a"), step("r1-a", 1), submit("r2-b"),
         step("r1-a", 2),         finish("r1-a"),  step("r2-b", 1)};
    std::vector<answer> answers;
    for (auto& op : ops) {
      answers.push_back(append(store, op));
      // One append per record, to see several records before the commit.
      store.flush();
      EXPECT_EQ(append(direct, op).get(), "");
    }
    return answers;
  }

  /// Ships partition `p`'s records from `from` on, from `leader` of `epoch`
  /// to `follower`.
  static void ship(journal_store& leader, journal_store& follower, uint32_t p,
                   uint64_t epoch, uint64_t from, uint64_t to = ~uint64_t{0}) {
    std::vector<log_record> records;
    auto r = leader.read_records(p, from, 1 << 20, records);
    ASSERT_TRUE(r.ok()) << r.message;
    for (auto& rec : records) {
      if (rec.offset > to)
        break;
      auto a = follower.accept(p, epoch, rec.offset, rec.bytes);
      ASSERT_TRUE(a.ok()) << a.message;
    }
  }
};

TEST_F(PartitionLogTest,
       AppendsTakeEffectOnlyOnceCommittedAndEqualTheDirectPath) {
  auto direct = open("direct", /*replicated=*/false);
  auto store = open("replicated");
  ASSERT_TRUE(direct && store);
  auto answers = two_runs(*store, *direct);
  // Recorded, durable, and not in effect: no callback, no run, no key.
  for (auto& a : answers)
    EXPECT_FALSE(a.ready());
  EXPECT_FALSE(store->find_run("r1-a"));
  EXPECT_FALSE(store->find_idempotency_key("key-a"));
  std::string error;
  EXPECT_TRUE(store->read_journal("r1-a", error).empty());
  auto p1 = store->log_state(1);
  ASSERT_TRUE(p1);
  EXPECT_EQ(p1->log_end, 4u);
  EXPECT_EQ(p1->committed, 0u);
  EXPECT_EQ(p1->applied, 0u);
  EXPECT_EQ(store->log_state(2)->log_end, 2u);

  // Committing part of partition 1 answers the appends it holds, in order.
  ASSERT_TRUE(store->commit(1, 2).ok());
  EXPECT_EQ(answers[0].get(), "");
  EXPECT_EQ(answers[1].get(), "");
  EXPECT_FALSE(answers[3].ready());
  EXPECT_EQ(store->read_journal("r1-a", error).size(), 3u);
  EXPECT_EQ(store->find_run("r1-a")->state, run_state::running);
  EXPECT_EQ(store->find_idempotency_key("key-a"), "r1-a");

  EXPECT_TRUE(store->commit(1, 4).ok());
  EXPECT_TRUE(store->commit(2, 2).ok());
  for (auto& a : answers)
    EXPECT_EQ(a.get(), "");
  EXPECT_EQ(store->read_journal("r1-a", error).size(), 6u);
  EXPECT_EQ(store->find_run("r1-a")->state, run_state::completed);
  p1 = store->log_state(1);
  EXPECT_EQ(p1->committed, 4u);
  EXPECT_EQ(p1->applied, 4u);
  // Past the end is refused, naming the end.
  auto beyond = store->commit(1, 9);
  EXPECT_EQ(beyond.code, plog_errc::beyond_end);
  EXPECT_EQ(beyond.offset, 4u);

  direct.reset();
  store.reset();
  auto want = applied_state(path("direct"));
  EXPECT_GT(want.size(), 10u);
  EXPECT_EQ(applied_state(path("replicated")), want);
}

TEST_F(PartitionLogTest, PendingRecordsNumberEventsAndHoldKeys) {
  auto store = open("db");
  ASSERT_TRUE(store);
  auto a = append(*store, submit("r0-a", "k"));
  store->flush();
  // The key is claimed by a record not committed yet: another run is
  // refused it, and the run's next events follow the recorded ones.
  EXPECT_NE(append(*store, submit("r0-b", "k"))
              .get()
              .find("already used by "
                    "run r0-a"),
            std::string::npos);
  journal_store::append_op fenced = step("r0-a", 1);
  fenced.expected_seq = 2;
  auto b = append(*store, std::move(fenced));
  store->flush();
  ASSERT_TRUE(store->commit(0, store->log_state(0)->log_end).ok());
  EXPECT_EQ(a.get(), "");
  EXPECT_EQ(b.get(), "");
  std::string error;
  auto journal = store->read_journal("r0-a", error);
  ASSERT_EQ(journal.size(), 3u) << error;
  EXPECT_EQ(journal[1].type, event_type::attempt_started);
  EXPECT_FALSE(store->find_run("r0-b"));
}

TEST_F(PartitionLogTest, ReopenAfterACrashBetweenRecordAndApplyReapplies) {
  {
    auto store = open("db", true, [](journal_store::options& o) {
      o.replication.apply_batch = 1;
      // A crash right after the first record's effects were written.
      o.replication.after_apply_write
        = [](uint32_t, uint64_t applied) { return applied < 1; };
    });
    ASSERT_TRUE(store);
    std::vector<answer> answers;
    for (auto& op : {submit("r3-a"), step("r3-a", 1), finish("r3-a")}) {
      answers.push_back(append(*store, op));
      store->flush();
    }
    auto r = store->commit(3, 3);
    EXPECT_EQ(r.code, plog_errc::io);
    EXPECT_NE(r.message.find("stopped"), std::string::npos) << r.message;
    auto state = store->log_state(3);
    EXPECT_EQ(state->committed, 3u);
    EXPECT_EQ(state->applied, 1u);
    EXPECT_EQ(answers[0].get(), "");
    EXPECT_FALSE(answers[1].ready());
    std::string error;
    EXPECT_EQ(store->read_journal("r3-a", error).size(), 1u);
    EXPECT_EQ(store->find_run("r3-a")->state, run_state::running);
  }
  // The open applies what was committed and not applied.
  auto store = open("db");
  ASSERT_TRUE(store);
  auto state = store->log_state(3);
  EXPECT_EQ(state->applied, 3u);
  EXPECT_EQ(state->log_end, 3u);
  std::string error;
  EXPECT_EQ(store->read_journal("r3-a", error).size(), 4u) << error;
  EXPECT_EQ(store->find_run("r3-a")->state, run_state::completed);
  // Uncommitted records stay records; the next append follows them.
  auto more = append(*store, step("r3-a", 2));
  store->flush();
  EXPECT_EQ(store->log_state(3)->log_end, 4u);
  EXPECT_TRUE(store->commit(3, 4).ok());
  EXPECT_EQ(more.get(), "");
  auto journal = store->read_journal("r3-a", error);
  ASSERT_EQ(journal.size(), 6u) << error;
  EXPECT_EQ(journal[5].type, event_type::node_completed);
}

TEST_F(PartitionLogTest, FollowersRefuseOldEpochsAndGapsAndAckDuplicates) {
  auto leader = open("leader");
  auto follower = open("follower");
  ASSERT_TRUE(leader && follower);
  // Fenced at a newer epoch, a store leads no more until told to.
  ASSERT_TRUE(leader->fence(0, 4).ok());
  EXPECT_TRUE(
    journal_store::is_not_leader(append(*leader, submit("r0-z")).get()));
  ASSERT_TRUE(leader->lead(0, 5).ok());
  EXPECT_EQ(leader->lead(0, 3).code, plog_errc::stale_epoch);
  auto a = append(*leader, submit("r0-a"));
  leader->flush();
  auto b = append(*leader, step("r0-a", 1));
  leader->flush();
  std::vector<log_record> records;
  ASSERT_TRUE(leader->read_records(0, 1, 1 << 20, records).ok());
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].epoch, 5u);
  EXPECT_EQ(records[1].offset, 2u);

  auto gap = follower->accept(0, 5, 2, records[1].bytes);
  EXPECT_EQ(gap.code, plog_errc::gap);
  EXPECT_EQ(gap.offset, 1u);
  EXPECT_NE(gap.message.find("expected offset 1"), std::string::npos);
  EXPECT_TRUE(follower->accept(0, 5, 1, records[0].bytes).ok());
  // The same record again is acknowledged, and written once.
  EXPECT_TRUE(follower->accept(0, 5, 1, records[0].bytes).ok());
  EXPECT_EQ(follower->log_state(0)->log_end, 1u);
  auto diverged = follower->accept(0, 5, 1, records[1].bytes);
  EXPECT_EQ(diverged.code, plog_errc::diverged);
  EXPECT_EQ(diverged.offset, 1u);
  // The epoch is persisted with the first record of a newer leader.
  EXPECT_EQ(follower->log_state(0)->epoch, 5u);

  ASSERT_TRUE(follower->fence(0, 6).ok());
  auto stale = follower->accept(0, 5, 2, records[1].bytes);
  EXPECT_EQ(stale.code, plog_errc::stale_epoch);
  EXPECT_EQ(stale.epoch, 6u);
  EXPECT_EQ(follower->fence(0, 4).code, plog_errc::stale_epoch);
  EXPECT_TRUE(follower->fence(0, 6).ok());
  // A record of an older epoch, shipped by the newer leader, is taken.
  EXPECT_TRUE(follower->accept(0, 6, 2, records[1].bytes).ok());
  EXPECT_EQ(follower->accept(0, 6, 3, "garbage").code, plog_errc::corrupt);
  EXPECT_EQ(follower->accept(0, 5, 3, plog::begin_record(6)).code,
            plog_errc::stale_epoch);
  EXPECT_EQ(follower->accept(0, 6, 3, plog::begin_record(7)).code,
            plog_errc::corrupt);
  EXPECT_EQ(follower->accept(9, 6, 1, records[0].bytes).code,
            plog_errc::bad_partition);
  auto state = follower->log_state(0);
  EXPECT_EQ(state->log_end, 2u);
  EXPECT_EQ(state->epoch, 6u);
  EXPECT_EQ(state->epochs,
            (std::vector<std::pair<uint64_t, uint64_t>>{{5, 1}}));

  // The epoch survives a reopen.
  follower.reset();
  follower = open("follower");
  EXPECT_EQ(follower->accept(0, 5, 3, plog::begin_record(5)).code,
            plog_errc::stale_epoch);

  auto plain = open("plain", /*replicated=*/false);
  EXPECT_EQ(plain->accept(0, 1, 1, records[0].bytes).code,
            plog_errc::not_replicated);
  EXPECT_FALSE(plain->log_state(0));
  ASSERT_TRUE(leader->commit(0, 2).ok());
  EXPECT_EQ(a.get(), "");
  EXPECT_EQ(b.get(), "");
}

TEST_F(PartitionLogTest, ReplicasFedTheSameRecordsHoldTheSameBytes) {
  auto leader = open("leader");
  auto one = open("one");
  auto two = open("two");
  ASSERT_TRUE(leader && one && two);
  std::vector<answer> answers;
  for (int round = 0; round < 3; ++round) {
    for (uint32_t p = 0; p < partitions; ++p) {
      std::string run = "r" + std::to_string(p) + "-" + std::to_string(round);
      answers.push_back(append(*leader, submit(run, "key-" + run)));
      answers.push_back(append(*leader, step(run, 1)));
      if (round != 1)
        answers.push_back(append(*leader, finish(run)));
    }
    leader->flush();
  }
  for (uint32_t p = 0; p < partitions; ++p) {
    ship(*leader, *one, p, 0, 1);
    // The second follower gets each record twice, as after a lost ack.
    ship(*leader, *two, p, 0, 1);
    ship(*leader, *two, p, 0, 1);
    auto end = leader->log_state(p)->log_end;
    EXPECT_GE(end, 1u);
    for (auto* s : {leader.get(), one.get(), two.get()})
      ASSERT_TRUE(s->commit(p, end).ok());
  }
  for (auto& a : answers)
    EXPECT_EQ(a.get(), "");
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_EQ(one->log_state(p), leader->log_state(p));
    EXPECT_EQ(two->log_state(p), leader->log_state(p));
    // The digests agree, and say what they cover.
    auto d = leader->digest_partition(p);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->applied, leader->log_state(p)->applied);
    EXPECT_EQ(d->digest.size(), 16u);
    EXPECT_GT(d->runs, 0u);
    EXPECT_GE(d->events, d->runs);
    for (auto* s : {one.get(), two.get()}) {
      auto other = s->digest_partition(p);
      ASSERT_TRUE(other);
      EXPECT_EQ(other->digest, d->digest) << p;
      EXPECT_EQ(other->applied, d->applied);
      EXPECT_EQ(other->events, d->events);
    }
  }
  // Partitions hold different runs, so different digests; none is asked
  // past the count.
  EXPECT_NE(leader->digest_partition(0)->digest,
            leader->digest_partition(1)->digest);
  EXPECT_FALSE(leader->digest_partition(partitions));
  leader.reset();
  one.reset();
  two.reset();
  auto want = applied_state(path("leader"));
  EXPECT_GT(want.size(), 40u);
  EXPECT_EQ(applied_state(path("one")), want);
  EXPECT_EQ(applied_state(path("two")), want);
}

TEST_F(PartitionLogTest, TruncationNeverRemovesCommittedRecords) {
  auto store = open("db");
  ASSERT_TRUE(store);
  auto a = append(*store, submit("r2-a"));
  store->flush();
  auto b = append(*store, step("r2-a", 1));
  store->flush();
  auto c = append(*store, step("r2-a", 2));
  store->flush();
  ASSERT_TRUE(store->commit(2, 2).ok());
  auto refused = store->truncate(2, 1);
  EXPECT_EQ(refused.code, plog_errc::committed);
  EXPECT_EQ(refused.offset, 2u);
  EXPECT_EQ(store->log_state(2)->log_end, 3u);

  ASSERT_TRUE(store->truncate(2, 2).ok());
  EXPECT_EQ(store->log_state(2)->log_end, 2u);
  EXPECT_NE(c.get().find("truncated after offset 2"), std::string::npos);
  // The run lost an append: the next ones are refused until a resync,
  // which numbers events after the committed ones.
  EXPECT_NE(append(*store, step("r2-a", 3)).get().find("earlier append"),
            std::string::npos);
  auto resync = step("r2-a", 4);
  resync.resync = true;
  resync.expected_seq = 4;
  auto d = append(*store, std::move(resync));
  store->flush();
  ASSERT_TRUE(store->commit(2, 3).ok());
  EXPECT_EQ(d.get(), "");
  std::string error;
  auto journal = store->read_journal("r2-a", error);
  ASSERT_EQ(journal.size(), 5u) << error;
  EXPECT_EQ(journal[3].attempt, 4);
  EXPECT_EQ(a.get(), "");
  EXPECT_EQ(b.get(), "");
}

// Kafka's KIP-101 case: leader A (epoch 1) wrote 1-5, of which B holds and
// both committed 1-3. B leads epoch 2 and writes 4'. A learns from B where
// epoch 1 ended, truncates after it, and follows B.
TEST_F(PartitionLogTest, DivergentTailIsTruncatedByEpoch) {
  auto a = open("a");
  auto b = open("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(a->lead(0, 1).ok());
  std::vector<answer> answers;
  answers.push_back(append(*a, submit("r0-x", "kx")));
  a->flush();
  for (int i = 1; i <= 4; ++i) {
    answers.push_back(append(*a, step("r0-x", i)));
    a->flush();
  }
  ASSERT_EQ(a->log_state(0)->log_end, 5u);
  ASSERT_TRUE(b->fence(0, 1).ok());
  ship(*a, *b, 0, 1, 1, 3);
  ASSERT_TRUE(a->commit(0, 3).ok());
  ASSERT_TRUE(b->commit(0, 3).ok());
  EXPECT_EQ(answers[2].get(), "");
  EXPECT_FALSE(answers[3].ready());

  // B leads epoch 2: its first record is 4'.
  ASSERT_TRUE(b->lead(0, 2).ok());
  journal_store::append_op other = step("r0-x", 40);
  other.expected_seq = 6;
  auto b4 = append(*b, std::move(other));
  b->flush();
  EXPECT_EQ(b->log_state(0)->epochs,
            (std::vector<std::pair<uint64_t, uint64_t>>{{1, 1}, {2, 4}}));
  std::vector<log_record> tail;
  ASSERT_TRUE(b->read_records(0, 4, 1 << 20, tail).ok());
  ASSERT_EQ(tail.size(), 1u);
  EXPECT_EQ(tail[0].epoch, 2u);

  // A, deposed: its record 4 is not B's.
  EXPECT_EQ(a->accept(0, 2, 4, tail[0].bytes).code, plog_errc::diverged);
  EXPECT_EQ(a->end_offset_for_epoch(0, 1).offset, 5u);
  auto end = b->end_offset_for_epoch(0, 1);
  ASSERT_TRUE(end.ok()) << end.message;
  EXPECT_EQ(end.offset, 3u);
  EXPECT_EQ(b->end_offset_for_epoch(0, 2).offset, 4u);
  EXPECT_EQ(b->end_offset_for_epoch(0, 3).code, plog_errc::stale_epoch);
  ASSERT_TRUE(a->truncate(0, end.offset).ok());
  // Gone for good: resending them is safe, and the error says so.
  for (int i : {3, 4}) {
    auto why = answers[i].get();
    EXPECT_NE(why.find("truncated"), std::string::npos) << why;
    EXPECT_TRUE(journal_store::is_discarded(why)) << why;
  }
  ASSERT_TRUE(a->accept(0, 2, 4, tail[0].bytes).ok());
  EXPECT_EQ(a->log_state(0)->epochs, b->log_state(0)->epochs);
  // A follows now: its own appends are refused, not written under epoch 2.
  EXPECT_TRUE(journal_store::is_not_leader(append(*a, step("r0-y", 1)).get()));
  EXPECT_EQ(a->log_state(0)->log_end, 4u);
  ASSERT_TRUE(b->commit(0, 4).ok());
  ASSERT_TRUE(a->commit(0, 4).ok());
  EXPECT_EQ(b4.get(), "");
  std::string error;
  auto journal = a->read_journal("r0-x", error);
  ASSERT_EQ(journal.size(), 7u) << error;
  EXPECT_EQ(journal[6].attempt, 40);
  EXPECT_EQ(answers[0].get(), "");
  a.reset();
  b.reset();
  EXPECT_EQ(applied_state(path("a")), applied_state(path("b")));
}

/// The number of keys in column family `cf` of the closed store at `path`,
/// and its "format".
std::pair<size_t, std::string> count_keys(const std::string& path,
                                          std::string_view cf) {
  rocksdb::Options o;
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(o, path, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (auto& n : names)
    descs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  EXPECT_TRUE(rocksdb::DB::OpenForReadOnly(o, path, descs, &handles, &db).ok());
  size_t count = 0;
  std::string format;
  for (size_t i = 0; db && i < names.size(); ++i) {
    if (names[i] == rocksdb::kDefaultColumnFamilyName)
      db->Get({}, handles[i], "format", &format).PermitUncheckedError();
    if (names[i] != cf)
      continue;
    std::unique_ptr<rocksdb::Iterator> it{db->NewIterator({}, handles[i])};
    for (it->SeekToFirst(); it->Valid(); it->Next())
      ++count;
  }
  for (auto* h : handles)
    db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  delete db;
  return {count, format};
}

TEST_F(PartitionLogTest, WithoutReplicationAppendsAreWrittenDirectly) {
  {
    auto store = open("plain", /*replicated=*/false);
    ASSERT_TRUE(store);
    EXPECT_EQ(append(*store, submit("r1-a", "k")).get(), "");
    EXPECT_EQ(append(*store, step("r1-a", 1)).get(), "");
    EXPECT_EQ(store->find_idempotency_key("k"), "r1-a");
    EXPECT_EQ(store->commit(1, 1).code, plog_errc::not_replicated);
  }
  auto [records, format] = count_keys(path("plain"), plog::plog_cf);
  EXPECT_EQ(records, 0u);
  EXPECT_EQ(format, "2");
  {
    auto store = open("replicated");
    ASSERT_TRUE(store);
    append(*store, submit("r1-a"));
    store->flush();
  }
  std::tie(records, format) = count_keys(path("replicated"), plog::plog_cf);
  EXPECT_EQ(records, 1u);
  EXPECT_EQ(format, "3");
}

TEST_F(PartitionLogTest, CommitOnRecordAndTrimming) {
  auto store = open("db", true, [](journal_store::options& o) {
    o.replication.commit_on_record = true;
  });
  ASSERT_TRUE(store);
  EXPECT_EQ(append(*store, submit("r1-a")).get(), "");
  EXPECT_EQ(append(*store, step("r1-a", 1)).get(), "");
  // Notes alone are the node's own, written at once.
  journal_store::append_op notes;
  notes.notes = {{"breaker/x", "open"}};
  EXPECT_EQ(append(*store, std::move(notes)).get(), "");
  EXPECT_EQ(store->read_notes("breaker/").size(), 1u);
  auto state = store->log_state(1);
  EXPECT_EQ(state->log_end, 2u);
  EXPECT_EQ(state->applied, 2u);
  std::string error;
  EXPECT_EQ(store->read_journal("r1-a", error).size(), 3u);

  ASSERT_TRUE(store->trim_log(1, 1).ok());
  std::vector<log_record> records;
  auto trimmed = store->read_records(1, 1, 100, records);
  EXPECT_EQ(trimmed.code, plog_errc::trimmed);
  EXPECT_EQ(trimmed.offset, 2u);
  ASSERT_TRUE(store->read_records(1, 2, 1, records).ok());
  EXPECT_EQ(records.size(), 1u);
  EXPECT_EQ(store->read_records(1, 4, 1, records).code, plog_errc::beyond_end);
  // A record held once and trimmed since is acknowledged.
  EXPECT_TRUE(store->accept(1, 0, 1, plog::begin_record(0)).ok());
  // Never past what is applied.
  ASSERT_TRUE(store->trim_log(1, 100).ok());
  EXPECT_EQ(store->log_state(1)->log_start, 3u);
  EXPECT_EQ(store->log_state(1)->epochs,
            (std::vector<std::pair<uint64_t, uint64_t>>{{0, 3}}));
  store.reset();
  // A store with logs of more partitions than configured is refused.
  journal_store::options opts;
  opts.path = path("db");
  opts.replication.partitions = 1;
  opts.replication.partition_of = test_partition;
  std::string open_error;
  EXPECT_FALSE(journal_store::open(opts, open_error));
  EXPECT_NE(open_error.find("replication.partitions is 1"), std::string::npos)
    << open_error;
}

} // namespace

TEST_F(PartitionLogTest, OnRecordsNamesEachPartitionWrittenAndItsNewEnd) {
  std::mutex mu;
  std::vector<std::vector<std::pair<uint32_t, uint64_t>>> calls;
  auto store = open("db", true, [&](journal_store::options& o) {
    o.replication.on_records
      = [&](const std::vector<std::pair<uint32_t, uint64_t>>& written) {
          std::lock_guard lock{mu};
          calls.push_back(written);
        };
  });
  ASSERT_TRUE(store);
  // One group commit over partitions 2 and 1: one call, in partition order.
  // A note is written directly: no record, no call. Its callback holds the
  // writer thread until the next three appends are queued.
  std::promise<void> hold, entered;
  auto held = hold.get_future().share();
  journal_store::append_op blocker;
  blocker.notes = {{"n", "v"}};
  store->append(blocker, [&entered, held](std::string) {
    entered.set_value();
    held.wait();
  });
  ASSERT_EQ(entered.get_future().wait_for(10s), std::future_status::ready);
  auto a = append(*store, submit("r2-a"));
  auto b = append(*store, submit("r1-b"));
  auto c = append(*store, step("r2-a", 1));
  hold.set_value();
  store->flush();
  auto d = append(*store, step("r1-b", 1));
  store->flush();
  std::lock_guard lock{mu};
  ASSERT_EQ(calls.size(), 2u);
  using pairs = std::vector<std::pair<uint32_t, uint64_t>>;
  EXPECT_EQ(calls[0], (pairs{{1, 1}, {2, 1}}));
  EXPECT_EQ(calls[1], (pairs{{1, 2}}));
  EXPECT_FALSE(a.ready() || b.ready() || c.ready() || d.ready());
}

TEST_F(PartitionLogTest, AShipmentOfManyRecordsIsAcceptedInOneCall) {
  auto leader = open("leader");
  auto one = open("one");
  auto two = open("two");
  ASSERT_TRUE(leader && one && two);
  std::vector<answer> answers;
  for (int round = 0; round < 3; ++round) {
    for (uint32_t p = 0; p < partitions; ++p) {
      std::string run = "r" + std::to_string(p) + "-" + std::to_string(round);
      answers.push_back(append(*leader, submit(run, "key-" + run)));
      answers.push_back(append(*leader, step(run, 1)));
    }
    leader->flush();
  }
  // Every partition's records, in one call; `two` gets them one by one.
  std::vector<std::vector<log_record>> held(partitions);
  std::vector<journal_store::accept_item> items;
  for (uint32_t p = 0; p < partitions; ++p) {
    ASSERT_TRUE(leader->read_records(p, 1, 1 << 20, held[p]).ok());
    ASSERT_GE(held[p].size(), 2u);
    for (auto& rec : held[p])
      items.push_back({p, 0, rec.offset, rec.bytes});
    ship(*leader, *two, p, 0, 1);
  }
  auto results = one->accept_many(items);
  ASSERT_EQ(results.size(), items.size());
  for (auto& r : results)
    EXPECT_TRUE(r.ok()) << r.message;
  for (uint32_t p = 0; p < partitions; ++p)
    EXPECT_EQ(one->log_state(p), two->log_state(p)) << p;
  // Again: held already, acknowledged, nothing written twice.
  for (auto& r : one->accept_many(items))
    EXPECT_TRUE(r.ok()) << r.message;
  // A gap in partition 0 refuses it and what follows it there, and
  // nothing of partition 0 is written; partition 1's record still is.
  auto end0 = one->log_state(0)->log_end;
  auto end1 = one->log_state(1)->log_end;
  auto rec0 = held[0].back().bytes;
  auto rec1 = held[1].back().bytes;
  auto mixed = one->accept_many(
    {{0, 0, end0 + 2, rec0}, {0, 0, end0 + 3, rec0}, {1, 0, end1 + 1, rec1}});
  EXPECT_EQ(mixed[0].code, plog_errc::gap);
  EXPECT_EQ(mixed[0].offset, end0 + 1);
  EXPECT_EQ(mixed[1].code, plog_errc::gap);
  EXPECT_TRUE(mixed[2].ok()) << mixed[2].message;
  EXPECT_EQ(one->log_state(0)->log_end, end0);
  EXPECT_EQ(one->log_state(1)->log_end, end1 + 1);
  // A stale epoch is refused as such.
  ASSERT_TRUE(one->fence(2, 5).ok());
  auto stale = one->accept_many({{2, 3, 99, held[2].back().bytes}});
  EXPECT_EQ(stale[0].code, plog_errc::stale_epoch);
  for (uint32_t p = 0; p < partitions; ++p)
    ASSERT_TRUE(leader->commit(p, leader->log_state(p)->log_end).ok());
  for (auto& a : answers)
    EXPECT_EQ(a.get(), "");
}

TEST_F(PartitionLogTest, CommitManyAppliesSeveralPartitionsInOneCall) {
  auto direct = open("direct", /*replicated=*/false);
  auto store = open("replicated", true, [](journal_store::options& o) {
    // Partition 1's records do not fit the shared write: applied alone.
    o.replication.apply_batch = 2;
  });
  ASSERT_TRUE(direct && store);
  auto answers = two_runs(*store, *direct);
  ASSERT_EQ(store->log_state(1)->log_end, 4u);
  ASSERT_EQ(store->log_state(2)->log_end, 2u);
  // The records not applied yet are read from memory, as from the disk.
  std::vector<log_record> records;
  ASSERT_TRUE(store->read_records(1, 2, 1 << 20, records).ok());
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records.front().offset, 2u);
  EXPECT_EQ(records.back().offset, 4u);

  // Partition 2 in full, partition 1 in part; one past its end is
  // refused without stopping the others; 7 is out of range.
  auto r = store->commit_many({{2, 2}, {1, 3}, {3, 1}, {7, 1}});
  ASSERT_EQ(r.size(), 4u);
  EXPECT_TRUE(r[0].ok()) << r[0].message;
  EXPECT_TRUE(r[1].ok()) << r[1].message;
  EXPECT_EQ(r[2].code, plog_errc::beyond_end);
  EXPECT_EQ(r[3].code, plog_errc::bad_partition);
  EXPECT_EQ(store->log_state(2)->applied, 2u);
  EXPECT_EQ(store->log_state(1)->applied, 3u);
  EXPECT_EQ(store->log_state(1)->committed, 3u);
  for (size_t i : {0, 1, 2, 3, 5})
    EXPECT_EQ(answers[i].get(), "") << "append " << i;
  EXPECT_FALSE(answers[4].ready());
  // A partition named twice: the second is refused, naming it.
  r = store->commit_many({{2, 2}, {2, 2}});
  EXPECT_TRUE(r[0].ok());
  EXPECT_EQ(r[1].code, plog_errc::bad_partition);
  EXPECT_NE(r[1].message.find("named twice"), std::string::npos)
    << r[1].message;
  // Committing again at or below the applied offset is a no-op.
  r = store->commit_many({{2, 1}, {1, 4}});
  EXPECT_TRUE(r[0].ok() && r[1].ok());
  EXPECT_EQ(answers[4].get(), "");
  EXPECT_EQ(store->log_state(1)->applied, 4u);

  direct.reset();
  store.reset();
  auto want = applied_state(path("direct"));
  EXPECT_GT(want.size(), 10u);
  EXPECT_EQ(applied_state(path("replicated")), want);
}

namespace {

/// Runs `store.collect(o)` on a thread of its own while doing for it what
/// the replicator does: every record `leader` writes is shipped to
/// `followers` (at `epoch`) and committed on all of them. Returns the
/// report, or fails the test when the collection does not end within 10 s.
journal_store::gc_report
collect_replicated(journal_store& leader,
                   const std::vector<journal_store*>& followers, uint64_t epoch,
                   const journal_store::gc_options& o) {
  auto report
    = std::async(std::launch::async, [&] { return leader.collect(o); });
  auto until = std::chrono::steady_clock::now() + 10s;
  auto replicate = [&] {
    for (uint32_t p = 0; p < partitions; ++p) {
      auto end = leader.log_state(p)->log_end;
      for (auto* f : followers) {
        auto have = f->log_state(p)->log_end;
        if (have < end) {
          std::vector<log_record> records;
          ASSERT_TRUE(leader.read_records(p, have + 1, 1 << 20, records).ok());
          for (auto& rec : records)
            ASSERT_TRUE(f->accept(p, epoch, rec.offset, rec.bytes).ok());
        }
      }
      if (leader.log_state(p)->committed < end) {
        ASSERT_TRUE(leader.commit(p, end).ok());
        for (auto* f : followers)
          ASSERT_TRUE(f->commit(p, end).ok());
      }
    }
  };
  while (report.wait_for(5ms) != std::future_status::ready
         && std::chrono::steady_clock::now() < until)
    replicate();
  if (report.wait_for(0s) != std::future_status::ready) {
    ADD_FAILURE() << "the collection did not end within 10 s";
    return report.get();
  }
  replicate();
  return report.get();
}

/// Copies partition `p`'s snapshot from `leader` into `follower`, chunk by
/// chunk (`max_bytes` each: 1 makes a chunk per run or entry), and
/// finishes the install unless `chunks` is reached first. Returns the
/// chunks copied.
size_t copy_snapshot(journal_store& leader, journal_store& follower, uint32_t p,
                     uint64_t epoch, size_t max_bytes = 1,
                     size_t chunks = ~size_t{0}) {
  plog_result r;
  auto snap = leader.open_snapshot(p, r);
  EXPECT_TRUE(snap) << r.message;
  if (!snap)
    return 0;
  r = follower.begin_snapshot_install(p, epoch);
  EXPECT_TRUE(r.ok()) << r.message;
  std::string cursor;
  size_t copied = 0;
  do {
    if (copied == chunks)
      return copied;
    journal_store::snapshot_chunk chunk;
    r = snap->read(cursor, max_bytes, chunk);
    EXPECT_TRUE(r.ok()) << r.message;
    r = follower.install_snapshot_chunk(p, chunk.bytes);
    EXPECT_TRUE(r.ok()) << r.message;
    ++copied;
    cursor = chunk.next;
  } while (!cursor.empty() && copied < 10'000);
  r = follower.finish_snapshot_install(p, snap->offset(), snap->epoch());
  EXPECT_TRUE(r.ok()) << r.message;
  return copied;
}

} // namespace

TEST_F(PartitionLogTest, RetentionOnTheLeaderIsARecordFollowersApplyAlike) {
  auto leader = open("leader");
  auto follower = open("follower");
  ASSERT_TRUE(leader && follower);
  for (uint32_t p = 0; p < partitions; ++p) {
    ASSERT_TRUE(leader->lead(p, 1).ok());
    ASSERT_TRUE(follower->fence(p, 1).ok());
  }
  // r1-a (with key-a) and r1-c finished; r2-b still runs.
  std::vector<answer> answers;
  for (auto& op :
       {submit("r1-a", "key-a"), step("r1-a", 1), finish("r1-a"),
        submit("r2-b"), step("r2-b", 1), submit("r1-c"), finish("r1-c")})
    answers.push_back(append(*leader, op));
  leader->flush();
  for (uint32_t p = 0; p < partitions; ++p) {
    ship(*leader, *follower, p, 1, 1);
    auto end = leader->log_state(p)->log_end;
    ASSERT_TRUE(leader->commit(p, end).ok());
    ASSERT_TRUE(follower->commit(p, end).ok());
  }
  for (auto& a : answers)
    ASSERT_EQ(a.get(), "");
  auto ends_before = leader->log_state(1)->log_end;

  journal_store::gc_options o;
  o.runs_before_ns = 1'000'000; // After every run finished (at 9).
  o.tombstones_before_ns = 0;
  auto r = collect_replicated(*leader, {follower.get()}, 1, o);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.runs, 2u);
  EXPECT_EQ(r.keys, 1u);
  EXPECT_EQ(r.events, 6u);
  EXPECT_EQ(r.not_led, 0u);
  // The deletions are a record of partition 1, and nothing of partition 2.
  EXPECT_GT(leader->log_state(1)->log_end, ends_before);
  for (auto* s : {leader.get(), follower.get()}) {
    EXPECT_FALSE(s->find_run("r1-a"));
    EXPECT_FALSE(s->find_run("r1-c"));
    EXPECT_FALSE(s->find_idempotency_key("key-a"));
    ASSERT_TRUE(s->find_tombstone("r1-a"));
    EXPECT_EQ(s->find_tombstone("r1-a")->last.state, run_state::completed);
    std::string error;
    EXPECT_TRUE(s->read_journal("r1-a", error).empty());
    ASSERT_TRUE(s->find_run("r2-b"));
    EXPECT_EQ(s->read_journal("r2-b", error).size(), 3u);
  }
  for (uint32_t p = 0; p < partitions; ++p) {
    EXPECT_EQ(follower->log_state(p), leader->log_state(p));
    EXPECT_EQ(follower->digest_partition(p)->digest,
              leader->digest_partition(p)->digest)
      << p;
  }
  // A follower leaves the partitions it does not lead to their leader.
  auto f = follower->collect([] {
    journal_store::gc_options all;
    all.runs_before_ns = std::numeric_limits<int64_t>::max();
    all.tombstones_before_ns = std::numeric_limits<int64_t>::max();
    return all;
  }());
  EXPECT_EQ(f.error, "");
  EXPECT_EQ(f.runs + f.tombstones, 0u);
  EXPECT_EQ(f.not_led, 2u); // the tombstones of r1-a and r1-c

  // Expired tombstones go through the log too.
  o.runs_before_ns = 0;
  o.tombstones_before_ns = std::numeric_limits<int64_t>::max();
  r = collect_replicated(*leader, {follower.get()}, 1, o);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.tombstones, 2u);
  for (auto* s : {leader.get(), follower.get()})
    EXPECT_FALSE(s->find_tombstone("r1-a"));

  leader.reset();
  follower.reset();
  auto want = applied_state(path("leader"));
  EXPECT_EQ(applied_state(path("follower")), want);
  // Opened without replication (a tool on a member's data dir), the store
  // refuses to delete on its own.
  auto plain = open("follower", /*replicated=*/false);
  ASSERT_TRUE(plain);
  auto refused = plain->collect([] {
    journal_store::gc_options all;
    all.runs_before_ns = std::numeric_limits<int64_t>::max();
    return all;
  }());
  EXPECT_NE(refused.error.find("replicated partition"), std::string::npos)
    << refused.error;
}

TEST_F(PartitionLogTest, RetentionLeavesTheRunsOfPartitionsLedElsewhere) {
  auto leader = open("leader");
  auto follower = open("follower");
  ASSERT_TRUE(leader && follower);
  for (uint32_t p = 0; p < partitions; ++p) {
    ASSERT_TRUE(leader->lead(p, 1).ok());
    ASSERT_TRUE(follower->fence(p, 1).ok());
  }
  auto a = append(*leader, submit("r1-a"));
  auto b = append(*leader, finish("r1-a"));
  leader->flush();
  ship(*leader, *follower, 1, 1, 1);
  auto end = leader->log_state(1)->log_end;
  ASSERT_TRUE(leader->commit(1, end).ok());
  ASSERT_TRUE(follower->commit(1, end).ok());
  ASSERT_EQ(b.get(), "");
  auto before = follower->digest_partition(1);
  journal_store::gc_options o;
  o.runs_before_ns = std::numeric_limits<int64_t>::max();
  auto r = follower->collect(o);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.runs, 0u);
  EXPECT_EQ(r.not_led, 1u);
  EXPECT_TRUE(follower->find_run("r1-a"));
  EXPECT_EQ(follower->digest_partition(1)->digest, before->digest);
  EXPECT_EQ(follower->log_state(1)->log_end, end);
}

TEST_F(PartitionLogTest,
       RetentionLeavesAFinishedRunThatARecordNotAppliedWrites) {
  auto leader = open("leader");
  ASSERT_TRUE(leader);
  ASSERT_TRUE(leader->lead(1, 1).ok());
  auto a = append(*leader, submit("r1-a"));
  auto b = append(*leader, finish("r1-a"));
  leader->flush();
  ASSERT_TRUE(leader->commit(1, leader->log_state(1)->log_end).ok());
  ASSERT_EQ(b.get(), "");
  // The run is retried: recorded, not committed yet.
  journal_store::append_op retry = step("r1-a", 2);
  retry.index = index("r1-a", run_state::running, 20);
  auto c = append(*leader, retry);
  leader->flush();
  EXPECT_FALSE(c.ready());
  auto end = leader->log_state(1)->log_end;
  journal_store::gc_options o;
  o.runs_before_ns = std::numeric_limits<int64_t>::max();
  auto report
    = std::async(std::launch::async, [&] { return leader->collect(o); });
  // The deletion is not recorded: the collection waits for the retry's
  // record to commit, and then finds the run running. (A deletion recorded
  // would show within milliseconds.)
  auto until = std::chrono::steady_clock::now() + 1s;
  while (leader->log_state(1)->log_end == end
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(5ms);
  EXPECT_EQ(leader->log_state(1)->log_end, end);
  EXPECT_NE(report.wait_for(0s), std::future_status::ready);
  ASSERT_TRUE(leader->commit(1, leader->log_state(1)->log_end).ok());
  ASSERT_EQ(report.wait_for(10s), std::future_status::ready);
  auto r = report.get();
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.runs, 0u);
  EXPECT_EQ(c.get(), "");
  ASSERT_TRUE(leader->find_run("r1-a"));
  EXPECT_EQ(leader->find_run("r1-a")->state, run_state::running);
  std::string error;
  EXPECT_EQ(leader->read_journal("r1-a", error).size(), 4u) << error;
}

TEST_F(PartitionLogTest, ASnapshotReplacesAReplicasStateAndTheStreamFollowsIt) {
  auto direct = open("direct", /*replicated=*/false);
  auto leader = open("leader");
  auto follower = open("follower");
  ASSERT_TRUE(direct && leader && follower);
  ASSERT_TRUE(leader->lead(1, 3).ok());
  ASSERT_TRUE(leader->lead(2, 3).ok());
  // State of its own on the follower, which the snapshot must replace: a
  // run of partition 1 the leader never had, and a key.
  auto junk = append(*follower, submit("r1-z", "key-z"));
  follower->flush();
  ASSERT_TRUE(follower->commit(1, 1).ok());
  EXPECT_EQ(junk.get(), "");
  two_runs(*leader, *direct);
  // A second run in partition 1 that is still running.
  append(*leader, submit("r1-b", "key-b"));
  leader->flush();
  ASSERT_TRUE(leader->commit(1, leader->log_state(1)->log_end).ok());
  ASSERT_TRUE(leader->commit(2, leader->log_state(2)->log_end).ok());
  // The leader trims what the follower would need to catch up.
  ASSERT_TRUE(leader->trim_log(1, 5).ok());
  ASSERT_TRUE(leader->trim_log(2, 2).ok());
  std::vector<log_record> records;
  EXPECT_EQ(leader->read_records(1, 1, 1 << 20, records).code,
            plog_errc::trimmed);

  EXPECT_GT(copy_snapshot(*leader, *follower, 1, 3), 3u);
  copy_snapshot(*leader, *follower, 2, 3, /*max_bytes=*/1 << 20);
  for (uint32_t p : {1u, 2u}) {
    auto want = leader->digest_partition(p);
    auto got = follower->digest_partition(p);
    ASSERT_TRUE(want && got);
    EXPECT_EQ(got->digest, want->digest) << "partition " << p;
    EXPECT_EQ(got->runs, want->runs);
    EXPECT_EQ(got->applied, want->applied);
  }
  auto state = follower->log_state(1);
  EXPECT_EQ(state->log_start, 6u);
  EXPECT_EQ(state->log_end, 5u);
  EXPECT_EQ(state->committed, 5u);
  EXPECT_EQ(state->applied, 5u);
  EXPECT_EQ(state->epoch, 3u);
  EXPECT_FALSE(follower->snapshot_install_incomplete(1));
  EXPECT_FALSE(follower->find_run("r1-z"));
  EXPECT_FALSE(follower->find_idempotency_key("key-z"));
  EXPECT_EQ(follower->find_idempotency_key("key-a"), "r1-a");
  EXPECT_EQ(follower->find_idempotency_key("key-b"), "r1-b");

  // The stream goes on from the snapshot's offset.
  auto more = append(*leader, step("r1-b", 1));
  leader->flush();
  ship(*leader, *follower, 1, 3, 6);
  ASSERT_TRUE(leader->commit(1, 6).ok());
  ASSERT_TRUE(follower->commit(1, 6).ok());
  EXPECT_EQ(more.get(), "");
  EXPECT_EQ(follower->digest_partition(1)->digest,
            leader->digest_partition(1)->digest);
  // KIP-101 after the install: the follower's last epoch ends at or after
  // what it applied in the leader's log.
  EXPECT_GE(leader->end_offset_for_epoch(1, 3).offset, 5u);
  leader.reset();
  follower.reset();
  EXPECT_EQ(applied_state(path("follower")), applied_state(path("leader")));
}

TEST_F(PartitionLogTest, ASnapshotInstallCutShortByACrashIsRedoneFromItsStart) {
  auto direct = open("direct", /*replicated=*/false);
  auto leader = open("leader");
  ASSERT_TRUE(direct && leader);
  ASSERT_TRUE(leader->lead(1, 2).ok());
  two_runs(*leader, *direct);
  append(*leader, submit("r1-b"));
  leader->flush();
  ASSERT_TRUE(leader->commit(1, leader->log_state(1)->log_end).ok());
  {
    auto follower = open("follower");
    ASSERT_TRUE(follower);
    // One chunk of several, then the process dies.
    EXPECT_EQ(copy_snapshot(*leader, *follower, 1, 2, 1, /*chunks=*/1), 1u);
    EXPECT_TRUE(follower->snapshot_install_incomplete(1));
    EXPECT_TRUE(follower->find_run("r1-a"));
    // Records wait while the install is under way.
    std::vector<log_record> records;
    ASSERT_TRUE(leader->read_records(1, 1, 1 << 20, records).ok());
    EXPECT_EQ(follower->accept(1, 2, 1, records[0].bytes).code, plog_errc::gap);
  }
  auto follower = open("follower");
  ASSERT_TRUE(follower);
  // Half a snapshot is not taken for the whole: the partition is empty
  // again, and installed anew.
  EXPECT_FALSE(follower->snapshot_install_incomplete(1));
  auto state = follower->log_state(1);
  EXPECT_EQ(state->log_end, 0u);
  EXPECT_EQ(state->applied, 0u);
  EXPECT_EQ(state->epoch, 2u);
  EXPECT_EQ(follower->digest_partition(1)->runs, 0u);
  EXPECT_FALSE(follower->find_run("r1-a"));
  copy_snapshot(*leader, *follower, 1, 2);
  EXPECT_EQ(follower->digest_partition(1)->digest,
            leader->digest_partition(1)->digest);
  EXPECT_EQ(follower->log_state(1)->applied, leader->log_state(1)->applied);
  // An install given up is undone the same way.
  copy_snapshot(*leader, *follower, 1, 2, 1, /*chunks=*/2);
  ASSERT_TRUE(follower->abort_snapshot_install(1).ok());
  EXPECT_EQ(follower->digest_partition(1)->runs, 0u);
  EXPECT_EQ(follower->log_state(1)->log_end, 0u);
}

// An append still waiting for its record's commit when a snapshot replaces
// the partition may be in the new leader's log (and so in the snapshot):
// its failure says it was not committed here, never that it is discarded,
// which would tell a client to send it again.
TEST_F(PartitionLogTest,
       AnAppendWaitingWhenASnapshotReplacesItsPartitionIsNotDiscarded) {
  auto a = open("a");
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->lead(0, 1).ok());
  auto waiting = append(*a, submit("r0-x", "kx"));
  a->flush();
  EXPECT_FALSE(waiting.ready());
  ASSERT_TRUE(a->fence(0, 2).ok());
  ASSERT_TRUE(a->begin_snapshot_install(0, 2).ok());
  auto why = waiting.get();
  EXPECT_EQ(why.rfind("not committed: ", 0), 0u) << why;
  EXPECT_FALSE(journal_store::is_discarded(why)) << why;
  ASSERT_TRUE(a->abort_snapshot_install(0).ok());
}

TEST_F(PartitionLogTest, ASnapshotChunkOfAnotherPartitionIsRefusedWhole) {
  auto direct = open("direct", /*replicated=*/false);
  auto leader = open("leader");
  auto follower = open("follower");
  ASSERT_TRUE(direct && leader && follower);
  two_runs(*leader, *direct);
  ASSERT_TRUE(leader->commit(2, leader->log_state(2)->log_end).ok());
  plog_result r;
  auto snap = leader->open_snapshot(2, r);
  ASSERT_TRUE(snap) << r.message;
  journal_store::snapshot_chunk chunk;
  ASSERT_TRUE(snap->read({}, 1 << 20, chunk).ok());
  EXPECT_TRUE(chunk.next.empty());
  // Partition 2's state offered as partition 1's.
  ASSERT_TRUE(follower->begin_snapshot_install(1, 0).ok());
  r = follower->install_snapshot_chunk(1, chunk.bytes);
  EXPECT_EQ(r.code, plog_errc::corrupt);
  EXPECT_NE(r.message.find("not the partition's"), std::string::npos)
    << r.message;
  EXPECT_EQ(follower->install_snapshot_chunk(1, "junk").code,
            plog_errc::corrupt);
  EXPECT_FALSE(follower->find_run("r2-b"));
  // No install under way: refused.
  EXPECT_EQ(follower->install_snapshot_chunk(2, chunk.bytes).code,
            plog_errc::bad_partition);
}
