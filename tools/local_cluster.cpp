#include "tools/local_cluster.hpp"

#include "tools/local_host.hpp"

#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace troupe::tools {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::string read_text_file(const fs::path& p) {
  std::ifstream in{p};
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

child child::spawn(const std::vector<std::string>& argv,
                   const std::map<std::string, std::string>& env,
                   const fs::path& log, const std::function<bool()>& enter) {
  child c;
  c.log = log;
  auto parent = ::getpid();
  c.pid = ::fork();
  if (c.pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent)
      ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    if (enter && !enter())
      ::_exit(126);
    for (auto& [k, v] : env)
      ::setenv(k.c_str(), v.c_str(), 1);
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return c;
}

bool child::alive() {
  if (pid <= 0)
    return false;
  if (::waitpid(pid, nullptr, WNOHANG) == 0)
    return true;
  pid = -1;
  return false;
}

void child::signal(int sig) const {
  if (pid > 0)
    ::kill(pid, sig);
}

void child::kill() {
  if (pid <= 0)
    return;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  pid = -1;
}

void child::stop(std::chrono::milliseconds grace) {
  if (pid <= 0)
    return;
  ::kill(pid, SIGCONT);
  ::kill(pid, SIGTERM);
  if (wait_for([&] { return ::waitpid(pid, nullptr, WNOHANG) != 0; }, grace,
               10ms)) {
    pid = -1;
    return;
  }
  kill();
}

local_cluster::~local_cluster() {
  clients.clear();
  for (auto& [n, m] : members)
    m.stop();
  for (auto& [n, e] : etcd)
    e.proc.stop();
  std::error_code ec;
  if (keep)
    std::cerr << "troupe: logs kept in " << dir.string() << "\n";
  else
    fs::remove_all(dir, ec);
}

std::vector<std::string>
local_cluster::etcd_args(const std::string& member) const {
  auto& e = etcd.at(member);
  return {etcd_binary_,
          "--name",
          member,
          "--data-dir",
          (dir / ("etcd-" + member)).string(),
          "--listen-client-urls",
          e.client_url,
          "--advertise-client-urls",
          e.client_url,
          "--listen-peer-urls",
          e.peer_url,
          "--initial-advertise-peer-urls",
          e.peer_url,
          "--initial-cluster",
          initial_cluster_,
          "--initial-cluster-token",
          name,
          "--heartbeat-interval",
          "50",
          "--election-timeout",
          "500",
          "--log-level",
          "error"};
}

void local_cluster::start_etcd(const std::string& binary,
                               const std::vector<std::string>& names) {
  etcd_binary_ = binary;
  initial_cluster_.clear();
  etcd_urls.clear();
  for (auto& n : names) {
    auto h = hosts.count(n) ? hosts[n] : local_host{};
    // In a namespace of its own, an etcd member has its address to itself.
    uint16_t client = h.enter ? 2379 : free_loopback_port();
    uint16_t peer = h.enter ? 2380 : free_loopback_port();
    auto& e = etcd[n];
    e.client_url = "http://" + h.address + ":" + std::to_string(client);
    e.peer_url = "http://" + h.address + ":" + std::to_string(peer);
    initial_cluster_
      += (initial_cluster_.empty() ? "" : ",") + n + "=" + e.peer_url;
    etcd_urls += (etcd_urls.empty() ? "" : ",") + e.client_url;
  }
  for (auto& n : names)
    restart_etcd(n);
}

void local_cluster::restart_etcd(const std::string& member) {
  auto h = hosts.count(member) ? hosts[member] : local_host{};
  auto& e = etcd.at(member);
  e.proc = child::spawn(
    etcd_args(member), {},
    dir / ("etcd-" + member + "-" + std::to_string(restarts++) + ".log"),
    h.enter);
}

void local_cluster::spawn_member(const std::string& member,
                                 const std::vector<std::string>* alone) {
  auto h = hosts.count(member) ? hosts[member] : local_host{};
  auto log = dir / (member + "-" + std::to_string(restarts++) + ".log");
  std::vector<std::string> argv{self_exe,
                                "node",
                                "start",
                                "--data-dir",
                                (dir / member).string(),
                                "--listen",
                                h.address + ":0",
                                "--http",
                                ""};
  if (alone) {
    argv.insert(argv.end(), alone->begin(), alone->end());
  } else {
    argv.insert(argv.end(),
                {"--cluster", name, "--etcd", etcd_urls, "--member", member});
    argv.insert(argv.end(), member_args.begin(), member_args.end());
  }
  auto vars = env;
  if (auto own = member_env.find(member); own != member_env.end())
    for (auto& [k, v] : own->second)
      vars[k] = v;
  members[member].stop();
  members[member] = child::spawn(argv, vars, log, h.enter);
  member_logs_[member] = log;
  ports.erase(member);
  clients.erase(member);
}

bool local_cluster::member_ready(const std::string& member, std::string& why) {
  why.clear();
  auto text = read_text_file(member_logs_[member]);
  if (text.find("ready: resumed") == std::string::npos) {
    if (!members[member].alive())
      why = "member " + member + " ended while starting:\n" + text;
    return false;
  }
  static const std::regex listening{"listening on [0-9.]+:(\\d+)"};
  std::smatch match;
  if (!std::regex_search(text, match, listening)) {
    why = "member " + member + " says no control port:\n" + text;
    return false;
  }
  ports[member] = static_cast<uint16_t>(std::stoi(match[1]));
  return true;
}

std::string local_cluster::start_member(const std::string& member,
                                        const std::vector<std::string>* alone) {
  spawn_member(member, alone);
  std::string why;
  bool ready = wait_for(
    [&] { return member_ready(member, why) || !why.empty(); }, 30s, 20ms);
  if (ready)
    return {};
  return why.empty() ? "member " + member + " did not start within 30 s:\n"
                         + read_text_file(member_logs_[member])
                     : why;
}

std::string local_cluster::address(const std::string& member) const {
  auto h = hosts.find(member);
  auto p = ports.find(member);
  return (h == hosts.end() ? std::string{"127.0.0.1"} : h->second.address) + ":"
         + std::to_string(p == ports.end() ? 0 : p->second);
}

json local_cluster::call(const std::string& member, const json& request,
                         std::chrono::milliseconds timeout) {
  if (!ports.count(member))
    return nullptr;
  try {
    auto& c = clients[member];
    if (!c) {
      c = std::make_unique<control_client>();
      control_client::options o;
      o.address = address(member);
      o.token = token;
      o.connect_timeout = 1s;
      o.wait_ready = 0ms;
      c->connect(o);
    }
    return c->call(request, timeout);
  } catch (const std::exception&) {
    clients.erase(member);
    return nullptr;
  }
}

json local_cluster::view(const std::string& viewer) {
  return call(viewer, {{"t", "members"}}, 1s);
}

json local_cluster::entry(const std::string& viewer, const std::string& about) {
  auto v = view(viewer);
  if (v.is_object())
    for (auto& m : v.value("members", json::array()))
      if (m.value("name", "") == about)
        return m;
  return nullptr;
}

bool local_cluster::all_linked() {
  for (auto& [a, ca] : members)
    for (auto& [b, cb] : members) {
      if (a == b)
        continue;
      auto e = entry(a, b);
      if (!e.is_object() || e.value("state", "") != "up"
          || e.value("link", "") != "connected")
        return false;
    }
  return true;
}

} // namespace troupe::tools
