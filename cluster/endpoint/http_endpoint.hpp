#pragma once

// No Asio here: the io_context is only declared, so users of the endpoint
// do not compile Asio and Beast.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace troupe::cluster {

/// How the endpoint listens and what it allows a client.
struct endpoint_options {
  /// IP address to listen on ("localhost" means 127.0.0.1). Default:
  /// "127.0.0.1".
  std::string host = "127.0.0.1";
  /// TCP port; 0 picks a free one (see http_endpoint::port()). Default: 0.
  uint16_t port = 0;
  /// Connections served at once; a connection beyond them is closed as soon
  /// as it is accepted. Default: 64.
  size_t max_connections = 64;
  /// Longest time for a whole request (and the TLS handshake) to arrive,
  /// counted from the first byte awaited; a keep-alive connection idle this
  /// long is closed too. Slow clients get no more. Default: 10s.
  std::chrono::milliseconds read_timeout{10'000};
  /// Longest time for writing one response. Default: 10s.
  std::chrono::milliseconds write_timeout{10'000};
  /// Largest request line and header fields together; beyond it the answer
  /// is 431 and the connection closes. Default: 8 KiB.
  uint32_t max_header_bytes = 8 * 1024;
  /// Largest request body; beyond it the answer is 413 and the connection
  /// closes. Default: 64 KiB.
  uint64_t max_body_bytes = 64 * 1024;
  /// PEM files of the certificate (chain) and its private key: both set
  /// serve HTTPS only, both empty plain HTTP. Default: empty.
  std::string tls_cert_file;
  std::string tls_key_file;
};

/// A request as a route handler sees it.
struct endpoint_request {
  /// As sent, e.g. "GET". A HEAD request served by a GET route says "HEAD".
  std::string method;
  /// Path and query string, as sent (still percent-encoded).
  std::string target;
  /// The target without its query string.
  std::string path;
  /// In the order sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// What a route handler answers.
struct endpoint_response {
  int status = 200;
  /// Default: "application/json".
  std::string content_type = "application/json";
  std::string body;
  /// More header fields, sent as given (Content-Length, Content-Type,
  /// Server and Connection are the endpoint's).
  std::vector<std::pair<std::string, std::string>> headers;

  /// A response of `status` with a JSON body.
  static endpoint_response json(int status, std::string body);
};

/// Answers one request. Runs on a thread of the io_context: it must be quick
/// and never block. An exception becomes a 500 response.
using route_handler = std::function<endpoint_response(const endpoint_request&)>;

/// What the built-in routes ask the node.
struct endpoint_handlers {
  /// Whether the node serves work (GET /ready: 200 or 503). Empty: always.
  std::function<bool()> ready;
  /// Once ready, why the node takes no work for now (e.g. its disk is low
  /// on space): the 503 body of GET /ready, a JSON object with `status` and
  /// `reason`, or an empty string when nothing is wrong. Empty: never.
  std::function<std::string()> unavailable;
  /// The Prometheus text of GET /metrics. Empty: no /metrics route.
  std::function<std::string()> metrics;
};

/// The node's HTTP/1.1 server (Boost.Beast), plain or TLS, on a caller's
/// io_context run by the caller's thread(s); it never blocks them. Routes:
///   GET /health  200 {"status":"ok"} while the process runs
///   GET /ready   200 {"status":"ready"}, or 503 {"status":"starting"} or
///                the body handlers.unavailable gives
///   GET /metrics 200 text/plain; version=0.0.4, from handlers.metrics
/// and those added with add_route(). HEAD works wherever GET does. An
/// unknown path gets 404, another method 405 with Allow, a malformed request
/// 400 and a closed connection. Connections are kept alive (HTTP/1.1).
class http_endpoint {
 public:
  /// Serves on `io`, which must outlive the endpoint.
  http_endpoint(boost::asio::io_context& io, endpoint_options options,
                endpoint_handlers handlers = {});

  /// Stops (see stop()). After it returns, no handler is called any more;
  /// it must not run inside a handler.
  ~http_endpoint();

  http_endpoint(const http_endpoint&) = delete;
  http_endpoint& operator=(const http_endpoint&) = delete;

  /// Serves `method` (e.g. "GET", upper case) on `path` (exact match, from
  /// '/', no query) with `handler`, in place of any route there before.
  /// Thread-safe; takes effect for the next request.
  void add_route(std::string method, std::string path, route_handler handler);

  /// Loads the TLS files, binds and listens; accepting runs on the
  /// io_context. Returns "" or what went wrong, e.g. "cannot listen on
  /// 127.0.0.1:7401: address in use". Call once.
  [[nodiscard]] std::string start();

  /// The port listened on (useful with port 0); 0 before start().
  uint16_t port() const noexcept;

  /// Closes the listening socket and every connection (on the io_context;
  /// requests under way get no answer). Idempotent; any thread, but not
  /// inside a handler. No handler is called once it returns.
  void stop();

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
