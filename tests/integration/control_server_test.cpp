// The control listener against raw clients on 127.0.0.1: the hello, roles,
// and every kind of bad input a client can send, while other clients go on
// being served.

#include "cluster/control/control_server.hpp"
#include "tests/support/frame_client.hpp"
#include "tests/support/process.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <thread>
#include <utility>

using namespace troupe::cluster;
using troupe::test::frame_client;
using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

/// Answers ping and echoes submit; counts what it saw. `logs` requests,
/// and watches of run "hold" after one event, are held unanswered until
/// release().
class echo_handler : public control_handler {
 public:
  void handle(const request_ptr& req, const std::string& type,
              const json& msg) override {
    ++calls;
    if (type == "logs"
        || (type == "watch" && msg.value("run_id", "") == "hold")) {
      // A held watch streams one event first.
      if (type == "watch")
        req->event(json{{"n", 1}});
      std::lock_guard guard{mtx};
      held.push_back(req);
      return;
    }
    if (type == "submit")
      return req->reply(json{{"echo", msg.value("workflow", "")},
                             {"subject", req->who().subject}});
    if (type == "watch" && msg.value("run_id", "") == "busy") {
      // Streams an event every 50 ms for 1.5 s, then ends.
      streams.emplace_back([req] {
        for (int i = 0; i < 30; ++i) {
          req->event(json{{"n", i}});
          std::this_thread::sleep_for(50ms);
        }
        req->end(json{{"state", "completed"}});
      });
      return;
    }
    if (type == "watch") {
      req->event(json{{"n", 1}});
      req->event(json{{"n", 2}});
      return req->end(json{{"state", "completed"}});
    }
    req->reply(json{{"pong", true}});
  }

  /// Answers the held requests.
  void release() {
    std::vector<request_ptr> now;
    {
      std::lock_guard guard{mtx};
      now.swap(held);
    }
    for (auto& r : now)
      r->reply(json{{"released", true}});
  }

  ~echo_handler() {
    for (auto& t : streams)
      t.join();
  }

  std::atomic<int> calls{0};
  std::mutex mtx;
  std::vector<request_ptr> held;
  /// Threads of busy streams (handle runs on the io thread alone).
  std::vector<std::thread> streams;
};

/// Tokens are "<role>:<subject>", or "expired".
authenticator test_auth() {
  return [](const std::string& token) -> std::variant<principal, auth_failure> {
    if (token.empty())
      return auth_failure{troupe::runtime::control::error_code::unauthenticated,
                          "no token"};
    if (token == "expired")
      return auth_failure{troupe::runtime::control::error_code::token_expired,
                          "expired"};
    auto colon = token.find(':');
    auto r = troupe::runtime::auth::parse_role(token.substr(0, colon));
    if (!r || colon == std::string::npos)
      return auth_failure{troupe::runtime::control::error_code::token_invalid,
                          "bad token"};
    return principal{token.substr(colon + 1), *r, 0};
  };
}

struct ControlServer : ::testing::Test {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard
    = boost::asio::make_work_guard(io);
  std::thread thread;
  echo_handler handler;
  std::unique_ptr<control_server> server;

  void start(control_server::options o = {}) {
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.read_timeout == std::chrono::milliseconds{30'000})
      o.read_timeout = 400ms;
    if (o.idle_timeout == std::chrono::milliseconds{300'000})
      o.idle_timeout = 5s;
    server = std::make_unique<control_server>(io, o, test_auth(), handler);
    ASSERT_EQ(server->start(), "");
    thread = std::thread{[this] { io.run(); }};
  }

  void TearDown() override {
    if (server)
      server->stop();
    guard.reset();
    if (thread.joinable())
      thread.join();
  }

  uint16_t port() const { return server->port(); }

  /// A client past its hello with role `role`.
  std::unique_ptr<frame_client> client(const std::string& token
                                       = "operator:alice") {
    auto c = std::make_unique<frame_client>(port());
    EXPECT_TRUE(c->connected());
    auto w = c->hello(token);
    EXPECT_TRUE(w);
    if (w) {
      EXPECT_EQ((*w)["t"], "welcome") << w->dump();
    }
    return c;
  }

  /// Whether a fresh client is served (ping answered).
  bool serves_others() {
    auto c = client();
    auto r = c->call({{"t", "ping"}}, 9);
    return r && (*r)["t"] == "reply";
  }
};

std::string frame_header(uint32_t n) {
  std::string h(4, '\0');
  h[0] = static_cast<char>(n >> 24);
  h[1] = static_cast<char>(n >> 16);
  h[2] = static_cast<char>(n >> 8);
  h[3] = static_cast<char>(n);
  return h;
}

} // namespace

TEST_F(ControlServer, HelloThenRequestsWithIds) {
  start();
  frame_client c{port()};
  auto w = c.hello("viewer:bob");
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)["t"], "welcome");
  EXPECT_EQ((*w)["version"], 3);
  EXPECT_EQ((*w)["subject"], "bob");
  EXPECT_EQ((*w)["role"], "viewer");
  auto r = c.call({{"t", "ping"}}, 42);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  EXPECT_EQ((*r)["id"], 42);
  // A stream: events then an end, all with the request's id.
  auto e1 = c.call({{"t", "watch"}, {"run_id", "x"}}, 43);
  ASSERT_TRUE(e1);
  EXPECT_EQ((*e1)["t"], "event");
  EXPECT_EQ((*e1)["body"]["n"], 1);
  auto e2 = c.receive();
  auto end = c.receive();
  ASSERT_TRUE(e2 && end);
  EXPECT_EQ((*end)["t"], "end");
  EXPECT_EQ((*end)["id"], 43);
}

TEST_F(ControlServer, RolesAreCheckedPerRequest) {
  start();
  auto viewer = client("viewer:bob");
  auto r = viewer->call({{"t", "submit"}, {"workflow", "w"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "forbidden");
  EXPECT_EQ((*r)["message"], "role viewer may not submit (needs operator)");
  auto op = client("operator:alice");
  r = op->call({{"t", "submit"}, {"workflow", "w"}}, 3);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["body"]["subject"], "alice");
  EXPECT_EQ(handler.calls.load(), 1);
}

TEST_F(ControlServer, RefusedTokensCloseTheConnection) {
  start();
  for (auto [token, code] : {std::pair{"", "unauthenticated"},
                             {"expired", "token_expired"},
                             {"forged", "token_invalid"}}) {
    frame_client c{port()};
    auto w = c.hello(token);
    ASSERT_TRUE(w) << token;
    EXPECT_EQ((*w)["t"], "error");
    EXPECT_EQ((*w)["code"], code);
    EXPECT_TRUE(c.closed_within(2s)) << token;
  }
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, RequestBeforeHelloAndWrongVersionAreRefused) {
  start();
  {
    frame_client c{port()};
    auto r = c.call({{"t", "ping"}}, 5);
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["code"], "hello_required");
    EXPECT_TRUE(c.closed_within(2s));
  }
  {
    frame_client c{port()};
    c.send({{"t", "hello"}, {"id", 1}, {"version", 7}, {"token", "admin:x"}});
    auto r = c.receive();
    ASSERT_TRUE(r);
    EXPECT_EQ((*r)["code"], "unsupported_version");
    EXPECT_EQ((*r)["message"],
              "this node speaks control protocol versions 1 to 3, not 7");
    EXPECT_TRUE(c.closed_within(2s));
  }
}

TEST_F(ControlServer, UnknownTypesAndBadFieldsKeepTheConnection) {
  start();
  auto c = client();
  auto r = c->call({{"t", "sumbit"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "unknown_type");
  EXPECT_NE((*r)["message"].get<std::string>().find("did you mean 'submit'"),
            std::string::npos)
    << r->dump();
  c->send({{"id", 3}, {"no_type", true}});
  r = c->receive();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "bad_request");
  r = c->call({{"t", "ping"}}, 4);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
}

TEST_F(ControlServer, MalformedBodyGetsATypedErrorAndTheStreamGoesOn) {
  start();
  auto c = client();
  // A sound length around bytes that are not MessagePack.
  c->send_raw(frame_header(3) + "\xc1\xc1\xc1");
  auto r = c->receive();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "error");
  EXPECT_EQ((*r)["code"], "bad_frame");
  r = c->call({{"t", "ping"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
}

TEST_F(ControlServer, FrameClaimingFourGibibytesIsRefusedAndClosed) {
  start();
  auto c = client();
  c->send_raw(frame_header(0xFFFFFFFFu));
  auto r = c->receive();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "frame_too_large");
  EXPECT_TRUE(c->closed_within(2s));
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, RandomBytesDoNotHurtTheNode) {
  start();
  std::string junk;
  uint32_t x = 0x12345678;
  for (int i = 0; i < 4096; ++i) {
    x = x * 1664525u + 1013904223u;
    junk.push_back(static_cast<char>(x >> 24));
  }
  for (int round = 0; round < 5; ++round) {
    frame_client c{port()};
    c.send_raw(junk);
    EXPECT_TRUE(c.closed_within(3s));
  }
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, TruncatedAndSlowFramesAreDroppedAfterTheReadTimeout) {
  start();
  auto truncated = client();
  truncated->send_raw(frame_header(100) + "0123456789");
  frame_client slow{port()};
  slow.send_raw(std::string(1, '\0')); // one byte of a header, then nothing
  // Others are served meanwhile.
  EXPECT_TRUE(serves_others());
  EXPECT_TRUE(truncated->closed_within(3s));
  EXPECT_TRUE(slow.closed_within(3s));
}

TEST_F(ControlServer, IdleConnectionsAreClosed) {
  control_server::options o;
  o.idle_timeout = 300ms;
  start(o);
  auto c = client();
  EXPECT_TRUE(c->closed_within(3s));
}

TEST_F(ControlServer, ConnectionsBeyondTheLimitAreClosedAtOnce) {
  control_server::options o;
  o.max_connections = 2;
  start(o);
  auto a = client();
  auto b = client();
  frame_client third{port()};
  EXPECT_TRUE(third.closed_within(3s));
  // Once one closes, there is room again.
  a.reset();
  EXPECT_TRUE(
    troupe::test::wait_until([&] { return server->connections() < 2; }, 3s));
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, BigFramesBeforeTheHelloAreRefused) {
  start();
  frame_client c{port()};
  c.send_raw(frame_header(1 << 20));
  auto r = c.receive();
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "frame_too_large");
  EXPECT_NE((*r)["message"].get<std::string>().find("before the hello"),
            std::string::npos);
}

TEST_F(ControlServer, KeepalivesKeepAConnectionThatWaitsForAnswersAlive) {
  control_server::options o;
  o.idle_timeout = 300ms;
  start(o);
  auto c = std::make_unique<frame_client>(port());
  auto w = c->hello("operator:alice");
  ASSERT_TRUE(w);
  // The welcome says how often the node will speak: a third of the idle
  // timeout.
  EXPECT_EQ((*w)["keepalive_ms"], 100) << w->dump();
  c->send({{"t", "logs"}, {"id", 5}, {"run_id", "r"}});
  int keepalives = 0;
  auto until = std::chrono::steady_clock::now() + 1500ms;
  while (std::chrono::steady_clock::now() < until) {
    auto m = c->receive(400ms);
    ASSERT_TRUE(m) << "nothing from the node for 400ms, or it closed";
    ASSERT_EQ((*m)["t"], "keepalive") << m->dump();
    EXPECT_FALSE(m->contains("id"));
    ++keepalives;
    ASSERT_TRUE(c->send({{"t", "keepalive"}}));
  }
  // Five idle timeouts went by: the connection lives, and gets its answer.
  EXPECT_GE(keepalives, 3);
  handler.release();
  json m;
  for (int i = 0; i < 10; ++i) {
    auto r = c->receive(1s);
    ASSERT_TRUE(r);
    m = *r;
    if (m["t"] != "keepalive")
      break;
  }
  EXPECT_EQ(m["t"], "reply") << m.dump();
  EXPECT_EQ(m["id"], 5);
  // Nothing owed now: no more keepalives, and silence closes it.
  EXPECT_TRUE(c->closed_within(3s));
}

TEST_F(ControlServer, AWatchThatStreamsBusilyOutlastsTheIdleTimeout) {
  control_server::options o;
  o.idle_timeout = 300ms;
  start(o);
  auto c = client();
  // Events every 50 ms: the node still asks the client to speak, and the
  // client's answers keep the connection open past five idle timeouts.
  c->send({{"t", "watch"}, {"id", 7}, {"run_id", "busy"}});
  int events = 0, keepalives = 0;
  bool ended = false;
  for (int i = 0; i < 200 && !ended; ++i) {
    auto m = c->receive(1s);
    ASSERT_TRUE(m) << "closed after " << events << " events";
    auto t = (*m)["t"];
    if (t == "keepalive") {
      ++keepalives;
      c->send({{"t", "keepalive"}});
    } else if (t == "event") {
      ++events;
    } else {
      EXPECT_EQ(t, "end") << m->dump();
      ended = true;
    }
  }
  EXPECT_TRUE(ended);
  EXPECT_EQ(events, 30);
  EXPECT_GE(keepalives, 3);
}

TEST_F(ControlServer, AClientThatStopsAnsweringIsClosedDespiteItsOpenRequest) {
  control_server::options o;
  o.idle_timeout = 300ms;
  start(o);
  auto c = client();
  c->send({{"t", "logs"}, {"id", 5}, {"run_id", "r"}});
  // It reads what comes (keepalives) but never answers.
  EXPECT_TRUE(c->closed_within(3s));
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, VersionOneClientsAreServedWithoutKeepalives) {
  control_server::options o;
  o.idle_timeout = 600ms;
  start(o);
  frame_client c{port()};
  c.send({{"t", "hello"}, {"id", 1}, {"version", 1}, {"token", "viewer:old"}});
  auto w = c.receive();
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)["t"], "welcome");
  EXPECT_EQ((*w)["version"], 1);
  EXPECT_FALSE(w->contains("keepalive_ms"));
  auto r = c.call({{"t", "ping"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  c.send({{"t", "logs"}, {"id", 3}, {"run_id", "r"}});
  // No keepalive comes; the connection is closed once idle, as before.
  EXPECT_FALSE(c.receive(400ms));
  EXPECT_TRUE(c.closed_within(3s));
}

TEST_F(ControlServer, RequestsAwaitingAnswersAreBoundedPerConnection) {
  control_server::options o;
  o.max_in_flight = 3;
  start(o);
  auto c = client();
  // Streams that have begun do not count: many watches may stream at once.
  for (uint64_t id = 10; id < 15; ++id) {
    auto e = c->call({{"t", "watch"}, {"run_id", "hold"}}, id);
    ASSERT_TRUE(e);
    EXPECT_EQ((*e)["t"], "event");
  }
  for (uint64_t id = 20; id < 23; ++id)
    ASSERT_TRUE(c->send({{"t", "logs"}, {"id", id}, {"run_id", "r"}}));
  auto r = c->call({{"t", "ping"}}, 30);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "too_many_requests");
  EXPECT_NE((*r)["message"].get<std::string>().find("control.max_in_flight"),
            std::string::npos)
    << r->dump();
  // Another connection is served, and this one again once answers went out.
  EXPECT_TRUE(serves_others());
  handler.release();
  bool served = false;
  for (uint64_t id = 31; id < 40 && !served; ++id) {
    r = c->call({{"t", "ping"}}, id);
    ASSERT_TRUE(r);
    served = (*r)["t"] == "reply";
  }
  EXPECT_TRUE(served);
}

TEST_F(ControlServer, RequestsWithoutAnIdAreRefusedAsConnectionErrors) {
  start();
  auto c = client();
  // No id, and id 0: 0 is kept for errors about the connection, so an
  // answer with it could not be matched. Refused with id 0, kept.
  for (auto msg : {json{{"t", "ping"}}, json{{"t", "ping"}, {"id", 0}},
                   json{{"t", "submit"}, {"workflow", "w"}}}) {
    ASSERT_TRUE(c->send(msg));
    auto r = c->receive(2s);
    ASSERT_TRUE(r) << msg.dump();
    EXPECT_EQ((*r)["t"], "error") << r->dump();
    EXPECT_EQ((*r)["id"], 0) << r->dump();
    EXPECT_EQ((*r)["code"], "bad_request") << r->dump();
    EXPECT_NE((*r)["message"].get<std::string>().find("field 'id'"),
              std::string::npos)
      << r->dump();
  }
  EXPECT_EQ(handler.calls.load(), 0);
  auto r = c->call({{"t", "ping"}}, 7);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  // A keepalive needs none.
  ASSERT_TRUE(c->send({{"t", "keepalive"}}));
  r = c->call({{"t", "ping"}}, 8);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  // A hello without an id is refused, and closes like every refused hello.
  frame_client h{port()};
  h.send({{"t", "hello"}, {"version", 3}, {"token", "viewer:bob"}});
  auto w = h.receive(2s);
  ASSERT_TRUE(w);
  EXPECT_EQ((*w)["code"], "bad_request") << w->dump();
  EXPECT_TRUE(h.closed_within(2s));
}

TEST_F(ControlServer, AnIdStillBeingAnsweredIsNotTakenAgain) {
  start();
  auto c = client();
  auto e = c->call({{"t", "watch"}, {"run_id", "hold"}}, 10);
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)["t"], "event");
  auto calls = handler.calls.load();
  // The watch streams on under id 10: another request with it is refused,
  // as an error about the connection (id 0), naming the id.
  ASSERT_TRUE(c->send({{"t", "ping"}, {"id", 10}}));
  auto r = c->receive(2s);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["id"], 0) << r->dump();
  EXPECT_EQ((*r)["code"], "bad_request") << r->dump();
  EXPECT_EQ((*r)["id_in_use"], 10) << r->dump();
  EXPECT_EQ(handler.calls.load(), calls);
  // Once answered to its end, the id is free again.
  handler.release();
  r = c->receive(2s);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  EXPECT_EQ((*r)["id"], 10);
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    r = c->call({{"t", "ping"}}, 10);
    ASSERT_TRUE(r);
    served = (*r)["t"] == "reply";
  }
  EXPECT_TRUE(served);
}

TEST_F(ControlServer, AConnectionWithoutAHelloIsClosedAfterTheHelloTimeout) {
  control_server::options o;
  o.hello_timeout = 300ms;
  o.idle_timeout = 10s;
  start(o);
  frame_client silent{port()};
  // Bytes of a frame that never completes do not help either.
  frame_client trickle{port()};
  trickle.send_raw(std::string(1, '\0'));
  auto greeted = client();
  EXPECT_TRUE(silent.closed_within(3s));
  EXPECT_TRUE(trickle.closed_within(3s));
  // One that said hello stays.
  auto r = greeted->call({{"t", "ping"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
}

TEST_F(ControlServer, ConnectionsFromOneAddressAreCapped) {
  control_server::options o;
  o.max_connections_per_address = 2;
  start(o);
  frame_client a{port()};
  auto b = client();
  frame_client third{port()};
  EXPECT_TRUE(third.closed_within(3s));
  EXPECT_TRUE(
    troupe::test::wait_until([&] { return server->connections() == 2; }, 3s));
  // Once one closes, there is room again.
  b.reset();
  EXPECT_TRUE(
    troupe::test::wait_until([&] { return server->connections() < 2; }, 3s));
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, AnEmptyFrameIsABadFrameAndTheConnectionIsKept) {
  start();
  auto c = client();
  c->send_raw(frame_header(0));
  auto r = c->receive(2s);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "bad_frame") << r->dump();
  EXPECT_EQ((*r)["id"], 0);
  r = c->call({{"t", "ping"}}, 2);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  // Counted with the other bad frames of this connection: past 16, closed.
  for (int i = 0; i < 17; ++i)
    c->send_raw(frame_header(0));
  EXPECT_TRUE(c->closed_within(3s));
  EXPECT_TRUE(serves_others());
}

TEST_F(ControlServer, AMistypedHelloIsRefusedAndClosed) {
  start();
  frame_client c{port()};
  c.send({{"t", "hello"}, {"id", 1}, {"version", "3"}, {"token", "viewer:x"}});
  auto r = c.receive(2s);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["code"], "bad_request") << r->dump();
  EXPECT_EQ((*r)["id"], 1);
  EXPECT_TRUE(c.closed_within(2s));
}

TEST_F(ControlServer, DrainTellsEachClientAnswersWhatIsOwedThenCloses) {
  start();
  auto owed = client();
  ASSERT_TRUE(owed->send({{"t", "logs"}, {"id", 5}, {"run_id", "r"}}));
  auto idle = client();
  frame_client old{port()};
  auto w = old.hello("viewer:old", 1);
  ASSERT_TRUE(w);
  frame_client nameless{port()};
  ASSERT_TRUE(troupe::test::wait_until(
    [&] { return server->connections() == 4 && handler.calls.load() == 1; },
    3s));
  server->drain(5s, 100ms);
  // Version 3 on hears it; the node says how long it gives.
  for (auto* c : {owed.get(), idle.get()}) {
    auto n = c->receive(2s);
    ASSERT_TRUE(n);
    EXPECT_EQ((*n)["t"], "draining") << n->dump();
    EXPECT_FALSE(n->contains("id"));
    EXPECT_EQ((*n)["within_ms"], 5000);
  }
  // Owing nothing, a connection closes after the linger; one that never
  // said hello at once; a version 1 one hears nothing new.
  EXPECT_TRUE(nameless.closed_within(2s));
  EXPECT_TRUE(idle->closed_within(2s));
  EXPECT_TRUE(old.closed_within(2s));
  // Requests still come through meanwhile, and what is owed is answered.
  auto r = owed->call({{"t", "ping"}}, 6);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["t"], "reply");
  handler.release();
  r = owed->receive(2s);
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["id"], 5);
  EXPECT_EQ((*r)["t"], "reply");
  EXPECT_TRUE(owed->closed_within(2s));
  EXPECT_TRUE(server->wait_closed(2s));
  // No new connections are taken.
  frame_client late{port()};
  EXPECT_TRUE(!late.connected() || late.closed_within(2s));
}

TEST_F(ControlServer, DrainClosesWhatStillOwesAtTheDeadline) {
  start();
  auto c = client();
  ASSERT_TRUE(c->send({{"t", "logs"}, {"id", 5}, {"run_id", "r"}}));
  ASSERT_TRUE(
    troupe::test::wait_until([&] { return handler.calls.load() == 1; }, 3s));
  auto began = std::chrono::steady_clock::now();
  server->drain(400ms, 50ms);
  EXPECT_TRUE(c->closed_within(3s));
  EXPECT_GE(std::chrono::steady_clock::now() - began, 350ms);
  EXPECT_TRUE(server->wait_closed(1s));
}
