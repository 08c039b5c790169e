// `troupe cluster start-local`: an etcd and N members on this machine, in
// the foreground, to try a cluster (and its failover) without setting one
// up. Everything it makes lives in one folder, D, so that starting it again
// on D brings back the same members with their runs:
//
//   D/cluster.json        the cluster's name, secrets and ports (mode 0600)
//   D/start-local.lock    held (flock) by the start-local that runs on D
//   D/env                 TROUPE_NODE, TROUPE_TOKEN, TROUPE_CLUSTER_SECRET
//   D/etcd/               etcd's data dir, log (etcd.log) and pid file
//   D/<member>/           a member's data dir (data/), log (node.log), pid

#include "cluster/etcd/client.hpp"
#include "config/cluster_check.hpp"
#include "runtime/auth/token.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/local_host.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <netinet/in.h>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace troupe::tools {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;
namespace auth = runtime::auth;

/// The lease TTL members get: short, for failover a user can watch, yet
/// twice etcd's minimum so a busy machine does not make members flap.
constexpr const char* member_lease_ttl = "2s";
/// How long the tokens of D/env live; a new one is written at every start.
constexpr auto token_lifetime = std::chrono::hours{24 * 30};
/// How long etcd may take to answer once started.
constexpr auto etcd_ready_limit = 20s;
/// How many times a member (or etcd) is started when it stops before it is
/// ready because a port was taken since it was found free.
constexpr int start_attempts = 5;

int fail(int code, const std::string& message) {
  std::cerr << "troupe: cluster start-local: " << message << "\n";
  return code;
}

void say(const std::string& line) {
  std::cout << line << std::endl;
}

// -- ports ------------------------------------------------------------------

/// Whether 127.0.0.1:`port` can be bound now (as the listeners bind it).
bool port_free(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

/// A port of 127.0.0.1 the system gave a moment ago, not in `taken`; 0 if
/// none could be had.
int pick_port(const std::set<int>& taken) {
  for (int tries = 0; tries < 50; ++tries) {
    int port = free_loopback_port();
    if (port == 0)
      return 0;
    if (!taken.contains(port))
      return port;
  }
  return 0;
}

/// The ports of the cluster, by role: "etcd.client", "etcd.peer",
/// "m1.control", "m1.http", "m1.peer", ...
using port_map = std::map<std::string, int>;

std::vector<std::string> port_roles(const std::vector<std::string>& members) {
  std::vector<std::string> roles{"etcd.client", "etcd.peer"};
  for (auto& m : members)
    for (auto r : {".control", ".http", ".peer"})
      roles.push_back(m + r);
  return roles;
}

/// With --base-port P: etcd on P and P+1, member mK on P+10K (control),
/// P+10K+1 (http) and P+10K+2 (peer).
int fixed_port(int base, const std::string& role) {
  if (role == "etcd.client")
    return base;
  if (role == "etcd.peer")
    return base + 1;
  auto dot = role.find('.');
  int k = std::stoi(role.substr(1, dot - 1));
  auto what = role.substr(dot + 1);
  return base + 10 * k + (what == "control" ? 0 : what == "http" ? 1 : 2);
}

// -- D ----------------------------------------------------------------------

/// What D/cluster.json keeps from one start to the next.
struct saved_state {
  std::string name;
  std::string auth_secret;
  std::string cluster_secret;
  port_map ports;
};

std::optional<saved_state> read_state(const fs::path& file,
                                      std::string& error) {
  std::ifstream in{file};
  if (!in)
    return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  auto j = json::parse(text.str(), nullptr, false);
  saved_state s;
  if (j.is_discarded() || !j.is_object() || !j["name"].is_string()
      || !j["auth_secret"].is_string() || !j["cluster_secret"].is_string()) {
    error = file.string()
            + " cannot be read as a start-local state: remove the folder, "
              "or give another --dir";
    return std::nullopt;
  }
  s.name = j["name"];
  s.auth_secret = j["auth_secret"];
  s.cluster_secret = j["cluster_secret"];
  if (auto p = j.find("ports"); p != j.end() && p->is_object())
    for (auto& [role, port] : p->items())
      if (port.is_number_integer())
        s.ports[role] = port.get<int>();
  return s;
}

/// Writes `content` to `file` with mode 0600, whole or not at all.
bool write_private(const fs::path& file, const std::string& content,
                   std::string& error) {
  auto tmp = file;
  tmp += ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    error = "cannot write " + tmp.string() + ": " + std::strerror(errno);
    return false;
  }
  fchmod(fd, 0600);
  size_t done = 0;
  while (done < content.size()) {
    auto n = write(fd, content.data() + done, content.size() - done);
    if (n <= 0 && errno != EINTR)
      break;
    if (n > 0)
      done += static_cast<size_t>(n);
  }
  bool ok = done == content.size() && fsync(fd) == 0;
  close(fd);
  if (!ok || rename(tmp.c_str(), file.c_str()) != 0) {
    error = "cannot write " + file.string() + ": " + std::strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

bool write_state(const fs::path& file, const saved_state& s,
                 std::string& error) {
  json j{{"name", s.name},
         {"auth_secret", s.auth_secret},
         {"cluster_secret", s.cluster_secret},
         {"ports", s.ports}};
  return write_private(file, j.dump(2) + "\n", error);
}

/// Single quotes for a shell.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string{"'\\''"} : std::string(1, c);
  return out + "'";
}

/// Takes D's lock; returns its descriptor, or -1 with the PID that holds it
/// in `holder` (0 when unknown) or an error.
int take_lock(const fs::path& file, long& holder, std::string& error) {
  int fd = open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = "cannot open " + file.string() + ": " + std::strerror(errno);
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char buf[32] = {};
    auto n = pread(fd, buf, sizeof buf - 1, 0);
    holder = n > 0 ? std::atol(buf) : 0;
    close(fd);
    return -1;
  }
  auto pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0
      || pwrite(fd, pid.data(), pid.size(), 0)
           != static_cast<ssize_t>(pid.size())) {
    error = "cannot write " + file.string() + ": " + std::strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

// -- children ---------------------------------------------------------------

std::string signal_name(int sig) {
  switch (sig) {
  case SIGKILL: return "SIGKILL";
  case SIGTERM: return "SIGTERM";
  case SIGINT: return "SIGINT";
  case SIGSEGV: return "SIGSEGV";
  case SIGABRT: return "SIGABRT";
  case SIGHUP: return "SIGHUP";
  case SIGBUS: return "SIGBUS";
  default: return "signal " + std::to_string(sig);
  }
}

/// "exited with code 1", "was killed by SIGKILL (signal 9)".
std::string describe_status(int status) {
  if (WIFSIGNALED(status))
    return "was killed by " + signal_name(WTERMSIG(status)) + " (signal "
           + std::to_string(WTERMSIG(status)) + ")";
  return "exited with code " + std::to_string(WEXITSTATUS(status));
}

/// A process this command started: etcd or a member.
struct child {
  /// "etcd" or the member's name.
  std::string name;
  fs::path dir;
  fs::path log;
  pid_t pid = -1;
  /// Where this start's output begins in the log.
  off_t log_start = 0;
  /// Until reaped.
  bool running = false;
  int status = 0;

  std::string what() const {
    return name == "etcd" ? std::string{"etcd"} : "member '" + name + "'";
  }

  /// Reaps the child if it ended; returns whether it runs.
  bool alive() {
    if (!running)
      return false;
    int st = 0;
    auto got = waitpid(pid, &st, WNOHANG);
    if (got == pid || (got < 0 && errno == ECHILD)) {
      running = false;
      status = got == pid ? st : 0;
      std::error_code ec;
      fs::remove(dir / "pid", ec);
    }
    return running;
  }

  /// The last lines this start wrote to its log, for a report.
  std::string log_tail(size_t lines = 8) const {
    std::ifstream in{log};
    in.seekg(log_start);
    std::vector<std::string> all;
    for (std::string l; std::getline(in, l);)
      all.push_back(l);
    std::string out;
    for (size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size();
         ++i)
      out += "  | " + all[i] + "\n";
    return out;
  }
};

/// The environment of a child: this one's, without the variables `drop`
/// names (they would mislead it), with `extra` on top.
std::vector<std::string>
child_environment(const std::function<bool(const std::string&)>& drop,
                  const std::map<std::string, std::string>& extra) {
  std::vector<std::string> out;
  for (char** e = environ; e && *e; ++e) {
    std::string kv{*e};
    auto name = kv.substr(0, kv.find('='));
    if (!extra.contains(name) && !drop(name))
      out.push_back(std::move(kv));
  }
  for (auto& [k, v] : extra)
    out.push_back(k + "=" + v);
  return out;
}

/// Starts `argv` (argv[0] is run as `program`) in a process group of its
/// own, so that a Ctrl-C in the terminal reaches this command alone, which
/// stops the children in order. A child gets SIGTERM should this command
/// die first. Its output goes to `c.log`; its PID to `c.dir`/pid.
bool spawn(child& c, const std::string& program,
           const std::vector<std::string>& argv,
           const std::vector<std::string>& env, std::string& error) {
  int log_fd
    = open(c.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    error = "cannot open " + c.log.string() + ": " + std::strerror(errno);
    return false;
  }
  c.log_start = lseek(log_fd, 0, SEEK_END);
  if (c.log_start < 0)
    c.log_start = 0;
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  std::vector<std::string> args = argv, vars = env;
  std::vector<char*> cargv, cenv;
  for (auto& a : args)
    cargv.push_back(a.data());
  cargv.push_back(nullptr);
  for (auto& v : vars)
    cenv.push_back(v.data());
  cenv.push_back(nullptr);
  auto parent = getpid();
  auto pid = fork();
  if (pid < 0) {
    error = std::string{"fork failed: "} + std::strerror(errno);
    close(log_fd);
    if (null_fd >= 0)
      close(null_fd);
    return false;
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(127);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD})
      signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    if (null_fd >= 0)
      dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    execve(program.c_str(), cargv.data(), cenv.data());
    static const char msg[] = "troupe: cluster start-local: exec failed\n";
    (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
    _exit(127);
  }
  close(log_fd);
  if (null_fd >= 0)
    close(null_fd);
  c.pid = pid;
  c.running = true;
  c.status = 0;
  std::ofstream{c.dir / "pid"} << pid << "\n";
  return true;
}

/// Waits up to `limit` for every child in `cs` to end, sending SIGKILL to
/// those still running when `stop_signals` brings another signal meanwhile
/// (a second Ctrl-C) or the limit passes. Every child is reaped.
void wait_gone(std::vector<child*> cs, std::chrono::milliseconds limit,
               const sigset_t& stop_signals) {
  auto deadline = clock_type::now() + limit;
  bool any = true;
  bool hurry = false;
  for (int round = 0; any && round < 100'000; ++round) {
    any = false;
    for (auto* c : cs)
      any = c->alive() || any;
    if (!any)
      break;
    if (hurry || clock_type::now() >= deadline) {
      for (auto* c : cs)
        if (c->alive()) {
          std::cerr << "troupe: cluster start-local: " << c->what() << " (pid "
                    << c->pid << ") still runs: SIGKILL\n";
          kill(c->pid, SIGKILL);
          int st = 0;
          if (waitpid(c->pid, &st, 0) == c->pid) {
            c->running = false;
            c->status = st;
            std::error_code ec;
            fs::remove(c->dir / "pid", ec);
          }
        }
      break;
    }
    timespec ts{0, 50'000'000};
    if (sigtimedwait(&stop_signals, nullptr, &ts) > 0)
      hurry = true;
  }
}

// -- the command ------------------------------------------------------------

class local_cluster {
 public:
  local_cluster(const global_options& g, const cluster_local_options& o)
      : g_(g), o_(o) {
    sigemptyset(&stop_signals_);
    for (int sig : {SIGINT, SIGTERM, SIGHUP})
      sigaddset(&stop_signals_, sig);
  }

  ~local_cluster() {
    if (lock_fd_ >= 0)
      close(lock_fd_);
  }

  int run();

 private:
  int check_flags();
  int prepare_dir();
  /// Chooses the ports of `roles` (all of them with --base-port); 0 or an
  /// exit code.
  int plan_ports(const std::vector<std::string>& roles);
  /// Starts etcd and waits until it answers; 0 or an exit code.
  int start_etcd();
  int start_member(child& m);
  /// Waits until every member is ready and lists them all up; 0 or an exit
  /// code.
  int wait_members();
  bool member_ready(const child& m);
  int write_env();
  void print_summary();
  int supervise();
  void stop_all();

  /// Waits `ms` for a stop signal; returns it, or 0.
  int stop_signal(long ms) {
    timespec ts{ms / 1000, (ms % 1000) * 1'000'000};
    auto sig = sigtimedwait(&stop_signals_, nullptr, &ts);
    return sig > 0 ? sig : 0;
  }

  std::string address(const std::string& member, const char* what) {
    return "127.0.0.1:" + std::to_string(state_.ports[member + "." + what]);
  }
  std::string etcd_url() { return "http://" + address("etcd", "client"); }

  const global_options& g_;
  const cluster_local_options& o_;
  fs::path dir_;
  std::string etcd_binary_;
  std::string troupe_binary_ = "/proc/self/exe";
  int lock_fd_ = -1;
  saved_state state_;
  std::vector<std::string> names_;
  config::settings settings_;
  sigset_t stop_signals_;
  child etcd_;
  std::vector<child> members_;
  /// A signal that came while starting: stop, then exit 0.
  int stopped_by_ = 0;
};

int local_cluster::check_flags() {
  if (o_.nodes < 1 || o_.nodes > 9)
    return fail(exit_bad_input, "--nodes " + std::to_string(o_.nodes)
                                  + ": must be from 1 to 9");
  if (o_.base_port_given) {
    int last = o_.base_port + 10 * o_.nodes + 2;
    if (o_.base_port < 1 || last > 65535)
      return fail(exit_bad_input,
                  "--base-port " + std::to_string(o_.base_port)
                    + ": out of range; etcd takes P and P+1, member mK "
                      "P+10K to P+10K+2, so with --nodes "
                    + std::to_string(o_.nodes) + " P must be from 1 to "
                    + std::to_string(65535 - 10 * o_.nodes - 2));
  }
  if (!o_.name.empty())
    if (auto why = config::check_cluster_name(o_.name); !why.empty())
      return fail(exit_bad_input, "--name \"" + o_.name + "\": " + why);
  if (o_.dir.empty())
    return fail(exit_bad_input, "--dir: must not be empty");
  return 0;
}

int local_cluster::prepare_dir() {
  std::error_code ec;
  fs::path d{o_.dir};
  auto st = fs::status(d, ec);
  if (fs::exists(st) && !fs::is_directory(st))
    return fail(exit_bad_input,
                "--dir " + o_.dir + ": exists and is not a directory");
  if (fs::exists(st)) {
    bool ours = fs::exists(d / "cluster.json", ec)
                || fs::exists(d / "start-local.lock", ec);
    if (!ours && !fs::is_empty(d, ec))
      return fail(exit_bad_input,
                  "--dir " + o_.dir
                    + ": not empty and not made by `troupe cluster "
                      "start-local` (it has no cluster.json): give a new or "
                      "empty folder");
  } else if (!fs::create_directories(d, ec) && ec) {
    return fail(exit_bad_input,
                "--dir " + o_.dir + ": cannot create it: " + ec.message());
  }
  dir_ = fs::weakly_canonical(fs::absolute(d), ec);
  if (ec)
    dir_ = fs::absolute(d);

  long holder = 0;
  std::string error;
  lock_fd_ = take_lock(dir_ / "start-local.lock", holder, error);
  if (lock_fd_ < 0) {
    if (!error.empty())
      return fail(exit_bad_input, "--dir " + o_.dir + ": " + error);
    return fail(exit_unreachable,
                dir_.string()
                  + " is in use by another `troupe cluster "
                    "start-local`"
                  + (holder > 0 ? " (pid " + std::to_string(holder)
                                    + "): stop it first (Ctrl-C in its "
                                      "terminal, or kill "
                                    + std::to_string(holder) + ")"
                                : std::string{": stop it first"}));
  }

  auto saved = read_state(dir_ / "cluster.json", error);
  if (!error.empty())
    return fail(exit_bad_input, "--dir " + o_.dir + ": " + error);
  if (saved) {
    state_ = std::move(*saved);
    if (!o_.name.empty() && o_.name != state_.name)
      return fail(exit_bad_input,
                  "--name " + o_.name + ": " + dir_.string()
                    + " holds cluster '" + state_.name
                    + "'; leave --name out to start it again, or give "
                      "another --dir");
  } else {
    state_.name = o_.name.empty() ? "local" : o_.name;
    state_.auth_secret = random_hex(32);
    state_.cluster_secret = random_hex(32);
  }
  for (int k = 1; k <= o_.nodes; ++k)
    names_.push_back("m" + std::to_string(k));
  fs::create_directories(dir_ / "etcd", ec);
  for (auto& n : names_)
    fs::create_directories(dir_ / n, ec);
  if (ec)
    return fail(exit_bad_input, "cannot create folders in " + dir_.string()
                                  + ": " + ec.message());
  return 0;
}

int local_cluster::plan_ports(const std::vector<std::string>& roles) {
  if (o_.base_port_given) {
    for (auto& role : roles) {
      int p = fixed_port(o_.base_port, role);
      if (!port_free(p))
        return fail(exit_unreachable,
                    "port " + std::to_string(p) + " (" + role
                      + ") is in use on 127.0.0.1: stop what listens there, "
                        "or give another --base-port");
      state_.ports[role] = p;
    }
    return 0;
  }
  // The ports of the other roles stay as they are (their processes may
  // hold them already).
  std::set<int> taken;
  for (auto& [role, port] : state_.ports)
    if (std::find(roles.begin(), roles.end(), role) == roles.end())
      taken.insert(port);
  // The ports of the last start when they are still free, so that D/env
  // and the addresses a user noted stay right; others where not.
  for (auto& role : roles) {
    auto it = state_.ports.find(role);
    if (it != state_.ports.end() && !taken.contains(it->second)
        && port_free(it->second)) {
      taken.insert(it->second);
      continue;
    }
    int p = pick_port(taken);
    if (p == 0)
      return fail(exit_unreachable, "no free port on 127.0.0.1");
    state_.ports[role] = p;
    taken.insert(p);
  }
  return 0;
}

int local_cluster::start_etcd() {
  etcd_.name = "etcd";
  etcd_.dir = dir_ / "etcd";
  etcd_.log = etcd_.dir / "etcd.log";
  // ETCD_* variables would be read as etcd's flags.
  auto env = child_environment(
    [](const std::string& name) { return name.starts_with("ETCD"); }, {});
  for (int attempt = 1; attempt <= start_attempts; ++attempt) {
    auto client = etcd_url();
    auto peer = "http://" + address("etcd", "peer");
    std::vector<std::string> argv
      = {"etcd", "--name", "start-local", "--data-dir",
         (etcd_.dir / "data").string(), "--listen-client-urls", client,
         "--advertise-client-urls", client, "--listen-peer-urls", peer,
         "--initial-advertise-peer-urls", peer, "--initial-cluster",
         "start-local=" + peer,
         // Tuned so that etcd grants leases of 1 s (its minimum is 1.5
         // election timeouts) and notices a lost leader quickly.
         "--heartbeat-interval", "50", "--election-timeout", "500"};
    std::string error;
    if (!spawn(etcd_, etcd_binary_, argv, env, error))
      return fail(exit_failed, "cannot start etcd: " + error);
    cluster::etcd::client_options co;
    co.endpoints = {client};
    co.request_timeout = 500ms;
    co.call_timeout = 1s;
    cluster::etcd::client probe{co};
    auto deadline = clock_type::now() + etcd_ready_limit;
    while (clock_type::now() < deadline && etcd_.alive()) {
      if (auto r = probe.get("/troupe/" + state_.name + "/"); !r.err)
        return 0;
      if (auto sig = stop_signal(100)) {
        stopped_by_ = sig;
        return 0;
      }
    }
    if (etcd_.alive()) {
      kill(etcd_.pid, SIGKILL);
      waitpid(etcd_.pid, nullptr, 0);
      etcd_.running = false;
      std::error_code ec;
      fs::remove(etcd_.dir / "pid", ec);
      return fail(exit_failed, "etcd did not answer at " + client + " within "
                                 + std::to_string(etcd_ready_limit.count())
                                 + "s; its log: " + etcd_.log.string() + "\n"
                                 + etcd_.log_tail());
    }
    // It stopped: a port taken since it was found free is worth another
    // try on other ports; anything else is reported.
    auto tail = etcd_.log_tail(20);
    bool port_taken = tail.find("address already in use") != std::string::npos;
    if (!port_taken || o_.base_port_given || attempt == start_attempts)
      return fail(port_taken ? exit_unreachable : exit_failed,
                  "etcd " + describe_status(etcd_.status)
                    + " before it was ready; its log: " + etcd_.log.string()
                    + "\n" + etcd_.log_tail());
    std::vector<std::string> roles{"etcd.client", "etcd.peer"};
    for (auto& role : roles)
      state_.ports.erase(role);
    if (int code = plan_ports(roles))
      return code;
  }
  return exit_failed;
}

int local_cluster::start_member(child& m) {
  std::vector<std::string> argv = {"troupe"};
  // The cluster's own settings first: the user's --config and --set come
  // after them and win, except for what makes the member this member.
  // Three copies of each partition (two with two members, one alone) and
  // two needed in sync, unless the user's settings say otherwise.
  argv.insert(argv.end(),
              {"--set", std::string{"cluster.lease_ttl="} + member_lease_ttl,
               "--set", "cluster.listen=" + address(m.name, "peer"), "--set",
               "cluster.replication=" + std::to_string(std::min(3, o_.nodes)),
               "--set",
               "cluster.min_insync=" + std::to_string(std::min(2, o_.nodes))});
  if (!g_.config_file.empty())
    argv.insert(argv.end(), {"--config", g_.config_file});
  for (auto& s : g_.sets)
    argv.insert(argv.end(), {"--set", s});
  argv.insert(argv.end(),
              {"node", "start", "--data-dir", (m.dir / "data").string(),
               "--listen", address(m.name, "control"), "--http",
               address(m.name, "http"), "--name", m.name, "--cluster",
               state_.name, "--etcd", etcd_url(), "--member", m.name});
  // TROUPE_NODE and TROUPE_TOKEN are the CLI's, not the node's.
  auto env = child_environment(
    [](const std::string& name) {
      return name == "TROUPE_NODE" || name == "TROUPE_TOKEN";
    },
    {{"TROUPE_AUTH_SECRET", state_.auth_secret},
     {"TROUPE_CLUSTER_SECRET", state_.cluster_secret}});
  std::string error;
  if (!spawn(m, troupe_binary_, argv, env, error))
    return fail(exit_failed, "cannot start " + m.what() + ": " + error);
  return 0;
}

bool local_cluster::member_ready(const child& m) {
  try {
    control_client c;
    control_client::options co;
    co.address = address(m.name, "control");
    co.token
      = auth::issue_token(state_.auth_secret, auth::role::viewer, "start-local",
                          std::chrono::seconds{60}, auth::token_clock::now());
    co.connect_timeout = 1s;
    co.wait_ready = 0ms;
    c.connect(co);
    auto pong = c.call({{"t", "ping"}}, 2s);
    if (!pong.value("ready", false))
      return false;
    auto list = c.call({{"t", "members"}}, 2s);
    std::set<std::string> up;
    for (auto& e : list.value("members", json::array()))
      if (e.value("state", "") == "up")
        up.insert(e.value("name", ""));
    for (auto& n : names_)
      if (!up.contains(n))
        return false;
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

int local_cluster::wait_members() {
  auto limit = std::chrono::milliseconds{60'000};
  if (!g_.wait_ready.empty())
    limit = client_options(g_, settings_).wait_ready;
  auto deadline = clock_type::now() + limit;
  std::map<std::string, int> attempts;
  std::set<std::string> ready, told;
  for (int round = 0; clock_type::now() < deadline && round < 100'000;
       ++round) {
    for (auto& m : members_) {
      if (m.alive())
        continue;
      // It stopped before everyone was ready. A port taken meanwhile or
      // its name still held by a lease of an earlier start: try again.
      auto tail = m.log_tail(20);
      bool port_taken = tail.find("in use") != std::string::npos
                        && tail.find("data dir") == std::string::npos;
      bool name_held = tail.find("is taken in cluster") != std::string::npos;
      // A held name is tried again until the deadline: the lease expires
      // within its TTL.
      bool again = WIFEXITED(m.status) && WEXITSTATUS(m.status) == 3
                   && (name_held
                       || (port_taken && !o_.base_port_given
                           && ++attempts[m.name] < start_attempts));
      if (!again) {
        int code = WIFEXITED(m.status) && WEXITSTATUS(m.status) != 0
                     ? WEXITSTATUS(m.status)
                     : exit_failed;
        return fail(code, m.what() + " " + describe_status(m.status)
                            + " before it was ready; its log: " + m.log.string()
                            + "\n" + m.log_tail());
      }
      if (name_held) {
        if (!told.contains(m.name))
          say(m.what()
              + ": its name is still held by the lease of an "
                "earlier start, which expires within its TTL; "
                "trying again");
        told.insert(m.name);
        if (auto sig = stop_signal(1000)) {
          stopped_by_ = sig;
          return 0;
        }
      }
      if (port_taken) {
        std::vector<std::string> roles;
        for (auto what : {".control", ".http", ".peer"})
          roles.push_back(m.name + what);
        for (auto& role : roles)
          state_.ports.erase(role);
        if (int code = plan_ports(roles))
          return code;
      }
      if (int code = start_member(m))
        return code;
    }
    bool all = true;
    for (auto& m : members_)
      if (!ready.contains(m.name)) {
        if (member_ready(m))
          ready.insert(m.name);
        else
          all = false;
      }
    if (all) {
      // Each lists every member up: ask again those that were ready first.
      bool listed = true;
      for (auto& m : members_)
        listed = listed && member_ready(m);
      if (listed)
        return 0;
    }
    if (auto sig = stop_signal(200)) {
      stopped_by_ = sig;
      return 0;
    }
  }
  std::string slow;
  for (auto& m : members_)
    if (!ready.contains(m.name))
      slow += (slow.empty() ? "" : ", ") + m.name + " (log " + m.log.string()
              + ")";
  return fail(exit_failed,
              "the members were not all ready and listing each other within "
                + std::to_string(limit.count() / 1000) + "s"
                + (slow.empty() ? std::string{} : "; not ready: " + slow));
}

int local_cluster::write_env() {
  auto token
    = auth::issue_token(state_.auth_secret, auth::role::admin, "start-local",
                        token_lifetime, auth::token_clock::now());
  std::string text
    = "# The cluster '" + state_.name
      + "' of `troupe cluster start-local`: `source` this file to use the "
        "CLI.\n"
        "export TROUPE_NODE="
      + shell_quote(address(names_.front(), "control"))
      + "\nexport TROUPE_TOKEN=" + shell_quote(token)
      + "\nexport TROUPE_CLUSTER_SECRET=" + shell_quote(state_.cluster_secret)
      + "\n";
  std::string error;
  if (!write_private(dir_ / "env", text, error))
    return fail(exit_failed, error);
  return 0;
}

void local_cluster::print_summary() {
  std::ostringstream out;
  out << "cluster '" << state_.name << "' is up: " << members_.size()
      << " member(s), etcd at " << etcd_url() << " (log " << etcd_.log.string()
      << ")\n";
  size_t width = 0;
  for (auto& m : members_)
    width = std::max(width, m.name.size());
  for (auto& m : members_)
    out << "  " << m.name << std::string(width - m.name.size(), ' ')
        << "  control " << address(m.name, "control") << "  http http://"
        << address(m.name, "http") << "  log " << m.log.string() << "\n";
  out << "In another terminal:\n"
      << "  source " << (dir_ / "env").string() << "\n"
      << "  troupe members\n"
      << "Ctrl-C stops the members and etcd.";
  say(out.str());
}

int local_cluster::supervise() {
  // Bounded only by the user: it runs until a stop signal, reporting each
  // child that ends by itself once.
  while (true) {
    if (auto sig = stop_signal(200)) {
      stopped_by_ = sig;
      return 0;
    }
    for (auto* c : [&] {
           std::vector<child*> all{&etcd_};
           for (auto& m : members_)
             all.push_back(&m);
           return all;
         }()) {
      if (!c->running || c->alive())
        continue;
      std::cerr << "troupe: cluster start-local: " << c->what() << " (pid "
                << c->pid << ") " << describe_status(c->status)
                << "; its log: " << c->log.string()
                << (c == &etcd_
                      ? ". The members keep running but cannot reach etcd: "
                        "they will lose their registration"
                      : ". The others keep running")
                << "\n"
                << std::flush;
    }
  }
}

void local_cluster::stop_all() {
  std::vector<child*> running;
  for (auto& m : members_)
    if (m.alive())
      running.push_back(&m);
  if (!running.empty()) {
    say("stopping " + std::to_string(running.size()) + " member(s)");
    for (auto* m : running)
      kill(m->pid, SIGTERM);
    // A member gives itself node.shutdown_grace, then exits regardless.
    auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(
      settings_.get_duration("node.shutdown_grace"));
    wait_gone(running, grace + 5s, stop_signals_);
  }
  if (etcd_.alive()) {
    say("stopping etcd");
    kill(etcd_.pid, SIGTERM);
    wait_gone({&etcd_}, 10s, stop_signals_);
  }
}

int local_cluster::run() {
  if (int code = check_flags())
    return code;
  // The members' configuration, checked before anything starts.
  if (!load_config(g_, {}, settings_))
    return exit_bad_input;
  if (!g_.wait_ready.empty()) {
    try {
      (void)client_options(g_, settings_);
    } catch (const client_error& e) {
      return fail(e.exit_code, e.what());
    }
  }
  etcd_binary_ = find_on_path("etcd");
  if (etcd_binary_.empty())
    return fail(exit_unreachable,
                "etcd is not installed (no `etcd` on PATH): run "
                "tools/bootstrap.sh, or install Debian's etcd-server "
                "package (apt-get install etcd-server)");
  if (int code = prepare_dir())
    return code;
  if (int code = plan_ports(port_roles(names_)))
    return code;
  std::string error;
  if (!write_state(dir_ / "cluster.json", state_, error))
    return fail(exit_failed, error);

  // Stop signals are taken here, between steps; children reset the mask.
  pthread_sigmask(SIG_BLOCK, &stop_signals_, nullptr);

  say("starting etcd at " + etcd_url() + " (log "
      + (dir_ / "etcd" / "etcd.log").string() + ")");
  int code = start_etcd();
  if (code == 0 && !stopped_by_) {
    say("starting " + std::to_string(names_.size()) + " member(s) of cluster '"
        + state_.name + "'");
    for (auto& n : names_) {
      child m;
      m.name = n;
      m.dir = dir_ / n;
      m.log = m.dir / "node.log";
      members_.push_back(std::move(m));
    }
    for (auto& m : members_)
      if ((code = start_member(m)) != 0)
        break;
    if (code == 0)
      code = wait_members();
  }
  // Ports may have moved on a retry.
  if (!write_state(dir_ / "cluster.json", state_, error))
    std::cerr << "troupe: cluster start-local: " << error << "\n";
  if (code == 0 && !stopped_by_)
    code = write_env();
  if (code == 0 && !stopped_by_) {
    print_summary();
    code = supervise();
  }
  if (stopped_by_)
    say("received " + signal_name(stopped_by_) + ": stopping");
  stop_all();
  say("stopped");
  return code;
}

} // namespace

int run_cluster_start_local(const global_options& g,
                            const cluster_local_options& o) {
  local_cluster c{g, o};
  return c.run();
}

} // namespace troupe::tools
