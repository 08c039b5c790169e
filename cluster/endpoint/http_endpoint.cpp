#include "cluster/endpoint/http_endpoint.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <type_traits>
#include <unordered_map>

namespace troupe::cluster {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr const char* server_name = "troupe";
constexpr const char* metrics_content_type
  = "text/plain; version=0.0.4; charset=utf-8";

/// Longest wait, after an error response, for the client to stop sending.
constexpr std::chrono::milliseconds max_linger{2000};
/// Bytes read and dropped while lingering at most.
constexpr size_t max_linger_bytes = 1 << 20;

/// `s` as a JSON string literal, quotes included.
std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      std::array<char, 8> buf;
      std::snprintf(buf.data(), buf.size(), "\\u%04x", u);
      out += buf.data();
    } else {
      out += c;
    }
  }
  return out + "\"";
}

endpoint_response json_error(int status, std::string_view error,
                             std::string extra = {}) {
  return endpoint_response::json(status, "{\"error\":" + json_string(error)
                                           + extra + "}");
}

/// Readable text for the errors of start(), e.g. "address in use".
std::string describe(const error_code& ec) {
  if (ec == asio::error::address_in_use)
    return "address in use";
  if (ec == asio::error::access_denied)
    return "permission denied";
  if (ec == boost::system::errc::address_not_available)
    return "address not available on this machine";
  return ec.message();
}

/// Why OpenSSL failed (the reason of its earliest queued error), for TLS
/// setup failures.
std::string ssl_error(const error_code& ec) {
  std::string why;
  if (auto code = ERR_get_error(); code != 0)
    if (const char* reason = ERR_reason_error_string(code))
      why = reason;
  ERR_clear_error();
  return why.empty() ? ec.message() : why;
}

/// What keeps `path` from being read, or "" if nothing does.
std::string unreadable(const std::string& path) {
  std::ifstream in{path};
  if (in)
    return {};
  return std::strerror(errno);
}

/// What the endpoint needs of every connection when it stops.
class session_base {
 public:
  virtual ~session_base() = default;
  /// Closes the connection, on its strand.
  virtual void close() = 0;
};

} // namespace

endpoint_response endpoint_response::json(int status, std::string body) {
  endpoint_response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

// -- shared state -------------------------------------------------------------

struct http_endpoint::impl : std::enable_shared_from_this<impl> {
  asio::io_context& io;
  endpoint_options opts;
  endpoint_handlers handlers;
  std::optional<ssl::context> tls;
  /// Accepting runs on this strand.
  asio::strand<asio::io_context::executor_type> strand;
  tcp::acceptor acceptor;
  asio::steady_timer retry;
  std::atomic<uint16_t> bound_port{0};
  std::atomic<bool> started{false};
  std::atomic<bool> stopping{false};
  std::atomic<size_t> active{0};

  /// Handlers run under a shared lock; stop() takes it exclusively, so no
  /// handler runs once stop() returns.
  std::shared_mutex gate;
  bool stopped = false;

  std::mutex routes_mtx;
  /// Path -> method -> handler.
  std::map<std::string, std::map<std::string, route_handler>, std::less<>>
    routes;

  std::mutex sessions_mtx;
  std::unordered_map<uint64_t, std::weak_ptr<session_base>> sessions;
  uint64_t next_session = 0;

  impl(asio::io_context& ctx, endpoint_options o, endpoint_handlers h)
      : io(ctx), opts(std::move(o)), handlers(std::move(h)),
        strand(asio::make_strand(ctx)), acceptor(strand), retry(strand) {}

  std::string load_tls();
  std::string listen();
  void accept();
  void accepted(error_code ec, tcp::socket socket);
  void stop();

  /// Registers a session; false once stopping.
  bool enter(uint64_t& id, std::weak_ptr<session_base> s) {
    std::lock_guard<std::mutex> guard{sessions_mtx};
    if (stopping)
      return false;
    id = next_session++;
    sessions.emplace(id, std::move(s));
    return true;
  }

  void leave(uint64_t id) {
    std::lock_guard<std::mutex> guard{sessions_mtx};
    sessions.erase(id);
  }

  /// The answer to `req`; nullopt once the endpoint stops.
  std::optional<endpoint_response> answer(const endpoint_request& req);
};

// -- sessions -----------------------------------------------------------------

namespace {

template<class Stream>
constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;

/// One connection: reads requests and answers them in order, one at a time.
/// Every step runs on the connection's strand. `Server` is
/// http_endpoint::impl.
template<class Stream, class Server>
class session final
    : public session_base,
      public std::enable_shared_from_this<session<Stream, Server>> {
 public:
  session(std::shared_ptr<Server> server, Stream stream)
      : server_(std::move(server)), stream_(std::move(stream)) {
    ++server_->active;
  }

  ~session() override {
    if (registered_)
      server_->leave(id_);
    --server_->active;
  }

  void run() {
    if (!server_->enter(id_, this->weak_from_this())) {
      close_now();
      return;
    }
    registered_ = true;
    // On the strand from here on.
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      if constexpr (is_tls<Stream>)
        self->handshake();
      else
        self->read_request();
    });
  }

  void close() override {
    asio::post(stream_.get_executor(),
               [self = this->shared_from_this()] { self->close_now(); });
  }

 private:
  const endpoint_options& opts() const { return server_->opts; }

  beast::tcp_stream& tcp() { return beast::get_lowest_layer(stream_); }

  void close_now() {
    closed_ = true;
    tcp().close();
  }

  void handshake() {
    tcp().expires_after(opts().read_timeout);
    stream_.async_handshake(ssl::stream_base::server,
                            [self = this->shared_from_this()](error_code ec) {
                              if (ec || self->closed_) {
                                self->close_now();
                                return;
                              }
                              self->read_request();
                            });
  }

  void read_request() {
    if (closed_)
      return;
    parser_.emplace();
    parser_->header_limit(opts().max_header_bytes);
    parser_->body_limit(opts().max_body_bytes);
    // One deadline for the whole request, however it trickles in.
    tcp().expires_after(opts().read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = this->shared_from_this()](
                              error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(error_code ec) {
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto length = parser_->content_length();
    if (length && *length > opts().max_body_bytes) {
      on_read_error(http::error::body_limit);
      return;
    }
    if (parser_->is_done()) {
      handle();
      return;
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](error_code ec, size_t) {
                       if (ec)
                         self->on_read_error(ec);
                       else
                         self->handle();
                     });
  }

  void on_read_error(error_code ec) {
    if (closed_ || ec == asio::error::operation_aborted)
      return;
    if (ec == http::error::header_limit) {
      reply_error(json_error(431, "request header too large"));
      return;
    }
    if (ec == http::error::body_limit) {
      reply_error(json_error(413, "request body too large"));
      return;
    }
    // Nothing sent (end_of_stream), part of a request, a timeout or a
    // network error: nobody to answer.
    bool parse_error
      = ec.category()
          == http::make_error_code(http::error::bad_method).category()
        && ec != http::error::end_of_stream
        && ec != http::error::partial_message;
    if (parse_error) {
      reply_error(json_error(400, "malformed request: " + ec.message()));
      return;
    }
    close_now();
  }

  /// Answers and closes (after a lingering read).
  void reply_error(endpoint_response r) { send(std::move(r), 11, true, false); }

  void handle() {
    auto& req = parser_->get();
    auto version = req.version();
    bool head = req.method() == http::verb::head;
    auto target = req.target();
    if (target.empty() || target.front() != '/') {
      send(json_error(400, "request target must be a path from '/'"), version,
           true, false);
      return;
    }
    if (version >= 11 && req.find(http::field::host) == req.end()) {
      send(json_error(400, "an HTTP/1.1 request needs a Host header"), version,
           true, false);
      return;
    }
    endpoint_request in;
    in.method = std::string{req.method_string()};
    in.target = std::string{target};
    in.path = in.target.substr(0, in.target.find('?'));
    for (const auto& field : req)
      in.headers.emplace_back(std::string{field.name_string()},
                              std::string{field.value()});
    in.body = std::move(req.body());
    bool keep_alive = req.keep_alive();
    auto out = server_->answer(in);
    if (!out) {
      close_now();
      return;
    }
    send(std::move(*out), version, !keep_alive, head);
  }

  void send(endpoint_response r, unsigned version, bool close_after,
            bool head) {
    res_.emplace();
    auto& res = *res_;
    res.version(version);
    res.result(static_cast<unsigned>(r.status));
    res.set(http::field::server, server_name);
    res.set(http::field::content_type, r.content_type);
    for (const auto& [name, value] : r.headers)
      res.insert(name, value);
    // 1xx, 204 and 304 responses have no body and no length.
    bool bodiless = r.status < 200 || r.status == 204 || r.status == 304;
    if (!bodiless)
      res.content_length(r.body.size());
    // A response to HEAD announces the body it leaves out.
    if (!head && !bodiless)
      res.body() = std::move(r.body);
    res.keep_alive(!close_after);
    tcp().expires_after(opts().write_timeout);
    http::async_write(
      stream_, res,
      [self = this->shared_from_this(), close_after](error_code ec, size_t) {
        self->res_.reset();
        if (ec || self->closed_) {
          self->close_now();
          return;
        }
        if (close_after)
          self->finish();
        else
          self->read_request();
      });
  }

  /// Ends the connection after a last response.
  void finish() {
    if constexpr (is_tls<Stream>) {
      tcp().expires_after(std::min(opts().read_timeout, max_linger));
      stream_.async_shutdown(
        [self = this->shared_from_this()](error_code) { self->close_now(); });
    } else {
      // Closing with unread input makes the kernel send a reset, which can
      // destroy the response before the client reads it: stop sending, then
      // read until the client closes too (bounded in time and bytes).
      error_code ignored;
      tcp().socket().shutdown(tcp::socket::shutdown_send, ignored);
      tcp().expires_after(std::min(opts().read_timeout, max_linger));
      linger();
    }
  }

  void linger() {
    if (closed_ || lingered_ >= max_linger_bytes) {
      close_now();
      return;
    }
    tcp().async_read_some(
      asio::buffer(scratch_),
      [self = this->shared_from_this()](error_code ec, size_t n) {
        self->lingered_ += n;
        if (ec)
          self->close_now();
        else
          self->linger();
      });
  }

  std::shared_ptr<Server> server_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> res_;
  std::array<char, 4096> scratch_;
  size_t lingered_ = 0;
  uint64_t id_ = 0;
  bool registered_ = false;
  bool closed_ = false;
};

} // namespace

// -- impl ---------------------------------------------------------------------

std::string http_endpoint::impl::load_tls() {
  if (opts.tls_cert_file.empty() && opts.tls_key_file.empty())
    return {};
  if (opts.tls_cert_file.empty() || opts.tls_key_file.empty())
    return "TLS needs both a certificate and a key file";
  tls.emplace(ssl::context::tls_server);
  error_code ec;
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                     | ssl::context::no_sslv3 | ssl::context::single_dh_use,
                   ec);
  SSL_CTX_set_min_proto_version(tls->native_handle(), TLS1_2_VERSION);
  auto cert_error = [this](const std::string& why) {
    return "cannot load TLS certificate '" + opts.tls_cert_file + "': " + why;
  };
  auto key_error = [this](const std::string& why) {
    return "cannot load TLS key '" + opts.tls_key_file + "': " + why;
  };
  if (auto why = unreadable(opts.tls_cert_file); !why.empty())
    return cert_error(why);
  if (auto why = unreadable(opts.tls_key_file); !why.empty())
    return key_error(why);
  tls->use_certificate_chain_file(opts.tls_cert_file, ec);
  if (ec)
    return cert_error(ssl_error(ec));
  tls->use_private_key_file(opts.tls_key_file, ssl::context::pem, ec);
  if (ec)
    return key_error(ssl_error(ec));
  if (SSL_CTX_check_private_key(tls->native_handle()) != 1) {
    ERR_clear_error();
    return "TLS key '" + opts.tls_key_file + "' does not match certificate '"
           + opts.tls_cert_file + "'";
  }
  return {};
}

std::string http_endpoint::impl::listen() {
  std::string host = opts.host;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost")
    host = "127.0.0.1";
  auto where = (host.find(':') != std::string::npos ? "[" + host + "]" : host)
               + ":" + std::to_string(opts.port);
  error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec)
    return "cannot listen on " + where + ": '" + opts.host
           + "' is not an IP address";
  tcp::endpoint ep{address, opts.port};
  acceptor.open(ep.protocol(), ec);
  if (!ec)
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    acceptor.bind(ep, ec);
  if (!ec)
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor.close(ignored);
    return "cannot listen on " + where + ": " + describe(ec);
  }
  bound_port = acceptor.local_endpoint(ec).port();
  return {};
}

void http_endpoint::impl::accept() {
  acceptor.async_accept(
    asio::make_strand(io),
    [self = shared_from_this()](error_code ec, tcp::socket socket) {
      self->accepted(ec, std::move(socket));
    });
}

void http_endpoint::impl::accepted(error_code ec, tcp::socket socket) {
  if (stopping || ec == asio::error::operation_aborted || !acceptor.is_open())
    return;
  if (ec) {
    // Out of descriptors and the like: try again shortly, not in a loop.
    retry.expires_after(std::chrono::milliseconds{50});
    retry.async_wait([self = shared_from_this()](error_code ec) {
      if (!ec && !self->stopping)
        self->accept();
    });
    return;
  }
  if (active >= opts.max_connections) {
    error_code ignored;
    socket.close(ignored);
  } else {
    error_code ignored;
    socket.set_option(tcp::no_delay{true}, ignored);
    if (tls) {
      using stream = beast::ssl_stream<beast::tcp_stream>;
      std::make_shared<session<stream, impl>>(
        shared_from_this(), stream{beast::tcp_stream{std::move(socket)}, *tls})
        ->run();
    } else {
      std::make_shared<session<beast::tcp_stream, impl>>(
        shared_from_this(), beast::tcp_stream{std::move(socket)})
        ->run();
    }
  }
  accept();
}

void http_endpoint::impl::stop() {
  {
    std::unique_lock<std::shared_mutex> guard{gate};
    if (stopped)
      return;
    stopped = true;
  }
  std::vector<std::shared_ptr<session_base>> live;
  {
    std::lock_guard<std::mutex> guard{sessions_mtx};
    stopping = true;
    for (auto& [id, weak] : sessions)
      if (auto s = weak.lock())
        live.push_back(std::move(s));
  }
  asio::dispatch(strand, [self = shared_from_this()] {
    error_code ignored;
    self->acceptor.close(ignored);
    self->retry.cancel();
  });
  for (auto& s : live)
    s->close();
}

std::optional<endpoint_response>
http_endpoint::impl::answer(const endpoint_request& req) {
  route_handler handler;
  std::string allowed;
  bool known_path = false;
  {
    std::lock_guard<std::mutex> guard{routes_mtx};
    auto i = routes.find(req.path);
    if (i != routes.end()) {
      known_path = true;
      auto& methods = i->second;
      auto m = methods.find(req.method);
      if (m == methods.end() && req.method == "HEAD")
        m = methods.find("GET");
      if (m != methods.end()) {
        handler = m->second;
      } else {
        for (const auto& [name, h] : methods) {
          if (name == "HEAD")
            continue;
          allowed += allowed.empty() ? name : ", " + name;
          if (name == "GET")
            allowed += ", HEAD";
        }
      }
    }
  }
  std::shared_lock<std::shared_mutex> guard{gate};
  if (stopped)
    return std::nullopt;
  if (!known_path)
    return json_error(404, "not found", ",\"path\":" + json_string(req.path));
  if (!handler) {
    auto r = json_error(405, "method not allowed",
                        ",\"method\":" + json_string(req.method)
                          + ",\"allowed\":" + json_string(allowed));
    r.headers.emplace_back("Allow", allowed);
    return r;
  }
  try {
    auto r = handler(req);
    if (r.status < 100 || r.status > 599)
      return json_error(500, "internal error: invalid status "
                               + std::to_string(r.status));
    return r;
  } catch (...) {
    return json_error(500, "internal error");
  }
}

// -- http_endpoint ------------------------------------------------------------

http_endpoint::http_endpoint(boost::asio::io_context& io,
                             endpoint_options options,
                             endpoint_handlers handlers)
    : impl_(
      std::make_shared<impl>(io, std::move(options), std::move(handlers))) {
  add_route("GET", "/health", [](const endpoint_request&) {
    return endpoint_response::json(200, R"({"status":"ok"})");
  });
  // Handlers never run after stop(), which the destructor calls: a plain
  // pointer cannot dangle (and a shared one would keep impl alive forever).
  auto* self = impl_.get();
  add_route("GET", "/ready", [self](const endpoint_request&) {
    const auto& ready = self->handlers.ready;
    if (ready && !ready())
      return endpoint_response::json(503, R"({"status":"starting"})");
    if (const auto& unavailable = self->handlers.unavailable)
      if (auto body = unavailable(); !body.empty())
        return endpoint_response::json(503, std::move(body));
    return endpoint_response::json(200, R"({"status":"ready"})");
  });
  if (impl_->handlers.metrics)
    add_route("GET", "/metrics", [self](const endpoint_request&) {
      endpoint_response r;
      r.content_type = metrics_content_type;
      r.body = self->handlers.metrics();
      return r;
    });
}

http_endpoint::~http_endpoint() {
  stop();
}

void http_endpoint::add_route(std::string method, std::string path,
                              route_handler handler) {
  std::lock_guard<std::mutex> guard{impl_->routes_mtx};
  impl_->routes[std::move(path)][std::move(method)] = std::move(handler);
}

std::string http_endpoint::start() {
  if (impl_->started.exchange(true))
    return "the endpoint was started already";
  if (impl_->stopping)
    return "the endpoint was stopped";
  const auto& o = impl_->opts;
  if (o.max_connections == 0)
    return "max_connections must be at least 1";
  if (o.read_timeout.count() <= 0 || o.write_timeout.count() <= 0)
    return "read_timeout and write_timeout must be positive";
  auto why = impl_->load_tls();
  if (!why.empty())
    return why;
  why = impl_->listen();
  if (!why.empty())
    return why;
  asio::dispatch(impl_->strand, [self = impl_] {
    if (!self->stopping)
      self->accept();
  });
  return {};
}

uint16_t http_endpoint::port() const noexcept {
  return impl_->bound_port;
}

void http_endpoint::stop() {
  impl_->stop();
}

} // namespace troupe::cluster
