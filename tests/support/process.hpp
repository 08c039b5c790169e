#pragma once

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
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

/// A child process running in the background, its stdout and stderr going
/// to files. The destructor kills it (SIGKILL) if it still runs.
class background_process {
 public:
  background_process(const std::vector<std::string>& argv,
                     const process_options& opts, std::string out_file,
                     std::string err_file);
  ~background_process();

  background_process(const background_process&) = delete;
  background_process& operator=(const background_process&) = delete;

  int pid() const noexcept { return pid_; }

  /// Sends `sig` to the child.
  void signal(int sig);

  /// Waits at most `limit` for the child to end; returns its exit code
  /// (-N for signal N), or nothing if it still runs.
  std::optional<int> wait(std::chrono::milliseconds limit);

  std::string out() const;
  std::string err() const;

 private:
  int pid_ = -1;
  std::optional<int> status_;
  std::string out_file_;
  std::string err_file_;
};

/// Polls `pred` every 20 ms until it holds or `limit` passes; returns it.
bool wait_until(const std::function<bool()>& pred,
                std::chrono::milliseconds limit);

/// Runs argv[0] with its arguments, waits for it (killing it with SIGKILL
/// past the time limit) and returns what it printed and its exit code.
process_result run_process(const std::vector<std::string>& argv,
                           const process_options& opts = {});

/// Whether an `etcd` binary is on PATH (tests that start a cluster of
/// their own skip without one).
inline bool etcd_on_path() {
  if (const char* path = std::getenv("PATH")) {
    std::istringstream dirs{path};
    for (std::string d; std::getline(dirs, d, ':');)
      if (std::filesystem::exists(d + "/etcd"))
        return true;
  }
  return false;
}

} // namespace troupe::test
