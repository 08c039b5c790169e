#include "actors/http/http_client.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <optional>
#include <thread>

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using header_list = std::vector<std::pair<std::string, std::string>>;

/// A request as the test server read it.
struct seen_request {
  /// 0 for the first request read on its connection, then 1, 2, ...
  size_t on_connection = 0;
  std::string method;
  std::string target;
  header_list headers;
  std::string body;

  /// The value of the first header named `name` (exact case), or nullopt.
  std::optional<std::string> header(const std::string& name) const {
    for (const auto& [n, v] : headers)
      if (n == name)
        return v;
    return std::nullopt;
  }

  size_t count(const std::string& name) const {
    size_t n = 0;
    for (const auto& h : headers)
      n += h.first == name ? 1 : 0;
    return n;
  }
};

/// What the test server does with a request.
struct reply {
  int status = 200;
  header_list headers;
  std::string body;
  /// Written verbatim instead of a response made of the fields above.
  std::optional<std::string> raw;
  /// After the response, keep the connection open until the client closes
  /// it.
  bool hang = false;
  /// Send the header, then the body this many bytes at a time, one piece per
  /// trickle_every.
  size_t trickle_bytes = 0;
  std::chrono::milliseconds trickle_every{0};
  /// Wait this long before answering.
  std::chrono::milliseconds delay{0};
};

/// How the test server treats connections.
struct server_mode {
  bool tls = false;
  /// Serve further requests on a connection after a response made of the
  /// reply's fields (HTTP/1.1 keep-alive), until the client or a
  /// "Connection: close" of either side ends it. Off: the server closes
  /// each connection after its first response, without saying so.
  bool keep_alive = false;
  /// With keep_alive: after each response, close the connection once it has
  /// been idle this long (0: never).
  std::chrono::milliseconds idle_close{0};
};

/// Accepts and never answers.
reply never_answer() {
  reply r;
  r.raw = "";
  r.hang = true;
  return r;
}

/// A self-signed certificate for IP:127.0.0.1, made once per process.
struct test_cert {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr,
                                                          &EVP_PKEY_free};
  std::unique_ptr<X509, decltype(&X509_free)> cert{nullptr, &X509_free};

  test_cert() {
    key.reset(EVP_EC_gen("P-256"));
    cert.reset(X509_new());
    if (!key || !cert)
      throw std::runtime_error("cannot make a test certificate");
    X509* x = cert.get();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
    X509_set_pubkey(x, key.get());
    X509_NAME* name = X509_get_subject_name(x);
    const char* cn = "127.0.0.1";
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn), -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
    X509_EXTENSION* san = X509V3_EXT_conf_nid(
      nullptr, &ctx, NID_subject_alt_name, "IP:127.0.0.1");
    if (san == nullptr)
      throw std::runtime_error("cannot make a subjectAltName");
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    if (X509_sign(x, key.get(), EVP_sha256()) == 0)
      throw std::runtime_error("cannot sign the test certificate");
  }

  static const test_cert& get() {
    static test_cert instance;
    return instance;
  }
};

/// An HTTP(S) server on 127.0.0.1 with an ephemeral port, on its own thread
/// (Asio coroutines). Every request is answered as `handler` says.
class test_server {
 public:
  using handler = std::function<reply(const seen_request&)>;

  explicit test_server(handler h, bool tls = false)
      : test_server(std::move(h), server_mode{tls}) {}

  test_server(handler h, server_mode mode)
      : handler_(std::move(h)), mode_(mode) {
    if (mode.tls) {
      tls_.emplace(ssl::context::tls_server);
      const auto& c = test_cert::get();
      SSL_CTX_use_certificate(tls_->native_handle(), c.cert.get());
      SSL_CTX_use_PrivateKey(tls_->native_handle(), c.key.get());
    }
    acceptor_.open(tcp::v4());
    acceptor_.bind({asio::ip::make_address_v4("127.0.0.1"), 0});
    acceptor_.listen();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread{[this] { io_.run(); }};
  }

  ~test_server() {
    io_.stop();
    thread_.join();
  }

  uint16_t port() const { return acceptor_.local_endpoint().port(); }

  std::string url(const std::string& path) const {
    return std::string{tls_ ? "https" : "http"}
           + "://127.0.0.1:" + std::to_string(port()) + path;
  }

  std::vector<seen_request> requests() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return requests_;
  }

  /// Connections accepted so far.
  size_t accepted() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return accepted_;
  }

  /// Connections accepted and not yet closed by either side (as the server
  /// saw it).
  size_t open_connections() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return open_;
  }

 private:
  awaitable<void> accept_loop() {
    for (;;) {
      auto socket = co_await acceptor_.async_accept(use_awaitable);
      {
        std::lock_guard<std::mutex> guard{mtx_};
        ++accepted_;
      }
      asio::co_spawn(io_, session(std::move(socket)), asio::detached);
    }
  }

  /// Counts a connection as open while its coroutine lives.
  struct open_guard {
    test_server* owner;
    explicit open_guard(test_server* o) : owner(o) {
      std::lock_guard<std::mutex> guard{owner->mtx_};
      ++owner->open_;
    }
    ~open_guard() {
      std::lock_guard<std::mutex> guard{owner->mtx_};
      --owner->open_;
    }
    open_guard(const open_guard&) = delete;
    open_guard& operator=(const open_guard&) = delete;
  };

  awaitable<void> session(tcp::socket socket) {
    open_guard counted{this};
    if (tls_) {
      ssl::stream<tcp::socket> stream{std::move(socket), *tls_};
      co_await stream.async_handshake(ssl::stream_base::server, use_awaitable);
      co_await serve(stream);
    } else {
      co_await serve(socket);
    }
  }

  template<class Stream>
  awaitable<void> serve(Stream& stream) {
    beast::flat_buffer buffer;
    for (size_t n = 0;; ++n)
      if (!co_await serve_one(stream, buffer, n))
        break;
  }

  /// Serves the `n`th request of a connection; returns whether to serve
  /// another on it.
  template<class Stream>
  awaitable<bool> serve_one(Stream& stream, beast::flat_buffer& buffer,
                            size_t n) {
    if (n > 0 && mode_.idle_close.count() > 0) {
      // Closes the connection unless a request has begun by then.
      asio::steady_timer idle{io_, mode_.idle_close};
      bool began = false;
      idle.async_wait([&stream, &began](boost::system::error_code ec) {
        if (!ec && !began)
          beast::get_lowest_layer(stream).close();
      });
      co_await beast::get_lowest_layer(stream).async_wait(
        tcp::socket::wait_read, use_awaitable);
      began = true;
      idle.cancel();
    }
    http::request<http::string_body> req;
    co_await http::async_read(stream, buffer, req, use_awaitable);
    seen_request seen;
    seen.on_connection = n;
    seen.method = std::string{req.method_string()};
    seen.target = std::string{req.target()};
    for (const auto& f : req)
      seen.headers.emplace_back(std::string{f.name_string()},
                                std::string{f.value()});
    seen.body = req.body();
    {
      std::lock_guard<std::mutex> guard{mtx_};
      requests_.push_back(seen);
    }
    auto r = handler_(seen);
    if (r.delay.count() > 0) {
      asio::steady_timer timer{io_, r.delay};
      co_await timer.async_wait(use_awaitable);
    }
    bool again = false;
    if (r.raw) {
      co_await asio::async_write(stream, asio::buffer(*r.raw), use_awaitable);
    } else if (r.trickle_bytes > 0) {
      std::string head = "HTTP/1.1 " + std::to_string(r.status) + " OK\r\n"
                         + "Content-Length: " + std::to_string(r.body.size())
                         + "\r\n\r\n";
      co_await asio::async_write(stream, asio::buffer(head), use_awaitable);
      asio::steady_timer timer{io_};
      for (size_t i = 0; i < r.body.size(); i += r.trickle_bytes) {
        timer.expires_after(r.trickle_every);
        co_await timer.async_wait(use_awaitable);
        auto n = std::min(r.trickle_bytes, r.body.size() - i);
        co_await asio::async_write(stream, asio::buffer(r.body.data() + i, n),
                                   use_awaitable);
      }
    } else {
      http::response<http::string_body> res{static_cast<http::status>(r.status),
                                            11};
      for (const auto& [name, value] : r.headers)
        res.insert(name, value);
      res.body() = r.body;
      res.prepare_payload();
      co_await http::async_write(stream, res, use_awaitable);
      again = mode_.keep_alive && req.keep_alive() && res.keep_alive();
    }
    if (r.hang) {
      // Ends (with an exception) when the client closes the connection.
      char c;
      for (;;)
        co_await stream.async_read_some(asio::buffer(&c, 1), use_awaitable);
    }
    co_return again;
  }

  handler handler_;
  server_mode mode_;
  std::optional<ssl::context> tls_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  std::thread thread_;
  mutable std::mutex mtx_;
  std::vector<seen_request> requests_;
  size_t accepted_ = 0;
  size_t open_ = 0;
};

/// Starts `req`; the future gets the outcome. The promise outlives the test
/// if need be.
std::future<http_outcome> start(http_client& client, http_request req,
                                http_client::handle* h = nullptr) {
  auto p = std::make_shared<std::promise<http_outcome>>();
  auto f = p->get_future();
  auto handle = client.start(
    std::move(req), [p](http_outcome o) { p->set_value(std::move(o)); });
  if (h != nullptr)
    *h = handle;
  return f;
}

/// Runs `req` and waits (bounded) for its outcome.
http_outcome run(http_client& client, http_request req,
                 std::chrono::seconds limit = 20s) {
  auto f = start(client, std::move(req));
  if (f.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "request did not finish within " << limit.count() << "s";
    std::abort();
  }
  return f.get();
}

http_request get(const std::string& url) {
  http_request r;
  r.url = url;
  return r;
}

std::optional<std::string> header(const http_outcome& o,
                                  const std::string& name) {
  for (const auto& [n, v] : o.headers)
    if (n == name)
      return v;
  return std::nullopt;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

/// A port nothing listens on: bound, then closed.
uint16_t closed_port() {
  asio::io_context io;
  tcp::acceptor a{io, {asio::ip::make_address_v4("127.0.0.1"), 0}};
  auto port = a.local_endpoint().port();
  a.close();
  return port;
}

} // namespace

TEST(HttpClient, GetRoundTrip) {
  test_server server{[](const seen_request&) {
    reply r;
    r.headers = {{"X-First", "1"}, {"X-Second", "2"}};
    r.body = "hello";
    return r;
  }};
  http_client client;
  auto req = get(server.url("/path/x?a=1&b=two"));
  req.headers = {{"X-Test", "yes"}, {"Accept", "text/plain"}};
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(o.body, "hello");
  EXPECT_EQ(header(o, "X-First"), "1");
  EXPECT_EQ(header(o, "X-Second"), "2");
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  const auto& s = seen[0];
  EXPECT_EQ(s.method, "GET");
  EXPECT_EQ(s.target, "/path/x?a=1&b=two");
  EXPECT_EQ(s.header("X-Test"), "yes");
  EXPECT_EQ(s.header("Accept"), "text/plain");
  EXPECT_EQ(s.header("Host"), "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(s.header("User-Agent"), "troupe/0.1");
  EXPECT_EQ(s.count("Content-Length"), 0u);
  EXPECT_EQ(s.body, "");
  // The caller's headers keep their order.
  std::vector<std::string> names;
  for (const auto& h : s.headers)
    names.push_back(h.first);
  auto test_at = std::find(names.begin(), names.end(), "X-Test");
  auto accept_at = std::find(names.begin(), names.end(), "Accept");
  EXPECT_LT(test_at, accept_at);
}

TEST(HttpClient, PostRoundTrip) {
  test_server server{[](const seen_request& s) {
    reply r;
    r.status = 201;
    r.headers = {{"Content-Type", "application/json"}};
    r.body = "got " + s.body;
    return r;
  }};
  http_client client;
  http_request req;
  req.method = "POST";
  req.url = server.url("/items");
  req.headers = {{"Content-Type", "application/json"}};
  req.body = R"({"a":1})";
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.status, 201);
  EXPECT_EQ(o.body, R"(got {"a":1})");
  EXPECT_EQ(header(o, "Content-Type"), "application/json");
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].method, "POST");
  EXPECT_EQ(seen[0].target, "/items");
  EXPECT_EQ(seen[0].body, R"({"a":1})");
  EXPECT_EQ(seen[0].header("Content-Length"), "7");
  EXPECT_EQ(seen[0].header("Content-Type"), "application/json");
}

TEST(HttpClient, EmptyPutSendsContentLengthAndCallerHeadersWin) {
  test_server server{[](const seen_request&) { return reply{}; }};
  http_client client;
  http_request req;
  req.method = "PUT";
  req.url = server.url("");
  req.headers = {{"user-agent", "mine/2"}, {"host", "example.test"}};
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "") << o.error;
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/");
  EXPECT_EQ(seen[0].header("Content-Length"), "0");
  EXPECT_EQ(seen[0].header("user-agent"), "mine/2");
  EXPECT_EQ(seen[0].count("User-Agent"), 0u);
  EXPECT_EQ(seen[0].header("host"), "example.test");
  EXPECT_EQ(seen[0].count("Host"), 0u);
}

TEST(HttpClient, ErrorStatusesAreResponses) {
  test_server server{[](const seen_request& s) {
    reply r;
    r.status = s.target == "/down" ? 503 : 404;
    r.body = s.target == "/down" ? "down" : "nope";
    return r;
  }};
  http_client client;
  auto down = run(client, get(server.url("/down")));
  EXPECT_EQ(down.error_kind, "") << down.error;
  EXPECT_EQ(down.error, "");
  EXPECT_EQ(down.status, 503);
  EXPECT_EQ(down.body, "down");
  auto missing = run(client, get(server.url("/missing")));
  EXPECT_EQ(missing.error_kind, "") << missing.error;
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body, "nope");
}

TEST(HttpClient, ReturnsRetryAfterOf429) {
  test_server server{[](const seen_request&) {
    reply r;
    r.status = 429;
    r.headers = {{"Retry-After", "7"}};
    return r;
  }};
  http_client client;
  auto o = run(client, get(server.url("/limited")));
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.status, 429);
  EXPECT_EQ(header(o, "Retry-After"), "7");
}

TEST(HttpClient, ReturnsHeadersInOrderWithNamesAsReceived) {
  test_server server{[](const seen_request&) {
    reply r;
    r.raw = "HTTP/1.1 200 OK\r\nx-lower: a\r\nX-UPPER: b\r\n"
            "Set-Cookie: one\r\nSet-Cookie: two\r\nContent-Length: 2\r\n"
            "\r\nok";
    return r;
  }};
  http_client client;
  auto o = run(client, get(server.url("/")));
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.body, "ok");
  header_list want = {{"x-lower", "a"},
                      {"X-UPPER", "b"},
                      {"Set-Cookie", "one"},
                      {"Set-Cookie", "two"},
                      {"Content-Length", "2"}};
  EXPECT_EQ(o.headers, want);
}

TEST(HttpClient, ReadsBodiesEndedByTheConnectionAndChunkedOnes) {
  test_server server{[](const seen_request& s) {
    reply r;
    if (s.target == "/close")
      r.raw = "HTTP/1.1 200 OK\r\n\r\nuntil close";
    else
      r.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    return r;
  }};
  http_client client;
  auto closed = run(client, get(server.url("/close")));
  EXPECT_EQ(closed.error_kind, "") << closed.error;
  EXPECT_EQ(closed.body, "until close");
  auto chunked = run(client, get(server.url("/chunked")));
  EXPECT_EQ(chunked.error_kind, "") << chunked.error;
  EXPECT_EQ(chunked.body, "hello world");
}

TEST(HttpClient, HeadDoesNotWaitForABody) {
  test_server server{[](const seen_request&) {
    reply r;
    r.raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
    r.hang = true;
    return r;
  }};
  http_client client;
  auto req = get(server.url("/"));
  req.method = "HEAD";
  req.timeout = 5s;
  // The announced length is no body: the limit does not apply to it.
  req.max_response_bytes = 2;
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(header(o, "Content-Length"), "5");
  EXPECT_EQ(o.body, "");
}

TEST(HttpClient, ConnectionRefusedIsConnect) {
  auto port = closed_port();
  http_client client;
  auto url = "http://127.0.0.1:" + std::to_string(port) + "/x";
  auto o = run(client, get(url));
  EXPECT_EQ(o.error_kind, "connect") << o.error;
  EXPECT_EQ(o.status, 0);
  EXPECT_TRUE(contains(o.error, "127.0.0.1:" + std::to_string(port)))
    << o.error;
  EXPECT_TRUE(contains(o.error, "GET " + url)) << o.error;
}

TEST(HttpClient, ServerClosingWithoutResponseIsIo) {
  test_server server{[](const seen_request&) {
    reply r;
    r.raw = "";
    return r;
  }};
  http_client client;
  auto o = run(client, get(server.url("/")));
  EXPECT_EQ(o.error_kind, "io") << o.error;
  EXPECT_TRUE(contains(o.error, "127.0.0.1")) << o.error;
}

TEST(HttpClient, TimesOutWhenTheServerNeverAnswers) {
  test_server server{[](const seen_request&) { return never_answer(); }};
  http_client client;
  auto req = get(server.url("/slow?token=secret"));
  req.timeout = 500ms;
  auto t0 = std::chrono::steady_clock::now();
  auto o = run(client, req);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(o.error_kind, "timeout") << o.error;
  EXPECT_EQ(o.status, 0);
  EXPECT_EQ(o.error,
            "GET " + server.url("/slow") + ": no response within 500ms");
  EXPECT_GE(took, 450ms);
  EXPECT_LT(took, 5s);
}

TEST(HttpClient, TimesOutWhenTheBodyTrickles) {
  test_server server{[](const seen_request&) {
    reply r;
    r.body = std::string(100, 'x');
    r.trickle_bytes = 1;
    r.trickle_every = 100ms;
    return r;
  }};
  http_client client;
  auto req = get(server.url("/trickle"));
  req.timeout = 1s;
  auto t0 = std::chrono::steady_clock::now();
  auto o = run(client, req);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(o.error_kind, "timeout") << o.error;
  EXPECT_TRUE(contains(o.error, "no response within 1s")) << o.error;
  EXPECT_GE(took, 900ms);
  EXPECT_LT(took, 6s);
}

TEST(HttpClient, RefusesResponsesOverTheLimit) {
  test_server server{[](const seen_request& s) {
    reply r;
    if (s.target == "/close")
      r.raw = "HTTP/1.1 200 OK\r\n\r\n" + std::string(2000, 'c');
    else if (s.target == "/header")
      r.raw = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(70000, 'h')
              + "\r\nContent-Length: 0\r\n\r\n";
    else if (s.target == "/chunked")
      r.raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              + std::string{"258\r\n"} + std::string(600, 'a') + "\r\n"
              + "258\r\n" + std::string(600, 'b') + "\r\n0\r\n\r\n";
    else
      r.body = std::string(s.target == "/exact" ? 1000 : 2000, 'x');
    return r;
  }};
  http_client client;
  auto req = get(server.url("/big"));
  req.max_response_bytes = 1000;
  auto big = run(client, req);
  EXPECT_EQ(big.error_kind, "response_too_large") << big.error;
  EXPECT_TRUE(contains(big.error, "1000")) << big.error;
  EXPECT_EQ(big.body, "");
  req.url = server.url("/chunked");
  auto chunked = run(client, req);
  EXPECT_EQ(chunked.error_kind, "response_too_large") << chunked.error;
  req.url = server.url("/close");
  auto closed = run(client, req);
  EXPECT_EQ(closed.error_kind, "response_too_large") << closed.error;
  req.url = server.url("/header");
  auto header = run(client, req);
  EXPECT_EQ(header.error_kind, "response_too_large") << header.error;
  EXPECT_TRUE(contains(header.error, "header")) << header.error;
  req.url = server.url("/exact");
  auto exact = run(client, req);
  EXPECT_EQ(exact.error_kind, "") << exact.error;
  EXPECT_EQ(exact.body.size(), 1000u);
}

TEST(HttpClient, RejectsBadUrls) {
  http_client client;
  struct bad_case {
    std::string url;
    std::string says;
  };
  std::vector<bad_case> cases = {
    {"ftp://x", "unsupported scheme 'ftp'"},
    {"http://", "missing host"},
    {"http://host:99999/", "port 99999 out of range"},
    {"example.com/x", "missing scheme"},
    {"", "missing scheme"},
    {"http://:80/", "missing host"},
    {"http://host:/", "empty port"},
    {"http://host:8x/", "invalid port '8x'"},
    {"http://[::1/", "unterminated '['"},
    {"http://[nope]/", "invalid IPv6 address 'nope'"},
    {"http://::1/", "in brackets"},
    {"http://a b/", "invalid character ' '"},
    {"http://user:pw@host/", "not supported"},
    {"http://host/a b", "space or control character"},
  };
  for (const auto& c : cases) {
    auto o = run(client, get(c.url));
    EXPECT_EQ(o.error_kind, "bad_url") << c.url << ": " << o.error;
    EXPECT_TRUE(contains(o.error, c.says)) << c.url << ": " << o.error;
    EXPECT_TRUE(contains(o.error, "'" + c.url + "'")) << o.error;
    EXPECT_EQ(o.status, 0);
  }
}

TEST(HttpClient, RejectsBadMethodsAndHeaders) {
  http_client client;
  auto req = get("http://127.0.0.1:1/");
  req.method = "GET /x HTTP/1.1\r\n";
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "bad_url") << o.error;
  EXPECT_TRUE(contains(o.error, "invalid method")) << o.error;
  req = get("http://127.0.0.1:1/");
  req.headers = {{"X-Evil", "a\r\nX-Injected: 1"}};
  o = run(client, req);
  EXPECT_EQ(o.error_kind, "bad_url") << o.error;
  EXPECT_TRUE(contains(o.error, "X-Evil")) << o.error;
}

TEST(HttpClient, CancelEndsAHangingRequestPromptly) {
  test_server server{[](const seen_request&) { return never_answer(); }};
  http_client client;
  auto req = get(server.url("/hang"));
  req.timeout = 60s;
  http_client::handle h = 0;
  auto f = start(client, req, &h);
  // Let it reach the server.
  for (int i = 0; i < 500 && server.requests().empty(); ++i)
    std::this_thread::sleep_for(10ms);
  ASSERT_EQ(server.requests().size(), 1u);
  auto t0 = std::chrono::steady_clock::now();
  client.cancel(h);
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  auto o = f.get();
  EXPECT_EQ(o.error_kind, "cancelled") << o.error;
  EXPECT_TRUE(contains(o.error, server.url("/hang"))) << o.error;
  // Cancelling again, or an unknown handle, does nothing.
  client.cancel(h);
  client.cancel(987654);
  auto next = get(server.url("/"));
  next.timeout = 300ms;
  EXPECT_EQ(run(client, next).error_kind, "timeout");
}

TEST(HttpClient, CancelBeforeTheRequestRuns) {
  http_client client;
  http_client::handle h = 0;
  auto req = get("http://127.0.0.1:" + std::to_string(closed_port()) + "/");
  auto f = start(client, req, &h);
  client.cancel(h);
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  auto o = f.get();
  // Either the cancel came first, or the refused connect did.
  EXPECT_TRUE(o.error_kind == "cancelled" || o.error_kind == "connect")
    << o.error_kind;
}

TEST(HttpClient, DestructorCancelsWhatIsInFlight) {
  test_server server{[](const seen_request&) { return never_answer(); }};
  std::future<http_outcome> hanging, unsent;
  auto t0 = std::chrono::steady_clock::now();
  {
    http_client client;
    auto req = get(server.url("/hang"));
    req.timeout = 60s;
    hanging = start(client, req);
    for (int i = 0; i < 500 && server.requests().empty(); ++i)
      std::this_thread::sleep_for(10ms);
    ASSERT_EQ(server.requests().size(), 1u);
    // One more, probably not even connected yet.
    unsent = start(client, req);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  ASSERT_EQ(hanging.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(hanging.get().error_kind, "cancelled");
  ASSERT_EQ(unsent.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(unsent.get().error_kind, "cancelled");
}

TEST(HttpClient, RunsManyConcurrently) {
  test_server server{[](const seen_request& s) {
    reply r;
    r.body = s.target;
    return r;
  }};
  http_client client;
  constexpr int n = 50;
  std::vector<std::future<http_outcome>> fs;
  for (int i = 0; i < n; ++i)
    fs.push_back(start(client, get(server.url("/" + std::to_string(i)))));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(fs[i].wait_for(30s), std::future_status::ready) << i;
    auto o = fs[i].get();
    EXPECT_EQ(o.error_kind, "") << o.error;
    EXPECT_EQ(o.status, 200);
    EXPECT_EQ(o.body, "/" + std::to_string(i));
  }
  EXPECT_EQ(server.requests().size(), static_cast<size_t>(n));
}

TEST(HttpClient, HttpsWithoutVerification) {
  test_server server{[](const seen_request& s) {
                       reply r;
                       r.headers = {{"X-Tls", "yes"}};
                       r.body = "secure " + s.method + " " + s.body;
                       return r;
                     },
                     true};
  http_client client;
  http_request req;
  req.method = "POST";
  req.url = server.url("/tls?x=1");
  req.body = "payload";
  req.verify_tls = false;
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "") << o.error;
  EXPECT_EQ(o.status, 200);
  EXPECT_EQ(o.body, "secure POST payload");
  EXPECT_EQ(header(o, "X-Tls"), "yes");
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/tls?x=1");
}

TEST(HttpClient, HttpsRefusesAnUntrustedCertificate) {
  test_server server{[](const seen_request&) { return reply{}; }, true};
  http_client client;
  auto req = get(server.url("/"));
  ASSERT_TRUE(req.verify_tls);
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "tls") << o.error;
  EXPECT_EQ(o.status, 0);
  EXPECT_TRUE(contains(o.error, "127.0.0.1")) << o.error;
  EXPECT_TRUE(server.requests().empty());
}

TEST(HttpClient, TlsAgainstAPlainServerIsTls) {
  test_server server{[](const seen_request&) { return reply{}; }};
  http_client client;
  auto req = get("https://127.0.0.1:" + std::to_string(server.port()) + "/");
  req.verify_tls = false;
  req.timeout = 10s;
  auto o = run(client, req);
  EXPECT_EQ(o.error_kind, "tls") << o.error;
}

TEST(HttpClient, CallsBackOnItsOwnThreadEvenForABadUrl) {
  http_client client;
  auto p = std::make_shared<std::promise<std::thread::id>>();
  auto f = p->get_future();
  client.start(get("nope"),
               [p](http_outcome) { p->set_value(std::this_thread::get_id()); });
  ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
  EXPECT_NE(f.get(), std::this_thread::get_id());
}

namespace {

/// Waits (bounded, 10s) until `done` holds; returns whether it did.
bool eventually(const std::function<bool()>& done) {
  for (int i = 0; i < 1000; ++i) {
    if (done())
      return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

/// Echoes method, target and body.
reply echo(const seen_request& s) {
  reply r;
  r.body = s.method + " " + s.target + " " + s.body;
  return r;
}

} // namespace

TEST(HttpClient, SequentialRequestsUseOneConnection) {
  test_server server{echo, server_mode{false, true}};
  http_client client;
  for (int i = 0; i < 10; ++i) {
    http_request req = get(server.url("/" + std::to_string(i)));
    if (i % 2 == 1) {
      req.method = "POST";
      req.body = "b" + std::to_string(i);
    }
    auto o = run(client, req);
    EXPECT_EQ(o.error_kind, "") << o.error;
    EXPECT_EQ(o.body, req.method + " /" + std::to_string(i) + " " + req.body);
  }
  EXPECT_EQ(server.accepted(), 1u);
  auto seen = server.requests();
  ASSERT_EQ(seen.size(), 10u);
  EXPECT_EQ(seen[9].on_connection, 9u);
  EXPECT_EQ(seen[9].count("Connection"), 0u);
}

TEST(HttpClient, HttpsRequestsUseOneConnection) {
  test_server server{echo, server_mode{true, true}};
  http_client client;
  for (int i = 0; i < 5; ++i) {
    auto req = get(server.url("/" + std::to_string(i)));
    req.verify_tls = false;
    auto o = run(client, req);
    EXPECT_EQ(o.error_kind, "") << o.error;
    EXPECT_EQ(o.body, "GET /" + std::to_string(i) + " ");
  }
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClient, ConnectionCloseOfEitherSideIsHonoured) {
  test_server server{[](const seen_request& s) {
                       auto r = echo(s);
                       if (s.target == "/closing")
                         r.headers = {{"Connection", "close"}};
                       return r;
                     },
                     server_mode{false, true}};
  http_client client;
  // The server says close: each request on a connection of its own.
  for (int i = 0; i < 3; ++i) {
    auto o = run(client, get(server.url("/closing")));
    EXPECT_EQ(o.error_kind, "") << o.error;
  }
  EXPECT_EQ(server.accepted(), 3u);
  // The caller says close: the same.
  for (int i = 0; i < 2; ++i) {
    auto req = get(server.url("/"));
    req.headers = {{"Connection", "close"}};
    auto o = run(client, req);
    EXPECT_EQ(o.error_kind, "") << o.error;
  }
  EXPECT_EQ(server.accepted(), 5u);
  EXPECT_TRUE(eventually([&] { return server.open_connections() == 0; }));
}

TEST(HttpClient, RequestsSucceedWhenTheServerClosesIdleConnections) {
  // Each connection serves one request, then is closed by the server,
  // without a word, once idle for 50ms; and a server that closes each
  // connection right after its first response.
  test_server idle_closing{echo, server_mode{false, true, 50ms}};
  test_server one_shot{echo};
  http_client client;
  for (auto* server : {&idle_closing, &one_shot}) {
    for (int i = 0; i < 4; ++i) {
      // The server has closed the connection the last request left idle.
      ASSERT_TRUE(eventually([&] { return server->open_connections() == 0; }));
      http_request req = get(server->url("/" + std::to_string(i)));
      if (i % 2 == 1) {
        req.method = "POST";
        req.body = "b";
      }
      auto o = run(client, req);
      EXPECT_EQ(o.error_kind, "") << o.error;
      EXPECT_EQ(o.status, 200);
    }
    EXPECT_EQ(server->requests().size(), 4u);
    EXPECT_EQ(server->accepted(), 4u);
  }
}

TEST(HttpClient, ARequestTheServerDroppedOnAKeptConnectionIsSentAgainIfSafe) {
  // The second request on each connection is read, then the connection is
  // closed without an answer: a server closing an idle connection just as
  // the request arrived.
  test_server server{[](const seen_request& s) {
                       if (s.on_connection == 1) {
                         reply r;
                         r.raw = "";
                         return r;
                       }
                       return echo(s);
                     },
                     server_mode{false, true}};
  http_client client;
  auto first = run(client, get(server.url("/a")));
  EXPECT_EQ(first.error_kind, "") << first.error;
  // GET: sent again on a fresh connection.
  auto again = run(client, get(server.url("/b")));
  EXPECT_EQ(again.error_kind, "") << again.error;
  EXPECT_EQ(again.body, "GET /b ");
  EXPECT_EQ(server.accepted(), 2u);
  // POST: the server may have acted on it; not sent again.
  http_request post = get(server.url("/c"));
  post.method = "POST";
  post.body = "once";
  auto dropped = run(client, post);
  EXPECT_EQ(dropped.error_kind, "io") << dropped.error;
  EXPECT_TRUE(contains(dropped.error, "without a response")) << dropped.error;
  // POST with an idempotency key: sent again.
  post.url = server.url("/d");
  post.headers = {{"Idempotency-Key", "k1"}};
  ASSERT_EQ(run(client, get(server.url("/warm"))).error_kind, "");
  auto keyed = run(client, post);
  EXPECT_EQ(keyed.error_kind, "") << keyed.error;
  EXPECT_EQ(keyed.body, "POST /d once");
  size_t c = 0, d = 0;
  for (const auto& s : server.requests()) {
    c += s.target == "/c" ? 1 : 0;
    d += s.target == "/d" ? 1 : 0;
  }
  EXPECT_EQ(c, 1u);
  EXPECT_EQ(d, 2u);
}

TEST(HttpClient, ARequestIsNeverSentAgainAfterPartOfAResponse) {
  test_server server{[](const seen_request& s) {
                       if (s.on_connection == 1) {
                         reply r;
                         r.raw = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
                                 "abc";
                         return r;
                       }
                       return echo(s);
                     },
                     server_mode{false, true}};
  http_client client;
  ASSERT_EQ(run(client, get(server.url("/a"))).error_kind, "");
  auto o = run(client, get(server.url("/b")));
  EXPECT_EQ(o.error_kind, "io") << o.error;
  EXPECT_TRUE(contains(o.error, "in the middle of the response")) << o.error;
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClient, KeepsAtMost64IdleConnectionsPerHost) {
  test_server server{[](const seen_request& s) {
                       auto r = echo(s);
                       r.delay = 300ms;
                       return r;
                     },
                     server_mode{false, true}};
  http_client client;
  std::vector<std::future<http_outcome>> fs;
  for (int i = 0; i < 70; ++i)
    fs.push_back(start(client, get(server.url("/" + std::to_string(i)))));
  for (auto& f : fs) {
    ASSERT_EQ(f.wait_for(20s), std::future_status::ready);
    EXPECT_EQ(f.get().error_kind, "");
  }
  EXPECT_EQ(server.accepted(), 70u);
  // The six beyond 64 are closed by the client.
  EXPECT_TRUE(eventually([&] { return server.open_connections() == 64; }))
    << server.open_connections();
  // The 64 kept serve the next requests.
  for (int i = 0; i < 64; ++i)
    fs[i] = start(client, get(server.url("/again")));
  for (int i = 0; i < 64; ++i) {
    ASSERT_EQ(fs[i].wait_for(20s), std::future_status::ready);
    EXPECT_EQ(fs[i].get().error_kind, "");
  }
  EXPECT_EQ(server.accepted(), 70u);
}
