#include "tests/support/http_server.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <exception>
#include <strings.h>
#include <thread>

namespace troupe::test {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;

bool same_name(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

} // namespace

std::optional<std::string>
http_seen_request::header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (same_name(n, name))
      return v;
  return std::nullopt;
}

size_t http_seen_request::count(std::string_view name) const {
  size_t n = 0;
  for (const auto& h : headers)
    n += same_name(h.first, name) ? 1 : 0;
  return n;
}

http_reply http_reply::json(int status, std::string body) {
  http_reply r;
  r.status = status;
  r.headers = {{"Content-Type", "application/json"}};
  r.body = std::move(body);
  return r;
}

http_reply http_reply::text(int status, std::string body) {
  http_reply r;
  r.status = status;
  r.headers = {{"Content-Type", "text/plain"}};
  r.body = std::move(body);
  return r;
}

/// The Asio side: an io_context run by one thread, an acceptor and a
/// coroutine per connection.
struct http_server::impl {
  http_server* owner;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;

  explicit impl(http_server* o) : owner(o) {
    acceptor.open(tcp::v4());
    acceptor.bind({asio::ip::make_address_v4("127.0.0.1"), 0});
    acceptor.listen();
  }

  void start() {
    asio::co_spawn(io, accept_loop(), asio::detached);
    thread = std::thread{[this] { io.run(); }};
  }

  void stop() {
    io.stop();
    if (thread.joinable())
      thread.join();
  }

  awaitable<void> accept_loop() {
    for (;;) {
      auto socket = co_await acceptor.async_accept(use_awaitable);
      // An error ends that connection's coroutine, and it alone.
      asio::co_spawn(io, session(std::move(socket)), asio::detached);
    }
  }

  /// Counts a connection as open while it lives (its coroutine frame too
  /// goes when the server stops).
  struct open_guard {
    http_server* owner;
    explicit open_guard(http_server* o) : owner(o) {
      std::lock_guard guard{owner->mtx_};
      ++owner->open_;
    }
    ~open_guard() {
      std::lock_guard guard{owner->mtx_};
      --owner->open_;
    }
    open_guard(const open_guard&) = delete;
    open_guard& operator=(const open_guard&) = delete;
  };

  awaitable<void> session(tcp::socket socket) {
    open_guard counted{owner};
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      co_await http::async_read(socket, buffer, parser, use_awaitable);
      auto req = parser.release();
      http_seen_request seen;
      seen.at = std::chrono::steady_clock::now();
      seen.method = std::string{req.method_string()};
      seen.target = std::string{req.target()};
      for (const auto& f : req)
        seen.headers.emplace_back(std::string{f.name_string()},
                                  std::string{f.value()});
      seen.body = req.body();
      auto reply = owner->answer(seen);
      if (reply.never_answer) {
        // Ends (with an exception) when the client closes the connection.
        char c;
        for (;;)
          co_await socket.async_read_some(asio::buffer(&c, 1), use_awaitable);
      }
      if (reply.delay.count() > 0) {
        asio::steady_timer timer{io, reply.delay};
        co_await timer.async_wait(use_awaitable);
      }
      http::response<http::string_body> res;
      res.version(11);
      res.result(static_cast<unsigned>(reply.status));
      for (const auto& [name, value] : reply.headers)
        res.insert(name, value);
      res.body() = std::move(reply.body);
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      co_await http::async_write(socket, res, use_awaitable);
      if (!req.keep_alive())
        break;
    }
    beast::error_code ec;
    socket.shutdown(tcp::socket::shutdown_send, ec);
  }
};

http_server::http_server() : http_server(handler{}) {}

http_server::http_server(handler h)
    : handler_(std::move(h)), impl_(std::make_unique<impl>(this)) {
  port_ = impl_->acceptor.local_endpoint().port();
  impl_->start();
}

http_server::~http_server() {
  impl_->stop();
  // Pending connections (and their coroutines) go with the io_context.
  impl_.reset();
}

void http_server::script(const std::string& path,
                         std::vector<http_reply> replies) {
  std::lock_guard guard{mtx_};
  auto& q = scripts_[path];
  q.insert(q.end(), std::make_move_iterator(replies.begin()),
           std::make_move_iterator(replies.end()));
}

std::string http_server::url(const std::string& path_and_query) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path_and_query;
}

std::vector<http_seen_request> http_server::requests() const {
  std::lock_guard guard{mtx_};
  return requests_;
}

size_t http_server::request_count() const {
  std::lock_guard guard{mtx_};
  return requests_.size();
}

bool http_server::wait_for_requests(size_t n,
                                    std::chrono::milliseconds limit) const {
  std::unique_lock lock{mtx_};
  return cv_.wait_for(lock, limit, [&] { return requests_.size() >= n; });
}

size_t http_server::open_connections() const {
  std::lock_guard guard{mtx_};
  return open_;
}

http_reply http_server::scripted(const http_seen_request& r) {
  std::lock_guard guard{mtx_};
  auto i = scripts_.find(r.path());
  if (i == scripts_.end() || i->second.empty())
    return http_reply::text(404, "no reply scripted for " + r.path());
  auto reply = i->second.front();
  if (i->second.size() > 1)
    i->second.erase(i->second.begin());
  return reply;
}

http_reply http_server::answer(http_seen_request& r) {
  {
    std::lock_guard guard{mtx_};
    r.index = requests_.size();
    requests_.push_back(r);
  }
  cv_.notify_all();
  if (!handler_)
    return scripted(r);
  try {
    return handler_(r);
  } catch (const std::exception& e) {
    return http_reply::text(500,
                            std::string{"test handler threw: "} + e.what());
  }
}

uint16_t closed_port() {
  asio::io_context io;
  tcp::acceptor a{io, {asio::ip::make_address_v4("127.0.0.1"), 0}};
  auto port = a.local_endpoint().port();
  a.close();
  return port;
}

} // namespace troupe::test
