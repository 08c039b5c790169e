// Real `troupe node start --cluster` members on 127.0.0.1 with their own
// etcd on free ports: joining, `troupe members` on every member, a taken
// name, etcd out of reach, bad [cluster] configuration, a revoked lease
// and a member killed with SIGKILL.

#include "cluster/etcd/client.hpp"
#include "runtime/auth/token.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <map>
#include <regex>
#include <set>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::background_process;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace auth = troupe::runtime::auth;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

struct Cluster : troupe::test::troupe_fixture {
  static constexpr const char* secret
    = "test-secret-0123456789abcdef-0123456789";

  std::unique_ptr<troupe::test::etcd_process> etcd;

  struct member {
    std::unique_ptr<background_process> proc;
    uint16_t port = 0;
  };
  std::map<std::string, member> members;

  troupe::test::process_options opts() override {
    auto o = troupe_fixture::opts();
    o.env["TROUPE_AUTH_SECRET"] = std::string{secret};
    o.env["TROUPE_NODE"] = std::nullopt;
    o.env["TROUPE_TOKEN"] = std::nullopt;
    return o;
  }

  void start_etcd() {
    etcd = std::make_unique<troupe::test::etcd_process>();
    ASSERT_TRUE(etcd->ok()) << etcd->error();
  }

  /// `troupe node start --cluster c1` as `name`, with a lease TTL of
  /// `ttl`, control port picked by the node, no HTTP endpoint.
  std::vector<std::string> member_args(const std::string& name,
                                       const std::string& etcd_url,
                                       const std::string& ttl = "2s") {
    return {"node",       "start",
            "--data-dir", (dir.path() / ("data-" + name)).string(),
            "--listen",   "127.0.0.1:0",
            "--http",     "",
            "--cluster",  "c1",
            "--etcd",     etcd_url,
            "--member",   name,
            "--set",      "cluster.lease_ttl=" + ttl,
            "--set",      "cluster.labels=zone=z-" + name};
  }

  /// Starts member `name` and waits until it joined and is ready.
  void join(const std::string& name, const std::string& ttl = "2s") {
    auto& m = members[name];
    m.proc = start(member_args(name, etcd->url(), ttl));
    std::smatch match;
    ASSERT_TRUE(wait_until(
      [&] {
        auto err = m.proc->err();
        return contains(err, "ready: resumed")
               && std::regex_search(
                 err, match, std::regex{"listening on 127.0.0.1:(\\d+)"});
      },
      20s))
      << m.proc->err();
    ASSERT_TRUE(
      contains(m.proc->err(), "joined cluster 'c1' as member '" + name + "'"))
      << m.proc->err();
    m.port = static_cast<uint16_t>(std::stoi(match[1]));
  }

  std::string viewer() {
    return auth::issue_token(secret, auth::role::viewer, "tester", 1h,
                             auth::token_clock::now());
  }

  /// `troupe members --json` against member `name`'s control port.
  json members_of(const std::string& name) {
    auto o = opts();
    o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members[name].port);
    o.env["TROUPE_TOKEN"] = viewer();
    auto r = troupe::test::run_process(args({"members", "--json"}), o);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = json::parse(r.out, nullptr, false);
    return j.is_discarded() ? json::object() : j;
  }

  /// The member names `name` lists.
  std::set<std::string> seen_by(const std::string& name) {
    std::set<std::string> out;
    auto j = members_of(name);
    for (auto& m : j.value("members", json::array()))
      out.insert(m.value("name", ""));
    return out;
  }

  /// What `name` lists about `about`, or null.
  json entry(const std::string& name, const std::string& about) {
    for (auto& m : members_of(name).value("members", json::array()))
      if (m.value("name", "") == about)
        return m;
    return nullptr;
  }

  void TearDown() override {
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->signal(SIGTERM);
    for (auto& [name, m] : members)
      if (m.proc)
        m.proc->wait(15s);
  }
};

} // namespace

TEST_F(Cluster, ThreeMembersJoinAndEachListsAllThree) {
  start_etcd();
  for (auto name : {"m1", "m2", "m3"})
    join(name);
  std::set<std::string> all{"m1", "m2", "m3"};
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_TRUE(wait_until([&] { return seen_by(name) == all; }, 10s)) << name;
  auto j = members_of("m2");
  EXPECT_EQ(j["cluster"], "c1");
  EXPECT_EQ(j["member"], "m2");
  for (auto& m : j["members"]) {
    EXPECT_EQ(m["state"], "up") << m;
    EXPECT_EQ(m["control_address"],
              "127.0.0.1:" + std::to_string(members[m["name"]].port));
    EXPECT_EQ(m["labels"]["zone"], "z-" + m["name"].get<std::string>());
    EXPECT_EQ(m["incarnation"].get<std::string>().size(), 16u);
    EXPECT_EQ(m["self"], m["name"] == "m2");
  }
  // The table names the cluster and every member.
  auto o = opts();
  o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members["m3"].port);
  o.env["TROUPE_TOKEN"] = viewer();
  auto text = troupe::test::run_process(args({"members"}), o);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(contains(text.out, "cluster 'c1', seen from member 'm3'"))
    << text.out;
  EXPECT_TRUE(contains(text.out, "zone=z-m1")) << text.out;
  // ping says which cluster and member answers.
  troupe::test::frame_client c{members["m1"].port};
  ASSERT_TRUE(c.hello(viewer()));
  auto pong = c.call({{"t", "ping"}}, 1);
  ASSERT_TRUE(pong);
  EXPECT_EQ((*pong)["body"]["cluster"]["name"], "c1") << *pong;
  EXPECT_EQ((*pong)["body"]["cluster"]["member"], "m1") << *pong;
  EXPECT_EQ((*pong)["body"]["cluster"]["joined"], true) << *pong;
}

TEST_F(Cluster, ASecondMemberWithATakenNameRefusesToStart) {
  start_etcd();
  join("m1");
  // Its own data dir: only the name is taken.
  auto again = member_args("m1", etcd->url());
  again[3] = (dir.path() / "data-again").string();
  auto r = troupe(again);
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "member name 'm1' is taken in cluster 'c1'"))
    << r.err;
  // The member that holds the name is untouched.
  EXPECT_EQ(seen_by("m1"), std::set<std::string>{"m1"});
  EXPECT_EQ(entry("m1", "m1")["state"], "up");
}

TEST_F(Cluster, AMemberWithoutANameIsNamedAfterItsHostAndControlPort) {
  start_etcd();
  auto a = member_args("x", etcd->url());
  a.erase(a.begin() + 12, a.begin() + 14); // --member x
  auto& m = members["unnamed"];
  m.proc = start(a);
  std::smatch match;
  ASSERT_TRUE(wait_until(
    [&] {
      auto err = m.proc->err();
      return contains(err, "ready: resumed")
             && std::regex_search(err, match,
                                  std::regex{"listening on 127.0.0.1:(\\d+)"});
    },
    20s))
    << m.proc->err();
  m.port = static_cast<uint16_t>(std::stoi(match[1]));
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  auto j = members_of("unnamed");
  ASSERT_EQ(j["members"].size(), 1u) << j;
  auto name = j["member"].get<std::string>();
  EXPECT_TRUE(name.ends_with("-" + std::to_string(m.port))) << name;
  std::string h{host};
  if (h.size() <= 50
      && h.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                             "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                             "0123456789-_.")
           == std::string::npos) {
    EXPECT_EQ(name, h + "-" + std::to_string(m.port));
  }
  EXPECT_EQ(j["members"][0]["name"], name);
}

TEST_F(Cluster, EtcdOutOfReachAtStartExitsThreeSayingSo) {
  auto url = "http://127.0.0.1:" + std::to_string(troupe::test::free_port());
  auto r = troupe(member_args("m1", url));
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot join cluster 'c1'")) << r.err;
  EXPECT_TRUE(contains(r.err, "etcd did not answer at " + url)) << r.err;
}

TEST_F(Cluster, BadClusterConfigurationExitsTwoNamingTheKey) {
  auto file = dir.write("bad.toml", "[cluster]\nname = \"c1\"\n"
                                    "etcd = [\"http://127.0.0.1:2379\"]\n"
                                    "lease_ttl = \"1500ms\"\nlease = 3\n");
  auto r = troupe({"--config", file.string(), "node", "start", "--data-dir",
                   data, "--listen", "127.0.0.1:0", "--http", ""});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "cluster.lease_ttl = \"1500ms\": must be whole "
                              "seconds"))
    << r.err;
  EXPECT_TRUE(contains(r.err, "cluster.lease: unknown key")) << r.err;
  auto bad_url
    = troupe({"node", "start", "--data-dir", data, "--listen", "127.0.0.1:0",
              "--cluster", "c1", "--etcd", "127.0.0.1:2379"});
  EXPECT_EQ(bad_url.exit_code, 2) << bad_url.err;
  EXPECT_TRUE(contains(bad_url.err, "flag --etcd: cluster.etcd = "
                                    "\"127.0.0.1:2379\": expected a URL"))
    << bad_url.err;
  auto no_etcd = troupe({"node", "start", "--data-dir", data, "--listen",
                         "127.0.0.1:0", "--cluster", "c1"});
  EXPECT_EQ(no_etcd.exit_code, 2) << no_etcd.err;
  EXPECT_TRUE(contains(no_etcd.err, "cluster 'c1' needs at least one etcd "
                                    "endpoint"))
    << no_etcd.err;
  // Nothing was started or created.
  EXPECT_FALSE(std::filesystem::exists(data));
}

TEST_F(Cluster, AMemberWhoseLeaseIsRevokedRejoinsWithANewIncarnation) {
  start_etcd();
  join("m1");
  join("m2");
  auto before = entry("m2", "m1");
  ASSERT_TRUE(before.is_object());
  auto first = before["incarnation"].get<std::string>();

  troupe::cluster::etcd::client_options co;
  co.endpoints = {etcd->url()};
  troupe::cluster::etcd::client c{co};
  auto kv = c.get("/troupe/c1/members/m1");
  ASSERT_TRUE(kv && kv->has_value()) << kv.err.message;
  ASSERT_NE((*kv)->lease, 0);
  ASSERT_TRUE(c.lease_revoke((*kv)->lease));

  // m1 notices, says so, and registers again as a new incarnation, which
  // m2 sees.
  ASSERT_TRUE(wait_until(
    [&] {
      auto now = entry("m2", "m1");
      return now.is_object() && now["incarnation"] != first
             && now["state"] == "up";
    },
    10s))
    << members["m1"].proc->err();
  EXPECT_TRUE(contains(members["m1"].proc->err(), "lost its registration"))
    << members["m1"].proc->err();
  EXPECT_TRUE(contains(members["m1"].proc->err(), "joined cluster 'c1' again"))
    << members["m1"].proc->err();
  auto self = entry("m1", "m1");
  EXPECT_EQ(self["state"], "up");
  EXPECT_NE(self["incarnation"], first);
  auto again = c.get("/troupe/c1/members/m1");
  ASSERT_TRUE(again && again->has_value());
  EXPECT_NE((*again)->lease, (*kv)->lease);
}

TEST_F(Cluster, AMemberKilledWithSigkillLeavesTheOthersListsAfterItsTtl) {
  start_etcd();
  for (auto name : {"m1", "m2", "m3"})
    join(name, "1s");
  std::set<std::string> all{"m1", "m2", "m3"};
  ASSERT_TRUE(wait_until([&] { return seen_by("m1") == all; }, 10s));
  ASSERT_TRUE(wait_until([&] { return seen_by("m2") == all; }, 10s));
  members["m3"].proc->signal(SIGKILL);
  ASSERT_TRUE(members["m3"].proc->wait(5s));
  std::set<std::string> rest{"m1", "m2"};
  // A 1 s TTL: gone within a few seconds, however the lessor rounds.
  EXPECT_TRUE(wait_until([&] { return seen_by("m1") == rest; }, 10s));
  EXPECT_TRUE(wait_until([&] { return seen_by("m2") == rest; }, 10s));
}

TEST_F(Cluster, ANodeAloneUsesNoEtcdAndListsItselfAsItsOneMember) {
  auto& m = members["solo"];
  m.proc = start({"node", "start", "--data-dir", data, "--listen",
                  "127.0.0.1:0", "--http", "", "--name", "solo"});
  std::smatch match;
  ASSERT_TRUE(wait_until(
    [&] {
      auto err = m.proc->err();
      return contains(err, "ready: resumed")
             && std::regex_search(err, match,
                                  std::regex{"listening on 127.0.0.1:(\\d+)"});
    },
    20s))
    << m.proc->err();
  m.port = static_cast<uint16_t>(std::stoi(match[1]));
  EXPECT_FALSE(contains(m.proc->err(), "cluster")) << m.proc->err();
  auto j = members_of("solo");
  EXPECT_EQ(j["cluster"], "");
  ASSERT_EQ(j["members"].size(), 1u) << j;
  EXPECT_EQ(j["members"][0]["name"], "solo");
  EXPECT_EQ(j["members"][0]["state"], "up");
  troupe::test::frame_client c{m.port};
  ASSERT_TRUE(c.hello(viewer()));
  auto pong = c.call({{"t", "ping"}}, 1);
  ASSERT_TRUE(pong);
  EXPECT_FALSE((*pong)["body"].contains("cluster")) << *pong;
}
