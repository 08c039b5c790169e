// Resuming runs after `kill -9` of `troupe run`, where what matters is the
// time that passed while the node was down.

#include "tests/support/process.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <fstream>
#include <thread>

using namespace std::chrono_literals;
using troupe::test::count_lines;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

struct Resume : troupe::test::troupe_fixture {
  std::string marks = (dir.path() / "marks.txt").string();
};

} // namespace

// The attempt's 2 s deadline passes while the node is down; the attempt runs
// again from its start with 2 s of its own, and its one attempt is enough.
TEST_F(Resume, AttemptInFlightGetsItsTimeoutFromItsNewStart) {
  // `exec` makes sleep the node's own child, which dies with the node.
  auto wf = dir.write("late.yaml", R"(name: late
nodes:
  work:
    kind: exec
    command: ["/bin/sh", "-c", "echo started >> )"
                                     + marks + R"(; exec sleep 1"]
    timeout: 2s
    retry: {max_attempts: 1}
)");
  auto p = start({"run", wf.string(), "--data-dir", data});
  ASSERT_TRUE(
    wait_until([&] { return count_lines(marks, "started") == 1; }, 30s))
    << p->err();
  p->signal(SIGKILL);
  ASSERT_EQ(p->wait(10s), -SIGKILL);
  // Past the first start's deadline.
  std::this_thread::sleep_for(2200ms);
  auto r = troupe({"run", "--resume", "--data-dir", data});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto report = json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false);
  EXPECT_EQ(report["state"], "completed") << r.out << r.err;
  EXPECT_EQ(count_lines(marks, "started"), 2);
}
