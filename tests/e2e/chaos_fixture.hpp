#pragma once

// What the tests of `troupe chaos` share: the examples' folder, and running
// `troupe` as a child process in a folder of the test's own (its scratch
// folders too, through TMPDIR).

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace troupe::test {

inline const std::string chaos_examples
  = std::string{TROUPE_SOURCE_DIR} + "/examples/chaos/";

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct chaos_fixture : ::testing::Test {
  temp_dir dir;

  /// Runs `troupe ARGS`, for `limit` at most.
  process_result troupe(std::vector<std::string> args,
                        std::chrono::milliseconds limit
                        = std::chrono::seconds{30}) {
    args.insert(args.begin(), TROUPE_BINARY);
    process_options opts;
    opts.cwd = dir.path().string();
    opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
                {"TROUPE_ENV", std::nullopt},
                {"TMPDIR", dir.path().string()}};
    opts.time_limit = limit;
    auto r = run_process(args, opts);
    EXPECT_FALSE(r.timed_out) << r.err;
    return r;
  }
};

} // namespace troupe::test
