#pragma once

// No Asio here: tests include this header without Asio or Beast. Including
// it first in a .cpp also brings <utility> in before any Asio header, which
// GCC 12 needs with this Boost.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::test {

using http_header_list = std::vector<std::pair<std::string, std::string>>;

/// A request as the test server read it.
struct http_seen_request {
  /// 0 for the first request the server read, then 1, 2, ...
  size_t index = 0;
  std::string method;
  /// As sent: path and query string, still encoded.
  std::string target;
  /// In the order sent, names as sent.
  http_header_list headers;
  std::string body;
  /// When the whole request had been read.
  std::chrono::steady_clock::time_point at;

  /// The target without its query string.
  std::string path() const { return target.substr(0, target.find('?')); }

  /// The value of the first header named `name` (case-insensitively).
  std::optional<std::string> header(std::string_view name) const;

  /// How many headers are named `name` (case-insensitively).
  size_t count(std::string_view name) const;
};

/// What the test server answers.
struct http_reply {
  int status = 200;
  /// Sent as given; Content-Length is added.
  http_header_list headers;
  std::string body;
  /// Wait this long before answering (the server stays responsive to other
  /// connections meanwhile).
  std::chrono::milliseconds delay{0};
  /// Never answer: hold the connection open until the client closes it (or
  /// the server stops).
  bool never_answer = false;

  /// A reply of `status` with a JSON body (Content-Type application/json).
  static http_reply json(int status, std::string body);
  /// A reply of `status` with a text body (Content-Type text/plain).
  static http_reply text(int status, std::string body);
};

/// A plain-HTTP server for tests on 127.0.0.1, on an ephemeral port and a
/// thread of its own (Boost.Asio and Beast). Each request is answered as the
/// handler says, or from the replies scripted for its path. Every request is
/// recorded. The destructor stops the server at once (replies under way or
/// delayed are dropped, connections closed) and joins its thread.
class http_server {
 public:
  /// Called on the server's thread, one request at a time.
  using handler = std::function<http_reply(const http_seen_request&)>;

  /// Answers from the replies given to script(); a path without any gets
  /// 404 "no reply scripted for PATH".
  http_server();
  explicit http_server(handler h);
  ~http_server();

  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Queues replies for requests to `path` (the target without its query
  /// string), used in order; the last one then answers every later request.
  void script(const std::string& path, std::vector<http_reply> replies);

  uint16_t port() const noexcept { return port_; }

  /// "http://127.0.0.1:PORT" followed by `path_and_query`.
  std::string url(const std::string& path_and_query = "/") const;

  /// The requests read so far, in the order they were read.
  std::vector<http_seen_request> requests() const;
  size_t request_count() const;

  /// Waits at most `limit` until at least `n` requests have been read;
  /// returns whether they have.
  bool wait_for_requests(size_t n, std::chrono::milliseconds limit) const;

  /// Connections accepted and not yet closed (by either side).
  size_t open_connections() const;

 private:
  http_reply scripted(const http_seen_request& r);
  http_reply answer(http_seen_request& r);

  struct impl;
  handler handler_;
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  std::vector<http_seen_request> requests_;
  std::map<std::string, std::vector<http_reply>> scripts_;
  size_t open_ = 0;
  uint16_t port_ = 0;
  std::unique_ptr<impl> impl_;
};

/// A port on 127.0.0.1 that nothing listens on: bound, then closed.
uint16_t closed_port();

} // namespace troupe::test
