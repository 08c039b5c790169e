#include "tools/chaos/netns.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <poll.h>
#include <sched.h>
#include <sstream>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace troupe::chaos {

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

/// How long one `ip` or `nft` command may run before it is killed.
constexpr auto command_limit = 10s;

/// The subnets' first two octets; the third is the lab's.
constexpr const char* subnet_start = "10.213.";

/// Where `ip netns` keeps its namespaces.
constexpr const char* netns_dir = "/run/netns";

/// The switch namespace's name after the tag, and the root-side veth's
/// peer in it.
constexpr const char* switch_suffix = "sw";
constexpr const char* switch_port = "root0";

/// Labs made by this process so far: the first one's tag is PREFIX PID -,
/// later ones' PREFIX PID . N -.
std::atomic<int> labs_made{0};

std::string find_tool(const char* name) {
  for (auto dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    auto p = fs::path{dir} / name;
    std::error_code ec;
    if (fs::exists(p, ec))
      return p.string();
  }
  return {};
}

const std::string& ip_tool() {
  static const std::string p = find_tool("ip");
  return p;
}

const std::string& nft_tool() {
  static const std::string p = find_tool("nft");
  return p;
}

/// Closes `fd` if open and marks it closed.
void close_fd(int& fd) {
  if (fd >= 0)
    ::close(fd);
  fd = -1;
}

/// Runs `argv` (argv[0] a path) with `input` on its stdin, in the network
/// namespace at `ns_path` when it is not empty, for at most command_limit;
/// returns an error message naming the command and what it printed on
/// stderr, or an empty string when it exited 0. `out`, when given, gets its
/// stdout.
std::string run_command(const std::vector<std::string>& argv,
                        const std::string& input = {},
                        const std::string& ns_path = {},
                        std::string* out = nullptr) {
  std::string cmd;
  for (auto& a : argv)
    cmd += (cmd.empty() ? "" : " ") + a;
  if (!ns_path.empty())
    cmd = "(in " + ns_path + ") " + cmd;
  auto failed = [&](const std::string& why) { return cmd + ": " + why; };
  if (argv.empty() || argv[0].empty())
    return failed("the program is not installed");
  // stdin is a socket, so that writing to a child that went away gives
  // EPIPE rather than SIGPIPE.
  int in[2] = {-1, -1};
  int outp[2] = {-1, -1};
  int errp[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) != 0
      || ::pipe2(outp, O_CLOEXEC) != 0 || ::pipe2(errp, O_CLOEXEC) != 0) {
    auto why = std::string{"cannot make pipes: "} + std::strerror(errno);
    for (int* p : {in, outp, errp}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
    return failed(why);
  }
  std::vector<std::string> args = argv;
  std::vector<char*> cargv;
  for (auto& a : args)
    cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const char* ns = ns_path.empty() ? nullptr : ns_path.c_str();
  auto parent = ::getpid();
  auto pid = ::fork();
  if (pid < 0) {
    auto why = std::string{"fork failed: "} + std::strerror(errno);
    for (int* p : {in, outp, errp}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
    return failed(why);
  }
  if (pid == 0) {
    // Only async-signal-safe calls from here to exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGCHLD})
      ::signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(in[0], STDIN_FILENO);
    ::dup2(outp[1], STDOUT_FILENO);
    ::dup2(errp[1], STDERR_FILENO);
    if (ns && !netns_lab::enter_path(ns)) {
      static const char msg[] = "cannot enter the network namespace\n";
      (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
      ::_exit(126);
    }
    ::execv(cargv[0], cargv.data());
    static const char msg[] = "exec failed\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(127);
  }
  close_fd(in[0]);
  close_fd(outp[1]);
  close_fd(errp[1]);
  int to_child = in[1];
  ::fcntl(to_child, F_SETFL, ::fcntl(to_child, F_GETFL) | O_NONBLOCK);
  size_t sent = 0;
  if (input.empty())
    close_fd(to_child);
  std::string got_out, got_err;
  auto deadline = std::chrono::steady_clock::now() + command_limit;
  bool timed_out = false;
  // Each round reads or writes something, or waits for the deadline.
  for (int round = 0; round < 1'000'000; ++round) {
    pollfd fds[3];
    nfds_t n = 0;
    if (outp[0] >= 0)
      fds[n++] = {outp[0], POLLIN, 0};
    if (errp[0] >= 0)
      fds[n++] = {errp[0], POLLIN, 0};
    if (to_child >= 0)
      fds[n++] = {to_child, POLLOUT, 0};
    if (n == 0)
      break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      timed_out = true;
      break;
    }
    int ready = ::poll(fds, n, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR)
      break;
    if (ready <= 0)
      continue;
    for (nfds_t i = 0; i < n; ++i) {
      if (fds[i].revents == 0)
        continue;
      if (fds[i].fd == to_child) {
        auto w = ::send(to_child, input.data() + sent, input.size() - sent,
                        MSG_NOSIGNAL);
        if (w > 0)
          sent += static_cast<size_t>(w);
        if ((w < 0 && errno != EAGAIN && errno != EINTR)
            || sent == input.size())
          close_fd(to_child);
        continue;
      }
      char buf[4096];
      auto r = ::read(fds[i].fd, buf, sizeof buf);
      if (r > 0) {
        (fds[i].fd == outp[0] ? got_out : got_err)
          .append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (fds[i].fd == outp[0])
          close_fd(outp[0]);
        else
          close_fd(errp[0]);
      }
    }
  }
  close_fd(to_child);
  close_fd(outp[0]);
  close_fd(errp[0]);
  if (timed_out)
    ::kill(pid, SIGKILL);
  int status = 0;
  pid_t reaped = -1;
  // Bounded: the child's stdout and stderr are closed (it exited, or
  // closed them and will exit) or it was killed.
  for (int i = 0; i < 1000; ++i) {
    reaped = ::waitpid(pid, &status, WNOHANG);
    if (reaped != 0)
      break;
    if (i == 500)
      ::kill(pid, SIGKILL);
    ::usleep(10'000);
  }
  if (out)
    *out = got_out;
  while (!got_err.empty() && (got_err.back() == '\n' || got_err.back() == '\r'))
    got_err.pop_back();
  std::string said = got_err.empty() ? "" : ": " + got_err;
  if (timed_out)
    return failed("still running after " + std::to_string(command_limit.count())
                  + " s: killed" + said);
  if (reaped != pid)
    return failed("its exit status is unknown" + said);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return {};
  if (WIFSIGNALED(status))
    return failed("killed by signal " + std::to_string(WTERMSIG(status))
                  + said);
  return failed("exit " + std::to_string(WEXITSTATUS(status)) + said);
}

/// The PID in `name` right after `prefix` when a `-` or `.` follows it;
/// 0 when `name` is not of that form.
pid_t pid_after(const std::string& name, const std::string& prefix) {
  if (name.rfind(prefix, 0) != 0)
    return 0;
  size_t i = prefix.size();
  size_t end = i;
  while (end < name.size() && end - i < 9 && name[end] >= '0'
         && name[end] <= '9')
    ++end;
  if (end == i || end >= name.size() || (name[end] != '-' && name[end] != '.'))
    return 0;
  return static_cast<pid_t>(std::stol(name.substr(i, end - i)));
}

bool is_dead(pid_t pid) {
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

/// Whether `name` is a link of the root namespace (this thread's).
bool link_exists(const std::string& name) {
  std::error_code ec;
  return fs::exists(fs::path{"/sys/class/net"} / name, ec);
}

/// Whether the root namespace routes 10.213.`x`.0/24 already (a link that
/// is not a lab's has an address there).
bool subnet_routed(int x) {
  // /proc/net/route holds destinations as little-endian hex.
  uint32_t want = 10u | (213u << 8) | (static_cast<uint32_t>(x) << 16);
  std::ifstream in{"/proc/net/route"};
  std::string line;
  std::getline(in, line);
  for (int i = 0; i < 10'000 && std::getline(in, line); ++i) {
    std::istringstream words{line};
    std::string iface, dest, gw, flags, refs, use, metric, mask;
    if (!(words >> iface >> dest >> gw >> flags >> refs >> use >> metric
          >> mask))
      continue;
    try {
      if (static_cast<uint32_t>(std::stoul(dest, nullptr, 16)) == want
          && std::stoul(mask, nullptr, 16) == 0x00ffffffu)
        return true;
    } catch (...) {}
  }
  return false;
}

/// Where labs of `prefix` start hunting for a free subnet: spread by the
/// tag, so that labs made at once rarely try the same one first.
int first_subnet(const std::string& tag) {
  uint32_t h = 2166136261u;
  for (unsigned char c : tag)
    h = (h ^ c) * 16777619u;
  return static_cast<int>(h % 250) + 1;
}

/// The root namespace's links whose alias starts with `start`, with their
/// alias, by name.
std::map<std::string, std::string> aliased_links(const std::string& start) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator{"/sys/class/net", ec}) {
    std::ifstream in{e.path() / "ifalias"};
    std::string alias;
    std::getline(in, alias);
    if (!alias.empty() && alias.rfind(start, 0) == 0)
      out[e.path().filename().string()] = alias;
  }
  return out;
}

bool valid_host_name(const std::string& name) {
  if (name.empty() || name.size() > 12 || name == "switch" || name == "root"
      || name == switch_suffix)
    return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

} // namespace

// -- availability -----------------------------------------------------------

std::string netns_lab::unavailable(bool need_nft) {
  if (::geteuid() != 0)
    return "network namespaces need root (a lab creates namespaces, veth "
           "pairs and a bridge)";
  if (ip_tool().empty())
    return "`ip` (iproute2) is not installed: run tools/bootstrap.sh";
  if (need_nft)
    return no_nft();
  return {};
}

std::string netns_lab::no_nft() {
  return nft_tool().empty() ? "`nft` (nftables) is not installed: run "
                              "tools/bootstrap.sh"
                            : std::string{};
}

// -- making and unmaking ----------------------------------------------------

netns_lab::netns_lab(std::string prefix) : prefix_(std::move(prefix)) {
  auto made = labs_made++;
  auto pid = std::to_string(::getpid());
  tag_ = prefix_ + pid + (made == 0 ? "" : "." + std::to_string(made)) + "-";
  if (auto why = unavailable(false); !why.empty()) {
    error_ = why;
    return;
  }
  // Leftovers of labs whose process is gone, and, for this process's first
  // lab, of an earlier process with this PID.
  for (auto& ns : listed(prefix_)) {
    auto owner = pid_after(ns, prefix_);
    if (is_dead(owner) || (made == 0 && owner == ::getpid()))
      (void)run_command({ip_tool(), "netns", "del", ns});
  }
  for (auto& [link, alias] : aliased_links(prefix_)) {
    auto owner = pid_after(alias, prefix_);
    if (is_dead(owner) || (made == 0 && owner == ::getpid()))
      (void)run_command({ip_tool(), "link", "del", link});
  }
  auto sw = tag_ + switch_suffix;
  auto ip = ip_tool();
  for (auto& argv : std::vector<std::vector<std::string>>{
         {ip, "netns", "add", sw},
         {ip, "-n", sw, "link", "set", "lo", "up"},
         {ip, "-n", sw, "link", "add", "br0", "type", "bridge"},
         {ip, "-n", sw, "link", "set", "br0", "up"}})
    if (error_ = run_command(argv); !error_.empty())
      return;
  // The subnet: the first X from a start of our own whose root-side veth
  // name the kernel does not have yet. Making the veth claims it (the
  // kernel refuses a second link of that name), so two labs made at once
  // cannot both take X.
  int start = first_subnet(tag_);
  for (int i = 0; i < 250 && root_link_.empty(); ++i) {
    int x = (start - 1 + i) % 250 + 1;
    auto name = "troupe" + std::to_string(x);
    if (link_exists(name) || subnet_routed(x))
      continue;
    auto why = run_command({ip, "link", "add", name, "type", "veth", "peer",
                            "name", switch_port, "netns", sw});
    if (why.empty()) {
      root_link_ = name;
      subnet_ = subnet_start + std::to_string(x);
    } else if (!link_exists(name)) {
      error_ = why;
      return;
    }
  }
  if (root_link_.empty()) {
    error_ = "no free subnet 10.213.X.0/24 (X in 1..250) for the root "
             "namespace's veth: every troupeX link exists";
    return;
  }
  for (auto& argv : std::vector<std::vector<std::string>>{
         {ip, "link", "set", "dev", root_link_, "alias", tag_},
         {ip, "addr", "add", subnet_ + ".254/24", "dev", root_link_},
         {ip, "link", "set", root_link_, "up"},
         {ip, "-n", sw, "link", "set", switch_port, "master", "br0"},
         {ip, "-n", sw, "link", "set", switch_port, "up"},
         {ip, "-n", sw, "addr", "add", subnet_ + ".253/24", "dev", "br0"}})
    if (error_ = run_command(argv); !error_.empty())
      return;
}

netns_lab::~netns_lab() {
  remove_ours();
}

void netns_lab::remove_ours() {
  if (ip_tool().empty())
    return;
  // The root-side veth first: deleting the switch namespace would delete it
  // too, but only once the kernel frees the namespace, later.
  if (!root_link_.empty())
    (void)run_command({ip_tool(), "link", "del", root_link_});
  for (auto& ns : listed(tag_))
    (void)run_command({ip_tool(), "netns", "del", ns});
}

std::string netns_lab::add_host(const std::string& name, int number) {
  if (!error_.empty())
    return "the lab could not be made: " + error_;
  if (!valid_host_name(name))
    return "host name '" + name
           + "' is not 1 to 12 letters, digits, '_' or '-' (or is reserved: "
             "switch, root, sw)";
  if (hosts_.contains(name))
    return "host '" + name + "' exists already";
  if (number == 0) {
    for (int n = 1; n <= 252 && number == 0; ++n)
      if (std::none_of(hosts_.begin(), hosts_.end(), [&](auto& h) {
            return h.second == subnet_ + "." + std::to_string(n);
          }))
        number = n;
    if (number == 0)
      return "no free address left in " + subnet_ + ".0/24";
  }
  if (number < 1 || number > 252)
    return "host number " + std::to_string(number) + " is not in 1..252";
  auto address = subnet_ + "." + std::to_string(number);
  for (auto& [h, a] : hosts_)
    if (a == address)
      return "address " + address + " is host '" + h + "''s already";
  auto ns = tag_ + name;
  auto sw = tag_ + switch_suffix;
  auto port = "p-" + name;
  auto ip = ip_tool();
  if (auto why = run_command({ip, "netns", "add", ns}); !why.empty())
    return why;
  for (auto& argv : std::vector<std::vector<std::string>>{
         {ip, "-n", ns, "link", "set", "lo", "up"},
         {ip, "-n", sw, "link", "add", port, "type", "veth", "peer", "name",
          "eth0", "netns", ns},
         {ip, "-n", sw, "link", "set", port, "master", "br0"},
         {ip, "-n", sw, "link", "set", port, "up"},
         {ip, "-n", ns, "addr", "add", address + "/24", "dev", "eth0"},
         {ip, "-n", ns, "link", "set", "eth0", "up"}})
    if (auto why = run_command(argv); !why.empty()) {
      // Deleting the namespace deletes eth0, and its peer with it.
      (void)run_command({ip, "netns", "del", ns});
      return why;
    }
  hosts_[name] = address;
  return {};
}

// -- addresses and namespaces -----------------------------------------------

bool netns_lab::known(const std::string& name) const {
  return name == "switch" || hosts_.contains(name);
}

std::string netns_lab::address(const std::string& name) const {
  if (subnet_.empty())
    return {};
  if (name == "switch")
    return subnet_ + ".253";
  if (name == "root")
    return subnet_ + ".254";
  auto i = hosts_.find(name);
  return i == hosts_.end() ? std::string{} : i->second;
}

std::vector<std::string> netns_lab::hosts() const {
  std::vector<std::string> out;
  for (auto& [name, a] : hosts_)
    out.push_back(name);
  return out;
}

std::string netns_lab::path(const std::string& name) const {
  if (!known(name))
    return {};
  return std::string{netns_dir} + "/" + tag_
         + (name == "switch" ? std::string{switch_suffix} : name);
}

std::vector<std::string> netns_lab::prefix(const std::string& name) const {
  return {ip_tool(), "netns", "exec",
          tag_ + (name == "switch" ? std::string{switch_suffix} : name)};
}

bool netns_lab::enter_path(const char* path) noexcept {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool ok = ::setns(fd, CLONE_NEWNET) == 0;
  ::close(fd);
  return ok;
}

bool netns_lab::enter(const std::string& name) const {
  auto p = path(name);
  return !p.empty() && enter_path(p.c_str());
}

// -- faults -----------------------------------------------------------------

std::string netns_lab::cut(const std::string& name,
                           const std::vector<std::string>& others) {
  if (!hosts_.contains(name))
    return "no host '" + name + "' to cut";
  for (auto& o : others)
    if (!hosts_.contains(o) || o == name)
      return "cannot cut host '" + name + "' from '" + o
             + "': not another host of the lab";
  for (auto& o : others)
    cut_[name].insert(hosts_[o]);
  return apply(name);
}

std::string netns_lab::heal(const std::string& name,
                            const std::vector<std::string>& others) {
  if (!hosts_.contains(name))
    return "no host '" + name + "' to heal";
  if (others.empty())
    cut_[name].clear();
  for (auto& o : others)
    cut_[name].erase(address(o));
  return apply(name);
}

std::string netns_lab::heal_all() {
  std::string errors;
  for (auto& [name, cut] : cut_) {
    if (cut.empty())
      continue;
    cut.clear();
    if (auto why = apply(name); !why.empty())
      errors += (errors.empty() ? "" : "\n") + why;
  }
  return errors;
}

std::string netns_lab::apply(const std::string& name) {
  if (auto why = no_nft(); !why.empty())
    return why;
  std::ostringstream rules;
  // Made first, so the delete below always finds it: one atomic script.
  rules << "table inet troupe_cut {}\ndelete table inet troupe_cut\n"
        << "table inet troupe_cut {\n"
        << "  chain in { type filter hook input priority 0; policy accept;\n";
  for (auto& a : cut_[name])
    rules << "    ip saddr " << a << " drop\n";
  rules << "  }\n  chain out { type filter hook output priority 0; policy "
           "accept;\n";
  for (auto& a : cut_[name])
    rules << "    ip daddr " << a << " drop\n";
  rules << "  }\n}\n";
  return run_command({nft_tool(), "-f", "-"}, rules.str(), path(name));
}

std::string netns_lab::isolate(const std::string& name) {
  if (!hosts_.contains(name))
    return "no host '" + name + "' to isolate";
  return run_command({ip_tool(), "-n", tag_ + switch_suffix, "link", "set",
                      "p-" + name, "down"});
}

std::string netns_lab::rejoin(const std::string& name) {
  if (!hosts_.contains(name))
    return "no host '" + name + "' to rejoin";
  return run_command(
    {ip_tool(), "-n", tag_ + switch_suffix, "link", "set", "p-" + name, "up"});
}

// -- inspection -------------------------------------------------------------

std::vector<std::string> netns_lab::listed(const std::string& start) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator{netns_dir, ec}) {
    auto n = e.path().filename().string();
    if (n.rfind(start, 0) == 0)
      out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> netns_lab::root_links(const std::string& start) {
  std::vector<std::string> out;
  for (auto& [link, alias] : aliased_links(start))
    out.push_back(link);
  return out;
}

} // namespace troupe::chaos
