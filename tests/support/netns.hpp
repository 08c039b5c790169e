#pragma once

// Network namespaces for tests of network partitions between real
// processes (as root): a "switch" namespace holding bridge br0, and one
// namespace per host joined to it by a veth pair, with an address on a
// private test subnet (10.213.0.0/24; the switch itself has .254, so a
// client run there reaches every host). Processes run in a host's
// namespace through `ip netns exec` (prefix()). cut() drops, with
// nftables inside a host's namespace, everything between it and some other
// addresses (both ways, silently, as a broken network does); heal() lets
// it through again; isolate() takes a host's link down. Every name carries
// the test process's PID, so tests running in parallel do not clash, and
// the lab deletes every namespace it made when it goes away (which deletes
// their links too); namespaces left by a test process that died are
// deleted by the next lab made.

#include "tests/support/process.hpp"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <map>
#include <sched.h>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace troupe::test {

class netns_lab {
 public:
  /// The prefix of every namespace a lab makes: NAME_PREFIX<pid>-<host>.
  static constexpr const char* name_prefix = "troupe-t";

  /// Why namespaces cannot be used here (not root, no `ip`), or empty:
  /// tests skip with this reason.
  static std::string unavailable() {
    if (geteuid() != 0)
      return "network namespace tests need root (they create namespaces, "
             "veth pairs and a bridge)";
    if (ip().empty())
      return "`ip` (iproute2) is not installed: run tools/bootstrap.sh";
    return {};
  }

  /// Why cut() cannot work here (no `nft`), or empty.
  static std::string no_nft() {
    return nft().empty() ? "`nft` (nftables) is not installed: run "
                           "tools/bootstrap.sh"
                         : std::string{};
  }

  /// Makes the switch namespace; check ok() (and error()).
  netns_lab() : tag_(name_prefix + std::to_string(getpid()) + "-") {
    remove_stale();
    auto sw = tag_ + "sw";
    // Leftovers of an earlier process with our PID.
    remove_ours();
    if (!run({ip(), "netns", "add", sw})
        || !run({ip(), "-n", sw, "link", "set", "lo", "up"})
        || !run({ip(), "-n", sw, "link", "add", "br0", "type", "bridge"})
        || !run({ip(), "-n", sw, "addr", "add", std::string{subnet} + ".254/24",
                 "dev", "br0"})
        || !run({ip(), "-n", sw, "link", "set", "br0", "up"}))
      return;
    ok_ = true;
  }

  ~netns_lab() { remove_ours(); }

  netns_lab(const netns_lab&) = delete;
  netns_lab& operator=(const netns_lab&) = delete;

  bool ok() const noexcept { return ok_; }
  const std::string& error() const noexcept { return error_; }

  /// The private test subnet's first three octets.
  static constexpr const char* subnet = "10.213.0";

  /// Adds host `name` as number `n` (1..253) of the subnet; returns its
  /// address, or empty on failure (then see error()).
  std::string add(const std::string& name, int n) {
    auto ns = tag_ + name;
    auto sw = tag_ + "sw";
    auto port = "p-" + name;
    auto address = std::string{subnet} + "." + std::to_string(n);
    if (!run({ip(), "netns", "add", ns}))
      return {};
    if (!run({ip(), "-n", ns, "link", "set", "lo", "up"})
        || !run({ip(), "-n", sw, "link", "add", port, "type", "veth", "peer",
                 "name", "eth0", "netns", ns})
        || !run({ip(), "-n", sw, "link", "set", port, "master", "br0"})
        || !run({ip(), "-n", sw, "link", "set", port, "up"})
        || !run({ip(), "-n", ns, "addr", "add", address + "/24", "dev", "eth0"})
        || !run({ip(), "-n", ns, "link", "set", "eth0", "up"}))
      return {};
    hosts_[name] = address;
    return address;
  }

  /// Host `name`'s address ("" when unknown); "switch" is the switch's.
  std::string address(const std::string& name) const {
    if (name == "switch")
      return std::string{subnet} + ".254";
    auto i = hosts_.find(name);
    return i == hosts_.end() ? std::string{} : i->second;
  }

  /// What runs a command in host `name`'s namespace ("switch": the
  /// switch's): put it before the command's argv.
  std::vector<std::string> prefix(const std::string& name) const {
    return {ip(), "netns", "exec", tag_ + (name == "switch" ? "sw" : name)};
  }

  /// Drops every packet between host `name` and each of `others` (host
  /// names), both ways, from now on; returns whether nft took it.
  bool cut(const std::string& name, const std::vector<std::string>& others) {
    for (auto& o : others)
      cut_[name].insert(address(o));
    return apply(name);
  }

  /// Lets packets between host `name` and each of `others` through again
  /// (every one cut, when `others` is empty).
  bool heal(const std::string& name,
            const std::vector<std::string>& others = {}) {
    if (others.empty())
      cut_[name].clear();
    for (auto& o : others)
      cut_[name].erase(address(o));
    return apply(name);
  }

  /// Moves the calling thread (alone) into host `name`'s namespace
  /// ("switch": the switch's), so that sockets it makes from now on live
  /// there; returns whether it could.
  bool enter(const std::string& name) const {
    auto path = "/run/netns/" + tag_ + (name == "switch" ? "sw" : name);
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return false;
    bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
  }

  /// Takes host `name`'s link to the switch down (`up`: back up).
  bool isolate(const std::string& name, bool down = true) {
    return run({ip(), "-n", tag_ + "sw", "link", "set", "p-" + name,
                down ? "down" : "up"});
  }

  /// The namespaces that exist now whose names start with `tag` (all of
  /// this lab's, by default).
  static std::vector<std::string> listed(const std::string& tag) {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto& e : std::filesystem::directory_iterator{"/run/netns", ec}) {
      auto n = e.path().filename().string();
      if (n.rfind(tag, 0) == 0)
        out.push_back(n);
    }
    return out;
  }

  const std::string& tag() const noexcept { return tag_; }

 private:
  static std::string find(const char* name) {
    for (auto dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
      auto p = std::filesystem::path{dir} / name;
      std::error_code ec;
      if (std::filesystem::exists(p, ec))
        return p.string();
    }
    return {};
  }

  static const std::string& ip() {
    static const std::string p = find("ip");
    return p;
  }

  static const std::string& nft() {
    static const std::string p = find("nft");
    return p;
  }

  bool run(const std::vector<std::string>& argv,
           const std::string& input = {}) {
    process_options o;
    o.stdin_data = input;
    o.time_limit = std::chrono::seconds{10};
    auto r = run_process(argv, o);
    if (r.exit_code == 0)
      return true;
    std::string cmd;
    for (auto& a : argv)
      cmd += (cmd.empty() ? "" : " ") + a;
    error_ += cmd + ": exit " + std::to_string(r.exit_code) + ": " + r.err;
    return false;
  }

  /// Replaces host `name`'s table of cuts with one dropping what cut_ says.
  bool apply(const std::string& name) {
    if (!no_nft().empty()) {
      error_ += no_nft();
      return false;
    }
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
    auto argv = prefix(name);
    argv.insert(argv.end(), {nft(), "-f", "-"});
    return run(argv, rules.str());
  }

  /// Deletes this lab's namespaces (those of this PID).
  void remove_ours() {
    for (auto& ns : listed(tag_))
      run_process({ip(), "netns", "del", ns});
  }

  /// Deletes the namespaces of labs whose process is gone.
  static void remove_stale() {
    std::string prefix{name_prefix};
    for (auto& ns : listed(prefix)) {
      auto rest = ns.substr(prefix.size());
      auto dash = rest.find('-');
      if (dash == std::string::npos || dash == 0)
        continue;
      pid_t pid = 0;
      try {
        pid = static_cast<pid_t>(std::stol(rest.substr(0, dash)));
      } catch (...) {
        continue;
      }
      if (pid > 0 && kill(pid, 0) != 0 && errno == ESRCH)
        run_process({ip(), "netns", "del", ns});
    }
  }

  std::string tag_;
  bool ok_ = false;
  std::string error_;
  std::map<std::string, std::string> hosts_;
  std::map<std::string, std::set<std::string>> cut_;
};

} // namespace troupe::test
