// The etcd client against a real etcd on free loopback ports: keys, guarded
// txns, leases, watches, retries across endpoints and deadlines.

#include "cluster/etcd/client.hpp"
#include "tests/support/etcd_process.hpp"
#include "tests/support/net.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <chrono>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

using namespace std::chrono_literals;
using troupe::cluster::etcd::client;
using troupe::cluster::etcd::client_options;
using troupe::cluster::etcd::error;
using troupe::cluster::etcd::watch_event;

namespace {

struct EtcdClient : ::testing::Test {
  troupe::test::etcd_process etcd;

  void SetUp() override { ASSERT_TRUE(etcd.ok()) << etcd.error(); }

  client_options opts() {
    client_options o;
    o.endpoints = {etcd.url()};
    o.request_timeout = 1000ms;
    o.call_timeout = 3000ms;
    return o;
  }
};

} // namespace

TEST_F(EtcdClient, PutGetRangeAndDeleteBinarySafeKeys) {
  client c{opts()};
  auto rev = c.put("/t/a", "one");
  ASSERT_TRUE(rev) << rev.err.message;
  EXPECT_GT(*rev, 0);
  std::string binary{"\0\xff\x01 x", 5};
  ASSERT_TRUE(c.put("/t/b", binary));
  ASSERT_TRUE(c.put("/u/c", "other"));

  auto a = c.get("/t/a");
  ASSERT_TRUE(a) << a.err.message;
  ASSERT_TRUE(a->has_value());
  EXPECT_EQ((*a)->value, "one");
  EXPECT_EQ((*a)->mod_revision, *rev);
  auto missing = c.get("/t/none");
  ASSERT_TRUE(missing);
  EXPECT_FALSE(missing->has_value());

  auto r = c.range_prefix("/t/");
  ASSERT_TRUE(r) << r.err.message;
  ASSERT_EQ(r->kvs.size(), 2u);
  EXPECT_EQ(r->kvs[0].key, "/t/a");
  EXPECT_EQ(r->kvs[1].value, binary);
  EXPECT_GE(r->revision, *rev);

  auto gone = c.remove("/t/a");
  ASSERT_TRUE(gone);
  EXPECT_EQ(*gone, 1);
  EXPECT_EQ(*c.remove("/t/a"), 0);
  EXPECT_EQ(c.range_prefix("/t/")->kvs.size(), 1u);
}

TEST_F(EtcdClient, TxnCreatesOnlyIfAbsentAndGuardsByModRevision) {
  client c{opts()};
  auto first = c.create_if_absent("/k", "mine");
  ASSERT_TRUE(first) << first.err.message;
  EXPECT_TRUE(first->succeeded);
  auto second = c.create_if_absent("/k", "theirs");
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->succeeded);
  ASSERT_TRUE(second->current);
  EXPECT_EQ(second->current->value, "mine");

  auto mod = second->current->mod_revision;
  auto stale = c.put_if_mod_revision("/k", "late", mod - 1);
  ASSERT_TRUE(stale);
  EXPECT_FALSE(stale->succeeded);
  EXPECT_EQ(stale->current->value, "mine");
  auto fresh = c.put_if_mod_revision("/k", "next", mod);
  ASSERT_TRUE(fresh);
  EXPECT_TRUE(fresh->succeeded);
  EXPECT_EQ((*c.get("/k"))->value, "next");
}

TEST_F(EtcdClient, LeaseKeepsKeysAliveUntilRevoked) {
  client c{opts()};
  auto l = c.lease_grant(1);
  ASSERT_TRUE(l) << l.err.message;
  EXPECT_EQ(l->ttl_s, 1);
  ASSERT_TRUE(c.put("/leased", "v", l->id));
  EXPECT_EQ((*c.get("/leased"))->lease, l->id);
  // Renewed for longer than its TTL, the key stays.
  auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    auto ttl = c.lease_keepalive(l->id);
    ASSERT_TRUE(ttl) << ttl.err.message;
    EXPECT_GT(*ttl, 0);
    std::this_thread::sleep_for(250ms);
  }
  EXPECT_TRUE(c.get("/leased")->has_value());
  auto left = c.lease_time_to_live(l->id);
  ASSERT_TRUE(left);
  EXPECT_GE(*left, 0);

  ASSERT_TRUE(c.lease_revoke(l->id));
  EXPECT_FALSE(c.get("/leased")->has_value());
  EXPECT_EQ(*c.lease_keepalive(l->id), 0);
  EXPECT_EQ(*c.lease_time_to_live(l->id), -1);
  // Revoking a lease that is gone is no error.
  EXPECT_TRUE(c.lease_revoke(l->id));
}

TEST_F(EtcdClient, WatchSeesPutsAndDeletesUnderAPrefixInOrder) {
  client c{opts()};
  ASSERT_TRUE(c.put("/w/before", "x"));
  auto start = c.range_prefix("/w/");
  ASSERT_TRUE(start);
  auto w = c.watch_prefix("/w/", start->revision + 1);
  // The first call connects; nothing has changed yet.
  auto none = w->next(200ms);
  ASSERT_TRUE(none) << none.err.message;
  EXPECT_TRUE(none->empty());

  ASSERT_TRUE(c.put("/w/a", "1"));
  ASSERT_TRUE(c.put("/other", "ignored"));
  ASSERT_TRUE(c.remove("/w/before"));
  std::vector<watch_event> seen;
  for (int i = 0; i < 50 && seen.size() < 2; ++i) {
    auto got = w->next(100ms);
    ASSERT_TRUE(got) << got.err.message;
    seen.insert(seen.end(), got->begin(), got->end());
  }
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].what, watch_event::type::put);
  EXPECT_EQ(seen[0].kv.key, "/w/a");
  EXPECT_EQ(seen[0].kv.value, "1");
  EXPECT_EQ(seen[1].what, watch_event::type::del);
  EXPECT_EQ(seen[1].kv.key, "/w/before");
  ASSERT_TRUE(seen[1].prev);
  EXPECT_EQ(seen[1].prev->value, "x");
  EXPECT_EQ(w->revision(), seen[1].kv.mod_revision);

  // Cancelled from another thread, a waiting next() ends at once.
  auto t0 = std::chrono::steady_clock::now();
  std::thread canceller{[&] {
    std::this_thread::sleep_for(100ms);
    w->cancel();
  }};
  auto ended = w->next(5000ms);
  canceller.join();
  EXPECT_FALSE(ended);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms);
}

TEST_F(EtcdClient, AWatchEndsWithAnErrorWhenEtcdDies) {
  client c{opts()};
  auto w = c.watch_prefix("/w/", 0);
  ASSERT_TRUE(w->next(100ms));
  etcd.stop();
  bool ended = false;
  for (int i = 0; i < 50 && !ended; ++i)
    ended = !w->next(100ms);
  EXPECT_TRUE(ended);
}

TEST_F(EtcdClient, RetriesOnTheNextEndpointWhenOneIsDown) {
  auto o = opts();
  auto dead = "http://127.0.0.1:" + std::to_string(troupe::test::free_port());
  o.endpoints = {dead, etcd.url()};
  client c{o};
  auto rev = c.put("/retry", "ok");
  ASSERT_TRUE(rev) << rev.err.message;
  EXPECT_EQ((*c.get("/retry"))->value, "ok");
}

using troupe::test::black_hole;

TEST_F(EtcdClient, AnEndpointThatHangsCostsOneDeadlineThenTheNextAnswers) {
  black_hole hang;
  ASSERT_NE(hang.port, 0);
  auto o = opts();
  o.request_timeout = 300ms;
  o.endpoints = {hang.url(), etcd.url()};
  client c{o};
  auto t0 = std::chrono::steady_clock::now();
  auto rev = c.put("/hang", "ok");
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(rev) << rev.err.message;
  // One deadline spent on the hanging endpoint (bounds, not a speed).
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 3000ms);
  EXPECT_EQ((*c.get("/hang"))->value, "ok");

  // Hanging alone, a call ends at its deadline with the reason.
  o.endpoints = {hang.url()};
  o.call_timeout = 700ms;
  client alone{o};
  t0 = std::chrono::steady_clock::now();
  auto r = alone.put("/x", "y");
  took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(r);
  EXPECT_EQ(r.err.what, error::kind::unreachable);
  EXPECT_NE(r.err.message.find("no answer within"), std::string::npos)
    << r.err.message;
  EXPECT_GE(took, 650ms);
  EXPECT_LT(took, 3000ms);
}

TEST_F(EtcdClient, NoEndpointAnsweringFailsWithinTheDeadline) {
  client_options o;
  o.endpoints
    = {"http://127.0.0.1:" + std::to_string(troupe::test::free_port())};
  o.request_timeout = 200ms;
  o.call_timeout = 600ms;
  client c{o};
  auto t0 = std::chrono::steady_clock::now();
  auto r = c.put("/x", "y");
  EXPECT_FALSE(r);
  EXPECT_EQ(r.err.what, error::kind::unreachable);
  EXPECT_NE(r.err.message.find("etcd did not answer"), std::string::npos)
    << r.err.message;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2000ms);
}

TEST_F(EtcdClient, ACallThatFoundAnEndpointHangingStartsTheNextCallPastIt) {
  // Each call has time for one attempt only (a lease renewal's budget is
  // like that): the first spends it on the endpoint that hangs; the next
  // must not start there again.
  black_hole hang;
  ASSERT_NE(hang.port, 0);
  auto o = opts();
  o.request_timeout = 300ms;
  o.call_timeout = 300ms;
  o.endpoints = {hang.url(), etcd.url()};
  client c{o};
  auto first = c.put("/rotate", "1");
  ASSERT_FALSE(first);
  EXPECT_EQ(first.err.what, error::kind::unreachable);
  auto second = c.put("/rotate", "2");
  ASSERT_TRUE(second) << second.err.message;
  EXPECT_EQ((*c.get("/rotate"))->value, "2");
}

TEST(EtcdEndpoint, BadUrlsAreNamedAndHttpsIsAccepted) {
  using troupe::cluster::etcd::check_endpoint;
  EXPECT_EQ(check_endpoint("http://127.0.0.1:2379"), "");
  EXPECT_EQ(check_endpoint("http://[::1]:2379/"), "");
  EXPECT_EQ(check_endpoint("https://127.0.0.1:2379"), "");
  EXPECT_NE(check_endpoint("https://127.0.0.1"), "");
  EXPECT_NE(check_endpoint("127.0.0.1:2379"), "");
  EXPECT_NE(check_endpoint("http://127.0.0.1"), "");
  EXPECT_NE(check_endpoint("http://127.0.0.1:99999"), "");
  EXPECT_NE(check_endpoint("http://u@127.0.0.1:2379"), "");
  client c{client_options{{"ftp://x:1"}}};
  auto r = c.get("/k");
  EXPECT_EQ(r.err.what, error::kind::invalid);
  EXPECT_EQ(troupe::cluster::etcd::prefix_end("/a/"), "/a0");
}
