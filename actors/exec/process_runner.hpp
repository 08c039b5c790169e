#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::actors {

/// What to run and how much of its output to keep.
struct process_spec {
  /// Program and arguments. A program without '/' is looked up in PATH.
  std::vector<std::string> argv;
  /// Variables added to (or overriding) the parent's environment.
  std::map<std::string, std::string> env;
  /// Working folder; empty inherits the parent's.
  std::string cwd;
  /// Written to the child's stdin, which is then closed.
  std::string stdin_data;
  /// Cap on captured stdout and on captured stderr, each; bytes past the cap
  /// are read and dropped so the child never blocks. Default: 1 MiB.
  size_t max_output_bytes = 1 << 20;
  /// After kill(): time between SIGTERM and SIGKILL to the process group.
  /// Default: 2s.
  std::chrono::milliseconds kill_grace{2000};
  /// When non-zero, the child must prove it is alive by writing to file
  /// descriptor 3 (named in TROUPE_HEARTBEAT_FD) at least this often; a
  /// silent child is killed like kill() does. 0: no heartbeat.
  std::chrono::milliseconds heartbeat_timeout{0};
};

/// How a child process ended.
struct process_outcome {
  /// Exit status when it exited; -1 when a signal ended it or it never ran.
  int exit_code = -1;
  /// The signal that ended it; 0 when it exited.
  int signal = 0;
  std::string out;
  std::string err;
  bool out_truncated = false;
  bool err_truncated = false;
  /// Non-empty when the program could not be started (e.g. "no such file").
  std::string spawn_error;
  /// Whether it ended because kill() was called.
  bool killed = false;
  /// Whether it was killed for missing its heartbeat.
  bool heartbeat_lost = false;
};

/// Runs child processes asynchronously on its own Asio thread(s): no thread
/// per process, no blocking wait. Each child leads its own process group, so
/// kill() reaches its children too.
class process_runner {
 public:
  using handle = uint64_t;

  explicit process_runner(size_t threads = 1);

  /// Kills every remaining child's process group with SIGKILL and joins the
  /// threads; pending callbacks are called with killed = true.
  ~process_runner();

  process_runner(const process_runner&) = delete;
  process_runner& operator=(const process_runner&) = delete;

  /// Starts a process. `done` is called exactly once, on a runner thread,
  /// with the outcome (also when the program could not be started).
  handle start(process_spec spec, std::function<void(process_outcome)> done);

  /// Ends the process group of `h`: SIGTERM, then SIGKILL after kill_grace.
  /// Does nothing for an unknown or finished handle.
  void kill(handle h);

  /// Returns how many started processes have not finished.
  size_t running() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::actors
