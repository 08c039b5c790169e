#include "cluster/endpoint/http_endpoint.hpp"
#include "tests/support/temp_dir.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cctype>
#include <map>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <optional>
#include <stdexcept>
#include <thread>

using namespace troupe::cluster;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

const std::string metrics_text = "# HELP up_total Ups.\n"
                                 "# TYPE up_total counter\n"
                                 "up_total 1\n";

/// A response as the test client read it.
struct reply {
  int status = 0;
  /// Names in lower case.
  std::map<std::string, std::string> headers;
  std::string body;

  std::string header(const std::string& name) const {
    auto i = headers.find(name);
    return i == headers.end() ? std::string{} : i->second;
  }
};

/// A blocking HTTP(S) client for tests on its own io_context: every call
/// waits a bounded time, then gives up.
class client {
 public:
  /// Connects to 127.0.0.1:port. With `ca_file`, speaks TLS and verifies the
  /// server's certificate against that file and the address 127.0.0.1.
  explicit client(uint16_t port, const std::string& ca_file = {})
      : plain_(io_) {
    if (!ca_file.empty()) {
      tls_context_.emplace(ssl::context::tls_client);
      tls_context_->load_verify_file(ca_file);
      tls_.emplace(io_, *tls_context_);
      tls_->set_verify_mode(ssl::verify_peer);
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(tls_->native_handle()),
                                    "127.0.0.1");
    }
    auto st = std::make_shared<state>();
    socket().async_connect({asio::ip::make_address_v4("127.0.0.1"), port},
                           [st](error_code ec) { st->finish(ec); });
    if (!wait(st, 5s) || st->ec) {
      error_ = "connect: " + st->ec.message();
      return;
    }
    if (tls_) {
      auto hs = std::make_shared<state>();
      tls_->async_handshake(ssl::stream_base::client,
                            [hs](error_code ec) { hs->finish(ec); });
      if (!wait(hs, 5s) || hs->ec) {
        error_ = "TLS handshake: " + hs->ec.message();
        return;
      }
    }
    connected_ = true;
  }

  bool connected() const { return connected_; }
  const std::string& error() const { return error_; }

  /// Sends `bytes`; false if that failed.
  bool send(const std::string& bytes) {
    auto st = std::make_shared<state>();
    auto data = std::make_shared<std::string>(bytes);
    with_stream([&](auto& s) {
      asio::async_write(s, asio::buffer(*data),
                        [st, data](error_code ec, size_t) { st->finish(ec); });
    });
    return wait(st, 5s) && !st->ec;
  }

  /// Reads one response (of a HEAD request if `head`).
  std::optional<reply> read(bool head = false,
                            std::chrono::milliseconds limit = 5s) {
    struct read_state : state {
      http::response_parser<http::string_body> parser;
    };
    auto st = std::make_shared<read_state>();
    st->parser.skip(head);
    with_stream([&](auto& s) {
      http::async_read(s, buffer_, st->parser,
                       [st](error_code ec, size_t) { st->finish(ec); });
    });
    if (!wait(st, limit) || st->ec)
      return std::nullopt;
    auto res = st->parser.release();
    reply r;
    r.status = static_cast<int>(res.result_int());
    for (const auto& f : res) {
      std::string name{f.name_string()};
      for (auto& c : name)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      r.headers[name] = std::string{f.value()};
    }
    r.body = std::move(res.body());
    return r;
  }

  /// Sends a request and reads its response.
  std::optional<reply> request(const std::string& method,
                               const std::string& target,
                               const std::string& extra_headers = {},
                               const std::string& body = {}) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      + extra_headers;
    if (!body.empty())
      req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n" + body;
    if (!send(req))
      return std::nullopt;
    return read(method == "HEAD");
  }

  /// Whether the server closes the connection within `limit`; what it sends
  /// meanwhile is kept in received().
  bool closed_within(std::chrono::milliseconds limit) {
    auto deadline = steady_clock::now() + limit;
    for (;;) {
      auto left = deadline - steady_clock::now();
      if (left <= 0s)
        return false;
      struct read_state : state {
        std::array<char, 4096> buf;
        size_t n = 0;
      };
      auto st = std::make_shared<read_state>();
      with_stream([&](auto& s) {
        s.async_read_some(asio::buffer(st->buf), [st](error_code ec, size_t n) {
          st->n = n;
          st->finish(ec);
        });
      });
      if (!wait(st,
                std::chrono::duration_cast<std::chrono::milliseconds>(left)))
        return false;
      received_.append(st->buf.data(), st->n);
      if (st->ec)
        return true;
    }
  }

  const std::string& received() const { return received_; }

  void close() {
    error_code ignored;
    socket().close(ignored);
  }

 private:
  struct state {
    bool done = false;
    error_code ec;
    void finish(error_code e) {
      done = true;
      ec = e;
    }
  };

  tcp::socket& socket() { return tls_ ? tls_->next_layer() : plain_; }

  template<class F>
  void with_stream(F&& f) {
    if (tls_)
      f(*tls_);
    else
      f(plain_);
  }

  /// Runs the io_context until `st` is done or `limit` passed; then cancels
  /// what is pending (the connection stays open) and returns false.
  bool wait(const std::shared_ptr<state>& st, std::chrono::nanoseconds limit) {
    io_.restart();
    auto deadline = steady_clock::now() + limit;
    while (!st->done && steady_clock::now() < deadline)
      io_.run_one_for(std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - steady_clock::now())
                      + 1ms);
    if (st->done)
      return true;
    error_code ignored;
    socket().cancel(ignored);
    for (int i = 0; i < 100 && !st->done; ++i)
      io_.run_one_for(10ms);
    return false;
  }

  asio::io_context io_;
  std::optional<ssl::context> tls_context_;
  tcp::socket plain_;
  std::optional<ssl::stream<tcp::socket>> tls_;
  beast::flat_buffer buffer_;
  bool connected_ = false;
  std::string error_;
  std::string received_;
};

/// A self-signed certificate for IP:127.0.0.1 and its key, as PEM files.
struct test_cert {
  troupe::test::temp_dir dir;
  std::string cert_file;
  std::string key_file;

  test_cert() {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{EVP_EC_gen("P-256"),
                                                            &EVP_PKEY_free};
    std::unique_ptr<X509, decltype(&X509_free)> cert{X509_new(), &X509_free};
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
    cert_file = dir
                  .write("cert.pem",
                         pem([&](BIO* b) { return PEM_write_bio_X509(b, x); }))
                  .string();
    key_file = dir
                 .write("key.pem", pem([&](BIO* b) {
                          return PEM_write_bio_PrivateKey(b, key.get(), nullptr,
                                                          nullptr, 0, nullptr,
                                                          nullptr);
                        }))
                 .string();
  }

  template<class F>
  static std::string pem(F write) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio{BIO_new(BIO_s_mem()),
                                                  &BIO_free};
    if (!bio || write(bio.get()) != 1)
      throw std::runtime_error("cannot write PEM");
    char* data = nullptr;
    auto n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<size_t>(n));
  }
};

class HttpEndpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    work_.emplace(io_.get_executor());
    // Two threads, as a node may run: sessions must keep to their strands.
    for (auto& t : threads_)
      t = std::thread{[this] {
        io_.run();
        ++io_done_;
      }};
  }

  void TearDown() override {
    endpoint_.reset();
    work_.reset();
    // Once stopped, the endpoint leaves nothing on the io_context.
    for (int i = 0; i < 500 && io_done_ < threads_.size(); ++i)
      std::this_thread::sleep_for(10ms);
    EXPECT_EQ(io_done_, threads_.size())
      << "the io_context still had work 5s after stop()";
    io_.stop();
    for (auto& t : threads_)
      t.join();
  }

  /// Starts an endpoint on 127.0.0.1 and an ephemeral port.
  http_endpoint& start(endpoint_options opts = {}) {
    opts.host = "127.0.0.1";
    opts.port = 0;
    endpoint_handlers h;
    h.ready = [this] { return ready_.load(); };
    h.metrics = [this] {
      if (metrics_fail_)
        throw std::runtime_error("metrics failed");
      return metrics_text;
    };
    endpoint_ = std::make_unique<http_endpoint>(io_, opts, h);
    auto why = endpoint_->start();
    EXPECT_EQ(why, "");
    EXPECT_NE(endpoint_->port(), 0);
    return *endpoint_;
  }

  uint16_t port() const { return endpoint_->port(); }

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>>
    work_;
  std::atomic<size_t> io_done_{0};
  std::array<std::thread, 2> threads_;
  std::unique_ptr<http_endpoint> endpoint_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> metrics_fail_{false};
};

} // namespace

TEST_F(HttpEndpoint, ServesHealthReadinessAndMetrics) {
  start();
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  // One kept-alive connection for all of them.
  auto health = c.request("GET", "/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->header("content-type"), "application/json");
  EXPECT_EQ(health->body, R"({"status":"ok"})");
  auto starting = c.request("GET", "/ready");
  ASSERT_TRUE(starting);
  EXPECT_EQ(starting->status, 503);
  EXPECT_EQ(starting->body, R"({"status":"starting"})");
  ready_ = true;
  auto ready = c.request("GET", "/ready");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200);
  EXPECT_EQ(ready->body, R"({"status":"ready"})");
  auto metrics = c.request("GET", "/metrics?name[]=x");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->header("content-type"),
            "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(metrics->body, metrics_text);
  EXPECT_EQ(metrics->header("server"), "troupe");
}

TEST_F(HttpEndpoint, AnswersHeadWithHeadersOnly) {
  start();
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  auto head = c.request("HEAD", "/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-length"),
            std::to_string(metrics_text.size()));
  EXPECT_EQ(head->body, "");
  auto health = c.request("HEAD", "/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // No stray body bytes on the connection: the next response parses.
  auto next = c.request("GET", "/health");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, R"({"status":"ok"})");
}

TEST_F(HttpEndpoint, AnswersUnknownPathsAndMethods) {
  start();
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  auto missing = c.request("GET", "/nope?x=1");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->header("content-type"), "application/json");
  EXPECT_EQ(missing->body, R"({"error":"not found","path":"/nope"})");
  auto odd = c.request("GET", "/a\"b");
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->body, R"({"error":"not found","path":"/a\"b"})");
  auto post = c.request("POST", "/health", {}, "{}");
  ASSERT_TRUE(post);
  EXPECT_EQ(post->status, 405);
  EXPECT_EQ(post->header("allow"), "GET, HEAD");
  EXPECT_EQ(post->body, R"({"error":"method not allowed","method":"POST",)"
                        R"("allowed":"GET, HEAD"})");
  auto del = c.request("DELETE", "/metrics");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 405);
  // Still the same connection.
  auto ok = c.request("GET", "/health");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(HttpEndpoint, ServesAddedRoutes) {
  auto& ep = start();
  ep.add_route("POST", "/echo", [](const endpoint_request& r) {
    endpoint_response res;
    res.content_type = "text/plain";
    res.body = r.method + " " + r.target + " " + r.body;
    res.headers.emplace_back("X-Echo", "yes");
    return res;
  });
  ep.add_route("GET", "/teapot", [](const endpoint_request&) {
    return endpoint_response::json(418, R"({"short":"stout"})");
  });
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  auto echo = c.request("POST", "/echo?q=1", {}, "hello");
  ASSERT_TRUE(echo);
  EXPECT_EQ(echo->status, 200);
  EXPECT_EQ(echo->body, "POST /echo?q=1 hello");
  EXPECT_EQ(echo->header("x-echo"), "yes");
  EXPECT_EQ(echo->header("content-type"), "text/plain");
  auto get = c.request("GET", "/echo");
  ASSERT_TRUE(get);
  EXPECT_EQ(get->status, 405);
  EXPECT_EQ(get->header("allow"), "POST");
  auto teapot = c.request("GET", "/teapot");
  ASSERT_TRUE(teapot);
  EXPECT_EQ(teapot->status, 418);
}

TEST_F(HttpEndpoint, TurnsAFailingHandlerInto500) {
  start();
  metrics_fail_ = true;
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  auto r = c.request("GET", "/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body, R"({"error":"internal error"})");
}

TEST_F(HttpEndpoint, AnswersMalformedRequestsWith400AndCloses) {
  start();
  for (std::string bad :
       {"this is not http\r\n\r\n",
        "GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
        "GET health HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /health HTTP/1.1\r\n\r\n", // HTTP/1.1 needs Host
        "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"}) {
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.send(bad));
    auto r = c.read();
    ASSERT_TRUE(r) << bad;
    EXPECT_EQ(r->status, 400) << bad;
    EXPECT_EQ(r->header("connection"), "close") << bad;
    EXPECT_TRUE(c.closed_within(2s)) << bad;
  }
}

TEST_F(HttpEndpoint, RefusesOversizeHeadersAndBodies) {
  endpoint_options opts;
  opts.max_header_bytes = 1024;
  opts.max_body_bytes = 100;
  start(opts);
  {
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.send("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: "
                       + std::string(8192, 'a') + "\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431);
    EXPECT_TRUE(c.closed_within(3s));
  }
  {
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.send("POST /health HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 1000000\r\n\r\nabc"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_TRUE(c.closed_within(3s));
  }
  {
    // Within the limits: fine.
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    auto r = c.request("POST", "/health", {}, std::string(100, 'b'));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 405);
  }
}

TEST_F(HttpEndpoint, KeepsAliveAndAnswersPipelinedRequestsInOrder) {
  start();
  client c{port()};
  ASSERT_TRUE(c.connected()) << c.error();
  ASSERT_TRUE(c.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto a = c.read();
  auto b = c.read();
  auto m = c.read();
  ASSERT_TRUE(a && b && m);
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(b->status, 404);
  EXPECT_EQ(m->body, metrics_text);
  EXPECT_FALSE(c.closed_within(200ms));
}

TEST_F(HttpEndpoint, ClosesAfterAnHttp10ResponseOrConnectionClose) {
  start();
  {
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    ASSERT_TRUE(c.send("GET /health HTTP/1.0\r\n\r\n"));
    auto r = c.read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(c.closed_within(2s));
  }
  {
    client c{port()};
    ASSERT_TRUE(c.connected()) << c.error();
    auto r = c.request("GET", "/health", "Connection: close\r\n");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("connection"), "close");
    EXPECT_TRUE(c.closed_within(2s));
  }
}

TEST_F(HttpEndpoint, DropsSilentAndTricklingClientsWhileServingOthers) {
  endpoint_options opts;
  opts.read_timeout = 600ms;
  start(opts);
  auto began = steady_clock::now();
  client silent{port()};
  client slow{port()};
  ASSERT_TRUE(silent.connected() && slow.connected());
  ASSERT_TRUE(slow.send("GET /health HTTP/1.1\r\nHost: x\r\n"));
  // One header byte every 50ms: never a whole request within the timeout.
  bool slow_closed = false;
  for (int i = 0; i < 100 && !slow_closed; ++i) {
    slow.send("X"); // fails once the server has closed
    slow_closed = slow.closed_within(50ms);
    if (i == 3) {
      // Meanwhile another client is served at once.
      auto served_at = steady_clock::now();
      client other{port()};
      auto r = other.request("GET", "/health");
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_LT(steady_clock::now() - served_at, 500ms);
    }
  }
  auto slow_elapsed = steady_clock::now() - began;
  EXPECT_TRUE(slow_closed);
  EXPECT_EQ(slow.received(), ""); // no response for a request never finished
  EXPECT_GE(slow_elapsed, 500ms);
  EXPECT_LT(slow_elapsed, 3s);
  EXPECT_TRUE(silent.closed_within(3s));
  EXPECT_LT(steady_clock::now() - began, 3s);
  // An idle kept-alive connection is closed after the timeout too.
  client idle{port()};
  auto r = idle.request("GET", "/health");
  ASSERT_TRUE(r);
  auto idle_since = steady_clock::now();
  EXPECT_TRUE(idle.closed_within(3s));
  EXPECT_GE(steady_clock::now() - idle_since, 500ms);
}

TEST_F(HttpEndpoint, ClosesConnectionsBeyondTheLimitAtOnce) {
  endpoint_options opts;
  opts.max_connections = 2;
  start(opts);
  auto a = std::make_unique<client>(port());
  client b{port()};
  ASSERT_TRUE(a->connected() && b.connected());
  // Both are being served (so their sessions exist).
  ASSERT_TRUE(a->request("GET", "/health"));
  ASSERT_TRUE(b.request("GET", "/health"));
  {
    auto at = steady_clock::now();
    client c{port()};
    ASSERT_TRUE(c.connected()); // the kernel accepts; the endpoint closes
    EXPECT_TRUE(c.closed_within(2s));
    EXPECT_LT(steady_clock::now() - at, 1s);
    EXPECT_EQ(c.received(), "");
  }
  // One leaves: a new client is served (once the endpoint has seen it go).
  a.reset();
  bool served = false;
  for (int i = 0; i < 40 && !served; ++i) {
    client d{port()};
    auto r = d.connected() ? d.request("GET", "/health") : std::nullopt;
    served = r && r->status == 200;
    if (!served)
      std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(served);
  auto still = b.request("GET", "/health");
  ASSERT_TRUE(still);
  EXPECT_EQ(still->status, 200);
}

TEST_F(HttpEndpoint, ServesConcurrentClients) {
  endpoint_options opts;
  opts.max_connections = 16;
  start(opts);
  ready_ = true;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 6; ++t)
    clients.emplace_back([&, t] {
      client c{port()};
      for (int i = 0; i < 40 && c.connected(); ++i) {
        auto r = c.request(i % 2 == 0 ? "GET" : "HEAD",
                           t % 2 == 0 ? "/metrics" : "/ready");
        if (r && r->status == 200)
          ++ok;
      }
    });
  for (auto& t : clients)
    t.join();
  EXPECT_EQ(ok, 6 * 40);
}

TEST_F(HttpEndpoint, ServesHttpsWithACertificateFromFiles) {
  test_cert cert;
  endpoint_options opts;
  opts.tls_cert_file = cert.cert_file;
  opts.tls_key_file = cert.key_file;
  opts.read_timeout = 2s;
  start(opts);
  client c{port(), cert.cert_file};
  ASSERT_TRUE(c.connected()) << c.error();
  auto health = c.request("GET", "/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(health->body, R"({"status":"ok"})");
  auto metrics = c.request("GET", "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->body, metrics_text);
  auto head = c.request("HEAD", "/metrics");
  ASSERT_TRUE(head);
  EXPECT_EQ(head->header("content-length"),
            std::to_string(metrics_text.size()));
  auto bye = c.request("GET", "/ready", "Connection: close\r\n");
  ASSERT_TRUE(bye);
  EXPECT_EQ(bye->status, 503);
  EXPECT_TRUE(c.closed_within(3s));
  // Plain HTTP to the TLS port gets no HTTP answer, and the connection ends.
  client plain{port()};
  ASSERT_TRUE(plain.connected());
  ASSERT_TRUE(plain.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_TRUE(plain.closed_within(3s));
  EXPECT_EQ(plain.received().find("HTTP/1.1 200"), std::string::npos);
}

TEST_F(HttpEndpoint, ReportsWhyItCannotStart) {
  auto& first = start();
  auto start_with = [this](endpoint_options o) {
    http_endpoint ep{io_, std::move(o)};
    return ep.start();
  };
  endpoint_options taken;
  taken.port = first.port();
  EXPECT_EQ(start_with(taken),
            "cannot listen on 127.0.0.1:" + std::to_string(first.port())
              + ": address in use");
  endpoint_options bad_host;
  bad_host.host = "not-an-address";
  bad_host.port = 7401;
  EXPECT_EQ(start_with(bad_host), "cannot listen on not-an-address:7401: "
                                  "'not-an-address' is not an IP address");
  endpoint_options no_cert;
  no_cert.tls_cert_file = "/nonexistent/cert.pem";
  no_cert.tls_key_file = "/nonexistent/key.pem";
  EXPECT_EQ(start_with(no_cert), "cannot load TLS certificate "
                                 "'/nonexistent/cert.pem': No such file or "
                                 "directory");
  test_cert a, b;
  endpoint_options garbage;
  garbage.tls_cert_file = a.dir.write("garbage.pem", "not a certificate");
  garbage.tls_key_file = a.key_file;
  auto why = start_with(garbage);
  EXPECT_EQ(
    why.rfind("cannot load TLS certificate '" + garbage.tls_cert_file + "': ",
              0),
    0u)
    << why;
  endpoint_options half;
  half.tls_cert_file = "/nonexistent/cert.pem";
  EXPECT_EQ(start_with(half), "TLS needs both a certificate and a key file");
  endpoint_options mismatch;
  mismatch.tls_cert_file = a.cert_file;
  mismatch.tls_key_file = b.key_file;
  why = start_with(mismatch);
  EXPECT_EQ(why.rfind("cannot load TLS key '" + b.key_file + "': ", 0), 0u)
    << why;
  EXPECT_NE(why.find("mismatch"), std::string::npos) << why;
  EXPECT_EQ(first.start(), "the endpoint was started already");
  // The first one still serves.
  client c{first.port()};
  auto r = c.request("GET", "/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpEndpoint, StopClosesTheListenerAndEveryConnection) {
  auto& ep = start();
  client kept{port()};
  ASSERT_TRUE(kept.request("GET", "/health"));
  auto p = port();
  // From other threads, twice: idempotent.
  std::thread t1{[&ep] { ep.stop(); }};
  std::thread t2{[&ep] { ep.stop(); }};
  t1.join();
  t2.join();
  ep.stop();
  EXPECT_TRUE(kept.closed_within(2s));
  // Nothing listens any more (a connect fails, or is closed at once).
  bool gone = false;
  for (int i = 0; i < 40 && !gone; ++i) {
    client late{p};
    gone = !late.connected() || late.closed_within(100ms);
    if (!gone)
      std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(gone);
}
