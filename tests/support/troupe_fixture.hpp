#pragma once

// A test fixture for end-to-end tests of the `troupe` binary: a temp dir
// (its data dir, config dir and working folder) and ways to run troupe to
// completion or in the background. The target defines TROUPE_BINARY.

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace troupe::test {

struct troupe_fixture : ::testing::Test {
  temp_dir dir;
  std::string data = (dir.path() / "data").string();
  int spawned = 0;

  /// Options of every process the fixture starts; fixtures for a node add
  /// theirs.
  virtual process_options opts() {
    process_options o;
    o.cwd = dir.path().string();
    o.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
             {"TROUPE_ENV", std::nullopt}};
    o.time_limit = std::chrono::seconds{60};
    return o;
  }

  std::vector<std::string> args(std::vector<std::string> rest) {
    rest.insert(rest.begin(), TROUPE_BINARY);
    return rest;
  }

  /// Runs troupe to completion.
  process_result troupe(std::vector<std::string> rest) {
    auto r = run_process(args(std::move(rest)), opts());
    EXPECT_FALSE(r.timed_out);
    return r;
  }

  /// Starts troupe in the background (after `prefix`, when a command such
  /// as `ip netns exec NS` is to run it); its output goes to files in the
  /// dir.
  std::unique_ptr<background_process>
  start(std::vector<std::string> rest, std::vector<std::string> prefix = {}) {
    auto n = std::to_string(spawned++);
    auto argv = args(std::move(rest));
    argv.insert(argv.begin(), prefix.begin(), prefix.end());
    return std::make_unique<background_process>(
      argv, opts(), (dir.path() / ("out" + n)).string(),
      (dir.path() / ("err" + n)).string());
  }
};

} // namespace troupe::test
