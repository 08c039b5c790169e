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
  /// Names the work the process does (an attempt's run and node). Two
  /// processes of one key never run at once: a start waits until the
  /// previous process of its key has finished (its `done` called), which it
  /// first ends as kill() does, since a later start of a key supersedes the
  /// earlier one (whoever started that one has given up on it). So a retry
  /// of work whose owner died never runs beside the process it replaces,
  /// still in its kill grace. Empty: no key, no waiting.
  std::string key;
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
  /// Whether it ended because kill() was called (or a later start of its
  /// key superseded it; one stopped before it started has a spawn_error).
  bool killed = false;
  /// Whether it was killed for missing its heartbeat.
  bool heartbeat_lost = false;
  /// Whether members of its process group were still alive when the runner
  /// stopped waiting for them (group_wait_limit after the child ended, e.g.
  /// a process stuck in uninterruptible sleep). The runner keeps killing
  /// that group in the background until it is gone.
  bool group_lingered = false;
};

/// How a process_runner guards against leftover processes.
struct process_runner_options {
  /// Folder where the runner records the process groups it has alive (one
  /// small log file), so that the next runner on the same folder kills the
  /// groups a killed node left behind before anything runs again. Created if
  /// missing. Empty: nothing is recorded or swept.
  std::string state_dir;
  /// Starts a reaper: a small process that holds the list of live groups
  /// and SIGKILLs them when this process dies, even by SIGKILL. Default:
  /// true.
  bool reaper = true;
  /// After a child ended, how long the runner waits for the rest of its
  /// process group to be gone before calling `done` anyway (with
  /// group_lingered). Default: 10s.
  std::chrono::milliseconds group_wait_limit{10'000};
  /// Notices: leftover groups killed, a reaper that could not start or
  /// died. May be empty.
  std::function<void(const std::string&)> log;
};

/// Runs child processes asynchronously on its own Asio thread: no thread per
/// process, no blocking wait. Each child leads its own process group, so
/// kill() reaches its children too, and no process of a group outlives the
/// runner's process:
///
/// - this process becomes a child subreaper, so descendants orphaned inside
///   a group are reparented to it and reaped by the runner;
/// - `done` is called only once the child's whole process group is gone;
/// - a reaper process SIGKILLs the live groups when this process dies;
/// - with a state_dir, the live groups are recorded there and the next
///   runner on it kills (after checking they are ours) those left behind.
///
/// A process that leaves its group (setsid, setpgid) is out of reach of all
/// of this.
class process_runner {
 public:
  using handle = uint64_t;

  /// Kills the leftover groups recorded in `opts.state_dir` (blocking,
  /// bounded by a few seconds), then starts the reaper and the runner's
  /// thread.
  explicit process_runner(process_runner_options opts = {});

  /// Kills every remaining child's process group with SIGKILL, waits
  /// (bounded) for the groups to be gone and joins the thread; pending
  /// callbacks are called with killed = true. The reaper then exits.
  ~process_runner();

  process_runner(const process_runner&) = delete;
  process_runner& operator=(const process_runner&) = delete;

  /// Starts a process. `done` is called exactly once, on the runner's
  /// thread, with the outcome (also when the program could not be started),
  /// once the child has been reaped, its output pipes are closed (or 2s
  /// passed since it ended) and no process of its process group is left
  /// (or group_wait_limit passed: see group_lingered).
  handle start(process_spec spec, std::function<void(process_outcome)> done);

  /// Ends the process group of `h`: SIGTERM, then SIGKILL after kill_grace.
  /// A start still waiting for its key's previous process ends at once
  /// without running (spawn_error says so). Does nothing for an unknown or
  /// finished handle.
  void kill(handle h);

  /// Calls `idle` once no process started with `key` is unfinished (its
  /// `done` not called yet), nor waits to start: on the runner's thread, at
  /// once when there is none. Dropped if the runner is destroyed first.
  void when_idle(std::string key, std::function<void()> idle);

  /// Returns how many started processes have not finished.
  size_t running() const;

  /// Returns the reaper's process id; 0 when there is none.
  int reaper_pid() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::actors
