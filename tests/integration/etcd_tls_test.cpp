// The etcd client over TLS and with etcd's users, against a real etcd on
// free loopback ports: https:// with the CA and a client certificate (etcd
// started with --client-cert-auth), a CA that did not sign etcd's
// certificate, a missing client certificate; a user that authenticates,
// a wrong password, and a token etcd forgot (etcd restarted) replaced
// without the caller noticing. Certificates are made at test time.

#include "cluster/etcd/client.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"
#include "tests/support/temp_dir.hpp"
#include "tests/support/test_certs.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

using namespace std::chrono_literals;
using troupe::cluster::etcd::client;
using troupe::cluster::etcd::client_options;
using troupe::cluster::etcd::error;
using troupe::test::cert_files;
using troupe::test::etcd_options;
using troupe::test::etcd_process;
using troupe::test::test_ca;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// An etcd serving https:// and checking client certificates.
struct EtcdTls : ::testing::Test {
  troupe::test::temp_dir dir;
  test_ca ca{dir.path(), "cluster"};
  test_ca other{dir.path(), "other"};
  cert_files server = ca.issue("etcd");
  cert_files member = ca.issue("member");
  std::unique_ptr<etcd_process> etcd;

  void SetUp() override {
    ASSERT_TRUE(ca.ok()) << ca.error();
    ASSERT_TRUE(other.ok()) << other.error();
    etcd = std::make_unique<etcd_process>(etcd_options::mutual_tls(
      ca.cert(), server.cert, server.key, member.cert, member.key));
    ASSERT_TRUE(etcd->ok()) << etcd->error();
  }

  client_options opts() {
    client_options o;
    o.endpoints = {etcd->url()};
    o.request_timeout = 1000ms;
    o.call_timeout = 3000ms;
    o.ca_file = ca.cert();
    o.cert_file = member.cert;
    o.key_file = member.key;
    return o;
  }
};

/// An etcd over plain HTTP with auth enabled (user root).
struct EtcdAuth : ::testing::Test {
  static constexpr const char* password = "root-pw-7f3a9c2e";
  std::unique_ptr<etcd_process> etcd;

  void SetUp() override {
    // Tokens unused for a second expire: a test can outwait one.
    etcd_options o;
    o.auth_token_ttl = 1;
    etcd = std::make_unique<etcd_process>(o);
    ASSERT_TRUE(etcd->ok()) << etcd->error();
    for (auto args :
         {std::vector<std::string>{"user", "add",
                                   std::string{"root:"} + password},
          std::vector<std::string>{"user", "grant-role", "root", "root"},
          std::vector<std::string>{"auth", "enable"}}) {
      auto r = etcd->etcdctl(args);
      ASSERT_EQ(r.exit_code, 0) << args[0] << " " << args[1] << ": " << r.err;
    }
  }

  client_options opts(const std::string& pw = password) {
    client_options o;
    o.endpoints = {etcd->url()};
    o.request_timeout = 1000ms;
    o.call_timeout = 3000ms;
    o.username = "root";
    o.password = pw;
    return o;
  }
};

} // namespace

TEST_F(EtcdTls, HttpsWithTheCaAndAClientCertificateReadsWritesAndWatches) {
  ASSERT_TRUE(etcd->url().starts_with("https://"));
  client c{opts()};
  auto rev = c.put("/t/a", "one");
  ASSERT_TRUE(rev) << rev.err.message;
  auto a = c.get("/t/a");
  ASSERT_TRUE(a) << a.err.message;
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->value, "one");
  auto lease = c.lease_grant(5);
  ASSERT_TRUE(lease) << lease.err.message;
  auto alive = c.lease_keepalive(lease->id);
  ASSERT_TRUE(alive) << alive.err.message;
  EXPECT_GT(*alive, 0);
  // A watch is one long HTTPS answer.
  auto w = c.watch_prefix("/t/", *rev + 1);
  ASSERT_TRUE(c.put("/t/b", "two"));
  std::vector<troupe::cluster::etcd::watch_event> seen;
  for (int i = 0; i < 50 && seen.empty(); ++i) {
    auto got = w->next(100ms);
    ASSERT_TRUE(got) << got.err.message;
    seen = *got;
  }
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].kv.key, "/t/b");
  EXPECT_EQ(seen[0].kv.value, "two");
}

TEST_F(EtcdTls, ACaThatDidNotSignEtcdsCertificateFailsSayingSo) {
  auto o = opts();
  o.ca_file = other.cert();
  o.call_timeout = 1500ms;
  client c{o};
  auto r = c.put("/t/a", "one");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err.what, error::kind::unreachable);
  EXPECT_TRUE(contains(r.err.message, "certificate verify failed"))
    << r.err.message;
  EXPECT_TRUE(contains(r.err.message, "not signed by the configured CA"))
    << r.err.message;
  // Plain HTTP to a TLS port is no answer either.
  auto plain = opts();
  plain.endpoints = {"http://127.0.0.1:" + std::to_string(etcd->client_port())};
  plain.call_timeout = 1500ms;
  client p{plain};
  EXPECT_FALSE(p.put("/t/a", "one"));
}

TEST_F(EtcdTls, WithoutAClientCertificateEtcdRefusesTheConnection) {
  auto o = opts();
  o.cert_file.clear();
  o.key_file.clear();
  o.call_timeout = 1500ms;
  client c{o};
  auto r = c.put("/t/a", "one");
  ASSERT_FALSE(r);
  EXPECT_TRUE(contains(r.err.message, "TLS with etcd failed")
              || contains(r.err.message, "certificate"))
    << r.err.message;
  // A certificate from another CA is refused the same way.
  auto stranger = other.issue("stranger");
  o.cert_file = stranger.cert;
  o.key_file = stranger.key;
  client s{o};
  EXPECT_FALSE(s.put("/t/a", "one"));
}

TEST_F(EtcdTls, UnusableTlsFilesMakeTheClientInvalid) {
  auto o = opts();
  o.ca_file = (dir.path() / "missing.pem").string();
  client c{o};
  auto r = c.get("/t/a");
  EXPECT_EQ(r.err.what, error::kind::invalid);
  EXPECT_TRUE(contains(r.err.message, "missing.pem")) << r.err.message;
  auto k = opts();
  k.key_file = other.cert(); // not a key
  client d{k};
  EXPECT_EQ(d.get("/t/a").err.what, error::kind::invalid);
}

TEST_F(EtcdTls, WithAuthOnAClientCertificateWithoutCommonNameAndAUserWork) {
  // etcd 3.4's gateway refuses a client certificate with a CommonName once
  // auth is on; one without, plus a user, is the way (docs/cluster.md).
  for (auto args :
       {std::vector<std::string>{"user", "add", "root:root-pw-1"},
        std::vector<std::string>{"user", "grant-role", "root", "root"},
        std::vector<std::string>{"auth", "enable"}}) {
    auto r = etcd->etcdctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  auto named = opts();
  named.username = "root";
  named.password = "root-pw-1";
  client with_cn{named};
  auto refused = with_cn.put("/t/a", "one");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err.what, error::kind::refused);
  EXPECT_TRUE(contains(refused.err.message, "CommonName"))
    << refused.err.message;
  auto anonymous = ca.issue("anonymous", "/O=troupe");
  auto o = named;
  o.cert_file = anonymous.cert;
  o.key_file = anonymous.key;
  client c{o};
  auto rev = c.put("/t/a", "one");
  ASSERT_TRUE(rev) << rev.err.message;
}

TEST_F(EtcdAuth, AUserAuthenticatesAndAnotherClientWithoutOneIsRefused) {
  // The first endpoint is down: authenticating fails over like any call.
  auto o = opts();
  o.endpoints.insert(o.endpoints.begin(),
                     "http://127.0.0.1:"
                       + std::to_string(troupe::test::free_port()));
  client c{o};
  auto rev = c.put("/t/a", "one");
  ASSERT_TRUE(rev) << rev.err.message;
  auto a = c.get("/t/a");
  ASSERT_TRUE(a && a->has_value()) << a.err.message;
  auto w = c.watch_prefix("/t/", *rev + 1);
  ASSERT_TRUE(c.put("/t/b", "two"));
  bool seen = false;
  for (int i = 0; i < 50 && !seen; ++i) {
    auto got = w->next(100ms);
    ASSERT_TRUE(got) << got.err.message;
    seen = !got->empty();
  }
  EXPECT_TRUE(seen);
  auto anon = opts();
  anon.username.clear();
  anon.password.clear();
  client nobody{anon};
  auto refused = nobody.put("/t/c", "three");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.err.what, error::kind::refused) << refused.err.message;
}

TEST_F(EtcdAuth, AWrongPasswordIsRefusedNamingTheUserNeverThePassword) {
  client c{opts("not-the-password-1234")};
  auto r = c.put("/t/a", "one");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.err.what, error::kind::refused);
  EXPECT_TRUE(contains(r.err.message, "etcd refused user 'root'"))
    << r.err.message;
  EXPECT_FALSE(contains(r.err.message, "not-the-password-1234"));
  EXPECT_FALSE(contains(r.err.message, password));
}

TEST_F(EtcdAuth, ATokenEtcdForgotIsReplacedAndTheCallGoesThrough) {
  client c{opts()};
  ASSERT_TRUE(c.put("/t/a", "one"));
  // etcd forgets a simple token unused for its TTL (1 s here): the
  // client's token is then unknown ("invalid auth token"), and the client
  // authenticates again within the same call.
  std::this_thread::sleep_for(2500ms);
  auto again = c.put("/t/a", "two");
  ASSERT_TRUE(again) << again.err.message;
  auto a = c.get("/t/a");
  ASSERT_TRUE(a && a->has_value()) << a.err.message;
  EXPECT_EQ((*a)->value, "two");
  // A watch opened with a forgotten token authenticates again when it is
  // opened anew.
  std::this_thread::sleep_for(2500ms);
  // (3 s for etcd's first answer: a loaded machine may take more than a
  // moment.)
  auto w = c.watch_prefix("/t/", 0);
  auto first = w->next(3s);
  if (!first) {
    EXPECT_TRUE(contains(first.err.message, "invalid auth token"))
      << first.err.message;
    w = c.watch_prefix("/t/", 0);
    first = w->next(3s);
  }
  EXPECT_TRUE(first) << first.err.message;
}
