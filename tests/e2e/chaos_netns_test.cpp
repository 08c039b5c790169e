// The network namespaces of `troupe chaos` (tools/chaos/netns.hpp), as
// root: real processes started in hosts' namespaces the way the runner
// starts members (fork, PR_SET_PDEATHSIG, enter_path(), execv), reached
// from the root namespace and from other hosts; cut, healed, isolated; and
// nothing left behind, by a lab or by a process that died with one.

#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"
#include "tools/chaos/netns.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <fcntl.h>
#include <filesystem>
#include <memory>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using troupe::chaos::netns_lab;
using troupe::test::temp_dir;
using troupe::test::wait_until;
using namespace std::chrono_literals;

namespace {

/// Whether a TCP connection to `address`:`port` completes within `limit`
/// from the calling thread's network namespace, with local address `from`
/// (the lab's address of that namespace): a connection that left by another
/// route (the default one, to a proxy that takes any connection, say) does
/// not count.
bool connects(const std::string& from, const std::string& address,
              uint16_t port, std::chrono::milliseconds limit = 500ms) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  bool ok = false;
  if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) == 1) {
    int r = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    if (r == 0) {
      ok = true;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, static_cast<int>(limit.count())) == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ok
          = ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
      }
    }
  }
  if (ok) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    char text[INET_ADDRSTRLEN] = {};
    ok = ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0
         && ::inet_ntop(AF_INET, &local.sin_addr, text, sizeof text)
         && text == from;
  }
  ::close(fd);
  return ok;
}

/// Whether the root namespace reaches `address`:`port` of `lab` (through
/// the lab's root-side veth).
bool root_reaches(const netns_lab& lab, const std::string& address,
                  uint16_t port) {
  return connects(lab.address("root"), address, port);
}

/// Whether host `host` of `lab` reaches `address`:`port`, asked from a
/// thread in its namespace (false when the thread cannot enter it).
bool connects_from(const netns_lab& lab, const std::string& host,
                   const std::string& address, uint16_t port) {
  bool ok = false;
  std::thread t{[&] {
    ok = lab.enter(host) && connects(lab.address(host), address, port);
  }};
  t.join();
  return ok;
}

/// A program started as the chaos runner starts a member: forked, with
/// PR_SET_PDEATHSIG, moved into a host's namespace with enter_path() in the
/// child, then exec'd; its output goes to `log`. Killed (SIGKILL) and
/// reaped when the object goes away.
class child_in_namespace {
 public:
  child_in_namespace(const std::string& ns_path, std::vector<std::string> argv,
                     const std::vector<std::string>& env,
                     const std::string& log) {
    std::vector<char*> cargv, cenv;
    for (auto& a : argv)
      cargv.push_back(a.data());
    cargv.push_back(nullptr);
    std::vector<std::string> vars;
    for (char** e = environ; e && *e; ++e)
      vars.emplace_back(*e);
    vars.insert(vars.end(), env.begin(), env.end());
    for (auto& v : vars)
      cenv.push_back(v.data());
    cenv.push_back(nullptr);
    int fd
      = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    auto parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // Only async-signal-safe calls from here to exec.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent)
        ::_exit(127);
      if (fd >= 0) {
        ::dup2(fd, STDOUT_FILENO);
        ::dup2(fd, STDERR_FILENO);
      }
      if (!netns_lab::enter_path(ns_path.c_str()))
        ::_exit(126);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
    if (fd >= 0)
      ::close(fd);
  }

  ~child_in_namespace() {
    if (pid_ <= 0)
      return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }

  child_in_namespace(const child_in_namespace&) = delete;
  child_in_namespace& operator=(const child_in_namespace&) = delete;

  pid_t pid() const noexcept { return pid_; }

 private:
  pid_t pid_ = -1;
};

/// The inode of the network namespace at `path` (a /run/netns file or a
/// /proc/PID/ns/net link), or 0.
ino_t namespace_inode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
}

bool has_link(const std::string& name) {
  std::error_code ec;
  return std::filesystem::exists("/sys/class/net/" + name, ec);
}

/// Where etcd is installed, or empty.
std::string find_etcd() {
  for (auto dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
    auto p = std::filesystem::path{dir} / "etcd";
    std::error_code ec;
    if (std::filesystem::exists(p, ec))
      return p.string();
  }
  return {};
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct ChaosNetns : ::testing::Test {
  void SetUp() override {
    if (auto why = netns_lab::unavailable(); !why.empty())
      GTEST_SKIP() << why;
  }
};

} // namespace

// A member (a troupe node) in host m1's namespace, and etcd in host etcd's,
// both started by fork + enter_path + exec: the root namespace reaches both
// at the lab's addresses; a cut drops a host's traffic with the hosts named
// and no others, and never the root namespace's, so the runner can still
// ask a member cut from etcd for its state; healed, the hosts reach each
// other again. An isolated host is lost to the root namespace too, until
// it rejoins.
TEST_F(ChaosNetns, RootReachesEveryHostAndCutsSpareIt) {
  netns_lab lab{"troupe-t"};
  ASSERT_TRUE(lab.error().empty()) << lab.error();
  for (auto name : {"m1", "m2", "m3"})
    ASSERT_EQ(lab.add_host(name), "") << name;
  ASSERT_EQ(lab.add_host("etcd", 100), "");
  EXPECT_EQ(lab.address("m1"), lab.subnet() + ".1");
  EXPECT_EQ(lab.address("m3"), lab.subnet() + ".3");
  EXPECT_EQ(lab.address("etcd"), lab.subnet() + ".100");
  EXPECT_EQ(lab.address("root"), lab.subnet() + ".254");
  EXPECT_TRUE(has_link(lab.root_link())) << lab.root_link();

  auto etcd_binary = find_etcd();
  ASSERT_FALSE(etcd_binary.empty())
    << "etcd is not installed: run tools/bootstrap.sh";
  temp_dir dir;
  // Ports of their own: nothing else listens in a fresh namespace.
  const uint16_t member_port = 7411, etcd_port = 2379;
  auto m1 = lab.address("m1"), etcd = lab.address("etcd");
  child_in_namespace member{
    lab.path("m1"),
    {TROUPE_BINARY, "node", "start", "--data-dir", (dir.path() / "m1").string(),
     "--listen", m1 + ":" + std::to_string(member_port)},
    {"TROUPE_AUTH_SECRET=chaos-netns-test-secret-0123456789abcdef",
     "TROUPE_CONFIG_DIR=" + (dir.path() / "config").string()},
    (dir.path() / "m1.log").string()};
  auto etcd_url = "http://" + etcd + ":" + std::to_string(etcd_port);
  child_in_namespace etcd_process{
    lab.path("etcd"),
    {etcd_binary, "--name", "etcd", "--data-dir",
     (dir.path() / "etcd").string(), "--listen-client-urls", etcd_url,
     "--advertise-client-urls", etcd_url, "--listen-peer-urls",
     "http://127.0.0.1:2380", "--initial-advertise-peer-urls",
     "http://127.0.0.1:2380", "--initial-cluster",
     "etcd=http://127.0.0.1:2380"},
    {},
    (dir.path() / "etcd.log").string()};
  ASSERT_GT(member.pid(), 0);
  ASSERT_GT(etcd_process.pid(), 0);
  auto log = [&](const char* name) {
    auto r
      = troupe::test::run_process({"/bin/cat", (dir.path() / name).string()});
    return r.out;
  };

  // Reached from the root namespace, where the runner and its control
  // client run.
  ASSERT_TRUE(
    wait_until([&] { return root_reaches(lab, m1, member_port); }, 30s))
    << log("m1.log");
  ASSERT_TRUE(
    wait_until([&] { return root_reaches(lab, etcd, etcd_port); }, 30s))
    << log("etcd.log");
  // Each is the program itself (no `ip netns exec` in between), in its
  // host's namespace.
  for (auto [pid, host] :
       {std::pair{member.pid(), "m1"}, std::pair{etcd_process.pid(), "etcd"}}) {
    EXPECT_EQ(namespace_inode("/proc/" + std::to_string(pid) + "/ns/net"),
              namespace_inode(lab.path(host)))
      << host;
    EXPECT_NE(namespace_inode(lab.path(host)),
              namespace_inode("/proc/self/ns/net"))
      << host;
  }
  std::error_code ec;
  EXPECT_EQ(std::filesystem::read_symlink(
              "/proc/" + std::to_string(member.pid()) + "/exe", ec)
              .filename(),
            std::filesystem::path{TROUPE_BINARY}.filename());
  // The hosts reach each other.
  EXPECT_TRUE(connects_from(lab, "m2", m1, member_port));
  EXPECT_TRUE(connects_from(lab, "m1", etcd, etcd_port));

  // m1 cut from m2: m2 loses it, m3 and the root namespace do not.
  ASSERT_EQ(lab.cut("m1", {"m2"}), "");
  EXPECT_FALSE(connects_from(lab, "m2", m1, member_port));
  EXPECT_TRUE(connects_from(lab, "m3", m1, member_port));
  EXPECT_TRUE(root_reaches(lab, m1, member_port));
  // Healed: m2 reaches it again.
  ASSERT_EQ(lab.heal("m1"), "");
  EXPECT_TRUE(
    wait_until([&] { return connects_from(lab, "m2", m1, member_port); }, 10s));

  // m1 cut from etcd, both ways; the root namespace still reaches both.
  ASSERT_EQ(lab.cut("m1", {"etcd"}), "");
  EXPECT_FALSE(connects_from(lab, "m1", etcd, etcd_port));
  EXPECT_FALSE(connects_from(lab, "etcd", m1, member_port));
  EXPECT_TRUE(root_reaches(lab, m1, member_port));
  EXPECT_TRUE(root_reaches(lab, etcd, etcd_port));
  EXPECT_TRUE(connects_from(lab, "m2", etcd, etcd_port));
  // Cuts add up; a host healed from some stays cut from the others;
  // heal_all() lifts every cut.
  ASSERT_EQ(lab.cut("m1", {"m3"}), "");
  EXPECT_FALSE(connects_from(lab, "m3", m1, member_port));
  EXPECT_FALSE(connects_from(lab, "m1", etcd, etcd_port));
  ASSERT_EQ(lab.heal("m1", {"etcd"}), "");
  EXPECT_TRUE(
    wait_until([&] { return connects_from(lab, "m1", etcd, etcd_port); }, 10s));
  EXPECT_FALSE(connects_from(lab, "m3", m1, member_port));
  ASSERT_EQ(lab.cut("m2", {"m1"}), "");
  EXPECT_FALSE(connects_from(lab, "m2", m1, member_port));
  ASSERT_EQ(lab.heal_all(), "");
  EXPECT_TRUE(
    wait_until([&] { return connects_from(lab, "m3", m1, member_port); }, 10s));
  EXPECT_TRUE(connects_from(lab, "m2", m1, member_port));
  EXPECT_TRUE(connects_from(lab, "m1", etcd, etcd_port));

  // Isolated: nobody reaches m1, the root namespace included; rejoined: it
  // is back.
  ASSERT_EQ(lab.isolate("m1"), "");
  EXPECT_FALSE(root_reaches(lab, m1, member_port));
  EXPECT_FALSE(connects_from(lab, "m2", m1, member_port));
  ASSERT_EQ(lab.rejoin("m1"), "");
  EXPECT_TRUE(
    wait_until([&] { return root_reaches(lab, m1, member_port); }, 10s));
  EXPECT_TRUE(connects_from(lab, "m2", m1, member_port));
}

// Labs living at once, in one process or two, take different subnets and
// root-side veths, and each reaches its own hosts from the root namespace.
TEST_F(ChaosNetns, LabsLivingAtOnceTakeDifferentSubnets) {
  netns_lab a{"troupe-t"};
  netns_lab b{"troupe-t"};
  netns_lab c{"troupe-u"};
  for (auto* lab : {&a, &b, &c}) {
    ASSERT_TRUE(lab->error().empty()) << lab->error();
    ASSERT_EQ(lab->add_host("h"), "");
    EXPECT_EQ(lab->address("h"), lab->subnet() + ".1");
  }
  EXPECT_NE(a.tag(), b.tag());
  EXPECT_NE(a.subnet(), b.subnet());
  EXPECT_NE(a.subnet(), c.subnet());
  EXPECT_NE(b.subnet(), c.subnet());
  EXPECT_NE(a.root_link(), b.root_link());
  // b did not take a's namespaces for leftovers.
  EXPECT_EQ(netns_lab::listed(a.tag()).size(), 2u);
  // A listener in each lab's host h, at port 7412 in each: the root
  // namespace reaches all three, each at its own subnet.
  std::vector<int> listeners;
  for (auto* lab : {&a, &b, &c}) {
    int fd = -1;
    std::thread t{[&] {
      if (!lab->enter("h"))
        return;
      fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(7412);
      addr.sin_addr.s_addr = htonl(INADDR_ANY);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
          || ::listen(fd, 8) != 0) {
        ::close(fd);
        fd = -1;
      }
    }};
    t.join();
    ASSERT_GE(fd, 0) << lab->tag();
    listeners.push_back(fd);
  }
  for (auto* lab : {&a, &b, &c})
    EXPECT_TRUE(wait_until(
      [&] { return root_reaches(*lab, lab->address("h"), 7412); }, 5s))
      << lab->subnet();
  for (int fd : listeners)
    ::close(fd);
}

// A lab deletes its namespaces and its root-side veth when it goes away.
// Those of a process that died with its lab are deleted by the next lab
// made with the same prefix, not by one with another prefix.
TEST_F(ChaosNetns, DeletesWhatItMadeAndWhatDeadLabsLeft) {
  std::string tag, link;
  {
    netns_lab lab{"troupe-t"};
    ASSERT_TRUE(lab.error().empty()) << lab.error();
    ASSERT_EQ(lab.add_host("m1"), "");
    tag = lab.tag();
    link = lab.root_link();
    EXPECT_EQ(netns_lab::listed(tag).size(), 2u);
    EXPECT_EQ(netns_lab::root_links(tag), std::vector<std::string>{link});
  }
  EXPECT_TRUE(netns_lab::listed(tag).empty());
  EXPECT_FALSE(has_link(link));

  // A child makes a lab with a host and dies without deleting it; it says
  // its lab's tag.
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  auto pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(report[0]);
    auto* lab = new netns_lab{"troupe-s"};
    std::string said = lab->error().empty() && lab->add_host("m1").empty()
                         ? lab->tag()
                         : "failed: " + lab->error();
    (void)!::write(report[1], said.data(), said.size());
    ::_exit(0);
  }
  ::close(report[1]);
  std::string dead;
  char buf[256];
  for (ssize_t n; (n = ::read(report[0], buf, sizeof buf)) > 0;)
    dead.append(buf, static_cast<size_t>(n));
  ::close(report[0]);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  ASSERT_TRUE(dead.starts_with("troupe-s" + std::to_string(pid))) << dead;
  ASSERT_EQ(netns_lab::listed(dead).size(), 2u);
  ASSERT_EQ(netns_lab::root_links(dead).size(), 1u);
  auto dead_link = netns_lab::root_links(dead)[0];
  {
    netns_lab other{"troupe-x"};
    EXPECT_EQ(netns_lab::listed(dead).size(), 2u);
    EXPECT_TRUE(has_link(dead_link));
  }
  {
    netns_lab same{"troupe-s"};
    EXPECT_TRUE(same.error().empty()) << same.error();
    EXPECT_TRUE(netns_lab::listed(dead).empty());
    EXPECT_TRUE(netns_lab::root_links(dead).empty());
    EXPECT_FALSE(has_link(dead_link));
  }
}

// Bad host names and clashes are refused, saying why; a command that fails
// is named, with what it printed on stderr.
TEST_F(ChaosNetns, SaysWhatFailed) {
  netns_lab lab{"troupe-t"};
  ASSERT_TRUE(lab.error().empty()) << lab.error();
  ASSERT_EQ(lab.add_host("m1"), "");
  EXPECT_TRUE(contains(lab.add_host("m1"), "host 'm1' exists already"));
  EXPECT_TRUE(contains(lab.add_host("m2", 1), "is host 'm1'"));
  EXPECT_TRUE(contains(lab.add_host("switch"), "reserved"));
  EXPECT_TRUE(contains(lab.add_host("a/b"), "host name 'a/b'"));
  EXPECT_TRUE(contains(lab.add_host("thirteen-long"), "1 to 12"));
  EXPECT_TRUE(contains(lab.add_host("m3", 253), "not in 1..252"));
  EXPECT_TRUE(contains(lab.cut("m1", {"m9"}), "'m9'"));
  EXPECT_TRUE(contains(lab.cut("m9", {"m1"}), "no host 'm9'"));
  // Someone else made a namespace with the name m4's would have.
  auto r = troupe::test::run_process(
    {"/usr/sbin/ip", "netns", "add", lab.tag() + "m4"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto why = lab.add_host("m4");
  EXPECT_TRUE(contains(why, "ip netns add " + lab.tag() + "m4: exit 1: "))
    << why;
  EXPECT_TRUE(contains(why, "File exists")) << why;
  EXPECT_EQ(lab.address("m4"), "");
  // Not m4's: the lab deletes it anyway when it goes away, as it carries
  // the lab's tag.
}
