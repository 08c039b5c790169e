#include "actors/exec/process_runner.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

/// Runs `spec` and waits (bounded) for its outcome.
process_outcome run(process_runner& r, process_spec spec,
                    std::chrono::seconds limit = 20s) {
  std::promise<process_outcome> p;
  auto f = p.get_future();
  r.start(std::move(spec),
          [&p](process_outcome o) { p.set_value(std::move(o)); });
  if (f.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "process did not finish within " << limit.count() << "s";
    std::abort();
  }
  return f.get();
}

process_spec sh(const std::string& script) {
  process_spec s;
  s.argv = {"/bin/sh", "-c", script};
  return s;
}

bool alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

/// The state letter of /proc/<pid>/stat ('Z' for a zombie); 0 when there is
/// no such process.
char state_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text;
  std::getline(in, text);
  auto close = text.rfind(')');
  return close == std::string::npos || close + 2 >= text.size()
           ? 0
           : text[close + 2];
}

/// Whether `pid` still runs: exists and is not a zombie (one whose parent
/// is not this process is reaped by someone else, in their own time).
bool running(pid_t pid) {
  auto s = state_of(pid);
  return s != 0 && s != 'Z' && s != 'X';
}

/// Polls every 10ms until `pred` holds, at most `limit`; returns it.
bool eventually(const std::function<bool()>& pred,
                std::chrono::milliseconds limit = 10s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

/// A file of the test, removed when it goes out of scope.
struct scratch_file {
  std::filesystem::path path;
  explicit scratch_file(const std::string& name)
      : path(std::filesystem::temp_directory_path()
             / ("troupe-pr-" + std::to_string(::getpid()) + "-" + name)) {
    std::filesystem::remove(path);
  }
  ~scratch_file() { std::filesystem::remove(path); }
  std::string str() const { return path.string(); }

  /// The numbers in the file (pids written by a child), waiting (bounded)
  /// until it holds `count` of them.
  std::vector<pid_t> pids(size_t count) const {
    std::vector<pid_t> out;
    eventually(
      [&] {
        out.clear();
        std::ifstream in{path};
        pid_t p = 0;
        while (in >> p)
          out.push_back(p);
        return out.size() >= count;
      },
      20s);
    return out;
  }
};

/// Kills `pid` if it runs and reaps it if it is our child: cleanup of
/// processes a test started, whatever the code under test did.
void cleanup(pid_t pid) {
  if (pid > 1 && running(pid))
    ::kill(pid, SIGKILL);
  if (pid > 1)
    eventually(
      [&] { return ::waitpid(pid, nullptr, WNOHANG) != 0 || !running(pid); },
      2s);
}

} // namespace

TEST(ProcessRunner, CapturesOutputAndExitCode) {
  process_runner r;
  auto o = run(r, sh("echo out; echo err >&2; exit 3"));
  EXPECT_EQ(o.exit_code, 3);
  EXPECT_EQ(o.signal, 0);
  EXPECT_EQ(o.out, "out\n");
  EXPECT_EQ(o.err, "err\n");
  EXPECT_FALSE(o.killed);
  EXPECT_TRUE(o.spawn_error.empty());
  EXPECT_EQ(r.running(), 0u);
}

TEST(ProcessRunner, FeedsStdinAndPassesEnvAndCwd) {
  process_runner r;
  auto dir = std::filesystem::temp_directory_path();
  auto s = sh("cat; printf ' %s ' \"$TROUPE_X\"; pwd");
  s.stdin_data = "{\"a\":1}";
  s.env = {{"TROUPE_X", "42"}};
  s.cwd = dir.string();
  auto o = run(r, s);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out,
            "{\"a\":1} 42 " + std::filesystem::canonical(dir).string() + "\n");
}

TEST(ProcessRunner, LooksUpProgramsInPath) {
  process_runner r;
  process_spec s;
  s.argv = {"echo", "hi"};
  EXPECT_EQ(run(r, s).out, "hi\n");
}

TEST(ProcessRunner, ReportsProgramsThatCannotStart) {
  process_runner r;
  process_spec s;
  s.argv = {"/no/such/program"};
  auto o = run(r, s);
  EXPECT_NE(o.spawn_error.find("No such file"), std::string::npos)
    << o.spawn_error;
  EXPECT_NE(o.spawn_error.find("/no/such/program"), std::string::npos);
  s.argv = {"true"};
  s.cwd = "/no/such/folder";
  EXPECT_FALSE(run(r, s).spawn_error.empty());
  s.argv.clear();
  EXPECT_EQ(run(r, s).spawn_error, "empty command");
}

TEST(ProcessRunner, CapsOutputAndKeepsDraining) {
  process_runner r;
  // 8 MiB on each stream against a 64 KiB cap: the child must not block.
  auto s = sh("head -c 8388608 /dev/zero; head -c 8388608 /dev/zero >&2");
  s.max_output_bytes = 65536;
  auto o = run(r, s);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out.size(), 65536u);
  EXPECT_EQ(o.err.size(), 65536u);
  EXPECT_TRUE(o.out_truncated);
  EXPECT_TRUE(o.err_truncated);
}

TEST(ProcessRunner, ChildIgnoringStdinDoesNotHurt) {
  process_runner r;
  auto s = sh("exit 0");
  s.stdin_data = std::string(4 << 20, 'x');
  EXPECT_EQ(run(r, s).exit_code, 0);
}

TEST(ProcessRunner, KillReachesTheWholeGroup) {
  process_runner r;
  auto pidfile = std::filesystem::temp_directory_path()
                 / ("troupe-pr-" + std::to_string(::getpid()));
  std::filesystem::remove(pidfile);
  std::promise<process_outcome> p;
  auto f = p.get_future();
  auto h = r.start(sh("sleep 60 & echo $! > " + pidfile.string() + "; wait"),
                   [&p](process_outcome o) { p.set_value(std::move(o)); });
  pid_t grandchild = 0;
  for (int i = 0; i < 500 && grandchild == 0; ++i) {
    std::ifstream in{pidfile};
    in >> grandchild;
    if (grandchild == 0)
      std::this_thread::sleep_for(10ms);
  }
  ASSERT_GT(grandchild, 0);
  ASSERT_TRUE(alive(grandchild));
  r.kill(h);
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  auto o = f.get();
  EXPECT_TRUE(o.killed);
  EXPECT_EQ(o.signal, SIGTERM);
  // The grandchild got the same signal, and is gone (reaped) by now.
  EXPECT_FALSE(alive(grandchild));
  std::filesystem::remove(pidfile);
}

// A group that ignores SIGTERM, killed: `done` comes only once no member
// is left, not even as a zombie, so that whoever waits for it (the next
// attempt, a concurrency slot) never overlaps the old processes.
TEST(ProcessRunner, DoneAfterAKilledGroupIsGoneWhole) {
  process_runner r;
  scratch_file pids{"killed"};
  std::promise<process_outcome> p;
  auto f = p.get_future();
  // The grandchildren hold no pipe of the child's, so nothing but the
  // group's end can make `done` wait for them.
  auto s = sh("trap '' TERM; echo $$ > " + pids.str()
              + "; for i in 1 2 3; do sleep 30 </dev/null >/dev/null 2>&1 & "
                "echo $! >> "
              + pids.str() + "; done; wait");
  s.kill_grace = 200ms;
  auto h = r.start(s, [&p](process_outcome o) { p.set_value(std::move(o)); });
  auto members = pids.pids(4);
  ASSERT_EQ(members.size(), 4u);
  for (auto pid : members)
    ASSERT_TRUE(running(pid)) << pid;
  r.kill(h);
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  // Checked in this order on purpose: what is checked first had the least
  // time to go away after `done`.
  for (auto pid : members)
    EXPECT_FALSE(alive(pid)) << "member " << pid << " of the group is still "
                             << (state_of(pid) == 'Z' ? "a zombie" : "alive");
  auto o = f.get();
  EXPECT_TRUE(o.killed);
  EXPECT_EQ(o.signal, SIGKILL);
  EXPECT_FALSE(o.group_lingered);
  for (auto pid : members)
    cleanup(pid);
}

// A child that exits at once leaving processes behind in its group (a
// background job, and one orphaned two levels down): `done` comes after
// they are gone.
TEST(ProcessRunner, DoneAfterWhatTheChildLeftBehindIsGone) {
  process_runner r;
  scratch_file pids{"left"};
  auto o = run(
    r, sh("sleep 30 </dev/null >/dev/null 2>&1 & echo $! > " + pids.str()
          + "; (sleep 30 </dev/null >/dev/null 2>&1 & echo $! >> " + pids.str()
          + ") ; n=0; while [ $(wc -l < " + pids.str()
          + ") -lt 2 ] && [ $n -lt 500 ]; do n=$((n+1)); sleep 0.01; done;"
            " echo bye"));
  auto left = pids.pids(2);
  ASSERT_EQ(left.size(), 2u);
  for (auto pid : left)
    EXPECT_FALSE(alive(pid)) << "left-behind " << pid << " is still "
                             << (state_of(pid) == 'Z' ? "a zombie" : "alive");
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_EQ(o.out, "bye\n");
  EXPECT_FALSE(o.killed);
  for (auto pid : left)
    cleanup(pid);
}

// While a child runs, the processes it orphans inside its group become this
// process's children (it is a subreaper): they are reaped as they end, so
// that they do not pile up as zombies.
TEST(ProcessRunner, ReapsOrphansOfARunningChild) {
  process_runner r;
  scratch_file pids{"orphans"};
  std::promise<process_outcome> p;
  auto f = p.get_future();
  auto h = r.start(sh("for i in 1 2 3 4 5; do (sleep 0.1 & echo $! >> "
                      + pids.str() + "); done; sleep 30"),
                   [&p](process_outcome o) { p.set_value(std::move(o)); });
  auto orphans = pids.pids(5);
  ASSERT_EQ(orphans.size(), 5u);
  for (auto pid : orphans)
    EXPECT_TRUE(eventually([&] { return !alive(pid); }))
      << "orphan " << pid << " is still "
      << (state_of(pid) == 'Z' ? "a zombie" : "alive");
  r.kill(h);
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
}

// The node's process dies by SIGKILL: its reaper kills the groups it
// listed, grandchildren included (PR_SET_PDEATHSIG reaches only the child).
TEST(ProcessRunner, ReaperKillsTheGroupsWhenTheProcessDies) {
  scratch_file pids{"reaper"};
  // A "node": a forked copy of this (single-threaded) test process.
  pid_t node = ::fork();
  ASSERT_GE(node, 0);
  if (node == 0) {
    process_runner r;
    r.start(sh("echo $$ > " + pids.str() + ".tmp; sleep 60 & echo $! >> "
               + pids.str() + ".tmp; mv " + pids.str() + ".tmp " + pids.str()
               + "; wait"),
            [](process_outcome) {});
    std::ofstream{pids.str() + ".reaper"} << r.reaper_pid() << "\n";
    ::pause();
    ::_exit(0);
  }
  auto members = pids.pids(2);
  ASSERT_EQ(members.size(), 2u);
  auto grandchild = members[1];
  ASSERT_TRUE(running(grandchild));
  ::kill(node, SIGKILL);
  ASSERT_EQ(::waitpid(node, nullptr, 0), node);
  EXPECT_TRUE(eventually([&] { return !running(grandchild); }))
    << "grandchild " << grandchild << " outlived the node's process";
  pid_t reaper = 0;
  std::ifstream{pids.str() + ".reaper"} >> reaper;
  // It exits on its own once its work is done.
  EXPECT_TRUE(reaper <= 0 || eventually([&] { return !running(reaper); }));
  for (auto pid : members)
    cleanup(pid);
  cleanup(reaper);
  std::filesystem::remove(pids.str() + ".tmp");
  std::filesystem::remove(pids.str() + ".reaper");
}

TEST(ProcessRunner, SigkillsAChildIgnoringSigterm) {
  process_runner r;
  std::promise<process_outcome> p;
  auto f = p.get_future();
  auto s = sh("trap '' TERM; echo ready; while :; do sleep 0.05; done");
  s.kill_grace = 200ms;
  auto h = r.start(s, [&p](process_outcome o) { p.set_value(std::move(o)); });
  std::this_thread::sleep_for(300ms);
  r.kill(h);
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  auto o = f.get();
  EXPECT_TRUE(o.killed);
  EXPECT_EQ(o.signal, SIGKILL);
}

TEST(ProcessRunner, RunsManyConcurrently) {
  process_runner r;
  constexpr int n = 50;
  std::vector<std::promise<process_outcome>> ps(n);
  for (int i = 0; i < n; ++i)
    r.start(sh("echo " + std::to_string(i)),
            [&ps, i](process_outcome o) { ps[i].set_value(std::move(o)); });
  for (int i = 0; i < n; ++i) {
    auto f = ps[i].get_future();
    ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(f.get().out, std::to_string(i) + "\n");
  }
}

// Children that end while others start reuse descriptor numbers (pidfds):
// a wake-up meant for an ended child must never kill a live one.
TEST(ProcessRunner, KeepsManyInFlightWithoutKillingAny) {
  process_runner r;
  constexpr int total = 1000, in_flight = 10;
  std::mutex mtx;
  std::condition_variable cv;
  int started = 0, ended = 0, bad = 0;
  std::string first_bad;
  std::function<void()> start_one = [&] {
    process_spec spec;
    spec.argv = {"/bin/true"};
    // Like an exec node's context on stdin, which /bin/true never reads.
    spec.stdin_data = R"({"inputs": {}, "nodes": {}})";
    r.start(std::move(spec), [&](process_outcome o) {
      std::lock_guard lock{mtx};
      ++ended;
      if (o.exit_code != 0 || o.signal != 0 || !o.spawn_error.empty()) {
        if (bad++ == 0)
          first_bad = "exit " + std::to_string(o.exit_code) + ", signal "
                      + std::to_string(o.signal) + " " + o.spawn_error;
      }
      if (started < total) {
        ++started;
        start_one();
      }
      cv.notify_all();
    });
  };
  {
    std::lock_guard lock{mtx};
    for (; started < in_flight; ++started)
      start_one();
  }
  std::unique_lock lock{mtx};
  ASSERT_TRUE(cv.wait_for(lock, 120s, [&] { return ended == total; }))
    << ended << " of " << total << " ended";
  EXPECT_EQ(bad, 0) << first_bad;
}

TEST(ProcessRunner, DestructorKillsWhatIsLeft) {
  std::promise<process_outcome> p;
  auto f = p.get_future();
  {
    process_runner r;
    r.start(sh("sleep 60"),
            [&p](process_outcome o) { p.set_value(std::move(o)); });
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(f.wait_for(0s), std::future_status::ready);
  EXPECT_TRUE(f.get().killed);
}

TEST(ProcessRunner, UnknownHandleIsIgnored) {
  process_runner r;
  r.kill(12345);
  EXPECT_EQ(run(r, sh("true")).exit_code, 0);
}

// A start of a key supersedes the process of that key still running (its
// owner gave up on it): it is killed, and the new one starts only once it
// is gone, kill grace included.
TEST(ProcessRunner, StartsOfOneKeyNeverOverlap) {
  process_runner r;
  scratch_file pid_file{"key-pid"};
  std::promise<process_outcome> first, second;
  auto old
    = sh("trap '' TERM; echo $$ > " + pid_file.str() + "; exec sleep 30");
  old.key = "run/node";
  old.kill_grace = 300ms;
  r.start(old, [&](process_outcome o) { first.set_value(std::move(o)); });
  auto pids = pid_file.pids(1);
  ASSERT_EQ(pids.size(), 1u);
  auto next = sh("if kill -0 " + std::to_string(pids[0])
                 + " 2>/dev/null; then echo beside; else echo alone; fi");
  next.key = "run/node";
  r.start(next, [&](process_outcome o) { second.set_value(std::move(o)); });
  auto f1 = first.get_future(), f2 = second.get_future();
  ASSERT_EQ(f1.wait_for(20s), std::future_status::ready);
  auto o1 = f1.get();
  EXPECT_TRUE(o1.killed);
  EXPECT_EQ(o1.signal, SIGKILL);
  ASSERT_EQ(f2.wait_for(20s), std::future_status::ready);
  auto o2 = f2.get();
  EXPECT_EQ(o2.out, "alone\n");
  EXPECT_EQ(o2.exit_code, 0);
  // Other keys, and no key, do not wait.
  process_spec other = sh("echo other");
  other.key = "run/other";
  EXPECT_EQ(run(r, other).out, "other\n");
  cleanup(pids[0]);
}

// A start waiting for its key ends at once when killed, without running;
// the runner tells when the key is idle.
TEST(ProcessRunner, WaitingStartEndsWhenKilledAndIdleKeysAreTold) {
  process_runner r;
  scratch_file ran{"key-ran"}, trapped{"key-trapped"};
  std::promise<process_outcome> first, second;
  auto old = sh("trap '' TERM; touch " + trapped.str() + "; exec sleep 30");
  old.key = "k";
  old.kill_grace = 1s;
  r.start(old, [&](process_outcome o) { first.set_value(std::move(o)); });
  // The next start supersedes it with SIGTERM: only once it ignores that
  // does it live on through its kill grace.
  ASSERT_TRUE(
    eventually([&] { return std::filesystem::exists(trapped.path); }));
  auto next = sh("touch " + ran.str());
  next.key = "k";
  auto h
    = r.start(next, [&](process_outcome o) { second.set_value(std::move(o)); });
  std::promise<void> idle;
  r.when_idle("k", [&] { idle.set_value(); });
  auto f2 = second.get_future();
  auto idle_f = idle.get_future();
  r.kill(h);
  // Well within the first one's kill grace.
  ASSERT_EQ(f2.wait_for(500ms), std::future_status::ready);
  auto o2 = f2.get();
  EXPECT_TRUE(o2.killed);
  EXPECT_NE(o2.spawn_error.find("not started"), std::string::npos)
    << o2.spawn_error;
  EXPECT_EQ(idle_f.wait_for(0s), std::future_status::timeout);
  auto f1 = first.get_future();
  ASSERT_EQ(f1.wait_for(20s), std::future_status::ready);
  EXPECT_TRUE(f1.get().killed);
  ASSERT_EQ(idle_f.wait_for(20s), std::future_status::ready);
  EXPECT_FALSE(std::filesystem::exists(ran.path));
  // A key with nothing is idle at once.
  std::promise<void> none;
  r.when_idle("nothing", [&] { none.set_value(); });
  EXPECT_EQ(none.get_future().wait_for(5s), std::future_status::ready);
}

TEST(ProcessRunner, HeartbeatKeepsAChildAliveAndSilenceKillsIt) {
  process_runner r;
  // Beats every 50ms for 0.5s against a 300ms limit: lives.
  auto s
    = sh("for i in 1 2 3 4 5 6 7 8 9 10; do echo . >&$TROUPE_HEARTBEAT_FD; "
         "sleep 0.05; done; echo done");
  s.heartbeat_timeout = 300ms;
  auto o = run(r, s);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_FALSE(o.heartbeat_lost);
  EXPECT_EQ(o.out, "done\n");
  // Beats once, then goes quiet: killed.
  s = sh("echo . >&3; sleep 30");
  s.heartbeat_timeout = 200ms;
  s.kill_grace = 100ms;
  o = run(r, s);
  EXPECT_TRUE(o.heartbeat_lost);
  EXPECT_TRUE(o.killed);
  EXPECT_NE(o.signal, 0);
  // Closing the descriptor does not escape the watch.
  s = sh("exec 3>&-; sleep 30");
  s.heartbeat_timeout = 200ms;
  s.kill_grace = 100ms;
  EXPECT_TRUE(run(r, s).heartbeat_lost);
  // Without a heartbeat timeout there is no descriptor 3.
  EXPECT_EQ(
    run(r, sh("test -z \"$TROUPE_HEARTBEAT_FD\" && ! true >&3")).exit_code, 0);
}

TEST(ProcessRunner, ChildrenInheritNoStrayDescriptors) {
  // A descriptor this process holds without close-on-exec.
  int fd = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(fd, 0);
  process_runner r;
  auto o = run(r, sh("test -e /proc/self/fd/" + std::to_string(fd)
                     + " && echo leaked || echo clean"));
  ::close(fd);
  EXPECT_EQ(o.out, "clean\n");
}

namespace {

/// A fresh folder, removed with its contents when it goes out of scope.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    auto pattern
      = (std::filesystem::temp_directory_path() / "troupe-pr-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("mkdtemp failed");
    path = pattern;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

std::string this_boot() {
  std::string id;
  std::ifstream{"/proc/sys/kernel/random/boot_id"} >> id;
  return id;
}

/// Field 22 of /proc/<pid>/stat: when it started, in ticks after boot.
std::string start_time_of(pid_t pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string text;
  std::getline(in, text);
  std::istringstream rest{text.substr(text.rfind(')') + 2)};
  std::string field;
  for (int i = 3; i <= 22; ++i)
    rest >> field;
  return field;
}

} // namespace

// A node killed together with its reaper leaves grandchildren running; the
// next runner on the same state folder kills them before it returns, that
// is before anything can run again.
TEST(ProcessRunner, NextRunnerKillsTheGroupsADeadOneLeftBehind) {
  scratch_dir state;
  scratch_file pids{"backstop"};
  pid_t node = ::fork();
  ASSERT_GE(node, 0);
  if (node == 0) {
    process_runner_options o;
    o.state_dir = (state.path / "procs").string();
    o.reaper = false; // as if it had been killed too
    process_runner r{o};
    r.start(sh("echo $$ > " + pids.str() + ".tmp; sleep 60 & echo $! >> "
               + pids.str() + ".tmp; mv " + pids.str() + ".tmp " + pids.str()
               + "; wait"),
            [](process_outcome) {});
    ::pause();
    ::_exit(0);
  }
  auto members = pids.pids(2);
  ASSERT_EQ(members.size(), 2u);
  auto grandchild = members[1];
  ::kill(node, SIGKILL);
  ASSERT_EQ(::waitpid(node, nullptr, 0), node);
  // Nothing killed it: PR_SET_PDEATHSIG reached only the child.
  std::this_thread::sleep_for(100ms);
  ASSERT_TRUE(running(grandchild));
  std::vector<std::string> notices;
  {
    process_runner_options o;
    o.state_dir = (state.path / "procs").string();
    o.log = [&](const std::string& line) { notices.push_back(line); };
    process_runner r{o};
    EXPECT_FALSE(running(grandchild));
    // And it runs children as usual.
    EXPECT_EQ(run(r, sh("echo ok")).out, "ok\n");
  }
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("killed 1 exec process group(s) left behind"),
            std::string::npos)
    << notices[0];
  for (auto pid : members)
    cleanup(pid);
}

// Process group ids are reused (after a reboot, or once the group is gone):
// a recorded group is killed only when a living member is provably the one
// recorded (same boot, leader with the same start time, or the runner's
// marker in its environment).
TEST(ProcessRunner, SweepLeavesGroupsItCannotProveItsOwn) {
  scratch_dir state;
  auto dir = state.path / "procs";
  std::filesystem::create_directories(dir);
  // A stranger: a process group of this test's, without the marker.
  pid_t stranger = ::fork();
  ASSERT_GE(stranger, 0);
  if (stranger == 0) {
    ::setpgid(0, 0);
    char* argv[]
      = {const_cast<char*>("sleep"), const_cast<char*>("60"), nullptr};
    char* envp[] = {nullptr};
    ::execve("/bin/sleep", argv, envp);
    ::_exit(127);
  }
  ::setpgid(stranger, stranger);
  ASSERT_TRUE(eventually([&] { return start_time_of(stranger) != ""; }));
  auto start = start_time_of(stranger);
  auto sweep = [&](const std::string& boot, const std::string& start_time) {
    std::ofstream{dir / "groups"}
      << "troupe-groups 1 " << boot << " 0123456789abcdef\n"
      << "+ " << stranger << " " << start_time << "\n";
    std::vector<std::string> notices;
    process_runner_options o;
    o.state_dir = dir.string();
    o.reaper = false;
    o.log = [&](const std::string& line) { notices.push_back(line); };
    process_runner r{o};
    return notices;
  };
  // Same boot, another start time: its id was reused.
  auto notices = sweep(this_boot(), "1");
  EXPECT_TRUE(running(stranger));
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("left process group(s) " + std::to_string(stranger)
                            + " alone"),
            std::string::npos)
    << notices[0];
  // Recorded in another boot.
  EXPECT_TRUE(sweep("another-boot", start).empty());
  EXPECT_TRUE(running(stranger));
  // The same leader: killed.
  sweep(this_boot(), start);
  EXPECT_FALSE(running(stranger));
  cleanup(stranger);
}
