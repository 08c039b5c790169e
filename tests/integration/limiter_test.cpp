// Concurrency limits as runs on an embedded node use them: the wait for a
// slot counts toward the attempt's timeout and schedule_to_close.

#include "tests/support/node_fixture.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

using namespace std::chrono_literals;
using namespace troupe;
using json = nlohmann::json;

namespace {

struct LimiterRuns : test::node_fixture {
  void SetUp() override { open(options()); }

  /// A workflow whose one exec node runs `command` under concurrency key
  /// "acct-{{ inputs.k }}" with limit 1; `extra` adds node fields.
  static std::string guarded(const std::string& name,
                             const std::string& command,
                             const std::string& extra = {}) {
    return "name: " + name + R"(
inputs: {k: {type: string}}
nodes:
  work:
    kind: exec
    command: )"
           + command + R"(
    concurrency: {key: "acct-{{ inputs.k }}", limit: 1}
)" + extra;
  }

  /// The limiter of "acct-a" as it describes itself, or null.
  json limiter() {
    for (auto& l : node->inspect_limits(2s))
      if (l["key"] == "acct-a")
        return l;
    return json{};
  }
};

} // namespace

// Behind a 4s holder of the same key, a waiter with `timeout: 300ms` fails
// with `timeout` at about 300ms, and leaves the limiter's queue; likewise a
// waiter whose schedule_to_close passes.
TEST_F(LimiterRuns, WaitForASlotCountsTowardTimeouts) {
  auto holder = submit(guarded("hold", R"(["sleep", "4"])"), {{"k", "a"}});
  ASSERT_TRUE(poll([&] { return limiter()["holders"].size() == 1; }, 10s));
  auto began = std::chrono::steady_clock::now();
  auto timed
    = submit(guarded("timed", R"(["/bin/echo", "{}"])",
                     "    timeout: 300ms\n    retry: {max_attempts: 1}\n"),
             {{"k", "a"}});
  auto closed = submit(
    guarded("closed", R"(["/bin/echo", "{}"])",
            "    schedule_to_close: 300ms\n    retry: {max_attempts: 3}\n"),
    {{"k", "a"}});
  ASSERT_TRUE(wait_finished(timed, 10s));
  ASSERT_TRUE(wait_finished(closed, 10s));
  auto took = std::chrono::steady_clock::now() - began;
  // At its deadline: well before the holder's 4s are over.
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 2500ms);
  EXPECT_EQ(finished[timed].state, persistence::run_state::failed);
  EXPECT_EQ(finished[closed].state, persistence::run_state::failed);
  EXPECT_EQ(failures(timed, "timeout"), 1);
  bool gave_up = false;
  for (auto& e : journal(closed))
    gave_up |= e.type == persistence::event_type::node_failed
               && e.error_kind == "schedule_to_close";
  EXPECT_TRUE(gave_up);
  // Neither still waits in the queue; the holder still holds its slot.
  auto l = limiter();
  EXPECT_EQ(l["queue"], json::array()) << l.dump();
  EXPECT_EQ(l["holders"].size(), 1u) << l.dump();
  ASSERT_TRUE(wait_finished(holder, 15s));
  EXPECT_EQ(finished[holder].state, persistence::run_state::completed);
}
