// Real `troupe node start --cluster` members on 127.0.0.1 with their own
// etcd on free ports: joining, `troupe members` on every member, a taken
// name, etcd out of reach, bad [cluster] configuration, a revoked lease
// and a member killed with SIGKILL; and the peer mesh: links between
// members, the cluster secret, failure detection (kill -9, SIGSTOP) and
// rejoining after SIGCONT.

#include "cluster/etcd/client.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_session.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::test::contains;
using troupe::test::wait_until;
using json = nlohmann::json;

namespace {

/// The TCP ports process `pid` listens on (Linux: its socket inodes matched
/// against /proc/net/tcp and tcp6).
std::set<uint16_t> listening_ports(int pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  auto fds = "/proc/" + std::to_string(pid) + "/fd";
  for (auto& fd : std::filesystem::directory_iterator{fds, ec}) {
    auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    if (target.starts_with("socket:["))
      inodes.insert(target.substr(8, target.size() - 9));
  }
  std::set<uint16_t> out;
  for (auto table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in{table};
    std::string line;
    std::getline(in, line); // header
    while (std::getline(in, line)) {
      std::istringstream fields{line};
      std::string sl, local, remote, st, queues, timer, retr, uid, tmo, inode;
      fields >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid
        >> tmo >> inode;
      if (st == "0A" && inodes.count(inode))
        out.insert(static_cast<uint16_t>(
          std::stoi(local.substr(local.rfind(':') + 1), nullptr, 16)));
    }
  }
  return out;
}

/// Members without an HTTP endpoint (unless a test sets one), labelled
/// zone=z-<name>; every `troupe members` must answer.
struct Cluster : troupe::test::cluster_fixture {
  Cluster() {
    zone_labels = true;
    members_must_answer = true;
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
  launch("unnamed", a);
  ASSERT_FALSE(HasFatalFailure());
  auto& m = members["unnamed"];
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
  auto partitions
    = troupe({"node", "start", "--data-dir", data, "--listen", "127.0.0.1:0",
              "--cluster", "c1", "--etcd", "http://127.0.0.1:2379", "--set",
              "cluster.partitions=300"});
  EXPECT_EQ(partitions.exit_code, 2) << partitions.err;
  EXPECT_TRUE(contains(partitions.err, "cluster.partitions = \"300\": must "
                                       "be from 1 to 256"))
    << partitions.err;
  auto insync
    = troupe({"node", "start", "--data-dir", data, "--listen", "127.0.0.1:0",
              "--cluster", "c1", "--etcd", "http://127.0.0.1:2379", "--set",
              "cluster.min_insync=4", "--set", "cluster.replica_lag=1h"});
  EXPECT_EQ(insync.exit_code, 2) << insync.err;
  EXPECT_TRUE(contains(insync.err, "cluster.min_insync = \"4\": must not "
                                   "exceed cluster.replication (3)"))
    << insync.err;
  EXPECT_TRUE(contains(insync.err, "cluster.replica_lag = \"1h\": must be "
                                   "from"))
    << insync.err;
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

TEST_F(Cluster, AMemberKilledWithSigkillLeavesTheOthersLists) {
  start_etcd();
  lease_ttl = "1s";
  for (auto name : {"m1", "m2", "m3"})
    join(name);
  std::set<std::string> all{"m1", "m2", "m3"};
  ASSERT_TRUE(wait_until([&] { return seen_by("m1") == all; }, 10s));
  ASSERT_TRUE(wait_until([&] { return seen_by("m2") == all; }, 10s));
  members["m3"].proc->signal(SIGKILL);
  ASSERT_TRUE(members["m3"].proc->wait(5s));
  std::set<std::string> rest{"m1", "m2"};
  // Revoked at once by the detector, or at worst its 1 s TTL expires.
  EXPECT_TRUE(wait_until([&] { return seen_by("m1") == rest; }, 10s));
  EXPECT_TRUE(wait_until([&] { return seen_by("m2") == rest; }, 10s));
}

TEST_F(Cluster, ANodeAloneUsesNoEtcdAndListsItselfAsItsOneMember) {
  launch("solo", {"node", "start", "--data-dir", data, "--listen",
                  "127.0.0.1:0", "--http", "", "--name", "solo"});
  ASSERT_FALSE(HasFatalFailure());
  auto& m = members["solo"];
  EXPECT_FALSE(contains(m.proc->err(), "cluster")) << m.proc->err();
  // No peer mesh: the node listens on its control port alone.
  EXPECT_EQ(listening_ports(m.proc->pid()), std::set<uint16_t>{m.port});
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

namespace {

/// The peer mesh and failure detection, on the same fixture.
struct Mesh : Cluster {
  /// The state `viewer` lists for `about` ("" when it lists it not).
  std::string state(const std::string& viewer, const std::string& about) {
    auto e = entry(viewer, about);
    return e.is_object() ? e.value("state", std::string{}) : std::string{};
  }

  /// Polls `viewer`'s view of `about` until it is `last` (at most `limit`),
  /// and returns the states seen, each once, in order.
  std::vector<std::string> states_until(const std::string& viewer,
                                        const std::string& about,
                                        const std::string& last,
                                        std::chrono::milliseconds limit) {
    std::vector<std::string> seen;
    wait_until(
      [&] {
        auto s = state(viewer, about);
        if (seen.empty() || seen.back() != s)
          seen.push_back(s);
        return s == last;
      },
      limit);
    return seen;
  }
};

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v)
    out += (out.empty() ? "" : " -> ") + (s.empty() ? "(absent)" : s);
  return out;
}

} // namespace

TEST_F(Mesh, ThreeMembersLinkToEachOtherAndElectOneDetector) {
  start_etcd();
  for (auto name : {"m1", "m2", "m3"})
    join(name);
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2", "m3"});
    },
    10s))
    << all_logs();
  // m4 has the HTTP endpoint: /metrics counts the members by state.
  http = "127.0.0.1:0";
  join("m4");
  std::smatch match;
  auto err = members["m4"].proc->err();
  ASSERT_TRUE(std::regex_search(
    err, match, std::regex{"metrics on http://127.0.0.1:(\\d+)/metrics"}))
    << err;
  auto metrics_port = static_cast<uint16_t>(std::stoi(match[1]));
  EXPECT_TRUE(wait_until(
    [&] {
      auto body = troupe::test::http_get(metrics_port, "/metrics").second;
      return contains(body, "troupe_cluster_members{state=\"up\"} 4")
             && contains(body, "troupe_cluster_members{state=\"suspect\"} 0");
    },
    10s))
    << troupe::test::http_get(metrics_port, "/metrics").second;
  std::set<std::string> detectors;
  for (auto name : {"m1", "m2", "m3"}) {
    auto j = members_of(name);
    for (auto& m : j["members"]) {
      if (m["name"] == name) {
        EXPECT_EQ(m["link"], "self") << m;
      }
    }
    EXPECT_TRUE(
      wait_until([&] { return members_of(name).contains("detector"); }, 5s));
    detectors.insert(members_of(name).value("detector", ""));
  }
  // One member holds the detector key, and everyone names the same one.
  ASSERT_EQ(detectors.size(), 1u);
  EXPECT_TRUE(contains(members[*detectors.begin()].proc->err(),
                       "elected as the cluster's failure detector"));
  // A member listens for peers besides its control port (where it
  // registered it).
  auto peer = entry("m2", "m1")["peer_address"].get<std::string>();
  EXPECT_EQ(listening_ports(members["m1"].proc->pid()),
            (std::set<uint16_t>{members["m1"].port,
                                static_cast<uint16_t>(std::stoi(
                                  peer.substr(peer.rfind(':') + 1)))}));
  // The table shows the links.
  auto o = opts();
  o.env["TROUPE_NODE"] = "127.0.0.1:" + std::to_string(members["m2"].port);
  o.env["TROUPE_TOKEN"] = viewer();
  auto text = troupe::test::run_process(args({"members"}), o);
  EXPECT_TRUE(contains(text.out, "LINK")) << text.out;
  EXPECT_TRUE(contains(text.out, "connected")) << text.out;
}

TEST_F(Mesh, AMemberKilledWithSigkillTurnsSuspectThenDownBeforeItsTtl) {
  start_etcd();
  // A 10 s TTL: down within the bound below only through the mesh and a
  // revocation, never through the lease's expiry.
  lease_ttl = "10s";
  for (auto name : {"m1", "m2", "m3"})
    join(name);
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2", "m3"});
    },
    10s))
    << all_logs();
  auto incarnation = entry("m1", "m3")["incarnation"].get<std::string>();
  members["m3"].proc->signal(SIGKILL);
  ASSERT_TRUE(members["m3"].proc->wait(5s));
  for (auto viewer : {"m1", "m2"}) {
    auto seen = states_until(viewer, "m3", "down", 5s);
    // up, then perhaps suspect (it lasts milliseconds), then down; never
    // back to up.
    ASSERT_EQ(seen.back(), "down") << viewer << ": " << joined(seen) << "\n"
                                   << all_logs();
    for (size_t i = 1; i < seen.size(); ++i)
      EXPECT_TRUE(
        (seen[i - 1] == "up" && (seen[i] == "suspect" || seen[i] == "down"))
        || (seen[i - 1] == "suspect" && seen[i] == "down"))
        << viewer << ": " << joined(seen);
    // It was suspected over the mesh first.
    EXPECT_TRUE(
      contains(members[viewer].proc->err(),
               "member 'm3' (incarnation " + incarnation + ") is suspect"))
      << members[viewer].proc->err();
  }
  // The elected detector revoked exactly that incarnation's lease.
  EXPECT_TRUE(contains(all_logs(), "revoked the lease of suspect member 'm3' "
                                   "(incarnation "
                                     + incarnation + ")"))
    << all_logs();
  auto down = entry("m1", "m3");
  EXPECT_EQ(down["link"], nullptr) << down;
  EXPECT_TRUE(down.contains("down_for_ms")) << down;
  // The two others stay linked and up.
  EXPECT_TRUE(all_linked({"m1", "m2"}));
}

TEST_F(Mesh, AStoppedMemberIsDeclaredDownAndRejoinsAfterSigcont) {
  start_etcd();
  lease_ttl = "10s";
  for (auto name : {"m1", "m2", "m3"})
    join(name);
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2", "m3"});
    },
    10s))
    << all_logs();
  auto first = entry("m1", "m3")["incarnation"].get<std::string>();
  members["m3"].proc->signal(SIGSTOP);
  // Its heartbeats stop: suspect after the connection timeout (1 s), then
  // revoked; well before its 10 s TTL.
  for (auto viewer : {"m1", "m2"}) {
    auto seen = states_until(viewer, "m3", "down", 6s);
    EXPECT_EQ(seen.back(), "down") << viewer << ": " << joined(seen) << "\n"
                                   << all_logs();
  }
  EXPECT_TRUE(contains(all_logs(), "revoked the lease of suspect member 'm3' "
                                   "(incarnation "
                                     + first + ")"))
    << all_logs();
  members["m3"].proc->signal(SIGCONT);
  // It finds its lease gone, fences itself and rejoins as a new incarnation,
  // and the others link to it again.
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto viewer : {"m1", "m2"}) {
        auto e = entry(viewer, "m3");
        if (!e.is_object() || e["incarnation"] == first || e["state"] != "up"
            || e["link"] != "connected")
          return false;
      }
      return true;
    },
    10s))
    << all_logs();
  auto err = members["m3"].proc->err();
  EXPECT_TRUE(contains(err, "lost its registration")) << err;
  EXPECT_TRUE(contains(err, "joined cluster 'c1' again")) << err;
  // The woken member's own lost links revoked nobody: m1 and m2 keep their
  // first incarnations.
  EXPECT_TRUE(all_linked({"m1", "m2", "m3"})) << all_logs();
  EXPECT_FALSE(contains(all_logs(), "member 'm1' lost its registration"));
  EXPECT_FALSE(contains(all_logs(), "member 'm2' lost its registration"));
}

TEST_F(Mesh, AMemberWithAnotherSecretIsRefusedAndNeverLinked) {
  start_etcd();
  join("m1");
  join("m2");
  cluster_secret = "another-secret-0123456789abcdef";
  join("m3");
  // m1 and m2 (whose names sort first, so they connect) refuse it, and say
  // why; it is never linked.
  for (auto viewer : {"m1", "m2"}) {
    ASSERT_TRUE(wait_until(
      [&] {
        auto e = entry(viewer, "m3");
        EXPECT_NE(e.value("link", ""), "connected") << viewer << ": " << e;
        return e.value("link", "") == "refused";
      },
      10s))
      << all_logs();
    auto e = entry(viewer, "m3");
    EXPECT_TRUE(contains(e.value("reason", ""), "cluster secret")) << e;
    EXPECT_TRUE(contains(members[viewer].proc->err(), "refused member 'm3'"))
      << members[viewer].proc->err();
  }
  // m3's side: m1 and m2 sent it no proof; it never counts them linked.
  for (auto about : {"m1", "m2"})
    EXPECT_NE(entry("m3", about).value("link", ""), "connected");
  EXPECT_TRUE(all_linked({"m1", "m2"}));
  // Neither secret shows in any log.
  EXPECT_FALSE(contains(all_logs(), "0123456789abcdef")) << all_logs();
}

TEST_F(Mesh, AMemberWithoutTheSecretSeesTheOthersRefuseItsProof) {
  start_etcd();
  join("m2");
  cluster_secret = "another-secret-0123456789abcdef";
  // a1 sorts first, so it connects to m2: m2's proof does not match its
  // secret, and it says so.
  join("a1");
  ASSERT_TRUE(wait_until(
    [&] { return entry("a1", "m2").value("link", "") == "refused"; }, 10s))
    << all_logs();
  EXPECT_TRUE(
    contains(members["a1"].proc->err(), "refused member 'm2' at 127.0.0.1:"))
    << members["a1"].proc->err();
  EXPECT_NE(entry("m2", "a1").value("link", ""), "connected");
}

TEST_F(Mesh, AMissingOrShortSecretOrMeshTlsExitsTwo) {
  auto url = "http://127.0.0.1:" + std::to_string(troupe::test::free_port());
  cluster_secret = std::nullopt;
  auto none = troupe(member_args("m1", url));
  EXPECT_EQ(none.exit_code, 2) << none.err;
  EXPECT_TRUE(contains(none.err, "TROUPE_CLUSTER_SECRET")) << none.err;
  cluster_secret = "short-secret";
  auto shorter = troupe(member_args("m1", url));
  EXPECT_EQ(shorter.exit_code, 2) << shorter.err;
  EXPECT_TRUE(contains(shorter.err, "TROUPE_CLUSTER_SECRET must hold at "
                                    "least 16"))
    << shorter.err;
  EXPECT_FALSE(contains(shorter.err, "short-secret")) << shorter.err;
  auto missing_file = member_args("m1", url);
  missing_file.insert(
    missing_file.end(),
    {"--set", "cluster.secret_file=" + (dir.path() / "nope").string()});
  cluster_secret = std::nullopt;
  auto nofile = troupe(missing_file);
  EXPECT_EQ(nofile.exit_code, 2) << nofile.err;
  EXPECT_TRUE(contains(nofile.err, "cannot read cluster.secret_file"))
    << nofile.err;
  cluster_secret = "cluster-secret-0123456789abcdef";
  auto tls = member_args("m1", url);
  tls.insert(tls.end(), {"--set", "cluster.tls_cert=/x.pem"});
  auto refused = troupe(tls);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_TRUE(contains(refused.err, "cluster.tls_cert")) << refused.err;
  // Mutual TLS needs all three files (tests/e2e/cluster_tls_test.cpp).
  EXPECT_TRUE(contains(refused.err, "cluster.tls_key and cluster.tls_ca are "
                                    "not set"))
    << refused.err;
}

TEST_F(Mesh, ABadClusterListenAddressExitsTwo) {
  auto url = "http://127.0.0.1:" + std::to_string(troupe::test::free_port());
  auto bad = member_args("m1", url);
  bad.insert(bad.end(), {"--set", "cluster.listen=127.0.0.1:99999"});
  auto r = troupe(bad);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "cluster.listen")) << r.err;
  // A well-formed address that is not this machine's cannot be listened on.
  auto foreign = member_args("m1", url);
  foreign.insert(foreign.end(), {"--set", "cluster.listen=192.0.2.1:0"});
  auto f = troupe(foreign);
  EXPECT_EQ(f.exit_code, 2) << f.err;
  EXPECT_TRUE(contains(f.err, "cannot listen for cluster peers on 192.0.2.1"))
    << f.err;
  EXPECT_TRUE(contains(f.err, "(cluster.listen)")) << f.err;
}

namespace {

/// Steps spread across members: placement, `on:` labels and member_down.
struct Steps : Mesh {};

} // namespace

TEST_F(Steps, ASpreadFanOutSubmittedToOneMemberRunsOnAllThree) {
  three_linked();
  auto wf = fan_out(30, "    placement: spread\n");
  auto r = cli("m1", {"submit", wf, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << all_logs();
  auto lines = ledger_lines();
  EXPECT_EQ(lines.size(), 30u);
  std::map<std::string, int> by_member;
  for (auto& l : lines)
    ++by_member[l[0]];
  EXPECT_EQ(by_member.size(), 3u);
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_GE(by_member[name], 5) << name;
  // The journal says who ran each step, and so do history and status.
  std::smatch id;
  auto out = r.out;
  ASSERT_TRUE(
    std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
    << out;
  auto run = id[0].str();
  std::map<std::string, std::string> ran_on;
  for (auto& l : lines)
    ran_on[l[1]] = l[0];
  auto h
    = json::parse(cli("m1", {"--json", "history", run}).out, nullptr, false);
  int completed = 0;
  for (auto& e : h["events"])
    if (e["type"] == "node_completed") {
      ++completed;
      EXPECT_EQ(e.value("member", ""), ran_on[e["node"]]) << e;
    }
  EXPECT_EQ(completed, 30);
  auto text = cli("m1", {"history", run}).out;
  EXPECT_TRUE(contains(text, "(member m3)")) << text;
  auto st
    = json::parse(cli("m1", {"--json", "status", run}).out, nullptr, false);
  ASSERT_EQ(st["nodes"].size(), 30u) << st;
  for (auto& n : st["nodes"])
    EXPECT_EQ(n.value("member", ""), ran_on[n["id"]]) << n;
}

TEST_F(Steps, AnOnConstraintPlacesStepsOnlyOnMembersWithTheLabel) {
  three_linked();
  auto wf = fan_out(9, "    placement: spread\n    on: {zone: z-m2}\n");
  auto r = cli("m1", {"submit", wf, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << all_logs();
  auto lines = ledger_lines();
  EXPECT_EQ(lines.size(), 9u);
  for (auto& l : lines)
    EXPECT_EQ(l[0], "m2");
  // No member has the label: the attempt fails as no_member.
  auto none = fan_out(1, "    on: {zone: nowhere}\n"
                         "    retry: {max_attempts: 1}\n");
  auto f = cli("m1", {"submit", none, "--wait"});
  EXPECT_NE(f.exit_code, 0) << f.out;
  EXPECT_TRUE(contains(f.out + f.err, "no member that is up and linked has the "
                                      "labels zone=nowhere"))
    << f.out << f.err;
}

TEST_F(Steps,
       AttemptsOnAMemberKilledWithSigkillFailAsMemberDownAndRunElsewhere) {
  three_linked();
  // Long steps with a long timeout: only member_down can end them early.
  auto wf = fan_out(6,
                    "    placement: spread\n    timeout: 60s\n"
                    "    retry: {max_attempts: 3, initial_backoff: 10ms}\n",
                    "sleep 3");
  auto submitted = cli("m1", {"submit", wf});
  ASSERT_EQ(submitted.exit_code, 0) << submitted.err;
  std::smatch id;
  auto out = submitted.out;
  ASSERT_TRUE(
    std::regex_search(out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
    << out;
  auto run = id[0].str();
  // Kill m3 once it runs a step.
  ASSERT_TRUE(wait_until(
    [&] {
      for (auto& l : ledger_lines())
        if (l[0] == "m3")
          return true;
      return false;
    },
    10s))
    << all_logs();
  auto killed_at = std::chrono::steady_clock::now();
  members["m3"].proc->signal(SIGKILL);
  members["m3"].proc->wait(5s);
  // The run completes long before the steps' own 60s timeout.
  json status;
  ASSERT_TRUE(wait_until(
    [&] {
      auto s = cli("m1", {"--json", "status", run});
      status = json::parse(s.out, nullptr, false);
      return !status.is_discarded() && status.value("state", "") != "running";
    },
    20s))
    << all_logs();
  EXPECT_EQ(status["state"], "completed") << status;
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, 20s);
  auto h = cli("m1", {"--json", "history", run});
  auto events = json::parse(h.out, nullptr, false)["events"];
  std::map<std::string, int> completed;
  int member_down = 0;
  for (auto& e : events) {
    if (e["type"] == "node_completed") {
      ++completed[e["node"].get<std::string>()];
      EXPECT_NE(e.value("member", ""), "m3") << e;
    }
    if (e["type"] == "attempt_failed" && e["error_kind"] == "member_down") {
      ++member_down;
      // Failed at once, not after the 60s timeout.
      EXPECT_TRUE(contains(e["message"].get<std::string>(), "'m3'")) << e;
      EXPECT_EQ(e.value("member", ""), "m3") << e;
    }
  }
  EXPECT_GE(member_down, 1) << events;
  EXPECT_EQ(completed.size(), 6u) << events;
  for (auto& [node, n] : completed)
    EXPECT_EQ(n, 1) << node;
}

TEST_F(Steps, ABadPlacementOrOnIsRefusedNamingTheField) {
  auto path = (dir.path() / "bad.yaml").string();
  std::ofstream{path} << "name: bad\nnodes:\n"
                         "  a: {kind: exec, command: [\"true\"], placement: "
                         "everywhere}\n"
                         "  b: {kind: exec, command: [\"true\"], on: [x]}\n";
  auto r = troupe({"validate", path});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err + r.out, "nodes.a.placement")) << r.err;
  EXPECT_TRUE(contains(r.err + r.out, "unknown placement 'everywhere'"))
    << r.err;
  EXPECT_TRUE(contains(r.err + r.out, "nodes.b.on")) << r.err;
}

TEST_F(Steps, ANodeAloneRunsEverythingItselfAndItsChildrenSeeWhoTheyAre) {
  auto path = (dir.path() / "env.yaml").string();
  std::ofstream{path}
    << "name: env\nnodes:\n  a:\n    kind: exec\n    placement: spread\n"
       "    command: [\"sh\", \"-c\", \"printf '{\\\"m\\\": \\\"%s\\\", "
       "\\\"r\\\": \\\"%s\\\", \\\"n\\\": \\\"%s\\\", \\\"t\\\": \\\"%s\\\"}' "
       "$TROUPE_MEMBER $TROUPE_RUN_ID $TROUPE_NODE_ID $TROUPE_ATTEMPT\"]\n"
       "outputs:\n  out: \"{{ nodes.a.output }}\"\n";
  auto check = [](const std::string& text, const std::string& member) {
    auto j = json::parse(text.substr(text.find('{')), nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << text;
    EXPECT_EQ(j["out"]["m"], member) << j;
    EXPECT_EQ(j["out"]["n"], "a") << j;
    EXPECT_EQ(j["out"]["t"], "1") << j;
    EXPECT_EQ(j["out"]["r"].get<std::string>().size(), 21u) << j;
  };
  // The embedded default.
  auto r = troupe({"run", path, "--data-dir", (dir.path() / "emb").string(),
                   "--set", "node.name=solo"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  check(r.out, "solo");
  // A node started alone.
  launch("alone",
         {"node", "start", "--data-dir", (dir.path() / "alone").string(),
          "--listen", "127.0.0.1:0", "--name", "lone"});
  ASSERT_FALSE(HasFatalFailure());
  auto s = cli("alone", {"submit", path, "--wait"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  check(s.out, "lone");
}

// A member cut off from etcd past its lease's TTL is fenced: attempts it
// started before go on, but it starts none until it has joined again.
TEST_F(Steps, AMemberCutOffFromEtcdStartsNoAttemptUntilItRejoins) {
  start_etcd();
  lease_ttl = "1s";
  join("m1");
  auto first = entry("m1", "m1").value("incarnation", std::string{});
  ASSERT_FALSE(first.empty());
  // Whether m1 holds a live registration now, as ping says.
  auto joined = [&]() -> std::optional<bool> {
    troupe::test::frame_client c{members["m1"].port};
    if (!c.hello(viewer()))
      return std::nullopt;
    auto pong = c.call({{"t", "ping"}}, 1);
    if (!pong || !(*pong)["body"]["cluster"].is_object())
      return std::nullopt;
    return (*pong)["body"]["cluster"].value("joined", true);
  };
  auto state_of = [&](const std::string& run) {
    auto s
      = json::parse(cli("m1", {"--json", "status", run}).out, nullptr, false);
    return s.is_discarded() ? std::string{} : s.value("state", "");
  };
  // An attempt started before the fence: it outlasts etcd's absence.
  auto before = (dir.path() / "before.yaml").string();
  auto before_ledger = (dir.path() / "before-ledger").string();
  std::ofstream{before} << "name: before\nnodes:\n  long:\n    kind: exec\n"
                           "    timeout: 60s\n"
                           "    command: [\"sh\", \"-c\", \"echo start >> "
                        << before_ledger << "; sleep 6; echo end >> "
                        << before_ledger << "\"]\n";
  auto b = cli("m1", {"submit", before});
  ASSERT_EQ(b.exit_code, 0) << b.out << b.err;
  auto before_run = run_id(b.out);
  auto read = [](const std::string& path) {
    std::ifstream in{path};
    return std::string{std::istreambuf_iterator<char>{in}, {}};
  };
  ASSERT_TRUE(
    wait_until([&] { return contains(read(before_ledger), "start"); }, 10s))
    << members["m1"].proc->err();

  // etcd goes; once the lease may have expired, m1 says it is not joined.
  etcd->stop();
  ASSERT_TRUE(wait_until([&] { return joined() == false; }, 15s))
    << members["m1"].proc->err();
  // That attempt spans the fence.
  EXPECT_FALSE(contains(read(before_ledger), "end"));

  // A submission is taken (the journal is the member's own), but its exec
  // step does not start while m1 is fenced.
  auto wf = fan_out(1, "    timeout: 60s\n");
  auto s = cli("m1", {"submit", wf});
  ASSERT_EQ(s.exit_code, 0) << s.out << s.err;
  auto fenced_run = run_id(s.out);
  // Bounded negative check, paired with the positive one below: nothing
  // ran for 2 s while fenced (and m1 is still fenced at the end of it).
  auto until = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(ledger_lines().empty()) << read(ledger);
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(joined(), false) << "etcd is down: m1 must still be fenced";
  EXPECT_TRUE(ledger_lines().empty());
  // inspect run says why it waits.
  json inspected;
  ASSERT_TRUE(wait_until(
    [&] {
      troupe::test::raw_session viewer_session{members["m1"].port, viewer()};
      inspected = viewer_session.call(
        {{"t", "inspect"}, {"what", "run"}, {"run_id", fenced_run}});
      return contains(inspected.dump(),
                      "member fenced: not joined to the cluster");
    },
    10s))
    << inspected << members["m1"].proc->err();
  // The attempt started before the fence ends normally meanwhile.
  ASSERT_TRUE(
    wait_until([&] { return state_of(before_run) == "completed"; }, 15s))
    << state_of(before_run) << members["m1"].proc->err();
  EXPECT_TRUE(contains(read(before_ledger), "end"));

  // etcd is back: m1 joins again as a new incarnation, and the step runs.
  ASSERT_TRUE(etcd->restart()) << etcd->log();
  ASSERT_TRUE(wait_until(
    [&] {
      auto me = entry("m1", "m1");
      return joined() == true && me.is_object()
             && me.value("incarnation", first) != first;
    },
    20s))
    << members["m1"].proc->err();
  ASSERT_TRUE(
    wait_until([&] { return state_of(fenced_run) == "completed"; }, 15s))
    << state_of(fenced_run) << members["m1"].proc->err();
  auto lines = ledger_lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0][0], "m1");
}

TEST_F(Steps, RunsSubmittedToAMemberLiveInPartitionsItOwns) {
  start_etcd();
  join("m1");
  join("m2");
  auto wf = fan_out(1, "");
  std::map<std::string, std::string> submitted_to;
  for (int i = 0; i < 4; ++i)
    for (auto name : {"m1", "m2"}) {
      auto r = cli(name, {"submit", wf});
      ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
      std::smatch id;
      ASSERT_TRUE(
        std::regex_search(r.out, id, std::regex{"[0-9a-f]{12}-[0-9a-f]{8}"}))
        << r.out;
      submitted_to[id[0].str()] = name;
    }
  // Who leads what, as etcd has it: the partitions' leader keys, and
  // their mod_revisions (the epochs).
  troupe::cluster::etcd::client c{{{etcd->url()}}};
  auto leaders = [&] {
    std::map<uint32_t, std::pair<std::string, int64_t>> out;
    auto all = c.range_prefix("/troupe/c1/partition/");
    EXPECT_TRUE(all) << all.err.message;
    for (auto& kv :
         all ? all->kvs : std::vector<troupe::cluster::etcd::key_value>{})
      if (kv.key.ends_with("/leader"))
        out[static_cast<uint32_t>(std::stoul(
          kv.key.substr(std::string{"/troupe/c1/partition/"}.size(), 4)))]
          = {kv.value, kv.mod_revision};
    return out;
  };
  auto owners = [&] {
    std::map<uint32_t, std::string> out;
    for (auto& [p, leader] : leaders())
      out[p] = leader.first;
    return out;
  };
  auto before = owners();
  std::map<std::string, int> owned;
  for (auto& [p, m] : before)
    ++owned[m];
  EXPECT_EQ(owned, (std::map<std::string, int>{{"m1", 8}, {"m2", 8}}));
  auto count = c.get("/troupe/c1/partition_count");
  ASSERT_TRUE(count && count->has_value());
  EXPECT_EQ((*count)->value, "64");
  // Each run's id names a partition its member owns.
  for (auto& [id, name] : submitted_to) {
    auto p
      = static_cast<uint32_t>(std::stoul(id.substr(13, 2), nullptr, 16)) % 64;
    EXPECT_EQ(before[p], name) << id;
  }
  // Killed and started again on its data dir, m1 leads the same partitions
  // and takes no more; nobody else took them meanwhile (one replica: no
  // in-sync copy elsewhere), and it leads them at a new epoch.
  auto epochs = leaders();
  members["m1"].proc->signal(SIGKILL);
  members["m1"].proc->wait(10s);
  join("m1");
  EXPECT_EQ(owners(), before);
  EXPECT_TRUE(wait_until(
    [&] {
      auto now = leaders();
      for (auto& [p, leader] : now)
        if (leader.first == "m1" && leader.second <= epochs[p].second)
          return false;
      return true;
    },
    10s))
    << all_logs();
  for (auto& [id, name] : submitted_to) {
    if (name != "m1")
      continue;
    EXPECT_TRUE(wait_until(
      [&] {
        auto s = json::parse(cli("m1", {"--json", "status", id}).out, nullptr,
                             false);
        return !s.is_discarded() && s.value("state", "") == "completed";
      },
      10s))
      << id;
  }
}
