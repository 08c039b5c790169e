#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace troupe::test {

/// What a finished child process left behind.
struct process_result {
  /// Exit code, or -N when killed by signal N.
  int exit_code = -1;
  std::string out;
  std::string err;
  /// Whether the child was killed for running past its time limit.
  bool timed_out = false;
};

/// How to start a child process.
struct process_options {
  /// Variables set (or, with an empty optional, removed) over the parent's.
  std::map<std::string, std::optional<std::string>> env;
  std::string cwd;
  std::string stdin_data;
  std::chrono::milliseconds time_limit{30'000};
};

/// Runs argv[0] with its arguments, waits for it (killing it with SIGKILL
/// past the time limit) and returns what it printed and its exit code.
process_result run_process(const std::vector<std::string>& argv,
                           const process_options& opts = {});

} // namespace troupe::test
