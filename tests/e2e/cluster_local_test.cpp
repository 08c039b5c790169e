// `troupe cluster start-local`: a real etcd and real members on 127.0.0.1,
// started, used through D/env, stopped with SIGINT, started again on the
// same folder; a member that dies; a second start-local on a folder in use;
// bad flags and a missing etcd.

#include "tests/support/cluster_fixture.hpp"
#include "tests/support/process.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sys/stat.h>

using namespace std::chrono_literals;
using troupe::test::contains;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// Whether no process `pid` exists (ours are reaped by start-local).
bool gone(int pid) {
  return kill(pid, 0) != 0 && errno == ESRCH;
}

struct ClusterLocal : troupe::test::local_cluster_fixture {
  fs::path cluster_dir = dir.path() / "cluster";

  /// Starts `troupe cluster start-local --dir <cluster_dir> --nodes N` and
  /// waits until it says the cluster is up.
  void start_local(int nodes) {
    local = start({"cluster", "start-local", "--dir", cluster_dir.string(),
                   "--nodes", std::to_string(nodes)});
    wait_until_up(nodes);
  }

  /// Stops start-local with `sig` and returns its exit code.
  std::optional<int> stop_local(int sig) {
    local->signal(sig);
    return local->wait(40s);
  }

  /// The variables D/env exports.
  std::map<std::string, std::string> env_file() {
    return read_env_file(cluster_dir);
  }

  /// `troupe ARGS` with the environment of `source D/env`.
  troupe::test::process_result cli(std::vector<std::string> rest) {
    auto o = opts();
    for (auto& [k, v] : env_file())
      o.env[k] = v;
    auto r = troupe::test::run_process(args(std::move(rest)), o);
    EXPECT_FALSE(r.timed_out);
    return r;
  }

  /// The PID in D/`who`/pid, or 0.
  int pid_of(const std::string& who) {
    std::ifstream in{cluster_dir / who / "pid"};
    int pid = 0;
    in >> pid;
    return pid;
  }

  std::string hello() const {
    return (fs::path{TROUPE_SOURCE_DIR} / "examples" / "hello.yaml").string();
  }
};

} // namespace

TEST_F(ClusterLocal, StartsMembersUsableThroughEnvAndSigintStopsThemAll) {
  start_local(3);
  auto out = local->out();
  for (auto m : {"m1", "m2", "m3"}) {
    EXPECT_TRUE(std::regex_search(
      out, std::regex{std::string{"  "} + m
                      + "  control 127\\.0\\.0\\.1:\\d+  http "
                        "http://127\\.0\\.0\\.1:\\d+  log .*"
                      + m + "/node\\.log"}))
      << out;
  }
  EXPECT_TRUE(contains(out, "source " + (cluster_dir / "env").string())) << out;

  // D/env: the three variables, readable by its owner alone.
  auto env = env_file();
  EXPECT_EQ(env.size(), 3u);
  for (auto name : {"TROUPE_NODE", "TROUPE_TOKEN", "TROUPE_CLUSTER_SECRET"})
    EXPECT_FALSE(env[name].empty()) << name;
  EXPECT_TRUE(env["TROUPE_NODE"].starts_with("127.0.0.1:"));
  struct stat st {};
  ASSERT_EQ(stat((cluster_dir / "env").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // The CLI reaches the cluster with it: three members up, and a run.
  auto members = cli({"members", "--json"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  auto j = json::parse(members.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << members.out;
  EXPECT_EQ(j["cluster"], "local");
  EXPECT_EQ(j["member"], "m1");
  std::set<std::string> up;
  for (auto& m : j["members"])
    if (m["state"] == "up")
      up.insert(m["name"].get<std::string>());
  EXPECT_EQ(up, (std::set<std::string>{"m1", "m2", "m3"})) << j;
  auto run = cli({"submit", hello(), "--wait"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(contains(run.out, "goodbye, world")) << run.out;

  // Every process it started has its pid file.
  std::map<std::string, int> pids;
  for (auto who : {"etcd", "m1", "m2", "m3"}) {
    pids[who] = pid_of(who);
    ASSERT_GT(pids[who], 0) << who;
    EXPECT_FALSE(gone(pids[who])) << who;
  }

  // The members got the cluster secret of D/env.
  std::ifstream environ_file{"/proc/" + std::to_string(pids["m1"])
                             + "/environ"};
  std::string environ_text{std::istreambuf_iterator<char>{environ_file}, {}};
  EXPECT_TRUE(contains(environ_text, std::string{"TROUPE_CLUSTER_SECRET="}
                                       + env["TROUPE_CLUSTER_SECRET"] + '\0'));

  // A member that dies is reported; the others keep running.
  ASSERT_EQ(kill(pids["m3"], SIGKILL), 0);
  EXPECT_TRUE(wait_until(
    [&] {
      return contains(local->err(), "member 'm3' (pid "
                                      + std::to_string(pids["m3"])
                                      + ") was killed by SIGKILL");
    },
    10s))
    << local->err();
  EXPECT_TRUE(
    contains(local->err(), (cluster_dir / "m3" / "node.log").string()))
    << local->err();
  EXPECT_FALSE(local->wait(0ms).has_value());
  EXPECT_EQ(cli({"members"}).exit_code, 0);

  // Ctrl-C stops every member and etcd, and start-local exits 0.
  EXPECT_EQ(stop_local(SIGINT), 0) << local->out() << local->err();
  for (auto& [who, pid] : pids)
    EXPECT_TRUE(gone(pid)) << who << " " << pid;
  EXPECT_TRUE(contains(local->out(), "stopped")) << local->out();
}

TEST_F(ClusterLocal, StartingAgainOnTheSameDirKeepsRunsAndOneAtATime) {
  start_local(2);
  auto run = cli({"submit", hello(), "--wait"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  auto id = run.out.substr(0, run.out.find('\n'));
  ASSERT_FALSE(id.empty()) << run.out;
  auto secret = env_file()["TROUPE_CLUSTER_SECRET"];

  // A second start-local on the folder in use is refused, naming who holds
  // it, and touches nothing.
  auto second = troupe(
    {"cluster", "start-local", "--dir", cluster_dir.string(), "--nodes", "2"});
  EXPECT_EQ(second.exit_code, 3) << second.err;
  EXPECT_TRUE(contains(second.err, "(pid " + std::to_string(local->pid())))
    << second.err;
  EXPECT_EQ(cli({"members"}).exit_code, 0);

  ASSERT_EQ(stop_local(SIGTERM), 0) << local->err();

  // Another name on this folder is a mistake.
  auto renamed = troupe({"cluster", "start-local", "--dir",
                         cluster_dir.string(), "--name", "other"});
  EXPECT_EQ(renamed.exit_code, 2) << renamed.err;
  EXPECT_TRUE(contains(renamed.err, "--name other")) << renamed.err;
  EXPECT_TRUE(contains(renamed.err, "holds cluster 'local'")) << renamed.err;

  // Started again: the same data dirs (the run is there), the same secrets.
  start_local(2);
  EXPECT_EQ(env_file()["TROUPE_CLUSTER_SECRET"], secret);
  auto list = cli({"list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(contains(list.out, id)) << list.out;
  auto status = cli({"status", id, "--json"});
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(json::parse(status.out)["state"], "completed");
  EXPECT_EQ(stop_local(SIGINT), 0) << local->err();
}

TEST_F(ClusterLocal, ASecondCtrlCKillsAMemberThatDoesNotStop) {
  start_local(2);
  auto m1 = pid_of("m1"), m2 = pid_of("m2"), etcd = pid_of("etcd");
  // A stopped process does not act on SIGTERM.
  ASSERT_EQ(kill(m2, SIGSTOP), 0);
  local->signal(SIGINT);
  ASSERT_TRUE(wait_until(
    [&] { return contains(local->out(), "stopping 2 member(s)"); }, 10s))
    << local->out();
  EXPECT_TRUE(wait_until([&] { return gone(m1); }, 15s));
  EXPECT_FALSE(local->wait(200ms).has_value()) << local->err();
  // The second Ctrl-C does not wait for it (the first would, for
  // node.shutdown_grace and 5 s more: 15 s).
  local->signal(SIGINT);
  EXPECT_EQ(local->wait(5s), 0) << local->err();
  EXPECT_TRUE(contains(local->err(), "member 'm2' (pid " + std::to_string(m2)
                                       + ") still runs: SIGKILL"))
    << local->err();
  for (auto pid : {m1, m2, etcd})
    EXPECT_TRUE(gone(pid)) << pid;
}

TEST_F(ClusterLocal, AMemberKilledBeforeAStopIsBackAtTheNextStart) {
  start_local(2);
  // Both at once: no member is left to see the other die and revoke its
  // lease at once, as the mesh's failure detection would.
  auto m1 = pid_of("m1"), m2 = pid_of("m2");
  ASSERT_EQ(kill(m1, SIGKILL), 0);
  ASSERT_EQ(kill(m2, SIGKILL), 0);
  ASSERT_TRUE(
    wait_until([&] { return contains(local->err(), "member 'm1' (pid"); }, 10s))
    << local->err();
  ASSERT_EQ(stop_local(SIGTERM), 0) << local->err();
  // Their leases outlive them (etcd renews leases when it starts again), so
  // the names are still held at first: start-local waits for the leases to
  // expire.
  start_local(2);
  EXPECT_TRUE(contains(local->out(), "member 'm1': its name is still held"))
    << local->out();
  auto members = cli({"members", "--json"});
  ASSERT_EQ(members.exit_code, 0) << members.err;
  auto j = json::parse(members.out);
  ASSERT_EQ(j["members"].size(), 2u) << j;
  for (auto& m : j["members"])
    EXPECT_EQ(m["state"], "up") << m;
  EXPECT_EQ(stop_local(SIGINT), 0) << local->err();
}

TEST_F(ClusterLocal, BadFlagsExitTwoNamingTheFlag) {
  auto file = dir.write("a-file", "x");
  dir.write("foreign/notes.txt", "mine");
  struct bad_case {
    std::vector<std::string> flags;
    std::string says;
  };
  std::vector<bad_case> cases = {
    {{"--nodes", "0"}, "--nodes 0: must be from 1 to 9"},
    {{"--nodes", "10"}, "--nodes 10: must be from 1 to 9"},
    {{"--nodes", "three"}, "--nodes"},
    {{"--base-port", "0"}, "--base-port 0: out of range"},
    {{"--base-port", "65530"}, "--base-port 65530: out of range"},
    {{"--name", "a/b"}, "--name \"a/b\": may hold only"},
    {{"--dir", file.string()}, "exists and is not a directory"},
    {{"--dir", (dir.path() / "foreign").string()}, "not empty"},
    {{"--dir", ""}, "--dir: must not be empty"},
  };
  for (auto& c : cases) {
    std::vector<std::string> a{"cluster", "start-local"};
    if (c.flags[0] != "--dir")
      a.insert(a.end(), {"--dir", cluster_dir.string()});
    a.insert(a.end(), c.flags.begin(), c.flags.end());
    auto r = troupe(a);
    EXPECT_EQ(r.exit_code, 2)
      << c.flags[0] << " " << c.flags[1] << ": " << r.err;
    EXPECT_TRUE(contains(r.err, c.says)) << r.err;
  }
  // Refused before anything was made.
  EXPECT_FALSE(fs::exists(cluster_dir));
  EXPECT_FALSE(fs::exists(dir.path() / "foreign" / "cluster.json"));
}

TEST_F(ClusterLocal, WithoutEtcdOnPathExitsThreeSayingHowToInstallIt) {
  auto empty = dir.path() / "empty-bin";
  fs::create_directories(empty);
  auto o = opts();
  o.env["PATH"] = empty.string();
  auto r = troupe::test::run_process(
    args({"cluster", "start-local", "--dir", cluster_dir.string()}), o);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "tools/bootstrap.sh")) << r.err;
  EXPECT_TRUE(contains(r.err, "etcd-server")) << r.err;
  EXPECT_FALSE(fs::exists(cluster_dir));
}
