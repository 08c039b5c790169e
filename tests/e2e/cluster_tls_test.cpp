// Security between members and toward etcd, with real `troupe node start
// --cluster` members on 127.0.0.1 and their own etcd on free ports:
// mutual TLS on the mesh (three members link, elect a detector and spread
// steps; a member with a certificate from another CA, or without TLS, is
// never linked, and the others' links hold while it knocks), etcd over
// https:// with client certificates, etcd's users and passwords, and bad
// TLS or password settings (exit 2 naming the key). Certificates are made
// at test time in the test's temp dir.

#include "runtime/auth/token.hpp"
#include "tests/support/cluster_fixture.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/process.hpp"
#include "tests/support/raw_session.hpp"
#include "tests/support/test_certs.hpp"
#include "tests/support/troupe_fixture.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

using namespace std::chrono_literals;
using troupe::test::cert_files;
using troupe::test::contains;
using troupe::test::etcd_options;
using troupe::test::test_ca;
using troupe::test::wait_until;
using json = nlohmann::json;
namespace auth = troupe::runtime::auth;

namespace {

/// Members without an HTTP endpoint; certificates of two CAs.
struct ClusterTls : troupe::test::cluster_fixture {
  static constexpr const char* etcd_password = "etcd-pw-5c1e0a7d93b4";

  test_ca ca{dir.path(), "cluster"};
  test_ca other{dir.path(), "other"};
  /// TROUPE_CLUSTER_ETCD_PASSWORD of members started from now on.
  std::optional<std::string> password;

  void SetUp() override {
    ASSERT_TRUE(ca.ok()) << ca.error();
    ASSERT_TRUE(other.ok()) << other.error();
  }

  troupe::test::process_options opts() override {
    auto o = cluster_fixture::opts();
    o.env["TROUPE_CLUSTER_ETCD_PASSWORD"] = password;
    return o;
  }

  /// The flags of mutual TLS on the mesh with `files` and the CA `trust`.
  static std::vector<std::string> mesh_tls(const cert_files& files,
                                           const std::string& trust) {
    return {"--set", "cluster.tls_cert=" + files.cert,
            "--set", "cluster.tls_key=" + files.key,
            "--set", "cluster.tls_ca=" + trust};
  }
};

} // namespace

TEST_F(ClusterTls, ThreeMembersWithMutualTlsLinkElectADetectorAndSpreadSteps) {
  start_etcd();
  for (auto name : {"m1", "m2", "m3"})
    join(name, mesh_tls(ca.issue(name), ca.cert()));
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2", "m3"});
    },
    15s))
    << all_logs();
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_TRUE(contains(members[name].proc->err(), "; mutual TLS)"))
      << members[name].proc->err();
  // One detector, the same for everyone.
  std::set<std::string> detectors;
  for (auto name : {"m1", "m2", "m3"}) {
    json j;
    ASSERT_TRUE(wait_until(
      [&] {
        j = json::parse(cli(name, {"members", "--json"}).out, nullptr, false);
        return !j.is_discarded() && j.contains("detector");
      },
      5s));
    detectors.insert(j.value("detector", ""));
  }
  EXPECT_EQ(detectors.size(), 1u);
  // Steps spread over the TLS links: every member runs some.
  auto ledger = (dir.path() / "ledger").string();
  auto wf = (dir.path() / "fan.yaml").string();
  {
    std::ofstream out{wf};
    out << "name: fan\nnodes:\n";
    for (int i = 0; i < 12; ++i)
      out << "  s" << i << ":\n    kind: exec\n    placement: spread\n"
          << "    command: [\"sh\", \"-c\", \"echo $TROUPE_MEMBER >> " << ledger
          << "\"]\n";
  }
  auto r = cli("m1", {"submit", wf, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err << all_logs();
  std::map<std::string, int> by_member;
  std::ifstream in{ledger};
  for (std::string m; in >> m;)
    ++by_member[m];
  EXPECT_EQ(by_member.size(), 3u);
  for (auto name : {"m1", "m2", "m3"})
    EXPECT_GE(by_member[name], 2) << name;
  EXPECT_FALSE(contains(all_logs(), "is suspect")) << all_logs();
}

TEST_F(ClusterTls, AMemberWithAnotherCaOrWithoutTlsIsNeverLinked) {
  start_etcd();
  join("m1", mesh_tls(ca.issue("m1"), ca.cert()));
  join("m2", mesh_tls(ca.issue("m2"), ca.cert()));
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2"});
    },
    10s))
    << all_logs();
  // a0 has a certificate and CA of another cluster; m3 has no TLS at all
  // (the same cluster secret, so only TLS keeps them apart).
  join("a0", mesh_tls(other.issue("a0"), other.cert()));
  join("m3");
  // The TLS members refuse the one with another CA, saying the handshake
  // failed. The one without TLS is never linked either; whether CAF reports
  // that as a failed handshake or as a failed connect depends on timing, so
  // it shows as refused or as still connecting.
  for (auto viewer : {"m1", "m2"})
    for (auto about : {"a0", "m3"}) {
      bool plain = std::string{about} == "m3";
      ASSERT_TRUE(wait_until(
        [&] {
          auto e = entry(viewer, about);
          EXPECT_NE(e.value("link", ""), "connected")
            << viewer << " about " << about << ": " << e;
          auto link = e.value("link", "");
          return link == "refused"
                 || (plain && link == "connecting"
                     && contains(all_logs(), "cannot link to member 'm3'"));
        },
        10s))
        << viewer << " about " << about << "\n"
        << all_logs();
      auto e = entry(viewer, about);
      if (e.value("link", "") == "refused") {
        EXPECT_TRUE(contains(e.value("reason", ""), "TLS handshake failed"))
          << e;
      }
    }
  // Nobody counts the strangers linked, nor they anybody.
  for (auto stranger : {"a0", "m3"})
    for (auto about : {"m1", "m2"})
      EXPECT_NE(entry(stranger, about).value("link", ""), "connected")
        << stranger << " about " << about;
  // While they keep trying, the TLS members' own link holds: a failed
  // handshake does not spill into the healthy link (bounded: 4 s).
  auto until = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(all_linked({"m1", "m2"})) << all_logs();
    std::this_thread::sleep_for(200ms);
  }
  for (auto name : {"m1", "m2"})
    EXPECT_FALSE(contains(members[name].proc->err(), "is suspect"))
      << members[name].proc->err();
}

TEST_F(ClusterTls, BadTlsFilesOrPasswordFilesExitTwoNamingTheKeyAndFile) {
  auto url = "http://127.0.0.1:" + std::to_string(troupe::test::free_port());
  auto good = ca.issue("m1");
  auto stranger = other.issue("m1");
  auto missing = (dir.path() / "missing.pem").string();
  auto text = dir.write("text.pem", "not a certificate\n").string();
  auto refused = [&](std::vector<std::string> extra, const std::string& url_,
                     std::vector<std::string> needles) {
    auto r = troupe(member_args("m1", url_, std::move(extra)));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    for (auto& n : needles)
      EXPECT_TRUE(contains(r.err, n)) << n << "\n" << r.err;
  };
  // Each key alone.
  refused({"--set", "cluster.tls_cert=" + good.cert}, url,
          {"cluster.tls_cert", "cluster.tls_key and cluster.tls_ca are not "
                               "set"});
  refused({"--set", "cluster.tls_key=" + good.key}, url, {"cluster.tls_key"});
  refused({"--set", "cluster.tls_ca=" + ca.cert()}, url, {"cluster.tls_ca"});
  // Missing, unreadable (a folder), not PEM.
  refused(mesh_tls({missing, good.key}, ca.cert()), url,
          {"cluster.tls_cert (" + missing + ") does not exist"});
  refused(mesh_tls(good, dir.path().string()), url,
          {"cluster.tls_ca (" + dir.path().string() + ") is a directory"});
  refused(mesh_tls({good.cert, text}, ca.cert()), url,
          {"cluster.tls_key (" + text + ") holds no PEM private key"});
  refused(mesh_tls({text, good.key}, ca.cert()), url,
          {"cluster.tls_cert (" + text + ") holds no PEM certificate"});
  // A key of another certificate; a certificate the CA did not sign.
  refused(mesh_tls({good.cert, stranger.key}, ca.cert()), url,
          {"cluster.tls_key (" + stranger.key
           + ") does not match the certificate in cluster.tls_cert"});
  refused(mesh_tls(stranger, ca.cert()), url,
          {"cluster.tls_cert (" + stranger.cert
           + ") does not verify against cluster.tls_ca"});
  // etcd's files, the same way.
  auto https = "https://127.0.0.1:" + std::to_string(troupe::test::free_port());
  refused({"--set", "cluster.etcd_ca=" + missing}, https,
          {"cluster.etcd_ca (" + missing + ") does not exist"});
  refused({"--set", "cluster.etcd_cert=" + good.cert, "--set",
           "cluster.etcd_key=" + stranger.key},
          https, {"cluster.etcd_key (" + stranger.key + ") does not match"});
  refused({"--set", "cluster.etcd_cert=" + good.cert}, https,
          {"cluster.etcd_cert", "cluster.etcd_key"});
  // The etcd password: a file that cannot be read, or given as a flag.
  refused({"--set", "cluster.etcd_username=root", "--set",
           "cluster.etcd_password_file=" + missing},
          url, {"cannot read cluster.etcd_password_file " + missing});
  auto flag = troupe(
    member_args("m1", url,
                {"--set", "cluster.etcd_username=root", "--set",
                 std::string{"cluster.etcd_password="} + etcd_password}));
  EXPECT_EQ(flag.exit_code, 2) << flag.err;
  EXPECT_TRUE(contains(flag.err, "cluster.etcd_password: a password may not "
                                 "be written in a config file or given as a "
                                 "flag"))
    << flag.err;
  EXPECT_FALSE(contains(flag.err, etcd_password)) << flag.err;
  refused({"--set", "cluster.etcd_username=root"}, url,
          {"etcd user 'root' needs a password"});
  // Nothing was started or created.
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "data-m1"));
}

TEST_F(ClusterTls, MembersJoinEtcdOverHttpsAndAWrongCaExitsThree) {
  auto server = ca.issue("etcd");
  auto client = ca.issue("client");
  start_etcd(etcd_options::mutual_tls(ca.cert(), server.cert, server.key,
                                      client.cert, client.key));
  ASSERT_TRUE(etcd->url().starts_with("https://"));
  auto etcd_tls
    = std::vector<std::string>{"--set", "cluster.etcd_ca=" + ca.cert(),
                               "--set", "cluster.etcd_cert=" + client.cert,
                               "--set", "cluster.etcd_key=" + client.key};
  join("m1", etcd_tls);
  join("m2", etcd_tls);
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2"});
    },
    10s))
    << all_logs();
  // Their keys are in etcd, read over TLS.
  auto got = etcd->etcdctl({"get", "--prefix", "--keys-only", "/troupe/c1/"});
  EXPECT_TRUE(contains(got.out, "/troupe/c1/members/m1")) << got.out << got.err;
  // A CA that did not sign etcd's certificate: a clear error, exit 3.
  auto wrong = troupe(member_args("m3", etcd->url(),
                                  {"--set", "cluster.etcd_ca=" + other.cert(),
                                   "--set", "cluster.etcd_cert=" + client.cert,
                                   "--set", "cluster.etcd_key=" + client.key}));
  EXPECT_EQ(wrong.exit_code, 3) << wrong.err;
  EXPECT_TRUE(contains(wrong.err, "cannot join cluster 'c1'")) << wrong.err;
  EXPECT_TRUE(contains(wrong.err, "certificate verify failed")) << wrong.err;
  EXPECT_TRUE(contains(wrong.err, "cluster.etcd_ca")) << wrong.err;
  // No client certificate: etcd refuses the connection; exit 3 too.
  auto anonymous = troupe(
    member_args("m3", etcd->url(), {"--set", "cluster.etcd_ca=" + ca.cert()}));
  EXPECT_EQ(anonymous.exit_code, 3) << anonymous.err;
  EXPECT_TRUE(contains(anonymous.err, "TLS with etcd failed")) << anonymous.err;
}

TEST_F(ClusterTls, AMemberJoinsWithItsEtcdPasswordAndAWrongOneExitsThree) {
  start_etcd();
  for (auto args :
       {std::vector<std::string>{"user", "add",
                                 std::string{"root:"} + etcd_password},
        std::vector<std::string>{"user", "grant-role", "root", "root"},
        std::vector<std::string>{"auth", "enable"}}) {
    auto r = etcd->etcdctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto user = std::vector<std::string>{"--set", "cluster.etcd_username=root"};
  // From the environment, and from a file (mode 0600, trailing newline).
  password = etcd_password;
  join("m1", user);
  password = std::nullopt;
  auto file = dir.write("etcd-password", std::string{etcd_password} + "\n");
  std::filesystem::permissions(file, std::filesystem::perms::owner_read
                                       | std::filesystem::perms::owner_write);
  auto from_file = user;
  from_file.insert(from_file.end(),
                   {"--set", "cluster.etcd_password_file=" + file.string()});
  join("m2", from_file);
  ASSERT_TRUE(wait_until(
    [&] {
      return all_linked({"m1", "m2"});
    },
    10s))
    << all_logs();
  // A wrong password: a clear error naming the user, exit 3.
  password = "not-the-password-0000";
  auto wrong = troupe(member_args("m3", etcd->url(), user));
  EXPECT_EQ(wrong.exit_code, 3) << wrong.err;
  EXPECT_TRUE(contains(wrong.err, "etcd refused user 'root'")) << wrong.err;
  EXPECT_TRUE(contains(wrong.err, "authentication failed")) << wrong.err;
  EXPECT_FALSE(contains(wrong.err, "not-the-password-0000")) << wrong.err;
  // Without a user, etcd refuses the member; exit 3.
  password = std::nullopt;
  auto nobody = troupe(member_args("m3", etcd->url()));
  EXPECT_EQ(nobody.exit_code, 3) << nobody.err;
  // The password is in no log, and the node's configuration masks it.
  EXPECT_FALSE(contains(all_logs(), etcd_password)) << all_logs();
  troupe::test::raw_session s{members["m1"].port, token(auth::role::admin)};
  auto config = s.call({{"t", "inspect"}, {"what", "config"}});
  EXPECT_TRUE(contains(config.dump(), "cluster.etcd_password")) << config;
  EXPECT_FALSE(contains(config.dump(), etcd_password)) << config;
}
