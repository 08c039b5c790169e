#include "tools/progress/progress_view.hpp"

#include <gtest/gtest.h>

#include <sstream>

using troupe::tools::progress::event;
using troupe::tools::progress::shorten;
using troupe::tools::progress::view;

namespace {

view::options table_options(std::ostream& out) {
  view::options o;
  o.how = view::mode::table;
  o.out = &out;
  o.redraw_thread = false;
  o.size = [] { return std::pair<int, int>{10, 60}; };
  return o;
}

event ev(std::string node, std::string type, int32_t attempt = 1) {
  event e;
  e.run_id = "r1";
  e.node = std::move(node);
  e.type = std::move(type);
  e.attempt = attempt;
  return e;
}

} // namespace

TEST(ProgressShorten, CutsBetweenWordsAndKeepsOneLine) {
  EXPECT_EQ(shorten("short text", 40), "short text");
  EXPECT_EQ(shorten("alpha beta gamma delta", 16), "alpha beta...");
  EXPECT_EQ(shorten("line one\n\tline  two\r\n", 40), "line one line two");
  // One long word: cut inside it rather than leave nothing.
  EXPECT_EQ(shorten("abcdefghijklmnopqrstuvwxyz", 10), "abcdefg...");
  // Never inside a UTF-8 sequence: each "é" is two bytes.
  auto s = shorten("ééééééééééééééé", 10);
  EXPECT_EQ(s, "ééé...");
  EXPECT_LE(s.size(), 10u);
}

TEST(ProgressView, TableFitsTheTerminalAndPutsRunningAndFailedFirst) {
  std::ostringstream out;
  view v{table_options(out)};
  for (int i = 0; i < 1000; ++i) {
    v.on(ev("n" + std::to_string(i), "attempt_started"));
    v.on(ev("n" + std::to_string(i), "node_completed"));
  }
  v.on(ev("busy", "attempt_started"));
  auto failed = ev("bad", "node_failed", 3);
  failed.message = std::string(500, 'x');
  v.on(failed);
  auto lines = v.render(10, 60);
  ASSERT_EQ(lines.size(), 9u);
  for (auto& l : lines)
    EXPECT_LE(l.size(), 59u) << l;
  EXPECT_NE(lines[0].find("busy"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("bad"), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("failed"), std::string::npos) << lines[1];
  // The latest finished nodes next, the rest counted.
  EXPECT_NE(lines[2].find("n999"), std::string::npos) << lines[2];
  EXPECT_EQ(lines[8], "  ... 994 more: 0 running, 0 failed, 994 finished");
}

TEST(ProgressView, SummarisesAMapsItemsInOneRow) {
  std::ostringstream out;
  view v{table_options(out)};
  auto start = ev("each", "attempt_started");
  start.items = 10;
  v.on(start);
  for (int i = 0; i < 6; ++i)
    v.on(ev("each[" + std::to_string(i) + "]", "attempt_started"));
  for (int i = 0; i < 3; ++i)
    v.on(ev("each[" + std::to_string(i) + "]", "node_completed"));
  auto retry = ev("each[3]", "attempt_failed");
  retry.deadline_ns = 1;
  v.on(retry);
  v.on(ev("each[4]", "node_failed"));
  auto lines = v.render(10, 100);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "  each  running    3/10 done, 1 running, 1 failed, "
                      "5 waiting");
}

TEST(ProgressView, RedrawsInPlaceOnlyWhatChanged) {
  std::ostringstream out;
  view v{table_options(out)};
  v.on(ev("a", "attempt_started"));
  v.on(ev("b", "attempt_started"));
  v.tick();
  auto first = out.str();
  EXPECT_EQ(first.find("\033["), first.find("\033[2K")) << "no move up yet";
  out.str("");
  v.tick(); // nothing changed: nothing written
  EXPECT_EQ(out.str(), "");
  v.on(ev("b", "node_completed"));
  v.end();
  // Up over the two lines, "a" stepped over, "b" rewritten.
  EXPECT_EQ(out.str(), "\r\033[2A\n\033[2K  b     completed\n");
  // The last table stays: what comes after goes below it.
  out.str("");
  v.print(out, "done\n");
  EXPECT_EQ(out.str(), "done\n");
}

TEST(ProgressView, LinesNameRunEventsWithoutAnAttempt) {
  std::ostringstream out;
  view::options o;
  o.how = view::mode::lines;
  o.out = &out;
  view v{o};
  auto failed = ev("charge", "run_failed", 0);
  failed.message = "node 'charge' gave up";
  v.on(failed);
  v.on(ev("charge", "attempt_started", 2));
  EXPECT_EQ(out.str(), "r1  (run)  run_failed  node 'charge' gave up\n"
                       "r1  charge  attempt_started  attempt 2\n");
}
