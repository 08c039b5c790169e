#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace troupe::actors {

/// One HTTP request of an `http` node.
struct http_request {
  /// GET, POST, PUT, PATCH, DELETE, HEAD (upper case).
  std::string method = "GET";
  /// http:// or https:// URL; the query string, if any, is part of it.
  std::string url;
  /// Sent as given, in order; Host, User-Agent ("troupe/0.1") and
  /// Content-Length (for a body, and for POST, PUT and PATCH) are added
  /// unless present (names compared case-insensitively). "Connection: close"
  /// here keeps the connection from being used again.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Whole exchange: resolve, connect, TLS handshake, write and read.
  std::chrono::milliseconds timeout{30'000};
  /// Largest response body kept; a bigger one ends the request with
  /// error_kind "response_too_large" (as does a status line and header
  /// bigger than 64 KiB). Default: 1 MiB.
  size_t max_response_bytes = 1 << 20;
  /// Verify the server's certificate (against the system's CA store) and
  /// host name or IP address (https; ignored for http). Default: on.
  bool verify_tls = true;
};

/// How a request ended.
struct http_outcome {
  /// The response status; 0 when no response was read.
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Empty on a response (of any status). Otherwise one of: bad_url (also
  /// for a method or header that cannot be sent), resolve, connect, tls,
  /// timeout, io, response_too_large, cancelled.
  std::string error_kind;
  /// A readable reason naming the URL's host, e.g. "GET
  /// http://127.0.0.1:8080/x: no response within 2s". The URL appears
  /// without its query string, which may hold a secret.
  std::string error;
};

/// Runs HTTP(S) requests asynchronously on its own Asio thread (Boost.Beast,
/// OpenSSL): no thread per request, no blocking wait.
///
/// Connections are kept open and used again (HTTP/1.1 keep-alive): after a
/// response that allows it, a connection waits idle for the next request to
/// the same scheme, host and port, at most 64 per such place, for at most
/// 30 s, and is closed when the server closes it meanwhile. A request sent
/// on a kept connection that fails before any byte of the response came
/// back (the server had closed it just then) is sent once more on a fresh
/// connection, if that is safe: nothing of it was written, or its method is
/// idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE), or it carries an
/// Idempotency-Key header. It never is after part of a response.
class http_client {
 public:
  using handle = uint64_t;

  http_client();

  /// Aborts what is in flight (callbacks get error_kind "cancelled", on the
  /// client's thread, before this returns) and joins the thread. A host name
  /// lookup under way (getaddrinfo, on Asio's resolver thread) cannot be
  /// interrupted and is waited for; IP addresses are never looked up.
  ~http_client();

  http_client(const http_client&) = delete;
  http_client& operator=(const http_client&) = delete;

  /// Starts a request. `done` is called exactly once, on the client's
  /// thread, never from within start() (also for a bad URL).
  handle start(http_request request, std::function<void(http_outcome)> done);

  /// Aborts a request: its callback gets error_kind "cancelled" (unless it
  /// already finished). Unknown handles are ignored.
  void cancel(handle h);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::actors
