#include "config/size.hpp"
#include "persistence/codec/codec.hpp"
#include "persistence/journal_store.hpp"
#include "persistence/retention.hpp"
#include "persistence/rocksdb/key_layout.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/tmpfs_mount.hpp"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

extern char** environ;

using namespace troupe::persistence;
using namespace std::chrono_literals;
using troupe::test::temp_dir;
namespace fs = std::filesystem;

namespace {

event_record make_event(event_type type, int32_t attempt,
                        std::string node = "n") {
  event_record e;
  e.type = type;
  e.at_ns = 1'000 + attempt;
  e.node = std::move(node);
  e.attempt = attempt;
  e.message = "m" + std::to_string(attempt);
  e.data = std::string{"{\"bytes\":\"\0\xff\"}", 15};
  return e;
}

run_index_entry make_index(const std::string& run_id, run_state state,
                           int64_t updated = 1) {
  run_index_entry e;
  e.run_id = run_id;
  e.workflow = "wf";
  e.state = state;
  e.created_at_ns = 1;
  e.updated_at_ns = updated;
  if (state == run_state::failed)
    e.reason = "boom";
  return e;
}

struct StoreTest : ::testing::Test {
  temp_dir dir;

  std::string path() const { return (dir.path() / "db").string(); }

  std::unique_ptr<journal_store> open(bool sync = false,
                                      size_t max_batch = 512) {
    journal_store::options opts;
    opts.path = path();
    opts.sync = sync;
    opts.max_batch = max_batch;
    std::string error;
    auto store = journal_store::open(opts, error);
    EXPECT_TRUE(store) << error;
    EXPECT_TRUE(error.empty()) << error;
    return store;
  }

  std::string open_error(const std::string& p) {
    journal_store::options opts;
    opts.path = p;
    std::string error;
    auto store = journal_store::open(opts, error);
    EXPECT_FALSE(store);
    return error;
  }

  /// Appends and waits for the acknowledgement; returns its error.
  static std::string append_wait(journal_store& store, std::string run_id,
                                 std::vector<event_record> events,
                                 std::optional<run_index_entry> index = {}) {
    std::promise<std::string> p;
    auto f = p.get_future();
    store.append({std::move(run_id), std::move(events), std::move(index)},
                 [&p](std::string err) { p.set_value(std::move(err)); });
    return f.get();
  }

  /// Runs `f` on the raw database: for corrupting records in tests.
  void with_raw_db(
    const std::function<void(
      rocksdb::DB&, std::map<std::string, rocksdb::ColumnFamilyHandle*>&)>& f) {
    rocksdb::Options o;
    std::vector<std::string> names;
    ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(o, path(), &names).ok());
    std::vector<rocksdb::ColumnFamilyDescriptor> descs;
    for (auto& n : names)
      descs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    auto s = rocksdb::DB::Open(o, path(), descs, &handles, &db);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::map<std::string, rocksdb::ColumnFamilyHandle*> by_name;
    for (size_t i = 0; i < names.size(); ++i)
      by_name[names[i]] = handles[i];
    f(*db, by_name);
    for (auto* h : handles)
      ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    ASSERT_TRUE(db->Close().ok());
    delete db;
  }

  static std::vector<int32_t> attempts(const std::vector<event_record>& es) {
    std::vector<int32_t> out;
    for (auto& e : es)
      out.push_back(e.attempt);
    return out;
  }

  static std::vector<int32_t> iota(int32_t from, int32_t to) {
    std::vector<int32_t> out;
    for (int32_t i = from; i < to; ++i)
      out.push_back(i);
    return out;
  }

  /// Journals run `run_id` as submitted with an attempt started: records
  /// numbered 1 and 2 by their `attempt`. Returns the append's error.
  static std::string submit_started(journal_store& store,
                                    const std::string& run_id) {
    return append_wait(store, run_id,
                       {make_event(event_type::run_submitted, 1),
                        make_event(event_type::attempt_started, 2)});
  }

  /// The `attempt` of each record of `run_id`; a journal that cannot be
  /// read whole fails the test.
  static std::vector<int32_t> journal_attempts(journal_store& store,
                                               const std::string& run_id) {
    std::string error;
    auto out = attempts(store.read_journal(run_id, error));
    EXPECT_EQ(error, "") << "run " << run_id;
    return out;
  }
};

} // namespace

TEST_F(StoreTest, AppendsAndReadsBackInOrderAcrossReopen) {
  std::vector<event_record> written;
  {
    auto store = open();
    ASSERT_TRUE(store);
    for (int i = 0; i < 5; ++i)
      written.push_back(make_event(event_type::attempt_started, i));
    written[0].type = event_type::run_submitted;
    ASSERT_EQ(append_wait(*store, "run-1", {written[0], written[1]},
                          make_index("run-1", run_state::running)),
              "");
    ASSERT_EQ(
      append_wait(*store, "run-1", {written[2], written[3], written[4]}), "");
    ASSERT_EQ(append_wait(*store, "run-10",
                          {make_event(event_type::run_submitted, 99)}),
              "");
    std::string error;
    EXPECT_EQ(store->read_journal("run-1", error), written);
    EXPECT_EQ(error, "");
  }
  auto store = open();
  ASSERT_TRUE(store);
  std::string error = "stale";
  EXPECT_EQ(store->read_journal("run-1", error), written);
  EXPECT_EQ(error, "");
  // "run-10" shares a prefix with "run-1" but is a different journal.
  EXPECT_EQ(attempts(store->read_journal("run-10", error)),
            std::vector<int32_t>{99});
  EXPECT_TRUE(store->read_journal("run-2", error).empty());
  EXPECT_EQ(error, "");
  auto entry = store->find_run("run-1");
  ASSERT_TRUE(entry);
  EXPECT_EQ(*entry, make_index("run-1", run_state::running));
  EXPECT_FALSE(store->find_run("run-10"));
}

TEST_F(StoreTest, SequenceContinuesAfterReopen) {
  {
    auto store = open();
    ASSERT_TRUE(store);
    ASSERT_EQ(append_wait(*store, "r",
                          {make_event(event_type::run_submitted, 0),
                           make_event(event_type::attempt_started, 1),
                           make_event(event_type::attempt_failed, 2)}),
              "");
  }
  {
    auto store = open();
    ASSERT_TRUE(store);
    ASSERT_EQ(append_wait(*store, "r",
                          {make_event(event_type::attempt_started, 3),
                           make_event(event_type::node_completed, 4)}),
              "");
  }
  // The records are numbered 1..5 under the documented keys.
  with_raw_db([&](rocksdb::DB& db, auto& cfs) {
    for (uint32_t seq = 1; seq <= 5; ++seq) {
      std::string value;
      ASSERT_TRUE(
        db.Get({}, cfs.at("journal"), key_layout::journal_key("r", seq), &value)
          .ok())
        << seq;
      std::string error;
      auto e = decode_event(value, error);
      ASSERT_TRUE(e) << error;
      EXPECT_EQ(e->attempt, static_cast<int32_t>(seq - 1));
    }
    std::string format;
    ASSERT_TRUE(db.Get({}, "format", &format).ok());
    EXPECT_EQ(format, "2");
  });
  auto store = open();
  ASSERT_TRUE(store);
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(0, 5));
  EXPECT_EQ(error, "");
}

TEST_F(StoreTest, AppendAfterTerminalIndexContinuesSequence) {
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(append_wait(*store, "r", {make_event(event_type::run_submitted, 0)},
                        make_index("r", run_state::running)),
            "");
  ASSERT_EQ(append_wait(*store, "r", {make_event(event_type::run_failed, 1)},
                        make_index("r", run_state::failed)),
            "");
  // The run was forgotten by the writer; a restart finds its end again.
  ASSERT_EQ(append_wait(*store, "r", {make_event(event_type::run_restarted, 2)},
                        make_index("r", run_state::running)),
            "");
  // Index-only update.
  ASSERT_EQ(
    append_wait(*store, "r", {}, make_index("r", run_state::running, 7)), "");
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(0, 3));
  EXPECT_EQ(store->find_run("r")->updated_at_ns, 7);
}

TEST_F(StoreTest, RejectsIndexEntryOfAnotherRun) {
  auto store = open();
  ASSERT_TRUE(store);
  auto err
    = append_wait(*store, "a", {make_event(event_type::run_submitted, 0)},
                  make_index("b", run_state::running));
  EXPECT_NE(err.find("'b'"), std::string::npos) << err;
  EXPECT_NE(append_wait(*store, "", {make_event(event_type::run_submitted, 0)}),
            "");
  // An empty run id in the index entry is filled in.
  EXPECT_EQ(append_wait(*store, "c", {}, make_index("", run_state::running)),
            "");
  ASSERT_TRUE(store->find_run("c"));
  EXPECT_EQ(store->find_run("c")->run_id, "c");
  std::string error;
  EXPECT_TRUE(store->read_journal("a", error).empty());
  EXPECT_FALSE(store->find_run("a"));
}

TEST_F(StoreTest, ReplacesIndexEntryAndPagesListRuns) {
  auto store = open();
  ASSERT_TRUE(store);
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "r-%02d", i);
    store->append({id, {}, make_index(id, run_state::running)}, nullptr);
  }
  store->flush();
  ASSERT_EQ(append_wait(*store, "r-03", {},
                        make_index("r-03", run_state::completed, 99)),
            "");
  auto r3 = store->find_run("r-03");
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->state, run_state::completed);
  EXPECT_EQ(r3->updated_at_ns, 99);

  std::vector<std::string> seen;
  std::string after;
  for (;;) {
    auto page = store->list_runs(after, 10);
    if (page.empty())
      break;
    EXPECT_LE(page.size(), 10u);
    for (auto& e : page)
      seen.push_back(e.run_id);
    after = page.back().run_id;
  }
  ASSERT_EQ(seen.size(), 25u);
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "r-%02d", i);
    EXPECT_EQ(seen[static_cast<size_t>(i)], id);
  }
  EXPECT_EQ(store->list_runs("r-20", 100).size(), 4u);
  EXPECT_EQ(store->list_runs("r-1", 1).front().run_id, "r-10");
  EXPECT_TRUE(store->list_runs("", 0).empty());
  EXPECT_TRUE(store->list_runs("r-24", 10).empty());
}

TEST_F(StoreTest, ScanUnfinishedVisitsOnlyRunningRunsWithJournals) {
  auto store = open();
  ASSERT_TRUE(store);
  const std::map<std::string, run_state> states{{"a", run_state::running},
                                                {"b", run_state::completed},
                                                {"c", run_state::failed},
                                                {"d", run_state::running},
                                                {"e", run_state::cancelled}};
  int n = 1;
  for (auto& [id, state] : states) {
    std::vector<event_record> events;
    for (int i = 0; i < n; ++i)
      events.push_back(make_event(event_type::attempt_started, i, id));
    ++n;
    ASSERT_EQ(append_wait(*store, id, events, make_index(id, state)), "");
  }
  std::map<std::string, std::vector<event_record>> visited;
  store->scan_unfinished([&](const run_index_entry& entry,
                             std::vector<event_record> events,
                             const std::string& error) {
    EXPECT_EQ(error, "") << entry.run_id;
    EXPECT_EQ(entry.state, run_state::running);
    visited[entry.run_id] = std::move(events);
  });
  ASSERT_EQ(visited.size(), 2u);
  EXPECT_EQ(attempts(visited.at("a")), iota(0, 1));
  EXPECT_EQ(attempts(visited.at("d")), iota(0, 4));
  EXPECT_EQ(visited.at("d")[2].node, "d");
}

TEST_F(StoreTest, GroupCommitFromEightThreads) {
  auto store = open();
  ASSERT_TRUE(store);
  constexpr int threads = 8;
  constexpr int per_thread = 500;
  std::atomic<int> acked{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> producers;
  for (int t = 0; t < threads; ++t)
    producers.emplace_back([&, t] {
      std::string run = "run-" + std::to_string(t);
      for (int i = 0; i < per_thread; ++i) {
        std::optional<run_index_entry> index;
        if (i == 0)
          index = make_index(run, run_state::running);
        store->append(
          {run, {make_event(event_type::attempt_started, i)}, index},
          [&](std::string err) {
            (err.empty() ? acked : failed).fetch_add(1);
          });
      }
    });
  for (auto& p : producers)
    p.join();
  store->flush();
  EXPECT_EQ(acked.load(), threads * per_thread);
  EXPECT_EQ(failed.load(), 0);
  for (int t = 0; t < threads; ++t) {
    std::string error;
    auto events = store->read_journal("run-" + std::to_string(t), error);
    EXPECT_EQ(error, "");
    EXPECT_EQ(attempts(events), iota(0, per_thread)) << t;
  }
  int unfinished = 0;
  store->scan_unfinished([&](const run_index_entry&,
                             std::vector<event_record> events,
                             const std::string&) {
    EXPECT_EQ(events.size(), static_cast<size_t>(per_thread));
    ++unfinished;
  });
  EXPECT_EQ(unfinished, threads);
}

TEST_F(StoreTest, SmallBatchesKeepOrder) {
  auto store = open(false, 3);
  ASSERT_TRUE(store);
  std::vector<int> order;
  std::mutex mu;
  for (int i = 0; i < 100; ++i)
    store->append({"r", {make_event(event_type::attempt_started, i)}, {}},
                  [&, i](std::string err) {
                    EXPECT_EQ(err, "");
                    std::lock_guard<std::mutex> lk{mu};
                    order.push_back(i);
                  });
  store->flush();
  std::vector<int> expected;
  for (int i = 0; i < 100; ++i)
    expected.push_back(i);
  EXPECT_EQ(order, expected);
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(0, 100));
}

TEST_F(StoreTest, SyncModeWorks) {
  {
    auto store = open(/*sync=*/true);
    ASSERT_TRUE(store);
    std::vector<std::thread> producers;
    std::atomic<int> acked{0};
    for (int t = 0; t < 4; ++t)
      producers.emplace_back([&, t] {
        for (int i = 0; i < 50; ++i)
          store->append({"s-" + std::to_string(t),
                         {make_event(event_type::attempt_started, i)},
                         {}},
                        [&](std::string err) {
                          EXPECT_EQ(err, "");
                          ++acked;
                        });
      });
    for (auto& p : producers)
      p.join();
    store->flush();
    EXPECT_EQ(acked.load(), 200);
  }
  auto store = open(true);
  ASSERT_TRUE(store);
  for (int t = 0; t < 4; ++t) {
    std::string error;
    EXPECT_EQ(attempts(store->read_journal("s-" + std::to_string(t), error)),
              iota(0, 50));
  }
}

TEST_F(StoreTest, FlushWaitsForCallbacks) {
  auto store = open();
  ASSERT_TRUE(store);
  std::atomic<int> acked{0};
  for (int i = 0; i < 300; ++i)
    store->append({"f", {make_event(event_type::attempt_started, i)}, {}},
                  [&](std::string) {
                    std::this_thread::sleep_for(10us);
                    ++acked;
                  });
  store->flush();
  EXPECT_EQ(acked.load(), 300);
  store->flush(); // nothing queued: returns at once
  // flush() from a callback must not deadlock.
  std::promise<void> p;
  store->append({"f", {}, {}}, [&](std::string) {
    store->flush();
    p.set_value();
  });
  EXPECT_EQ(p.get_future().wait_for(10s), std::future_status::ready);
}

TEST_F(StoreTest, DestructorDrainsPendingAppends) {
  std::atomic<int> acked{0};
  {
    auto store = open();
    ASSERT_TRUE(store);
    for (int i = 0; i < 1000; ++i)
      store->append({"d", {make_event(event_type::attempt_started, i)}, {}},
                    [&](std::string err) {
                      EXPECT_EQ(err, "");
                      ++acked;
                    });
  }
  EXPECT_EQ(acked.load(), 1000);
  auto store = open();
  ASSERT_TRUE(store);
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("d", error)), iota(0, 1000));
  EXPECT_EQ(error, "");
}

TEST_F(StoreTest, CorruptRecordStopsJournalAndNamesIt) {
  {
    auto store = open();
    ASSERT_TRUE(store);
    std::vector<event_record> a, b;
    for (int i = 0; i < 5; ++i)
      a.push_back(make_event(event_type::attempt_started, i));
    for (int i = 0; i < 3; ++i)
      b.push_back(make_event(event_type::attempt_started, i));
    ASSERT_EQ(
      append_wait(*store, "run-a", a, make_index("run-a", run_state::running)),
      "");
    ASSERT_EQ(
      append_wait(*store, "run-b", b, make_index("run-b", run_state::running)),
      "");
  }
  with_raw_db([](rocksdb::DB& db, auto& cfs) {
    ASSERT_TRUE(db.Put({}, cfs.at("journal"),
                       key_layout::journal_key("run-a", 3), "\x01garbage")
                  .ok());
  });
  auto store = open();
  ASSERT_TRUE(store);
  std::string error;
  auto events = store->read_journal("run-a", error);
  EXPECT_EQ(attempts(events), iota(0, 2));
  EXPECT_NE(error.find("run run-a: journal record 3 is corrupt: "),
            std::string::npos)
    << error;
  EXPECT_EQ(error.find('\n'), std::string::npos);

  std::map<std::string, std::pair<size_t, std::string>> visited;
  store->scan_unfinished([&](const run_index_entry& entry,
                             std::vector<event_record> events,
                             const std::string& error) {
    visited[entry.run_id] = {events.size(), error};
  });
  ASSERT_EQ(visited.size(), 2u);
  EXPECT_EQ(visited["run-a"].first, 2u);
  EXPECT_NE(visited["run-a"].second.find("journal record 3"),
            std::string::npos);
  EXPECT_EQ(visited["run-b"].first, 3u);
  EXPECT_EQ(visited["run-b"].second, "");

  // The async read reports the same.
  std::promise<std::pair<size_t, std::string>> p;
  store->read_journal_async("run-a",
                            [&](std::vector<event_record> es, std::string err) {
                              p.set_value({es.size(), std::move(err)});
                            });
  auto [count, err] = p.get_future().get();
  EXPECT_EQ(count, 2u);
  EXPECT_NE(err.find("journal record 3 is corrupt"), std::string::npos);
}

TEST_F(StoreTest, MissingRecordIsReported) {
  {
    auto store = open();
    ASSERT_TRUE(store);
    std::vector<event_record> a;
    for (int i = 0; i < 4; ++i)
      a.push_back(make_event(event_type::attempt_started, i));
    ASSERT_EQ(append_wait(*store, "g", a), "");
  }
  with_raw_db([](rocksdb::DB& db, auto& cfs) {
    ASSERT_TRUE(
      db.Delete({}, cfs.at("journal"), key_layout::journal_key("g", 2)).ok());
  });
  auto store = open();
  ASSERT_TRUE(store);
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("g", error)), iota(0, 1));
  EXPECT_NE(error.find("run g: journal record 2 is missing"), std::string::npos)
    << error;
}

TEST_F(StoreTest, CorruptIndexEntryIsReportedNotThrown) {
  {
    auto store = open();
    ASSERT_TRUE(store);
    ASSERT_EQ(append_wait(*store, "ok",
                          {make_event(event_type::run_submitted, 0)},
                          make_index("ok", run_state::running)),
              "");
  }
  // A run that was running when its entry went bad: it is listed as
  // unfinished, and recovery must say that its entry is unreadable.
  with_raw_db([](rocksdb::DB& db, auto& cfs) {
    ASSERT_TRUE(db.Put({}, cfs.at("runs"), "bad", "\x01\x96junk").ok());
    ASSERT_TRUE(db.Put({}, cfs.at("unfinished"), "bad", "").ok());
  });
  auto store = open();
  ASSERT_TRUE(store);
  std::map<std::string, std::string> visited;
  size_t ok_events = 0;
  store->scan_unfinished([&](const run_index_entry& entry,
                             std::vector<event_record> events,
                             const std::string& error) {
    visited[entry.run_id] = error;
    if (entry.run_id == "bad") {
      EXPECT_EQ(entry.workflow, "");
    } else {
      ok_events = events.size();
    }
  });
  ASSERT_EQ(visited.size(), 2u);
  EXPECT_NE(visited["bad"].find("run bad: index entry is corrupt"),
            std::string::npos)
    << visited["bad"];
  EXPECT_EQ(visited["ok"], "");
  EXPECT_EQ(ok_events, 1u);
  EXPECT_FALSE(store->find_run("bad"));
  // Listing skips the unreadable entry.
  auto runs = store->list_runs("", 10);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].run_id, "ok");
}

TEST_F(StoreTest, RefusesNewerFormatVersion) {
  { ASSERT_TRUE(open()); }
  with_raw_db([](rocksdb::DB& db, auto&) {
    // 3 is a store with replicated partitions: the newest this build reads.
    ASSERT_TRUE(db.Put({}, "format", "4").ok());
  });
  auto error = open_error(path());
  EXPECT_NE(error.find(path()), std::string::npos) << error;
  EXPECT_NE(error.find("newer"), std::string::npos) << error;
  EXPECT_NE(error.find("format version 4"), std::string::npos) << error;
}

TEST_F(StoreTest, OpeningARegularFileFailsClearly) {
  auto file = dir.write("not-a-db", "hello");
  auto error = open_error(file.string());
  EXPECT_NE(error.find(file.string()), std::string::npos) << error;
  EXPECT_NE(error.find("not a folder"), std::string::npos) << error;
}

TEST_F(StoreTest, CreatesMissingFolders) {
  journal_store::options opts;
  opts.path = (dir.path() / "a" / "b" / "c").string();
  std::string error;
  auto store = journal_store::open(opts, error);
  ASSERT_TRUE(store) << error;
  EXPECT_TRUE(fs::is_directory(opts.path));
}

TEST_F(StoreTest, OpensOnlyAnExistingStoreWhenToldNotToCreate) {
  journal_store::options opts;
  opts.path = (dir.path() / "typo").string();
  opts.create_if_missing = false;
  std::string error;
  EXPECT_FALSE(journal_store::open(opts, error));
  EXPECT_NE(error.find("'" + opts.path + "': the folder does not exist"),
            std::string::npos)
    << error;
  EXPECT_FALSE(fs::exists(opts.path));
  // A folder with no store in it is not one either, and stays empty.
  fs::create_directories(opts.path);
  EXPECT_FALSE(journal_store::open(opts, error));
  EXPECT_NE(error.find("the folder holds none"), std::string::npos) << error;
  EXPECT_TRUE(fs::is_empty(opts.path));
  // An existing store opens.
  opts.create_if_missing = true;
  ASSERT_TRUE(journal_store::open(opts, error)) << error;
  opts.create_if_missing = false;
  EXPECT_TRUE(journal_store::open(opts, error)) << error;
}

TEST_F(StoreTest, CorruptDatabaseFailsClearly) {
  dir.write("db/CURRENT", "garbage-without-newline");
  auto error = open_error(path());
  EXPECT_NE(error.find(path()), std::string::npos) << error;
  EXPECT_NE(error.find("corrupt"), std::string::npos) << error;
}

TEST_F(StoreTest, PermissionDeniedFailsClearly) {
  if (::geteuid() == 0)
    GTEST_SKIP() << "root ignores folder permissions";
  fs::create_directories(dir.path() / "locked");
  ::chmod((dir.path() / "locked").c_str(), 0500);
  auto p = (dir.path() / "locked" / "db").string();
  auto error = open_error(p);
  EXPECT_NE(error.find(p), std::string::npos) << error;
  EXPECT_NE(error.find("ermission denied"), std::string::npos) << error;
  ::chmod((dir.path() / "locked").c_str(), 0700);
}

TEST_F(StoreTest, SecondOpenInOneProcessFailsWithLockError) {
  auto store = open();
  ASSERT_TRUE(store);
  auto error = open_error(path());
  EXPECT_NE(error.find(path()), std::string::npos) << error;
  EXPECT_NE(error.find("RocksDB lock held"), std::string::npos) << error;
  // The first store still works.
  EXPECT_EQ(
    append_wait(*store, "x", {make_event(event_type::run_submitted, 0)}), "");
}

// Opens that fail because the store is held (here by this process; by
// another, such as a node while `troupe history --data-dir` tries, it is the
// same) move the holder's info log aside, as RocksDB does, but never lose
// it: the file the holder writes to stays in the folder.
TEST_F(StoreTest, FailedOpensOfAHeldStoreLoseNoneOfItsInfoLog) {
  auto store = open();
  ASSERT_TRUE(store);
  for (int i = 0; i < 3; ++i)
    EXPECT_NE(open_error(path()), "");
  int logs = 0;
  for (auto& fd : fs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    auto target = fs::read_symlink(fd.path(), ec).string();
    if (ec || !target.starts_with(path() + "/LOG"))
      continue;
    ++logs;
    EXPECT_FALSE(target.ends_with("(deleted)")) << target;
  }
  EXPECT_EQ(logs, 1);
  // Old logs do not pile up: RocksDB keeps the newest few.
  store.reset();
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(open());
  int old_logs = 0;
  for (auto& f : fs::directory_iterator(path()))
    old_logs += f.path().filename().string().starts_with("LOG.old.");
  EXPECT_LE(old_logs, 4);
}

// Run only by the next test, in a child process: holds the store open until
// told to let go.
TEST(StoreHelper, DISABLED_HoldStoreOpen) {
  const char* p = std::getenv("TROUPE_TEST_HOLD_STORE");
  ASSERT_TRUE(p);
  journal_store::options opts;
  opts.path = p;
  opts.holder.command = "hold it";
  opts.holder.address = "127.0.0.1:7400";
  std::string error;
  auto store = journal_store::open(opts, error);
  ASSERT_TRUE(store) << error;
  std::ofstream{std::string{p} + ".ready"} << "ready";
  auto until = std::chrono::steady_clock::now() + 30s;
  while (!fs::exists(std::string{p} + ".release")
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
}

TEST_F(StoreTest, OpenHeldByAnotherProcessFailsWithLockError) {
  std::string env = "TROUPE_TEST_HOLD_STORE=" + path();
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e)
    envp.push_back(*e);
  envp.push_back(env.data());
  envp.push_back(nullptr);
  std::string exe = fs::read_symlink("/proc/self/exe").string();
  std::string a1 = "--gtest_also_run_disabled_tests";
  std::string a2 = "--gtest_filter=StoreHelper.DISABLED_HoldStoreOpen";
  char* argv[] = {exe.data(), a1.data(), a2.data(), nullptr};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ASSERT_EQ(rc, 0);
  auto until = std::chrono::steady_clock::now() + 30s;
  while (!fs::exists(path() + ".ready")
         && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  ASSERT_TRUE(fs::exists(path() + ".ready"));
  auto error = open_error(path());
  EXPECT_NE(error.find(path()), std::string::npos) << error;
  EXPECT_NE(error.find("in use by another troupe process (RocksDB lock held)"),
            std::string::npos)
    << error;
  // Who holds it, as it described itself.
  auto holder = read_store_holder(path());
  ASSERT_TRUE(holder);
  EXPECT_EQ(holder->pid, pid);
  EXPECT_EQ(holder->command, "hold it");
  EXPECT_EQ(holder->address, "127.0.0.1:7400");
  std::ofstream{path() + ".release"} << "go";
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  // Released: the description went with it, and it opens now.
  EXPECT_FALSE(read_store_holder(path()));
  auto store = open();
  EXPECT_TRUE(store);
  holder = read_store_holder(path());
  ASSERT_TRUE(holder);
  EXPECT_EQ(holder->pid, ::getpid());
}

TEST_F(StoreTest, AStaleHolderDescriptionIsIgnored) {
  fs::create_directories(path());
  // Left by a process that is gone (killed before it could remove it).
  dir.write("db/HOLDER", "pid 999999999\nstarted 1\ncommand node start\n");
  EXPECT_FALSE(read_store_holder(path()));
  // A pid in use again, by a process that started after the description.
  dir.write("db/HOLDER", "pid " + std::to_string(::getpid())
                           + "\nstarted 1\ncommand node start\n");
  EXPECT_FALSE(read_store_holder(path()));
  // Garbage.
  dir.write("db/HOLDER", "\x01\x02 nothing\n");
  EXPECT_FALSE(read_store_holder(path()));
  // The next holder writes its own.
  auto store = open();
  ASSERT_TRUE(store);
  auto holder = read_store_holder(path());
  ASSERT_TRUE(holder);
  EXPECT_EQ(holder->pid, ::getpid());
  EXPECT_EQ(holder->command, "");
}

TEST_F(StoreTest, ReadJournalAsyncRunsOnReaderThread) {
  auto store = open();
  ASSERT_TRUE(store);
  std::vector<event_record> events;
  for (int i = 0; i < 10; ++i)
    events.push_back(make_event(event_type::attempt_started, i));
  ASSERT_EQ(append_wait(*store, "async", events), "");
  std::vector<std::future<void>> done;
  std::atomic<int> calls{0};
  for (int k = 0; k < 5; ++k) {
    auto p = std::make_shared<std::promise<void>>();
    done.push_back(p->get_future());
    store->read_journal_async(
      "async", [&, p, caller = std::this_thread::get_id()](
                 std::vector<event_record> got, std::string error) {
        EXPECT_NE(std::this_thread::get_id(), caller);
        EXPECT_EQ(got, events);
        EXPECT_EQ(error, "");
        ++calls;
        p->set_value();
      });
  }
  for (auto& f : done)
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(calls.load(), 5);
  // Pending reads are still answered when the store goes away.
  std::atomic<int> late{0};
  for (int k = 0; k < 20; ++k)
    store->read_journal_async("async",
                              [&](std::vector<event_record> got, std::string) {
                                EXPECT_EQ(got.size(), 10u);
                                ++late;
                              });
  store.reset();
  EXPECT_EQ(late.load(), 20);
}

TEST_F(StoreTest, IdempotencyKeysAreClaimedOnceAtomically) {
  auto store = open();
  auto op = [](std::string run, std::string key) {
    journal_store::append_op o;
    o.run_id = std::move(run);
    o.events.push_back(event_record{event_type::run_submitted, 1});
    o.idempotency_key = std::move(key);
    return o;
  };
  // Two runs race for one key in the same batch: the first wins.
  std::promise<std::string> a, b;
  store->append(op("run-a", "k1"), [&](std::string e) { a.set_value(e); });
  store->append(op("run-b", "k1"), [&](std::string e) { b.set_value(e); });
  EXPECT_EQ(a.get_future().get(), "");
  EXPECT_EQ(b.get_future().get(),
            "idempotency key 'k1' is already used by run run-a");
  EXPECT_EQ(store->find_idempotency_key("k1"), "run-a");
  EXPECT_EQ(store->find_idempotency_key("k2"), std::nullopt);
  // The refused append wrote nothing.
  std::string error;
  EXPECT_TRUE(store->read_journal("run-b", error).empty());
}

// read_event reads one record by its number: what an idempotency key's
// check reads of the run holding it (its submission, event 1).
TEST_F(StoreTest, ReadEventReadsOneRecordByItsNumber) {
  {
    auto store = open();
    ASSERT_TRUE(store);
    std::vector<event_record> a;
    for (int i = 0; i < 3; ++i)
      a.push_back(make_event(event_type::attempt_started, i));
    ASSERT_EQ(
      append_wait(*store, "run-a", a, make_index("run-a", run_state::running)),
      "");
    std::string error = "stale";
    auto first = store->read_event("run-a", 1, error);
    ASSERT_TRUE(first);
    EXPECT_EQ(error, "");
    EXPECT_EQ(first->attempt, 0);
    EXPECT_EQ(first->data, a[0].data);
    auto third = store->read_event("run-a", 3, error);
    ASSERT_TRUE(third);
    EXPECT_EQ(third->attempt, 2);
    // No such record, no such run: nothing, and no error.
    EXPECT_FALSE(store->read_event("run-a", 4, error));
    EXPECT_EQ(error, "");
    EXPECT_FALSE(store->read_event("run-b", 1, error));
    EXPECT_EQ(error, "");
  }
  with_raw_db([](rocksdb::DB& db, auto& cfs) {
    ASSERT_TRUE(db.Put({}, cfs.at("journal"),
                       key_layout::journal_key("run-a", 2), "\x01garbage")
                  .ok());
  });
  auto store = open();
  ASSERT_TRUE(store);
  std::string error;
  EXPECT_FALSE(store->read_event("run-a", 2, error));
  EXPECT_NE(error.find("run run-a: journal record 2 is corrupt: "),
            std::string::npos)
    << error;
  EXPECT_TRUE(store->read_event("run-a", 1, error));
  EXPECT_EQ(error, "");
}

// -- retention ----------------------------------------------------------------

namespace {

/// The keys of column family `cf` of the closed store at `path`, in order.
std::vector<std::string> raw_keys(StoreTest& t, const std::string& cf,
                                  const std::string& prefix = "") {
  std::vector<std::string> out;
  t.with_raw_db([&](rocksdb::DB& db, auto& cfs) {
    std::unique_ptr<rocksdb::Iterator> it{db.NewIterator({}, cfs.at(cf))};
    for (it->Seek(prefix);
         it->Valid() && it->key().ToStringView().starts_with(prefix);
         it->Next())
      out.push_back(it->key().ToString());
  });
  return out;
}

int64_t wall_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Appends `events` events, an index entry in `state` updated at `updated`
/// and, if given, an idempotency key; returns the append's error.
std::string add_run(journal_store& store, const std::string& id,
                    run_state state, int64_t updated, int events,
                    const std::string& key = "") {
  journal_store::append_op op;
  op.run_id = id;
  for (int i = 0; i < events; ++i)
    op.events.push_back(make_event(event_type::attempt_started, i, id));
  op.index = make_index(id, state, updated);
  op.idempotency_key = key;
  std::promise<std::string> p;
  auto f = p.get_future();
  store.append(std::move(op),
               [&p](std::string err) { p.set_value(std::move(err)); });
  return f.get();
}

std::set<std::string> unfinished_ids(journal_store& store) {
  std::set<std::string> out;
  store.scan_unfinished([&](const run_index_entry& e, std::vector<event_record>,
                            const std::string&) { out.insert(e.run_id); });
  return out;
}

} // namespace

TEST_F(StoreTest, CollectDeletesOldFinishedRunsAndKeepsTheRest) {
  auto now = wall_ns();
  {
    auto store = open();
    ASSERT_TRUE(store);
    // Old and finished: deleted, with their keys.
    ASSERT_EQ(add_run(*store, "old-done", run_state::running, 500, 2, "k-old"),
              "");
    ASSERT_EQ(add_run(*store, "old-done", run_state::completed, 1'000, 1), "");
    ASSERT_EQ(add_run(*store, "old-failed", run_state::failed, 2'000, 4), "");
    // Old but unfinished, and finished but recent: kept.
    ASSERT_EQ(add_run(*store, "old-running", run_state::running, 1, 1), "");
    ASSERT_EQ(add_run(*store, "old-paused", run_state::paused, 1, 1), "");
    ASSERT_EQ(
      add_run(*store, "new-done", run_state::completed, now, 2, "k-new"), "");

    journal_store::gc_options o;
    o.runs_before_ns = 10'000;
    o.tombstones_before_ns = 0;
    auto r = store->collect(o);
    EXPECT_EQ(r.error, "");
    EXPECT_FALSE(r.stopped);
    EXPECT_EQ(r.runs, 2u);
    EXPECT_EQ(r.events, 3u + 4u);
    EXPECT_EQ(r.keys, 1u);
    EXPECT_EQ(r.tombstones, 0u);

    for (auto id : {"old-done", "old-failed"}) {
      EXPECT_FALSE(store->find_run(id)) << id;
      std::string error;
      EXPECT_TRUE(store->read_journal(id, error).empty()) << id;
      auto t = store->find_tombstone(id);
      ASSERT_TRUE(t) << id;
      EXPECT_EQ(t->last.run_id, id);
      EXPECT_EQ(t->last.workflow, "wf");
      EXPECT_EQ(t->last.reason, "");
      EXPECT_GE(t->deleted_at_ns, now);
    }
    EXPECT_EQ(store->find_tombstone("old-done")->last.state,
              run_state::completed);
    EXPECT_EQ(store->find_tombstone("old-failed")->last.state,
              run_state::failed);
    EXPECT_EQ(store->find_idempotency_key("k-old"), std::nullopt);
    EXPECT_EQ(store->find_idempotency_key("k-new"), "new-done");
    for (auto id : {"old-running", "old-paused", "new-done"}) {
      EXPECT_TRUE(store->find_run(id)) << id;
      EXPECT_FALSE(store->find_tombstone(id)) << id;
      std::string error;
      EXPECT_FALSE(store->read_journal(id, error).empty()) << id;
    }
    // Never existed: no tombstone either.
    EXPECT_FALSE(store->find_tombstone("never"));
    EXPECT_EQ(unfinished_ids(*store),
              (std::set<std::string>{"old-paused", "old-running"}));
    // Nothing is left to collect; a released key is free for a new run.
    auto again = store->collect(o);
    EXPECT_EQ(again.runs + again.events + again.keys, 0u);
    EXPECT_EQ(add_run(*store, "reuse", run_state::running, now, 1, "k-old"),
              "");
    EXPECT_EQ(store->find_idempotency_key("k-old"), "reuse");
  }
  // On disk: no journal record, index entry, side-index entry or reverse key
  // of a deleted run is left.
  auto journal = raw_keys(*this, "journal");
  for (auto& k : journal)
    EXPECT_FALSE(k.starts_with("old-done") || k.starts_with("old-failed")) << k;
  EXPECT_EQ(raw_keys(*this, "runs"),
            (std::vector<std::string>{"new-done", "old-paused", "old-running",
                                      "reuse"}));
  EXPECT_EQ(raw_keys(*this, "unfinished"),
            (std::vector<std::string>{"old-paused", "old-running", "reuse"}));
  auto finished = raw_keys(*this, "finished");
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0], key_layout::finished_key(now, "new-done"));
  EXPECT_EQ(raw_keys(*this, "default", "idemrun/"),
            (std::vector<std::string>{
              key_layout::idempotency_reverse_key("new-done", "k-new"),
              key_layout::idempotency_reverse_key("reuse", "k-old")}));
}

TEST_F(StoreTest, TombstonesExpireAfterTheirOwnRetention) {
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(add_run(*store, "a", run_state::completed, 1'000, 1), "");
  ASSERT_EQ(add_run(*store, "b", run_state::cancelled, 2'000, 1), "");
  journal_store::gc_options o;
  o.runs_before_ns = 10'000;
  EXPECT_EQ(store->collect(o).runs, 2u);
  ASSERT_TRUE(store->find_tombstone("a"));
  // Tombstones younger than the cut-off stay.
  o.tombstones_before_ns = 5'000;
  EXPECT_EQ(store->collect(o).tombstones, 0u);
  EXPECT_TRUE(store->find_tombstone("b"));
  o.tombstones_before_ns = wall_ns() + 1'000'000'000;
  auto r = store->collect(o);
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.tombstones, 2u);
  EXPECT_FALSE(store->find_tombstone("a"));
  EXPECT_FALSE(store->find_tombstone("b"));
  EXPECT_EQ(store->collect(o).tombstones, 0u);
}

TEST_F(StoreTest, CollectDeletesInBatchesAndStopsWhenAsked) {
  auto store = open();
  ASSERT_TRUE(store);
  for (int i = 0; i < 50; ++i)
    ASSERT_EQ(add_run(*store, "r-" + std::to_string(100 + i),
                      run_state::completed, 1'000 + i, 1),
              "");
  journal_store::gc_options o;
  o.runs_before_ns = 10'000;
  o.batch = 7;
  std::atomic<bool> stop{true};
  o.stop = &stop;
  auto r = store->collect(o);
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.runs, 0u);
  EXPECT_EQ(store->list_runs("", 100).size(), 50u);
  stop = false;
  r = store->collect(o);
  EXPECT_FALSE(r.stopped);
  EXPECT_EQ(r.runs, 50u);
  EXPECT_EQ(r.events, 50u);
  EXPECT_TRUE(store->list_runs("", 100).empty());
}

TEST_F(StoreTest, ARunThatFinishedTwiceIsDeletedByItsLastFinish) {
  auto store = open();
  ASSERT_TRUE(store);
  auto now = wall_ns();
  // Failed long ago, then failed again just now (e.g. recovery marking it):
  // the older finish must not delete it.
  ASSERT_EQ(add_run(*store, "twice", run_state::failed, 1'000, 1), "");
  ASSERT_EQ(add_run(*store, "twice", run_state::failed, now, 1), "");
  journal_store::gc_options o;
  o.runs_before_ns = 10'000;
  auto r = store->collect(o);
  EXPECT_EQ(r.runs, 0u);
  EXPECT_TRUE(store->find_run("twice"));
  o.runs_before_ns = now + 1;
  r = store->collect(o);
  EXPECT_EQ(r.runs, 1u);
  EXPECT_EQ(r.events, 2u);
  EXPECT_FALSE(store->find_run("twice"));
}

TEST_F(StoreTest, UnfinishedIndexFollowsEachIndexEntry) {
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(add_run(*store, "r", run_state::running, 1, 1), "");
  EXPECT_EQ(unfinished_ids(*store), std::set<std::string>{"r"});
  ASSERT_EQ(add_run(*store, "r", run_state::paused, 2, 1), "");
  EXPECT_EQ(unfinished_ids(*store), std::set<std::string>{"r"});
  ASSERT_EQ(add_run(*store, "r", run_state::running, 3, 1), "");
  // An append without an index entry changes nothing.
  ASSERT_EQ(append_wait(*store, "r", {make_event(event_type::timer_set, 9)}),
            "");
  EXPECT_EQ(unfinished_ids(*store), std::set<std::string>{"r"});
  ASSERT_EQ(add_run(*store, "r", run_state::cancelled, 4, 1), "");
  EXPECT_TRUE(unfinished_ids(*store).empty());
  store.reset();
  EXPECT_TRUE(raw_keys(*this, "unfinished").empty());
  EXPECT_EQ(raw_keys(*this, "finished"),
            std::vector<std::string>{key_layout::finished_key(4, "r")});
}

namespace {

/// Writes a store as format 1 laid it out (default, journal and runs
/// families; no side indexes) at `path`.
void write_format_one_store(
  const std::string& path,
  const std::vector<std::pair<run_index_entry, int>>& runs,
  const std::map<std::string, std::string>& keys,
  const std::map<std::string, std::string>& raw_index = {}) {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> descs{
    {rocksdb::kDefaultColumnFamilyName, {}}, {"journal", {}}, {"runs", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  auto s = rocksdb::DB::Open(o, path, descs, &handles, &db);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(db->Put({}, "format", "1").ok());
  for (auto& [entry, events] : runs) {
    for (int i = 1; i <= events; ++i)
      ASSERT_TRUE(
        db->Put({}, handles[1],
                key_layout::journal_key(entry.run_id, static_cast<uint32_t>(i)),
                encode(make_event(event_type::attempt_started, i)))
          .ok());
    ASSERT_TRUE(db->Put({}, handles[2], entry.run_id, encode(entry)).ok());
  }
  for (auto& [id, value] : raw_index)
    ASSERT_TRUE(db->Put({}, handles[2], id, value).ok());
  for (auto& [key, run] : keys)
    ASSERT_TRUE(db->Put({}, key_layout::idempotency_key(key), run).ok());
  for (auto* h : handles)
    ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

} // namespace

TEST_F(StoreTest, MigratesAFormatOneStoreOnOpen) {
  write_format_one_store(path(),
                         {{make_index("a-running", run_state::running), 2},
                          {make_index("b-done", run_state::completed, 5), 3},
                          {make_index("c-paused", run_state::paused), 1},
                          {make_index("e-failed", run_state::failed, 7), 1}},
                         {{"key-b", "b-done"}, {"key-a", "a-running"}},
                         {{"d-corrupt", "\x01\x96junk"}});
  {
    auto store = open();
    ASSERT_TRUE(store);
    // Recovery finds the unfinished runs with their journals, and reports
    // the unreadable entry, as format 1 did.
    std::map<std::string, std::pair<size_t, std::string>> visited;
    store->scan_unfinished([&](const run_index_entry& e,
                               std::vector<event_record> events,
                               const std::string& error) {
      visited[e.run_id] = {events.size(), error};
    });
    ASSERT_EQ(visited.size(), 3u);
    EXPECT_EQ(visited["a-running"], std::make_pair(size_t{2}, std::string{}));
    EXPECT_EQ(visited["c-paused"], std::make_pair(size_t{1}, std::string{}));
    EXPECT_NE(visited["d-corrupt"].second.find("index entry is corrupt"),
              std::string::npos);
    // The finished runs were indexed by finishing time, and their keys
    // reversed: retention deletes them with their keys.
    journal_store::gc_options o;
    o.runs_before_ns = 100;
    auto r = store->collect(o);
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.runs, 2u);
    EXPECT_EQ(r.events, 4u);
    EXPECT_EQ(r.keys, 1u);
    EXPECT_FALSE(store->find_idempotency_key("key-b"));
    EXPECT_EQ(store->find_idempotency_key("key-a"), "a-running");
    EXPECT_TRUE(store->find_tombstone("b-done"));
    // New appends keep the new indexes.
    ASSERT_EQ(add_run(*store, "a-running", run_state::completed, 50, 1), "");
    EXPECT_EQ(unfinished_ids(*store),
              (std::set<std::string>{"c-paused", "d-corrupt"}));
  }
  with_raw_db([](rocksdb::DB& db, auto&) {
    std::string format;
    ASSERT_TRUE(db.Get({}, "format", &format).ok());
    EXPECT_EQ(format, "2");
  });
  // Opening again migrates nothing twice and finds the same.
  auto store = open();
  ASSERT_TRUE(store);
  EXPECT_EQ(unfinished_ids(*store),
            (std::set<std::string>{"c-paused", "d-corrupt"}));
  EXPECT_EQ(store->find_idempotency_key("key-a"), "a-running");
}

TEST_F(StoreTest, RetentionWorkerCollectsOnItsOwnAndOnDemand) {
  auto store = open();
  ASSERT_TRUE(store);
  auto now = wall_ns();
  auto hour = int64_t{3'600'000'000'000};
  ASSERT_EQ(
    add_run(*store, "day-old", run_state::completed, now - 24 * hour, 2, "k"),
    "");
  ASSERT_EQ(
    add_run(*store, "minute-old", run_state::completed, now - hour / 60, 1),
    "");
  ASSERT_EQ(add_run(*store, "parked", run_state::running, 1, 1), "");
  std::mutex mtx;
  std::vector<journal_store::gc_report> reports;
  retention_worker::options o;
  o.retention = std::chrono::hours{1};
  o.interval = std::chrono::milliseconds{20};
  o.on_collect = [&](const journal_store::gc_report& r) {
    std::lock_guard lk{mtx};
    reports.push_back(r);
  };
  {
    retention_worker worker{*store, o};
    // Bounded poll: the first collection comes at once.
    for (int i = 0; i < 500 && store->find_run("day-old"); ++i)
      std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(store->find_run("day-old"));
    EXPECT_TRUE(store->find_tombstone("day-old"));
    EXPECT_FALSE(store->find_idempotency_key("k"));
    EXPECT_TRUE(store->find_run("minute-old"));
    // On demand, with a shorter age than the retention.
    std::promise<journal_store::gc_report> asked;
    worker.collect_now(std::chrono::seconds{30},
                       [&](journal_store::gc_report r) { asked.set_value(r); });
    auto f = asked.get_future();
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    auto r = f.get();
    EXPECT_EQ(r.error, "");
    EXPECT_EQ(r.runs, 1u);
    EXPECT_EQ(r.events, 1u);
    EXPECT_FALSE(store->find_run("minute-old"));
    EXPECT_TRUE(store->find_run("parked"));
  }
  std::lock_guard lk{mtx};
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.front().runs, 1u);
  EXPECT_EQ(reports.front().keys, 1u);
}

TEST_F(StoreTest, ZeroRetentionKeepsEveryRun) {
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(add_run(*store, "ancient", run_state::completed, 1'000, 1), "");
  std::atomic<int> collections{0};
  retention_worker::options o;
  o.retention = std::chrono::nanoseconds::zero();
  o.interval = std::chrono::milliseconds{5};
  o.on_collect = [&](const journal_store::gc_report&) { ++collections; };
  {
    retention_worker worker{*store, o};
    for (int i = 0; i < 500 && collections < 3; ++i)
      std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(collections.load(), 3);
  EXPECT_TRUE(store->find_run("ancient"));
}

// -- failed appends ---------------------------------------------------------

namespace {

/// Holds the store's writer inside an append's callback until released, so
/// that the appends queued meanwhile go into the batches after it.
struct writer_gate {
  std::promise<void> entered;
  std::promise<void> release;

  explicit writer_gate(journal_store& store) {
    auto go = release.get_future().share();
    store.append({"gate", {make_event(event_type::run_submitted, 0)}, {}},
                 [this, go](std::string) {
                   entered.set_value();
                   go.wait();
                 });
    entered.get_future().wait();
  }

  void open() { release.set_value(); }
};

/// An append of one event to `run` claiming idempotency key `key`.
journal_store::append_op claiming(std::string run, int32_t attempt,
                                  std::string key) {
  journal_store::append_op op;
  op.run_id = std::move(run);
  op.events.push_back(make_event(event_type::attempt_started, attempt));
  op.idempotency_key = std::move(key);
  return op;
}

/// Collects the answers of appends by name.
struct answers {
  std::mutex mu;
  std::map<std::string, std::string> by_name;

  std::function<void(std::string)> to(std::string name) {
    return [this, name](std::string err) {
      std::lock_guard<std::mutex> lk{mu};
      by_name[name] = std::move(err);
    };
  }
};

} // namespace

// A failed append (here: an idempotency key another run holds) fails the
// appends of the same run queued behind it in the same group commit: event
// N+1 is never stored without event N. Other runs are not affected.
TEST_F(StoreTest, FailedAppendFailsLaterAppendsOfTheRunInTheSameBatch) {
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(submit_started(*store, "r"), "");
  std::promise<std::string> held;
  store->append(claiming("other", 0, "k"),
                [&](std::string e) { held.set_value(e); });
  ASSERT_EQ(held.get_future().get(), "");

  answers got;
  {
    writer_gate gate{*store};
    store->append(claiming("r", 3, "k"), got.to("n"));
    store->append({"r", {make_event(event_type::attempt_started, 4)}, {}},
                  got.to("n+1"));
    store->append({"s", {make_event(event_type::run_submitted, 9)}, {}},
                  got.to("s"));
    gate.open();
    store->flush();
  }
  EXPECT_NE(got.by_name["n"].find("idempotency key 'k'"), std::string::npos)
    << got.by_name["n"];
  EXPECT_NE(got.by_name["n+1"], "");
  EXPECT_EQ(got.by_name["s"], "");
  EXPECT_EQ(journal_attempts(*store, "r"), iota(1, 3));
  EXPECT_EQ(journal_attempts(*store, "s"), std::vector<int32_t>{9});
}

// The same across batches: appends of the run queued behind the failed one
// but written in later group commits, and those made after the failure was
// reported, are refused too, so the journal keeps no gap.
TEST_F(StoreTest, FailedAppendFailsLaterAppendsOfTheRunInLaterBatches) {
  auto store = open(/*sync=*/false, /*max_batch=*/1);
  ASSERT_TRUE(store);
  ASSERT_EQ(submit_started(*store, "r"), "");
  // An invalid append: its index entry names another run.
  answers got;
  {
    writer_gate gate{*store};
    store->append({"r",
                   {make_event(event_type::attempt_started, 3)},
                   make_index("x", run_state::running)},
                  got.to("n"));
    store->append({"r", {make_event(event_type::attempt_started, 4)}, {}},
                  got.to("n+1"));
    store->append({"r", {make_event(event_type::node_completed, 5)}, {}},
                  got.to("n+2"));
    gate.open();
    store->flush();
  }
  EXPECT_NE(got.by_name["n"].find("names run 'x'"), std::string::npos)
    << got.by_name["n"];
  EXPECT_NE(got.by_name["n+1"], "");
  EXPECT_NE(got.by_name["n+2"], "");
  // Appended after the failure was reported: still refused.
  EXPECT_NE(
    append_wait(*store, "r", {make_event(event_type::attempt_started, 6)}), "");
  EXPECT_EQ(journal_attempts(*store, "r"), iota(1, 3));
  // Reopened, the journal is the same, with no record missing.
  store.reset();
  store = open();
  ASSERT_TRUE(store);
  EXPECT_EQ(journal_attempts(*store, "r"), iota(1, 3));
}

// A resync (the supervisor's restart barrier) lifts the refusal: the run's
// appends after it are written, numbered on from the last durable record.
// A failure injected through the test hook starts the refusal like any
// other.
TEST_F(StoreTest, ResyncLiftsTheRefusalAfterAFailedAppend) {
  journal_store::options opts;
  opts.path = path();
  std::atomic<bool> fail_next{false};
  opts.fail_append = [&](const journal_store::append_op& op) {
    if (op.run_id == "r" && fail_next.exchange(false))
      return std::string{"injected failure"};
    return std::string{};
  };
  std::string error;
  auto store = journal_store::open(opts, error);
  ASSERT_TRUE(store) << error;
  ASSERT_EQ(submit_started(*store, "r"), "");
  fail_next = true;
  EXPECT_EQ(
    append_wait(*store, "r", {make_event(event_type::attempt_started, 3)}),
    "injected failure");
  auto refused
    = append_wait(*store, "r", {make_event(event_type::attempt_started, 4)});
  EXPECT_NE(refused.find("an earlier append of this run failed (injected "
                         "failure)"),
            std::string::npos)
    << refused;
  // Other runs are written as usual.
  EXPECT_EQ(
    append_wait(*store, "s", {make_event(event_type::run_submitted, 1)}), "");
  // The barrier: an empty append with resync.
  std::promise<std::string> barrier;
  journal_store::append_op op;
  op.run_id = "r";
  op.resync = true;
  store->append(std::move(op),
                [&](std::string e) { barrier.set_value(std::move(e)); });
  EXPECT_EQ(barrier.get_future().get(), "");
  EXPECT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_restarted, 5)}), "");
  EXPECT_EQ(attempts(store->read_journal("r", error)),
            (std::vector<int32_t>{1, 2, 5}));
  EXPECT_EQ(error, "");
}

// A submission that failed (its run has no journal) leaves nothing behind
// to refuse: the same run id can be journaled afterwards.
TEST_F(StoreTest, AFailedFirstAppendDoesNotHoldTheRunBack) {
  auto store = open();
  ASSERT_TRUE(store);
  std::promise<std::string> held;
  store->append(claiming("other", 0, "k"),
                [&](std::string e) { held.set_value(e); });
  ASSERT_EQ(held.get_future().get(), "");
  std::promise<std::string> lost;
  store->append(claiming("r", 1, "k"),
                [&](std::string e) { lost.set_value(e); });
  EXPECT_NE(lost.get_future().get(), "");
  EXPECT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_submitted, 1)}), "");
}

// A refused append writes none of its parts: not its notes either.
TEST_F(StoreTest, ARefusedAppendWritesNoNotes) {
  auto store = open();
  ASSERT_TRUE(store);
  std::promise<std::string> held;
  store->append(claiming("other", 0, "k"),
                [&](std::string e) { held.set_value(e); });
  ASSERT_EQ(held.get_future().get(), "");
  auto op = claiming("r", 1, "k");
  op.notes.emplace_back("breaker/x", "open");
  std::promise<std::string> refused;
  store->append(std::move(op), [&](std::string e) { refused.set_value(e); });
  EXPECT_NE(refused.get_future().get(), "");
  EXPECT_TRUE(store->read_notes("breaker/").empty());
}

namespace {

/// Bytes of memory available now (MemAvailable), 0 when unknown.
uint64_t memory_available() {
  std::ifstream in{"/proc/meminfo"};
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit)
    if (key == "MemAvailable:")
      return kib * 1024;
  return 0;
}

} // namespace

// A field longer than msgpack's 32-bit length is refused with its name and
// size, rather than written with its length cut to 32 bits (which stored a
// truncated value under a record that read back as valid). Needs a string
// of 4 GiB, which takes seconds to fill: runs only with
// TROUPE_TEST_BIG_MEMORY=1 and enough memory; the size check itself is
// tested through small limits in Codec.RefusesFieldsAndRecordsOverTheLimits.
TEST_F(StoreTest, RefusesAFieldOver4GiBInsteadOfTruncatingIt) {
  constexpr uint64_t size = (uint64_t{1} << 32) + 1;
  const char* wanted = std::getenv("TROUPE_TEST_BIG_MEMORY");
  if (!wanted || std::string{wanted} != "1")
    GTEST_SKIP() << "set TROUPE_TEST_BIG_MEMORY=1 to build a 4 GiB string";
  if (memory_available() < 3 * size)
    GTEST_SKIP() << "needs about 12 GiB of available memory for a 4 GiB "
                    "string; the size check itself is covered by "
                    "Codec.RefusesFieldsAndRecordsOverTheLimits";
  auto store = open();
  ASSERT_TRUE(store);
  ASSERT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_submitted, 1)}), "");
  std::vector<event_record> events(1);
  events[0].type = event_type::node_completed;
  events[0].node = "big";
  events[0].data.assign(size, 'x');
  auto error = append_wait(*store, "r", std::move(events));
  EXPECT_NE(error.find("field 'data' of a node_completed event of node 'big' "
                       "is 4294967297 bytes; a record field holds at most "
                       "4294967295"),
            std::string::npos)
    << error.substr(0, 500);
  std::string read_error;
  auto journal = store->read_journal("r", read_error);
  EXPECT_EQ(read_error, "");
  ASSERT_EQ(journal.size(), 1u);
  EXPECT_EQ(journal[0].type, event_type::run_submitted);
}

namespace {

/// A free-space reading the test sets, for journal_store::options::read_space.
struct fake_disk {
  std::atomic<uint64_t> free{1000};
  std::atomic<uint64_t> total{10'000};
  std::atomic<int> changes{0};

  void attach(journal_store::options& o) {
    o.space_check_interval = 5ms;
    o.read_space = [this](uint64_t& f, uint64_t& t, std::string&) {
      f = free.load();
      t = total.load();
      return true;
    };
    o.on_space_change = [this](const journal_store::disk_space&) { ++changes; };
  }
};

/// Polls `pred` every 5 ms for at most 10 s.
template<class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred())
      return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

} // namespace

struct SpaceTest : StoreTest {
  fake_disk disk;

  std::unique_ptr<journal_store> open_with_floor(std::string_view floor) {
    journal_store::options o;
    o.path = path();
    o.min_free = *troupe::config::parse_free_space_floor(floor);
    disk.attach(o);
    std::string error;
    auto store = journal_store::open(o, error);
    EXPECT_TRUE(store) << error;
    return store;
  }
};

// Below the floor, appends are held (not written, not failed); once free
// space is back above the floor by its margin they are written, in order,
// and acknowledged.
TEST_F(SpaceTest, LowSpaceHoldsAppendsUntilSpaceReturns) {
  auto store = open_with_floor("100B");
  ASSERT_TRUE(store);
  EXPECT_FALSE(store->space().low);
  EXPECT_EQ(store->space().min_free_bytes, 100u);
  ASSERT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_submitted, 1)}), "");
  disk.free = 50;
  ASSERT_TRUE(eventually([&] { return store->space().low; }));
  // The store says so after it set the flag: wait for its call.
  EXPECT_TRUE(eventually([&] { return disk.changes.load() >= 1; }));
  EXPECT_EQ(disk.changes.load(), 1);
  answers got;
  store->append({"r", {make_event(event_type::attempt_started, 2)}, {}},
                got.to("a"));
  store->append({"r", {make_event(event_type::node_completed, 3)}, {}},
                got.to("b"));
  std::this_thread::sleep_for(100ms);
  {
    std::lock_guard<std::mutex> lk{got.mu};
    EXPECT_TRUE(got.by_name.empty());
  }
  auto space = store->space();
  EXPECT_EQ(space.queued, 2u);
  EXPECT_EQ(space.free_bytes, 50u);
  EXPECT_EQ(space.total_bytes, 10'000u);
  // Above the floor but within its margin (5 bytes here): still held.
  disk.free = 102;
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(store->space().low);
  disk.free = 1000;
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> lk{got.mu};
    return got.by_name.size() == 2;
  }));
  EXPECT_EQ(got.by_name["a"], "");
  EXPECT_EQ(got.by_name["b"], "");
  EXPECT_FALSE(store->space().low);
  EXPECT_TRUE(eventually([&] { return disk.changes.load() >= 2; }));
  EXPECT_EQ(disk.changes.load(), 2);
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(1, 4));
}

// flush() does not wait for space: it fails the appends held before it,
// naming free space and the floor; the run's later appends are refused as
// after any failed append, and other runs' are written once space returns.
TEST_F(SpaceTest, FlushFailsHeldAppendsInsteadOfWaiting) {
  auto store = open_with_floor("100B");
  ASSERT_TRUE(store);
  ASSERT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_submitted, 1)}), "");
  disk.free = 10;
  ASSERT_TRUE(eventually([&] { return store->space().low; }));
  answers got;
  store->append({"r", {make_event(event_type::attempt_started, 2)}, {}},
                got.to("held"));
  auto flushed = std::async(std::launch::async, [&] { store->flush(); });
  ASSERT_EQ(flushed.wait_for(10s), std::future_status::ready);
  EXPECT_NE(got.by_name["held"].find("not written: free space on '" + path()
                                     + "' is 10 B, below its floor of 100 B "
                                       "(storage.min_free)"),
            std::string::npos)
    << got.by_name["held"];
  store->append({"r", {make_event(event_type::attempt_started, 3)}, {}},
                got.to("later"));
  store->append({"s", {make_event(event_type::run_submitted, 1)}, {}},
                got.to("other"));
  disk.free = 1000;
  ASSERT_TRUE(eventually([&] { return !store->space().low; }));
  store->flush();
  EXPECT_NE(got.by_name["later"].find("an earlier append of this run failed"),
            std::string::npos)
    << got.by_name["later"];
  EXPECT_EQ(got.by_name["other"], "");
  std::string error;
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(1, 2));
}

// Closing the store while space is low fails what is held, at once, rather
// than write it or wait.
TEST_F(SpaceTest, CloseFailsHeldAppends) {
  answers got;
  {
    auto store = open_with_floor("100B");
    ASSERT_TRUE(store);
    disk.free = 10;
    ASSERT_TRUE(eventually([&] { return store->space().low; }));
    store->append({"r", {make_event(event_type::run_submitted, 1)}, {}},
                  got.to("held"));
  }
  EXPECT_NE(got.by_name["held"].find("the store closed gave it up"),
            std::string::npos)
    << got.by_name["held"];
  disk.free = 1000;
  auto store = open_with_floor("100B");
  ASSERT_TRUE(store);
  std::string error;
  EXPECT_TRUE(store->read_journal("r", error).empty());
}

// A store opened on a disk already low holds from its first append; a
// share of the disk resolves against its size, the smaller floor applying.
TEST_F(SpaceTest, OpenOnALowDiskHoldsFromTheStart) {
  disk.total = uint64_t{10} << 30;
  disk.free = uint64_t{400} << 20;
  auto store = open_with_floor("5%,1GiB");
  ASSERT_TRUE(store);
  auto space = store->space();
  EXPECT_TRUE(space.low);
  EXPECT_EQ(space.min_free_bytes, uint64_t{512} << 20);
  EXPECT_EQ(disk.changes.load(), 1);
  std::promise<std::string> p;
  store->append({"r", {make_event(event_type::run_submitted, 1)}, {}},
                [&](std::string e) { p.set_value(std::move(e)); });
  auto f = p.get_future();
  EXPECT_EQ(f.wait_for(100ms), std::future_status::timeout);
  disk.free = uint64_t{2} << 30;
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), "");
}

// Without a hook the reading is statvfs's.
TEST_F(StoreTest, ReadsFreeSpaceOfItsFilesystem) {
  auto store = open();
  ASSERT_TRUE(store);
  auto space = store->space();
  EXPECT_EQ(space.error, "");
  EXPECT_GT(space.total_bytes, 0u);
  EXPECT_GT(space.free_bytes, 0u);
  EXPECT_EQ(space.min_free_bytes, 0u); // no floor by default
  EXPECT_FALSE(space.low);
}

namespace {

using troupe::test::tmpfs_mount;

/// Bytes free on the filesystem of `path`.
uint64_t free_bytes(const fs::path& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0)
    return 0;
  return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
}

/// Writes a file of `size` bytes (real pages, on tmpfs).
void fill(const fs::path& file, uint64_t size) {
  std::ofstream out{file, std::ios::binary};
  std::string chunk(1 << 20, 'f');
  for (uint64_t left = size; left > 0;) {
    auto n = std::min<uint64_t>(left, chunk.size());
    out.write(chunk.data(), static_cast<std::streamsize>(n));
    left -= n;
  }
}

} // namespace

// On a real filesystem that fills up (a 64 MiB tmpfs): with less free than
// storage.min_free the writer holds appends, and once the filler is deleted
// it writes them, by itself.
TEST_F(StoreTest, HoldsAppendsOnAFullTmpfsAndResumesWhenSpaceIsFreed) {
  tmpfs_mount disk{dir.path() / "tmpfs", "64m"};
  if (!disk.mounted)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error
                 << "); the injected readings of SpaceTest cover the logic";
  journal_store::options o;
  o.path = (disk.where / "db").string();
  o.min_free = *troupe::config::parse_free_space_floor("16MiB");
  o.space_check_interval = 20ms;
  std::string error;
  auto store = journal_store::open(o, error);
  ASSERT_TRUE(store) << error;
  ASSERT_EQ(
    append_wait(*store, "r", {make_event(event_type::run_submitted, 1)}), "");
  ASSERT_FALSE(store->space().low);
  auto filler = disk.where / "filler";
  auto free = free_bytes(disk.where);
  ASSERT_GT(free, uint64_t{24} << 20);
  fill(filler, free - (uint64_t{8} << 20));
  ASSERT_TRUE(eventually([&] { return store->space().low; }))
    << store->space().free_bytes;
  std::promise<std::string> p;
  store->append({"r", {make_event(event_type::attempt_started, 2)}, {}},
                [&](std::string e) { p.set_value(std::move(e)); });
  auto f = p.get_future();
  EXPECT_EQ(f.wait_for(200ms), std::future_status::timeout);
  fs::remove(filler);
  ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
  EXPECT_EQ(f.get(), "");
  EXPECT_FALSE(store->space().low);
  EXPECT_EQ(attempts(store->read_journal("r", error)), iota(1, 3));
  store.reset();
}

// With no floor the disk really fills: the append whose write finds it full
// fails, those after it are held rather than failed, and once space is
// freed (and RocksDB has recovered from the error) they are written. Nothing
// aborts: RocksDB's info log used to assert on its first write after the
// disk filled, killing the process.
TEST_F(StoreTest, AWriteThatFindsTheDiskFullHoldsTheRestUntilSpaceReturns) {
  tmpfs_mount disk{dir.path() / "tmpfs", "64m"};
  if (!disk.mounted)
    GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.error << ")";
  journal_store::options o;
  o.path = (disk.where / "db").string();
  o.space_check_interval = 20ms;
  std::string error;
  auto store = journal_store::open(o, error);
  ASSERT_TRUE(store) << error;
  auto filler = disk.where / "filler";
  fill(filler, uint64_t{64} << 20); // stops where the tmpfs is full
  event_record big = make_event(event_type::attempt_started, 0);
  big.data.assign(256 << 10, 'x');
  std::string failed;
  int run = 0;
  for (; run < 400 && failed.empty(); ++run)
    failed = append_wait(*store, "r-" + std::to_string(run), {big});
  ASSERT_NE(failed, "") << "the disk never filled";
  EXPECT_NE(failed.find("No space left"), std::string::npos) << failed;
  auto space = store->space();
  EXPECT_TRUE(space.low);
  EXPECT_TRUE(space.write_failed);
  std::promise<std::string> p;
  store->append({"after", {make_event(event_type::run_submitted, 1)}, {}},
                [&](std::string e) { p.set_value(std::move(e)); });
  auto f = p.get_future();
  EXPECT_EQ(f.wait_for(300ms), std::future_status::timeout);
  fs::remove(filler);
  ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
  EXPECT_EQ(f.get(), "");
  EXPECT_FALSE(store->space().low);
  EXPECT_EQ(attempts(store->read_journal("after", error)),
            std::vector<int32_t>{1});
  store.reset();
  // It opens again, with everything acknowledged in it.
  store = journal_store::open(o, error);
  ASSERT_TRUE(store) << error;
  EXPECT_EQ(store->read_journal("after", error).size(), 1u);
  EXPECT_EQ(store->read_journal("r-0", error).size(), 1u);
  store.reset();
}
