#include "actors/exec/process_runner.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>
#include <utility>

extern char** environ;

namespace troupe::actors {

namespace asio = boost::asio;

namespace {

/// Time the pipes get to reach end-of-file after the child has exited (a
/// grandchild that left the process group may still hold them).
constexpr auto drain_limit = std::chrono::seconds{2};

int pidfd_open(pid_t pid) {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

/// The variable set in every child's environment, valued with the runner's
/// instance id: proof, read back from /proc after a restart, that a process
/// is ours.
constexpr const char* group_marker = "TROUPE_ATTEMPT_GROUP";

/// The name of the log of live process groups inside the state folder.
constexpr const char* group_log_name = "groups";

/// The first line of a group log, then its format version.
constexpr const char* group_log_magic = "troupe-groups";

/// How long opening a runner waits for leftover groups it killed to be gone.
constexpr auto sweep_limit = std::chrono::seconds{5};

/// Reads a small file whole (procfs files report no size); empty on error.
std::string read_small_file(const std::string& path) {
  std::string out;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0)
      out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

/// Returns this boot's id, which tells process ids of this boot from
/// those of an earlier one.
std::string boot_id() {
  auto id = read_small_file("/proc/sys/kernel/random/boot_id");
  while (!id.empty() && (id.back() == '\n' || id.back() == ' '))
    id.pop_back();
  return id;
}

/// A process as /proc/<pid>/stat describes it.
struct proc_stat {
  pid_t pid = 0;
  char state = '?';
  pid_t pgrp = 0;
  /// Clock ticks after boot at which the process started.
  uint64_t start_time = 0;

  /// Whether it still runs (a zombie has ended; it only waits to be reaped).
  bool alive() const { return state != 'Z' && state != 'X' && state != 'x'; }
};

std::optional<proc_stat> read_proc_stat(pid_t pid) {
  auto text = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
  auto close = text.rfind(')');
  if (close == std::string::npos)
    return std::nullopt;
  std::istringstream in{text.substr(close + 1)};
  proc_stat s;
  s.pid = pid;
  std::string skip;
  long ppid = 0, pgrp = 0;
  in >> s.state >> ppid >> pgrp;
  // Fields 6 to 21, then starttime (field 22).
  for (int i = 6; i <= 21 && in; ++i)
    in >> skip;
  in >> s.start_time;
  if (!in)
    return std::nullopt;
  s.pgrp = static_cast<pid_t>(pgrp);
  return s;
}

/// Every process now in one of `pgids`.
std::vector<proc_stat> processes_in(const std::set<pid_t>& pgids) {
  std::vector<proc_stat> out;
  DIR* d = ::opendir("/proc");
  if (d == nullptr)
    return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    auto pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end != '\0')
      continue;
    auto s = read_proc_stat(static_cast<pid_t>(pid));
    if (s && pgids.count(s->pgrp) != 0)
      out.push_back(*s);
  }
  ::closedir(d);
  return out;
}

/// Whether the environment `pid` started with holds `entry` ("NAME=value").
bool environ_holds(pid_t pid, const std::string& entry) {
  auto env = read_small_file("/proc/" + std::to_string(pid) + "/environ");
  size_t at = 0;
  while (at < env.size()) {
    auto end = env.find('\0', at);
    if (end == std::string::npos)
      end = env.size();
    if (env.compare(at, end - at, entry) == 0)
      return true;
    at = end + 1;
  }
  return false;
}

/// What a group log says: who wrote it and the groups it left alive.
struct group_log_content {
  std::string boot;
  std::string instance;
  /// Process group id to its leader's start time (0: unknown).
  std::map<pid_t, uint64_t> live;
};

/// Parses a group log: a header line "troupe-groups 1 <boot id> <instance>",
/// then "+ <pgid> <leader start time>" when a group started and "- <pgid>"
/// when it was gone. Lines cut short by a crash are skipped.
std::optional<group_log_content> parse_group_log(const std::string& text) {
  std::istringstream in{text};
  std::string line, magic;
  int version = 0;
  group_log_content out;
  if (!std::getline(in, line))
    return std::nullopt;
  std::istringstream header{line};
  header >> magic >> version >> out.boot >> out.instance;
  if (magic != group_log_magic || version != 1 || out.instance.empty())
    return std::nullopt;
  while (std::getline(in, line)) {
    std::istringstream l{line};
    char op = 0;
    long pgid = 0;
    uint64_t start = 0;
    if (!(l >> op >> pgid) || pgid <= 1)
      continue;
    if (op == '+' && (l >> start))
      out.live[static_cast<pid_t>(pgid)] = start;
    else if (op == '-')
      out.live.erase(static_cast<pid_t>(pgid));
  }
  return out;
}

/// Kills the process groups that the log in `dir` left alive, when they are
/// provably the ones it recorded: same boot, and a living member that is
/// the recorded leader (same start time) or carries the writer's marker in
/// its environment. Process group ids are reused, so nothing else is
/// touched. Waits (bounded) until the killed groups have no living member.
void sweep_leftovers(const std::string& dir,
                     const std::function<void(const std::string&)>& log) {
  auto text = read_small_file(dir + "/" + group_log_name);
  auto content = parse_group_log(text);
  if (!content || content->live.empty() || content->boot != boot_id())
    return;
  std::set<pid_t> recorded;
  for (auto& [pgid, _] : content->live)
    recorded.insert(pgid);
  auto marker = std::string{group_marker} + "=" + content->instance;
  // Never this process's own group (a leftover that started this node).
  recorded.erase(::getpgrp());
  std::set<pid_t> ours, strangers;
  for (auto& p : processes_in(recorded)) {
    if (!p.alive() || ours.count(p.pgrp) != 0)
      continue;
    auto start = content->live[p.pgrp];
    if ((p.pid == p.pgrp && start != 0 && p.start_time == start)
        || environ_holds(p.pid, marker)) {
      ours.insert(p.pgrp);
      strangers.erase(p.pgrp);
    } else {
      strangers.insert(p.pgrp);
    }
  }
  // A group with a member proven ours is ours whole: its id cannot be
  // reused while any member lives.
  for (auto pgid : ours)
    ::kill(-pgid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + sweep_limit;
  std::set<pid_t> left = ours;
  while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
    std::set<pid_t> still;
    for (auto& p : processes_in(left))
      if (p.alive())
        still.insert(p.pgrp);
    for (auto pgid : still)
      ::kill(-pgid, SIGKILL);
    left = std::move(still);
  }
  if (!log)
    return;
  auto list = [](const std::set<pid_t>& s) {
    std::string out;
    for (auto pgid : s)
      out += (out.empty() ? "" : ", ") + std::to_string(pgid);
    return out;
  };
  if (!ours.empty())
    log("killed " + std::to_string(ours.size())
        + " exec process group(s) left behind by a node that died: "
        + list(ours));
  if (!left.empty())
    log("exec process group(s) still alive after SIGKILL (uninterruptible "
        "sleep?): "
        + list(left));
  if (!strangers.empty())
    log("left process group(s) " + list(strangers)
        + " alone: recorded by a node that died, but not provably its own "
          "now");
}

/// The log of live process groups in the state folder, written by the
/// runner's thread: one line per group started and per group gone, no
/// fsync (after a machine crash no process is left anyway). Rewritten with
/// only the live groups once it has grown well past them.
class group_log {
 public:
  group_log() = default;
  group_log(const group_log&) = delete;
  group_log& operator=(const group_log&) = delete;
  ~group_log() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  /// Starts a fresh log in `dir`; false with `error` set when it cannot.
  bool open(const std::string& dir, const std::string& instance,
            std::string& error) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      error = "cannot create '" + dir + "': " + std::strerror(errno);
      return false;
    }
    dir_ = dir;
    header_ = std::string{group_log_magic} + " 1 " + boot_id() + " " + instance
              + "\n";
    if (!rewrite()) {
      error = "cannot write '" + path() + "': " + std::strerror(errno);
      return false;
    }
    return true;
  }

  /// Notes a live group, or the start time of its leader (0: unknown).
  void started(pid_t pgid, uint64_t start_time) {
    if (fd_ < 0)
      return;
    live_[pgid] = start_time;
    append("+ " + std::to_string(pgid) + " " + std::to_string(start_time)
           + "\n");
  }

  void gone(pid_t pgid) {
    if (fd_ < 0 || live_.erase(pgid) == 0)
      return;
    append("- " + std::to_string(pgid) + "\n");
    if (records_ > 4096 && records_ > 4 * live_.size())
      rewrite();
  }

 private:
  std::string path() const { return dir_ + "/" + group_log_name; }

  void append(const std::string& line) {
    ++records_;
    [[maybe_unused]] auto n = ::write(fd_, line.data(), line.size());
  }

  /// Writes the header and the live groups to a new file that then takes
  /// the log's place, so a crash leaves the old log or the new one.
  bool rewrite() {
    auto tmp = path() + ".tmp";
    int fd
      = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
      return false;
    std::string text = header_;
    for (auto& [pgid, start] : live_)
      text += "+ " + std::to_string(pgid) + " " + std::to_string(start) + "\n";
    bool ok = ::write(fd, text.data(), text.size())
              == static_cast<ssize_t>(text.size());
    if (!ok || ::rename(tmp.c_str(), path().c_str()) != 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return false;
    }
    // Appends go to the new file from here on.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_APPEND);
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
    records_ = live_.size();
    return true;
  }

  std::string dir_;
  std::string header_;
  int fd_ = -1;
  size_t records_ = 0;
  std::unordered_map<pid_t, uint64_t> live_;
};

/// The reaper: a forked process that keeps the list of live process groups
/// the runner sends it over a pipe (a pgid to add, its negation to remove)
/// and, when the pipe reaches end of file because the node's process ended
/// in any way, SIGKILLs every group still listed and exits. It was forked
/// from a process with other threads, so it makes raw system calls only:
/// no allocation, no locks, no stdio.
[[noreturn]] void reaper_main(int fd) {
  ::prctl(PR_SET_NAME, "troupe-reaper", 0, 0, 0);
  // Keep no descriptor of the node's: not its data dir, not its sockets,
  // not the pipes of its children or of whoever waits for its output.
  if (fd > 0)
    ::syscall(SYS_close_range, 0u, static_cast<unsigned>(fd - 1), 0u);
  ::syscall(SYS_close_range, static_cast<unsigned>(fd + 1), ~0u, 0u);
  [[maybe_unused]] auto cd = ::chdir("/");
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      ::signal(sig, SIG_DFL);
  // Signals meant for the node's terminal or its service manager end the
  // node, which ends the reaper through end of file: the reaper must live
  // until then.
  for (int sig :
       {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGTSTP, SIGTTIN, SIGTTOU})
    ::signal(sig, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  size_t cap = 4096 / sizeof(int32_t), n = 0;
  void* mem = ::mmap(nullptr, cap * sizeof(int32_t), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  auto* groups = mem == MAP_FAILED ? nullptr : static_cast<int32_t*>(mem);
  char buf[4096];
  size_t have = 0;
  while (true) {
    auto got = ::read(fd, buf + have, sizeof buf - have);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    have += static_cast<size_t>(got);
    size_t at = 0;
    for (; at + sizeof(int32_t) <= have; at += sizeof(int32_t)) {
      int32_t v;
      std::memcpy(&v, buf + at, sizeof v);
      if (groups == nullptr || v == 0 || v == INT32_MIN)
        continue;
      auto pgid = v > 0 ? v : -v;
      size_t i = 0;
      while (i < n && groups[i] != pgid)
        ++i;
      if (v < 0) {
        if (i < n)
          groups[i] = groups[--n];
      } else if (i == n) {
        if (n == cap) {
          void* grown = ::mremap(groups, cap * sizeof(int32_t),
                                 2 * cap * sizeof(int32_t), MREMAP_MAYMOVE);
          if (grown == MAP_FAILED)
            continue;
          groups = static_cast<int32_t*>(grown);
          cap *= 2;
        }
        groups[n++] = pgid;
      }
    }
    std::memmove(buf, buf + at, have - at);
    have -= at;
  }
  // A listed group still has a member (else the node would have removed
  // it), so its id is not reused. A second round catches what a fork in
  // flight may have added.
  for (int round = 0; round < 2 && n > 0; ++round) {
    for (size_t i = 0; i < n; ++i)
      ::kill(-groups[i], SIGKILL);
    timespec pause{0, 5'000'000};
    ::nanosleep(&pause, nullptr);
  }
  ::_exit(0);
}

/// A file descriptor closed on destruction.
struct fd_guard {
  int fd = -1;
  fd_guard() = default;
  explicit fd_guard(int f) : fd(f) {}
  fd_guard(const fd_guard&) = delete;
  fd_guard& operator=(const fd_guard&) = delete;
  ~fd_guard() { reset(); }
  void reset() {
    if (fd >= 0)
      ::close(fd);
    fd = -1;
  }
  int release() { return std::exchange(fd, -1); }
};

/// argv and envp as the C arrays execvpe wants, built before the fork so
/// that the child only calls async-signal-safe functions.
struct exec_image {
  std::vector<std::string> strings;
  std::vector<char*> argv;
  std::vector<char*> envp;

  /// `marker` ("NAME=value") ends the environment, over anything the spec
  /// or the parent set, so that the runner can prove later that the child
  /// (and what it starts with the same environment) is its own.
  exec_image(const process_spec& spec, const std::string& marker) {
    std::vector<std::string> env_entries;
    auto marker_name = marker.substr(0, marker.find('='));
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      std::string entry{*e};
      auto eq = entry.find('=');
      auto name = entry.substr(0, eq);
      // An inherited heartbeat descriptor would name the wrong file, an
      // inherited marker the wrong runner (Troupe run by an exec node).
      if (spec.env.count(name) == 0 && name != "TROUPE_HEARTBEAT_FD"
          && name != marker_name)
        env_entries.push_back(std::move(entry));
    }
    if (spec.heartbeat_timeout.count() > 0)
      env_entries.push_back("TROUPE_HEARTBEAT_FD=3");
    for (const auto& [name, value] : spec.env)
      if (name != marker_name)
        env_entries.push_back(name + "=" + value);
    env_entries.push_back(marker);
    strings.reserve(spec.argv.size() + env_entries.size());
    for (const auto& a : spec.argv)
      strings.push_back(a);
    for (auto& e : env_entries)
      strings.push_back(std::move(e));
    for (size_t i = 0; i < spec.argv.size(); ++i)
      argv.push_back(strings[i].data());
    argv.push_back(nullptr);
    for (size_t i = spec.argv.size(); i < strings.size(); ++i)
      envp.push_back(strings[i].data());
    envp.push_back(nullptr);
  }
};

/// Writes errno to `fd` and ends the child. Async-signal-safe.
[[noreturn]] void child_fail(int fd) {
  int e = errno;
  [[maybe_unused]] auto n = ::write(fd, &e, sizeof(e));
  ::_exit(127);
}

/// What the child does between vfork and exec, prepared by the parent.
struct child_setup {
  char** argv;
  char** envp;
  const char* cwd;
  int in, out, err, status;
  /// Write end of the heartbeat pipe, moved to fd 3; -1 for none.
  int heartbeat;
  /// Write end of the reaper's pipe (non-blocking); -1 for none.
  int reaper;
  pid_t parent;
};

/// The child side of spawn_child: only async-signal-safe calls, no writes to
/// the memory it shares with the parent.
[[noreturn]] void exec_child(const child_setup& s) {
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      ::signal(sig, SIG_DFL);
  // The child dies with the thread that started it, so a node killed with
  // SIGKILL leaves no exec children behind.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != s.parent)
    ::_exit(127);
  if (::setpgid(0, 0) != 0)
    child_fail(s.status);
  // The group is listed with the reaper before the program can start any
  // process, so none escapes its notice. A full pipe loses the entry (the
  // state folder still has it).
  if (s.reaper >= 0) {
    int32_t pgid = ::getpid();
    [[maybe_unused]] auto n = ::write(s.reaper, &pgid, sizeof pgid);
  }
  if (::dup2(s.in, 0) < 0 || ::dup2(s.out, 1) < 0 || ::dup2(s.err, 2) < 0)
    child_fail(s.status);
  if (s.heartbeat == 3)
    ::fcntl(3, F_SETFD, 0); // dup2 onto itself would keep FD_CLOEXEC
  else if (s.heartbeat >= 0 && ::dup2(s.heartbeat, 3) < 0)
    child_fail(s.status);
  // Descriptors the node inherited without close-on-exec must not leak
  // into the program (the status pipe stays usable until exec).
  ::syscall(SYS_close_range, s.heartbeat >= 0 ? 4u : 3u, ~0u,
            CLOSE_RANGE_CLOEXEC);
  if (s.cwd != nullptr && ::chdir(s.cwd) != 0)
    child_fail(s.status);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execvpe(s.argv[0], s.argv, s.envp);
  child_fail(s.status);
}

/// Starts the child with vfork (cheap even for a large node) and returns its
/// pid, or -1 with `error` set. Every signal is blocked around vfork so that
/// no handler of ours runs in the child while it shares our memory.
__attribute__((noinline)) pid_t spawn_child(const child_setup& s, int& error) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = ::vfork();
  if (pid == 0)
    exec_child(s);
  error = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return pid;
}

} // namespace

struct process_runner::impl {
  struct child {
    handle id = 0;
    pid_t pid = -1;
    process_spec spec;
    std::function<void(process_outcome)> done;
    process_outcome outcome;
    asio::posix::stream_descriptor in;
    asio::posix::stream_descriptor out;
    asio::posix::stream_descriptor err;
    asio::posix::stream_descriptor pidfd;
    asio::posix::stream_descriptor heartbeat;
    asio::steady_timer kill_timer;
    asio::steady_timer drain_timer;
    asio::steady_timer heartbeat_timer;
    asio::steady_timer group_timer;
    std::array<char, 65536> out_buf;
    std::array<char, 65536> err_buf;
    std::array<char, 512> heartbeat_buf;
    /// The leader (pid, also the group's id) has been reaped.
    bool exited = false;
    /// No process of the group is left.
    bool group_gone = false;
    /// The runner stopped waiting for the group (group_wait_limit).
    bool gave_up = false;
    bool out_open = true;
    bool err_open = true;
    /// When the leader started and when it was reaped; polls of the group
    /// since.
    std::chrono::steady_clock::time_point started_at, ended_at;
    /// The leader's start time is in the group log.
    bool stamped = false;
    int group_polls = 0;

    explicit child(asio::io_context& io)
        : in(io), out(io), err(io), pidfd(io), heartbeat(io), kill_timer(io),
          drain_timer(io), heartbeat_timer(io), group_timer(io) {}
  };

  process_runner_options opts;
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::vector<std::thread> threads;
  std::atomic<uint64_t> next_id{1};
  std::atomic<size_t> active{0};
  /// "TROUPE_ATTEMPT_GROUP=<instance id>", set in every child.
  std::string marker;
  /// The reaper's pid and the write end of its pipe (non-blocking); 0 and
  /// closed when there is none.
  pid_t reaper = 0;
  asio::posix::stream_descriptor reaper_out;
  // Touched on the io thread only.
  std::unordered_map<handle, std::shared_ptr<child>> children;
  /// Children whose `done` was called while their group was still alive.
  std::unordered_map<handle, std::shared_ptr<child>> lingering;
  /// Messages for the reaper that found its pipe full, in order.
  std::vector<int32_t> reaper_backlog;
  bool reaper_writing = false;
  group_log groups;
  asio::steady_timer tick_timer;
  bool tick_armed = false;
  /// The processes of one key (process_spec::key): the one started and
  /// unfinished, the start waiting for it (only the latest: it supersedes
  /// the ones before), and who waits for the key to be idle.
  struct keyed {
    std::shared_ptr<child> current;
    std::shared_ptr<child> next;
    std::vector<std::function<void()>> idle;
  };
  std::unordered_map<std::string, keyed> keys;
  /// Starts waiting for their key's previous process, by handle.
  std::unordered_map<handle, std::shared_ptr<child>> waiting;
  /// Set by the destructor: nothing starts any more.
  bool closing = false;

  explicit impl(process_runner_options o)
      : opts(std::move(o)), work(io.get_executor()), reaper_out(io),
        tick_timer(io) {}

  void notice(const std::string& text) {
    if (opts.log)
      opts.log(text);
  }

  /// What a missing reaper means, for notices.
  std::string without_reaper() const;
  void start_reaper();
  void tell_reaper(int32_t message);
  void flush_reaper();
  void admit(std::shared_ptr<child> c);
  void drop_waiting(std::shared_ptr<child> c, std::string why);
  void release_key(const std::shared_ptr<child>& c);
  void spawn(std::shared_ptr<child> c);
  void read(std::shared_ptr<child> c, bool is_out);
  void wait_exit(std::shared_ptr<child> c);
  void watch_group(std::shared_ptr<child> c);
  void group_ended(const std::shared_ptr<child>& c);
  void tick();
  void watch_heartbeat(std::shared_ptr<child> c);
  void arm_heartbeat(std::shared_ptr<child> c);
  void maybe_finish(const std::shared_ptr<child>& c);
  void finish(const std::shared_ptr<child>& c);
  void terminate(handle h);
};

std::string process_runner::impl::without_reaper() const {
  return std::string{"if this process is killed, processes that its exec "
                     "children started live on"}
         + (opts.state_dir.empty() ? ""
                                   : " until the next start on its data dir");
}

void process_runner::impl::start_reaper() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    notice(std::string{"exec reaper not started (pipe: "} + std::strerror(errno)
           + "): " + without_reaper());
    return;
  }
  pid_t pid = ::fork();
  if (pid == 0)
    reaper_main(fds[0]);
  ::close(fds[0]);
  if (pid < 0) {
    ::close(fds[1]);
    notice(std::string{"exec reaper not started (fork: "} + std::strerror(errno)
           + "): " + without_reaper());
    return;
  }
  ::fcntl(fds[1], F_SETFL, ::fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  reaper = pid;
  reaper_out.assign(fds[1]);
}

void process_runner::impl::tell_reaper(int32_t message) {
  if (!reaper_out.is_open())
    return;
  if (!reaper_backlog.empty() || reaper_writing) {
    reaper_backlog.push_back(message);
    return;
  }
  auto n = ::write(reaper_out.native_handle(), &message, sizeof message);
  if (n == static_cast<ssize_t>(sizeof message))
    return;
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    reaper_backlog.push_back(message);
    flush_reaper();
    return;
  }
  // EPIPE: the reaper is gone (someone killed it). The state folder still
  // covers a node that dies now.
  boost::system::error_code ignored;
  reaper_out.close(ignored);
  ::waitpid(reaper, nullptr, WNOHANG);
  notice("exec reaper (pid " + std::to_string(reaper)
         + ") is gone: " + without_reaper());
}

void process_runner::impl::flush_reaper() {
  if (reaper_writing || !reaper_out.is_open())
    return;
  reaper_writing = true;
  reaper_out.async_wait(asio::posix::stream_descriptor::wait_write,
                        [this](boost::system::error_code ec) {
                          reaper_writing = false;
                          if (ec)
                            return;
                          auto pending = std::move(reaper_backlog);
                          reaper_backlog.clear();
                          for (auto m : pending)
                            tell_reaper(m);
                        });
}

void process_runner::impl::admit(std::shared_ptr<child> c) {
  if (closing) {
    c->outcome.killed = true;
    c->outcome.spawn_error = "not started: the node is shutting down";
    finish(c);
    return;
  }
  if (c->spec.key.empty()) {
    spawn(c);
    return;
  }
  auto& k = keys[c->spec.key];
  if (!k.current) {
    k.current = c;
    spawn(c);
    return;
  }
  // The key's process still runs, or its group is still going: this start
  // waits for it, and supersedes it and any start that waited before.
  terminate(k.current->id);
  if (auto earlier = std::exchange(k.next, c))
    drop_waiting(earlier, "superseded by a later start of its key");
  waiting.emplace(c->id, c);
}

void process_runner::impl::drop_waiting(std::shared_ptr<child> c,
                                        std::string why) {
  waiting.erase(c->id);
  if (auto k = keys.find(c->spec.key); k != keys.end() && k->second.next == c)
    k->second.next = nullptr;
  c->outcome.killed = true;
  c->outcome.spawn_error = "not started: " + why;
  finish(c);
}

void process_runner::impl::release_key(const std::shared_ptr<child>& c) {
  if (c->spec.key.empty())
    return;
  auto i = keys.find(c->spec.key);
  if (i == keys.end() || i->second.current != c)
    return;
  auto& k = i->second;
  if (auto next = std::exchange(k.next, nullptr); next && !closing) {
    waiting.erase(next->id);
    k.current = next;
    spawn(next); // (may finish it, and so release the key, at once)
    return;
  }
  auto idle = std::move(k.idle);
  keys.erase(i);
  for (auto& f : idle)
    f();
}

void process_runner::impl::spawn(std::shared_ptr<child> c) {
  const auto& spec = c->spec;
  if (spec.argv.empty()) {
    c->outcome.spawn_error = "empty command";
    finish(c);
    return;
  }
  exec_image image{spec, marker};
  // Pipes for stdin, stdout, stderr, the child's exec errno and heartbeats.
  fd_guard in_r, in_w, out_r, out_w, err_r, err_w, status_r, status_w, hb_r,
    hb_w;
  bool heartbeat = spec.heartbeat_timeout.count() > 0;
  for (auto [r, w] : {std::pair{&in_r, &in_w},
                      {&out_r, &out_w},
                      {&err_r, &err_w},
                      {&status_r, &status_w},
                      {&hb_r, &hb_w}}) {
    if (r == &hb_r && !heartbeat)
      break;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      c->outcome.spawn_error = std::string{"pipe: "} + std::strerror(errno);
      finish(c);
      return;
    }
    r->fd = fds[0];
    w->fd = fds[1];
  }
  const char* cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  int reaper_fd = reaper_out.is_open() ? reaper_out.native_handle() : -1;
  child_setup setup{image.argv.data(), image.envp.data(), cwd,         in_r.fd,
                    out_w.fd,          err_w.fd,          status_w.fd, hb_w.fd,
                    reaper_fd,         ::getpid()};
  int spawn_errno = 0;
  pid_t pid = spawn_child(setup, spawn_errno);
  if (pid < 0) {
    c->outcome.spawn_error = std::string{"fork: "} + std::strerror(spawn_errno);
    finish(c);
    return;
  }
  // The child has exec'd or exited: the status pipe holds its errno, if any.
  status_w.reset();
  int child_errno = 0;
  auto n = ::read(status_r.fd, &child_errno, sizeof(child_errno));
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    // It failed before exec, alone in its group.
    ::waitpid(pid, nullptr, 0);
    tell_reaper(-pid);
    std::string what = std::strerror(child_errno);
    if (cwd != nullptr && child_errno == ENOENT)
      what += " (program '" + spec.argv[0] + "' or folder '" + spec.cwd + "')";
    else
      what += " (program '" + spec.argv[0] + "')";
    c->outcome.spawn_error = what;
    finish(c);
    return;
  }
  c->pid = pid;
  int pfd = pidfd_open(pid);
  if (pfd < 0) {
    // Without a pidfd we cannot wait asynchronously: refuse to run it.
    c->outcome.spawn_error = std::string{"pidfd_open: "} + std::strerror(errno);
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    // The program has run, so its group may have more members: done waits
    // for them as for any child.
    c->exited = true;
    c->out_open = c->err_open = false;
    c->ended_at = std::chrono::steady_clock::now();
    children.emplace(c->id, c);
    watch_group(c);
    return;
  }
  for (int fd : {in_w.fd, out_r.fd, err_r.fd})
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  c->pidfd.assign(pfd);
  c->started_at = std::chrono::steady_clock::now();
  groups.started(pid, 0);
  c->out.assign(out_r.release());
  c->err.assign(err_r.release());
  c->in.assign(in_w.release());
  children.emplace(c->id, c);
  if (!tick_armed)
    tick();
  read(c, true);
  read(c, false);
  wait_exit(c);
  if (heartbeat) {
    ::fcntl(hb_r.fd, F_SETFL, ::fcntl(hb_r.fd, F_GETFL) | O_NONBLOCK);
    c->heartbeat.assign(hb_r.release());
    arm_heartbeat(c);
    watch_heartbeat(c);
  }
  if (spec.stdin_data.empty()) {
    boost::system::error_code ignored;
    c->in.close(ignored);
  } else {
    asio::async_write(c->in, asio::buffer(c->spec.stdin_data),
                      [c](boost::system::error_code, size_t) {
                        // A child that does not read its input is its own
                        // business; EPIPE is not an error of ours.
                        boost::system::error_code ignored;
                        c->in.close(ignored);
                      });
  }
}

void process_runner::impl::read(std::shared_ptr<child> c, bool is_out) {
  auto& stream = is_out ? c->out : c->err;
  auto& buf = is_out ? c->out_buf : c->err_buf;
  stream.async_read_some(
    asio::buffer(buf),
    [this, c, is_out](boost::system::error_code ec, size_t n) {
      auto& text = is_out ? c->outcome.out : c->outcome.err;
      auto& truncated
        = is_out ? c->outcome.out_truncated : c->outcome.err_truncated;
      auto& buf = is_out ? c->out_buf : c->err_buf;
      auto cap = c->spec.max_output_bytes;
      if (n > 0) {
        auto room = text.size() < cap ? cap - text.size() : 0;
        text.append(buf.data(), std::min(n, room));
        if (n > room)
          truncated = true;
      }
      if (ec) {
        (is_out ? c->out_open : c->err_open) = false;
        boost::system::error_code ignored;
        (is_out ? c->out : c->err).close(ignored);
        maybe_finish(c);
        return;
      }
      read(c, is_out);
    });
}

void process_runner::impl::wait_exit(std::shared_ptr<child> c) {
  c->pidfd.async_wait(
    asio::posix::stream_descriptor::wait_read,
    [this, c](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted)
        return;
      // Readiness is a hint, not proof: a pidfd can get the
      // number of a descriptor just closed (another child's
      // stdin pipe), and a wake-up meant for that one. Only
      // a child that has exited (checked without reaping
      // it) is handled; else wait again. Killing the group
      // of a live child here killed it.
      siginfo_t info{};
      auto checked = ::waitid(P_PID, static_cast<id_t>(c->pid), &info,
                              WEXITED | WNOHANG | WNOWAIT);
      if (checked == 0 && info.si_pid == 0) {
        wait_exit(c);
        return;
      }
      // The child is a zombie: its pid (and so its process
      // group id) cannot be reused until we reap it, so this
      // reaches exactly its group. (Not when waitid failed:
      // then nothing pins the pid.)
      if (checked == 0)
        ::kill(-c->pid, SIGKILL);
      int status = 0;
      if (::waitpid(c->pid, &status, 0) == c->pid) {
        if (WIFEXITED(status)) {
          c->outcome.exit_code = WEXITSTATUS(status);
        } else if (WIFSIGNALED(status)) {
          c->outcome.signal = WTERMSIG(status);
        }
      }
      c->exited = true;
      c->ended_at = std::chrono::steady_clock::now();
      boost::system::error_code ignored;
      c->pidfd.close(ignored);
      c->kill_timer.cancel();
      c->drain_timer.expires_after(drain_limit);
      c->drain_timer.async_wait([this, c](boost::system::error_code ec) {
        if (ec)
          return;
        boost::system::error_code ignored;
        c->out.close(ignored);
        c->err.close(ignored);
      });
      watch_group(c);
    });
}

void process_runner::impl::watch_group(std::shared_ptr<child> c) {
  // The rest of the group got SIGKILL with the leader's end; its members
  // orphaned by then are this process's children (it is a subreaper):
  // reap those that are done, and send SIGKILL again, which also tells
  // whether any member is left. Reaping by group only touches our own
  // children of a group we created.
  while (::waitpid(-c->pid, nullptr, WNOHANG) > 0) {}
  // Between the last member's end and this call its id could only be
  // reused after every other pid has been handed out (pids are allocated
  // cyclically), so this reaches no stranger.
  if (::kill(-c->pid, SIGKILL) != 0 && errno == ESRCH) {
    group_ended(c);
    return;
  }
  auto waited = std::chrono::steady_clock::now() - c->ended_at;
  if (!c->gave_up && waited >= opts.group_wait_limit) {
    c->gave_up = true;
    c->outcome.group_lingered = true;
    maybe_finish(c);
  }
  // Fast at first (a killed process takes a moment to go), then every
  // 50ms, and every second once `done` no longer waits for it.
  auto delay = c->gave_up ? std::chrono::milliseconds{1000}
                          : std::chrono::milliseconds{
                            std::min(50, 1 << std::min(c->group_polls, 6))};
  ++c->group_polls;
  c->group_timer.expires_after(delay);
  c->group_timer.async_wait([this, c](boost::system::error_code ec) {
    if (!ec)
      watch_group(c);
  });
}

void process_runner::impl::group_ended(const std::shared_ptr<child>& c) {
  c->group_gone = true;
  tell_reaper(-c->pid);
  groups.gone(c->pid);
  lingering.erase(c->id);
  maybe_finish(c);
}

void process_runner::impl::tick() {
  auto now = std::chrono::steady_clock::now();
  for (auto& [_, c] : children) {
    if (c->exited)
      continue;
    // The leader's start time lets the next start tell this group from a
    // later one that reuses its id. Read from /proc only for children that
    // live a while: a short-lived group is checked by the marker alone.
    if (!c->stamped && now - c->started_at >= std::chrono::milliseconds{500}) {
      c->stamped = true;
      if (auto stat = read_proc_stat(c->pid))
        groups.started(c->pid, stat->start_time);
    }
    // While a leader runs, members of its group whose parent ended are our
    // children: reap those that have ended, so that a long-running child
    // starting many short-lived orphans does not fill the pid table with
    // zombies. The leader itself is left to wait_exit.
    for (int i = 0; i < 1000; ++i) {
      siginfo_t info{};
      if (::waitid(P_PGID, static_cast<id_t>(c->pid), &info,
                   WEXITED | WNOHANG | WNOWAIT)
            != 0
          || info.si_pid == 0 || info.si_pid == c->pid)
        break;
      ::waitpid(info.si_pid, nullptr, WNOHANG);
    }
  }
  tick_armed = false;
  if (children.empty())
    return;
  tick_armed = true;
  tick_timer.expires_after(std::chrono::milliseconds{500});
  tick_timer.async_wait([this](boost::system::error_code ec) {
    if (!ec)
      tick();
  });
}

void process_runner::impl::arm_heartbeat(std::shared_ptr<child> c) {
  c->heartbeat_timer.expires_after(c->spec.heartbeat_timeout);
  c->heartbeat_timer.async_wait([this, c](boost::system::error_code ec) {
    if (ec || c->exited || c->outcome.killed)
      return;
    c->outcome.heartbeat_lost = true;
    terminate(c->id);
  });
}

void process_runner::impl::watch_heartbeat(std::shared_ptr<child> c) {
  c->heartbeat.async_read_some(asio::buffer(c->heartbeat_buf),
                               [this, c](boost::system::error_code ec, size_t) {
                                 // End of file (the child closed it) just stops
                                 // the watching: the timer still runs, so
                                 // closing the descriptor is no way out.
                                 if (ec)
                                   return;
                                 arm_heartbeat(c);
                                 watch_heartbeat(c);
                               });
}

void process_runner::impl::maybe_finish(const std::shared_ptr<child>& c) {
  if (c->exited && (c->group_gone || c->gave_up) && !c->out_open
      && !c->err_open)
    finish(c);
}

void process_runner::impl::finish(const std::shared_ptr<child>& c) {
  if (!c->done)
    return;
  c->drain_timer.cancel();
  c->kill_timer.cancel();
  c->heartbeat_timer.cancel();
  boost::system::error_code ignored;
  c->in.close(ignored);
  c->heartbeat.close(ignored);
  children.erase(c->id);
  if (c->exited && !c->group_gone)
    lingering.emplace(c->id, c);
  auto done = std::move(c->done);
  c->done = nullptr;
  --active;
  done(std::move(c->outcome));
  // The key's next process may start now.
  release_key(c);
}

void process_runner::impl::terminate(handle h) {
  if (auto w = waiting.find(h); w != waiting.end()) {
    drop_waiting(w->second, "stopped while it waited for the previous "
                            "process of its key to end");
    return;
  }
  auto i = children.find(h);
  if (i == children.end())
    return;
  auto c = i->second;
  if (c->exited || c->outcome.killed)
    return;
  c->outcome.killed = true;
  ::kill(-c->pid, SIGTERM);
  c->kill_timer.expires_after(c->spec.kill_grace);
  c->kill_timer.async_wait([c](boost::system::error_code ec) {
    if (!ec && !c->exited)
      ::kill(-c->pid, SIGKILL);
  });
}

process_runner::process_runner(process_runner_options opts)
    : impl_(std::make_unique<impl>(std::move(opts))) {
  auto& im = *impl_;
  // Writing to a child that closed its stdin must fail with EPIPE, not end
  // the node. Children get the default disposition back before exec.
  ::signal(SIGPIPE, SIG_IGN);
  // Processes orphaned inside a child's group become ours (not init's, which
  // may not reap them), so that the runner can reap them and tell when the
  // group is gone.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  std::random_device rd;
  char instance[17];
  std::snprintf(instance, sizeof instance, "%08x%08x", rd(), rd());
  im.marker = std::string{group_marker} + "=" + instance;
  if (!im.opts.state_dir.empty()) {
    // Before anything runs again: what a node killed earlier left behind.
    sweep_leftovers(im.opts.state_dir, im.opts.log);
    std::string error;
    if (!im.groups.open(im.opts.state_dir, instance, error))
      im.notice("exec process groups are not recorded (" + error
                + "): a node killed with SIGKILL together with its reaper "
                  "leaves its exec children's children running");
  }
  if (im.opts.reaper)
    im.start_reaper();
  // One thread keeps all per-child state on one strand.
  im.threads.emplace_back([this] { impl_->io.run(); });
}

process_runner::~process_runner() {
  asio::post(impl_->io, [this] {
    impl_->closing = true;
    auto waiting = impl_->waiting;
    for (auto& [_, c] : waiting)
      impl_->drop_waiting(c, "the node is shutting down");
    for (auto& [id, c] : impl_->children) {
      if (!c->exited) {
        c->outcome.killed = true;
        ::kill(-c->pid, SIGKILL);
      }
    }
  });
  // Killed children end promptly, their groups too; their callbacks run as
  // usual. Bounded wait.
  for (int i = 0; i < 500 && impl_->active.load() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds{10});
  impl_->work.reset();
  impl_->io.stop();
  for (auto& t : impl_->threads)
    t.join();
  for (auto* pending : {&impl_->children, &impl_->waiting})
    for (auto& [id, c] : *pending) {
      if (c->done) {
        c->outcome.killed = true;
        auto done = std::move(c->done);
        done(std::move(c->outcome));
      }
    }
  // End of file for the reaper: it kills the groups still listed (those
  // that did not go in time) and exits. Bounded wait to reap it.
  boost::system::error_code ignored;
  impl_->reaper_out.close(ignored);
  if (impl_->reaper > 0) {
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(impl_->reaper, nullptr, WNOHANG) != 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds{5});
    }
  }
}

process_runner::handle
process_runner::start(process_spec spec,
                      std::function<void(process_outcome)> done) {
  auto c = std::make_shared<impl::child>(impl_->io);
  c->id = impl_->next_id++;
  c->spec = std::move(spec);
  c->done = std::move(done);
  ++impl_->active;
  asio::post(impl_->io, [this, c] { impl_->admit(c); });
  return c->id;
}

void process_runner::when_idle(std::string key, std::function<void()> idle) {
  asio::post(impl_->io, [this, key = std::move(key), idle = std::move(idle)] {
    if (auto i = impl_->keys.find(key); i != impl_->keys.end())
      i->second.idle.push_back(std::move(idle));
    else
      idle();
  });
}

void process_runner::kill(handle h) {
  asio::post(impl_->io, [this, h] { impl_->terminate(h); });
}

size_t process_runner::running() const {
  return impl_->active.load();
}

int process_runner::reaper_pid() const {
  return impl_->reaper;
}

} // namespace troupe::actors
