// The journal store's fence (append_op::expected_seq): an append made from a
// journal read earlier goes through only while the journal is as read.

#include "persistence/journal_store.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <future>

using namespace troupe::persistence;

namespace {

event_record event(event_type type, std::string node = "n") {
  event_record e;
  e.type = type;
  e.at_ns = 1'000;
  e.node = std::move(node);
  e.attempt = 1;
  return e;
}

std::string append_wait(journal_store& store, journal_store::append_op op) {
  std::promise<std::string> p;
  auto f = p.get_future();
  store.append(std::move(op),
               [&p](std::string err) { p.set_value(std::move(err)); });
  return f.get();
}

journal_store::append_op fenced(std::vector<event_record> events,
                                uint32_t expected_seq) {
  journal_store::append_op op;
  op.run_id = "r";
  op.events = std::move(events);
  op.expected_seq = expected_seq;
  return op;
}

} // namespace

TEST(JournalFence, AppendsOnlyToTheJournalAsTheCallerReadIt) {
  troupe::test::temp_dir dir;
  journal_store::options o;
  o.path = (dir.path() / "db").string();
  std::string error;
  auto store = journal_store::open(o, error);
  ASSERT_TRUE(store) << error;
  // An empty journal: events are numbered from 1.
  EXPECT_EQ(append_wait(*store, fenced({event(event_type::run_submitted)}, 1)),
            "");
  EXPECT_EQ(append_wait(*store, fenced({event(event_type::attempt_started),
                                        event(event_type::node_completed)},
                                       2)),
            "");
  // A check alone (no events) passes and writes nothing.
  EXPECT_EQ(append_wait(*store, fenced({}, 4)), "");
  // Read when it held one event: refused, and nothing is written.
  auto stale = append_wait(*store, fenced({event(event_type::run_failed)}, 2));
  EXPECT_TRUE(journal_store::is_stale(stale)) << stale;
  EXPECT_NE(stale.find("holds 3 events, not 1"), std::string::npos) << stale;
  EXPECT_TRUE(journal_store::is_stale(append_wait(*store, fenced({}, 3))));
  EXPECT_FALSE(journal_store::is_stale("writing the journal failed"));
  // Unfenced appends go on as before.
  journal_store::append_op plain;
  plain.run_id = "r";
  plain.events = {event(event_type::run_completed)};
  EXPECT_EQ(append_wait(*store, std::move(plain)), "");
  auto journal = store->read_journal("r", error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(journal.size(), 4u);
  EXPECT_EQ(journal.back().type, event_type::run_completed);
  // After a reopen (no cached numbers) the fence still holds.
  store.reset();
  store = journal_store::open(o, error);
  ASSERT_TRUE(store) << error;
  EXPECT_TRUE(journal_store::is_stale(append_wait(*store, fenced({}, 4))));
  EXPECT_EQ(append_wait(*store, fenced({}, 5)), "");
}
