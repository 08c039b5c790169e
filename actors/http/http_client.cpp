#include "actors/http/http_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <deque>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <optional>
#include <string_view>
#include <sys/socket.h>
#include <thread>
#include <unordered_map>

namespace troupe::actors {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

/// Cap on the response's status line and header fields together.
constexpr uint32_t max_header_bytes = 64 * 1024;

constexpr const char* user_agent = "troupe/0.1";

/// Idle connections kept per (scheme, host, port): enough for the requests
/// a node keeps in flight to one service at a time (with 8, fifty runs
/// calling one service made a new connection for about every second
/// request), bounded so that a burst does not leave many sockets open.
constexpr size_t max_idle_per_host = 64;

/// How long an idle connection is kept before it is closed: under the
/// limits servers commonly close idle ones after (which a request that
/// finds its connection closed survives anyway, see can_resend).
constexpr std::chrono::seconds idle_timeout{30};

/// What a request URL says, once checked.
struct parsed_url {
  bool tls = false;
  /// Host name or IP address, without the brackets of an IPv6 literal.
  std::string host;
  bool ip_literal = false;
  uint16_t port = 0;
  /// The Host header: host, in brackets if IPv6, plus a non-default port.
  std::string host_header;
  /// Host, in brackets if IPv6, and port, for messages.
  std::string host_port;
  /// Path and query, at least "/".
  std::string target;
  /// The URL without query and fragment, for messages: a query string may
  /// hold a token, and messages end up in logs and journals.
  std::string display;
};

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

/// RFC 9110 token characters (method and header names).
bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) == 0
        && std::string_view{"!#$%&'*+-.^_`|~"}.find(c)
             == std::string_view::npos)
      return false;
  }
  return true;
}

bool is_ctl_or_space(char c) {
  auto u = static_cast<unsigned char>(c);
  return u <= 0x20 || u == 0x7f;
}

/// Fills `out` from `url`; returns what is wrong with it, or "" if nothing.
std::string parse_url(std::string_view url, parsed_url& out) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0)
    return "missing scheme (want http:// or https://)";
  std::string scheme;
  for (char c : url.substr(0, sep))
    scheme += lower(c);
  uint16_t default_port = 0;
  if (scheme == "http") {
    default_port = 80;
  } else if (scheme == "https") {
    out.tls = true;
    default_port = 443;
  } else {
    return "unsupported scheme '" + scheme + "' (want http or https)";
  }
  auto rest = url.substr(sep + 3);
  auto authority_end = rest.find_first_of("/?#");
  auto authority = rest.substr(0, authority_end);
  auto tail = authority_end == std::string_view::npos
                ? std::string_view{}
                : rest.substr(authority_end);
  if (authority.empty())
    return "missing host";
  if (authority.find('@') != std::string_view::npos)
    return "user information ('user:password@') in URLs is not supported";
  std::string_view host;
  std::optional<std::string_view> port;
  if (authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return "unterminated '[' in host '" + std::string{authority} + "'";
    host = authority.substr(1, close - 1);
    error_code ec;
    asio::ip::make_address_v6(std::string{host}, ec);
    if (ec || host.empty())
      return "invalid IPv6 address '" + std::string{host} + "'";
    out.ip_literal = true;
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':')
        return "unexpected '" + std::string{after} + "' after IPv6 address";
      port = after.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = authority.substr(colon + 1);
      if (port->find(':') != std::string_view::npos)
        return "an IPv6 address must be in brackets, as in http://[::1]:8080/";
    }
    if (host.empty())
      return "missing host";
    for (char c : host) {
      auto u = static_cast<unsigned char>(c);
      if (std::isalnum(u) == 0 && c != '-' && c != '.' && c != '_')
        return "invalid character '" + std::string(1, c) + "' in host '"
               + std::string{host} + "'";
    }
    error_code ec;
    asio::ip::make_address_v4(std::string{host}, ec);
    out.ip_literal = !ec;
  }
  out.host = std::string{host};
  out.port = default_port;
  if (port) {
    if (port->empty())
      return "empty port after ':'";
    if (port->size() > 9
        || port->find_first_not_of("0123456789") != std::string_view::npos)
      return "invalid port '" + std::string{*port} + "'";
    auto value = std::stoul(std::string{*port});
    if (value == 0 || value > 65535)
      return "port " + std::string{*port} + " out of range (1-65535)";
    out.port = static_cast<uint16_t>(value);
  }
  auto fragment = tail.find('#');
  if (fragment != std::string_view::npos)
    tail = tail.substr(0, fragment);
  for (char c : tail)
    if (is_ctl_or_space(c))
      return "space or control character in path or query (percent-encode "
             "it)";
  if (tail.empty() || tail.front() == '?')
    out.target = "/" + std::string{tail};
  else
    out.target = std::string{tail};
  out.host_header = out.ip_literal && out.host.find(':') != std::string::npos
                      ? "[" + out.host + "]"
                      : out.host;
  out.host_port = out.host_header + ":" + std::to_string(out.port);
  if (out.port != default_port)
    out.host_header += ":" + std::to_string(out.port);
  auto display_end = url.find_first_of("?#", sep + 3);
  out.display = std::string{url.substr(0, display_end)};
  return {};
}

/// What is wrong with the method or the headers, or "" if nothing.
std::string check_request(const http_request& req) {
  if (!is_token(req.method))
    return "invalid method '" + req.method + "'";
  for (const auto& [name, value] : req.headers) {
    if (!is_token(name))
      return "invalid header name '" + name + "'";
    for (char c : value)
      if (c == '\r' || c == '\n' || c == '\0')
        return "control character in the value of header '" + name + "'";
  }
  return {};
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110
/// 9.2.2).
bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS"
         || method == "TRACE" || method == "PUT" || method == "DELETE";
}

/// "2s" for whole seconds, "1500ms" otherwise.
std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0)
    return std::to_string(d.count() / 1000) + "s";
  return std::to_string(d.count()) + "ms";
}

} // namespace

struct http_client::impl {
  /// One connection to a server. Kept after a response that allows it, idle
  /// in `idle_conns` until a request to the same place takes it again.
  /// Touched on the io thread only.
  struct link {
    /// Where it goes: scheme, host and port (and, for https, whether the
    /// server's certificate was verified).
    std::string key;
    /// The connection of an http URL, unused for https.
    tcp::socket plain;
    /// The connection of an https URL.
    std::optional<ssl::stream<tcp::socket>> tls;
    beast::flat_buffer buffer;
    /// Closes it once it has been idle for idle_timeout.
    asio::steady_timer idle_timer;
    bool idle = false;
    /// Counts its turns in the pool and out: a handler of an idle timer or
    /// watch from an earlier turn finds another number and does nothing.
    uint64_t turn = 0;

    explicit link(asio::io_context& io) : plain(io), idle_timer(io) {}

    tcp::socket& socket() { return tls ? tls->next_layer() : plain; }

    /// Calls `f` with the stream the request goes over.
    template<class F>
    void with_stream(F&& f) {
      if (tls)
        f(*tls);
      else
        f(plain);
    }
  };
  using link_ptr = std::shared_ptr<link>;

  /// One request in flight. Touched on the io thread only (start() fills it
  /// in before posting it there).
  struct call {
    handle id = 0;
    http_request req;
    std::function<void(http_outcome)> done;
    bool finished = false;
    parsed_url url;
    /// "GET http://host:port/path", the start of every message.
    std::string what;
    tcp::resolver resolver;
    /// The connection it goes over; null once it has been given back to the
    /// pool or closed.
    link_ptr conn;
    /// The connection it was sent on before, closed, kept until the call
    /// ends: its handler may still be on the stack when it is replaced.
    link_ptr closed_conn;
    /// Whether `conn` served an earlier request (taken from the pool).
    bool reused = false;
    /// Whether the request has been sent again on a fresh connection.
    bool resent = false;
    asio::steady_timer deadline;
    http::request<http::string_body> message;
    std::optional<http::response_parser<http::string_body>> parser;

    explicit call(asio::io_context& io) : resolver(io), deadline(io) {}

    tcp::socket& socket() { return conn->socket(); }
  };
  using call_ptr = std::shared_ptr<call>;

  // Declared before io: the TLS streams destroyed with io's pending handlers
  // refer to it.
  ssl::context tls_context{ssl::context::tls_client};
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::thread thread;
  std::atomic<uint64_t> next_id{1};
  // Touched on the io thread only.
  std::unordered_map<handle, call_ptr> calls;
  /// Idle connections by link::key, the most recently used last.
  std::unordered_map<std::string, std::deque<link_ptr>> idle_conns;

  impl() : work(io.get_executor()) {
    error_code ignored;
    // Without a CA store every verifying request fails with "tls", which
    // says what is wrong; not a reason to refuse to construct.
    tls_context.set_default_verify_paths(ignored);
    tls_context.set_options(ssl::context::default_workarounds
                              | ssl::context::no_sslv2 | ssl::context::no_sslv3,
                            ignored);
    SSL_CTX_set_min_proto_version(tls_context.native_handle(), TLS1_2_VERSION);
    tls_context.set_verify_mode(ssl::verify_none, ignored);
  }

  void begin(const call_ptr& c);
  void open(const call_ptr& c);
  bool setup_tls(const call_ptr& c);
  void resolve(const call_ptr& c);
  void connect(const call_ptr& c, const tcp::resolver::results_type& results);
  void handshake(const call_ptr& c);
  void send(const call_ptr& c);
  void receive(const call_ptr& c);
  void received(const call_ptr& c, error_code ec);
  bool can_resend(const call_ptr& c, bool nothing_written) const;
  void resend(const call_ptr& c);
  link_ptr take_idle(const std::string& key);
  void keep_idle(link_ptr l);
  void drop_idle(const link_ptr& l);
  static void close(const link_ptr& l);
  void fail(const call_ptr& c, std::string kind, std::string error);
  void finish(const call_ptr& c, http_outcome outcome);
  void abort(handle h);
  void abort_all();
};

void http_client::impl::begin(const call_ptr& c) {
  auto& req = c->req;
  auto why = parse_url(req.url, c->url);
  if (!why.empty()) {
    fail(c, "bad_url", "bad URL '" + req.url + "': " + why);
    return;
  }
  c->what = req.method + " " + c->url.display;
  why = check_request(req);
  if (!why.empty()) {
    fail(c, "bad_url", c->what + ": " + why);
    return;
  }
  // The request: Host first, then the caller's headers in order, then what
  // the caller left out.
  bool has_host = false, has_agent = false, has_length = false,
       has_encoding = false, has_connection = false;
  for (const auto& [name, value] : req.headers) {
    has_host = has_host || iequals(name, "Host");
    has_agent = has_agent || iequals(name, "User-Agent");
    has_length = has_length || iequals(name, "Content-Length");
    has_encoding = has_encoding || iequals(name, "Transfer-Encoding");
    has_connection = has_connection || iequals(name, "Connection");
  }
  auto& m = c->message;
  m.version(11);
  m.method_string(req.method);
  m.target(c->url.target);
  if (!has_host)
    m.insert(http::field::host, c->url.host_header);
  for (const auto& [name, value] : req.headers)
    m.insert(name, value);
  if (!has_agent)
    m.insert(http::field::user_agent, user_agent);
  bool wants_length = !req.body.empty() || req.method == "POST"
                      || req.method == "PUT" || req.method == "PATCH";
  if (wants_length && !has_length && !has_encoding)
    m.insert(http::field::content_length, std::to_string(req.body.size()));
  // HTTP/1.1 keeps the connection open unless either side says
  // "Connection: close" (the caller may).
  m.body() = std::move(req.body);
  calls.emplace(c->id, c);
  c->deadline.expires_after(req.timeout);
  c->deadline.async_wait([this, c](error_code ec) {
    if (ec || c->finished)
      return;
    fail(c, "timeout",
         c->what + ": no response within " + format_duration(c->req.timeout));
  });
  auto key = std::string{c->url.tls ? "https://" : "http://"} + c->url.host_port
             + (c->url.tls && !req.verify_tls ? " unverified" : "");
  if (auto l = take_idle(key)) {
    c->conn = std::move(l);
    c->reused = true;
    send(c);
    return;
  }
  c->conn = std::make_shared<link>(io);
  c->conn->key = std::move(key);
  open(c);
}

void http_client::impl::open(const call_ptr& c) {
  if (c->url.tls && !setup_tls(c))
    return;
  resolve(c);
}

bool http_client::impl::setup_tls(const call_ptr& c) {
  auto& tls = c->conn->tls;
  tls.emplace(io, tls_context);
  SSL* ssl = tls->native_handle();
  const auto& host = c->url.host;
  // SNI carries host names only, never IP addresses (RFC 6066).
  if (!c->url.ip_literal && SSL_set_tlsext_host_name(ssl, host.c_str()) != 1) {
    fail(c, "tls", c->what + ": cannot set the TLS server name");
    return false;
  }
  error_code ec;
  if (!c->req.verify_tls) {
    tls->set_verify_mode(ssl::verify_none, ec);
    return true;
  }
  tls->set_verify_mode(ssl::verify_peer, ec);
  // OpenSSL checks the name (or address) along with the chain.
  auto* param = SSL_get0_param(ssl);
  int ok = 0;
  if (c->url.ip_literal) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
  } else {
    X509_VERIFY_PARAM_set_hostflags(param,
                                    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    ok = SSL_set1_host(ssl, host.c_str());
  }
  if (ec || ok != 1) {
    fail(c, "tls", c->what + ": cannot set up certificate verification");
    return false;
  }
  return true;
}

void http_client::impl::resolve(const call_ptr& c) {
  auto flags = tcp::resolver::numeric_service;
  // An address needs no lookup (and so nothing that could block).
  if (c->url.ip_literal)
    flags |= tcp::resolver::numeric_host;
  c->resolver.async_resolve(
    c->url.host, std::to_string(c->url.port), flags,
    [this, c](error_code ec, tcp::resolver::results_type results) {
      if (c->finished)
        return;
      if (ec) {
        fail(c, "resolve",
             c->what + ": cannot resolve host '" + c->url.host
               + "': " + ec.message());
        return;
      }
      connect(c, results);
    });
}

void http_client::impl::connect(const call_ptr& c,
                                const tcp::resolver::results_type& results) {
  asio::async_connect(
    c->socket(), results,
    // Stop trying further addresses once the request has ended.
    [c](const error_code&, const tcp::endpoint&) { return !c->finished; },
    [this, c](error_code ec, const tcp::endpoint&) {
      if (c->finished)
        return;
      if (ec) {
        fail(c, "connect",
             c->what + ": cannot connect to " + c->url.host_port + ": "
               + ec.message());
        return;
      }
      error_code ignored;
      c->socket().set_option(tcp::no_delay{true}, ignored);
      if (c->conn->tls)
        handshake(c);
      else
        send(c);
    });
}

void http_client::impl::handshake(const call_ptr& c) {
  auto& tls = *c->conn->tls;
  tls.async_handshake(ssl::stream_base::client, [this, c](error_code ec) {
    if (c->finished)
      return;
    if (ec) {
      std::string why = ec.message();
      auto verify = SSL_get_verify_result(c->conn->tls->native_handle());
      if (verify != X509_V_OK)
        why += std::string{" ("} + X509_verify_cert_error_string(verify) + ")";
      fail(c, "tls",
           c->what + ": TLS handshake with " + c->url.host_header
             + " failed: " + why);
      return;
    }
    send(c);
  });
}

void http_client::impl::send(const call_ptr& c) {
  c->conn->with_stream([this, c](auto& stream) {
    http::async_write(stream, c->message, [this, c](error_code ec, size_t n) {
      if (c->finished)
        return;
      if (ec && can_resend(c, n == 0)) {
        resend(c);
        return;
      }
      if (ec) {
        fail(c, "io",
             c->what + ": sending the request failed: " + ec.message());
        return;
      }
      receive(c);
    });
  });
}

void http_client::impl::receive(const call_ptr& c) {
  auto& parser = c->parser.emplace();
  parser.body_limit(static_cast<std::uint64_t>(c->req.max_response_bytes));
  parser.header_limit(max_header_bytes);
  // A response to HEAD announces a body it does not have.
  if (c->req.method == "HEAD")
    parser.skip(true);
  c->conn->with_stream([this, c](auto& stream) {
    http::async_read_header(
      stream, c->conn->buffer, *c->parser,
      [this, c, &stream](error_code ec, size_t) {
        if (c->finished)
          return;
        auto& parser = *c->parser;
        if (ec || parser.is_done()) {
          received(c, ec);
          return;
        }
        // Beast 1.74 does not apply body_limit to a Content-Length (only to
        // chunked bodies and bodies ended by the connection): check it here.
        auto length = parser.content_length();
        if (length && *length > c->req.max_response_bytes) {
          received(c, http::error::body_limit);
          return;
        }
        http::async_read(stream, c->conn->buffer, parser,
                         [this, c](error_code ec, size_t) { received(c, ec); });
      });
  });
}

void http_client::impl::received(const call_ptr& c, error_code ec) {
  if (c->finished)
    return;
  auto& parser = *c->parser;
  // A connection kept from an earlier request that the server had closed
  // (it may close an idle one at any time) fails before any byte of the
  // response: send the request again on a fresh one, if that is safe.
  if (ec && !parser.got_some() && c->conn->buffer.size() == 0
      && can_resend(c, false)) {
    resend(c);
    return;
  }
  // A TLS server may close without close_notify; for a body that ends with
  // the connection, that is its end.
  if (ec == ssl::error::stream_truncated && parser.is_header_done()) {
    error_code eof;
    parser.put_eof(eof);
    if (!eof)
      ec = {};
  }
  if (ec == http::error::body_limit) {
    fail(c, "response_too_large",
         c->what + ": response body exceeds "
           + std::to_string(c->req.max_response_bytes) + " bytes");
    return;
  }
  if (ec == http::error::header_limit) {
    fail(c, "response_too_large",
         c->what + ": response header exceeds "
           + std::to_string(max_header_bytes) + " bytes");
    return;
  }
  if (ec == http::error::end_of_stream) {
    fail(c, "io",
         c->what
           + ": the server closed the connection without a "
             "response");
    return;
  }
  if (ec == http::error::partial_message) {
    fail(c, "io",
         c->what
           + ": the server closed the connection in the "
             "middle of the response");
    return;
  }
  if (ec) {
    fail(c, "io", c->what + ": reading the response failed: " + ec.message());
    return;
  }
  // Kept for the next request to the same place unless either side said
  // "Connection: close", the body ended with the connection, or the server
  // sent more than the response.
  bool reusable = parser.keep_alive() && c->message.keep_alive()
                  && c->conn->buffer.size() == 0;
  auto response = parser.release();
  if (reusable)
    keep_idle(std::move(c->conn));
  http_outcome outcome;
  outcome.status = static_cast<int>(response.result_int());
  for (const auto& field : response)
    outcome.headers.emplace_back(std::string{field.name_string()},
                                 std::string{field.value()});
  outcome.body = std::move(response.body());
  finish(c, std::move(outcome));
}

bool http_client::impl::can_resend(const call_ptr& c,
                                   bool nothing_written) const {
  if (!c->reused || c->resent)
    return false;
  // Nothing of it reached the server; else only a request that may be sent
  // twice: the server may have read it before it closed.
  if (nothing_written || idempotent(c->req.method))
    return true;
  for (const auto& [name, value] : c->req.headers)
    if (iequals(name, "Idempotency-Key"))
      return true;
  return false;
}

void http_client::impl::resend(const call_ptr& c) {
  close(c->conn);
  auto key = c->conn->key;
  c->closed_conn = std::move(c->conn);
  c->conn = std::make_shared<link>(io);
  c->conn->key = std::move(key);
  c->parser.reset();
  c->reused = false;
  c->resent = true;
  open(c);
}

http_client::impl::link_ptr
http_client::impl::take_idle(const std::string& key) {
  auto i = idle_conns.find(key);
  if (i == idle_conns.end())
    return nullptr;
  auto& pool = i->second;
  link_ptr found;
  while (!found && !pool.empty()) {
    auto l = std::move(pool.back());
    pool.pop_back();
    l->idle = false;
    ++l->turn;
    l->idle_timer.cancel();
    error_code ignored;
    l->socket().cancel(ignored);
    // A server that closed the connection (or sent anything unasked) since:
    // its FIN or bytes are waiting. Looked at without blocking or reading.
    char byte;
    auto n
      = ::recv(l->socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      found = std::move(l);
    else
      close(l);
  }
  if (pool.empty())
    idle_conns.erase(i);
  return found;
}

void http_client::impl::keep_idle(link_ptr l) {
  l->idle = true;
  auto turn = ++l->turn;
  auto& pool = idle_conns[l->key];
  pool.push_back(l);
  if (pool.size() > max_idle_per_host) {
    auto oldest = std::move(pool.front());
    pool.pop_front();
    oldest->idle = false;
    ++oldest->turn;
    close(oldest);
  }
  l->idle_timer.expires_after(idle_timeout);
  l->idle_timer.async_wait([this, l, turn](error_code ec) {
    if (!ec && l->idle && l->turn == turn)
      drop_idle(l);
  });
  // The server closing it (or sending anything) while it is idle: dropped
  // at once rather than found closed by the next request.
  l->socket().async_wait(tcp::socket::wait_read,
                         [this, l, turn](error_code ec) {
                           if (!ec && l->idle && l->turn == turn)
                             drop_idle(l);
                         });
}

void http_client::impl::drop_idle(const link_ptr& l) {
  l->idle = false;
  ++l->turn;
  auto i = idle_conns.find(l->key);
  if (i != idle_conns.end()) {
    auto& pool = i->second;
    pool.erase(std::remove(pool.begin(), pool.end(), l), pool.end());
    if (pool.empty())
      idle_conns.erase(i);
  }
  close(l);
}

void http_client::impl::close(const link_ptr& l) {
  error_code ignored;
  l->idle_timer.cancel();
  l->socket().close(ignored);
}

void http_client::impl::fail(const call_ptr& c, std::string kind,
                             std::string error) {
  http_outcome outcome;
  outcome.error_kind = std::move(kind);
  outcome.error = std::move(error);
  finish(c, std::move(outcome));
}

void http_client::impl::finish(const call_ptr& c, http_outcome outcome) {
  if (c->finished)
    return;
  c->finished = true;
  // Whatever is still pending completes with operation_aborted and returns.
  c->deadline.cancel();
  c->resolver.cancel();
  // A connection not given back to the pool: closed, whatever is pending on
  // it ends.
  if (c->conn)
    close(c->conn);
  c->conn.reset();
  calls.erase(c->id);
  auto done = std::move(c->done);
  c->done = nullptr;
  done(std::move(outcome));
}

void http_client::impl::abort(handle h) {
  auto i = calls.find(h);
  if (i == calls.end())
    return;
  auto c = i->second;
  fail(c, "cancelled", c->what + ": cancelled");
}

void http_client::impl::abort_all() {
  auto pending = std::move(calls);
  calls.clear();
  for (auto& [id, c] : pending)
    fail(c, "cancelled", c->what + ": cancelled (the HTTP client shut down)");
  auto pools = std::move(idle_conns);
  idle_conns.clear();
  for (auto& [key, pool] : pools)
    for (auto& l : pool) {
      l->idle = false;
      close(l);
    }
}

http_client::http_client() : impl_(std::make_unique<impl>()) {
  impl_->thread = std::thread{[this] { impl_->io.run(); }};
}

http_client::~http_client() {
  // Every request started before this call has been posted before this, so
  // it is in `calls` (or done) by the time this runs. Stopping leaves the
  // aborted operations' handlers unrun; they only hold state, destroyed
  // with the io_context.
  asio::post(impl_->io, [this] {
    impl_->abort_all();
    impl_->io.stop();
  });
  impl_->work.reset();
  impl_->thread.join();
}

http_client::handle http_client::start(http_request request,
                                       std::function<void(http_outcome)> done) {
  auto c = std::make_shared<impl::call>(impl_->io);
  c->id = impl_->next_id++;
  c->req = std::move(request);
  c->done = std::move(done);
  asio::post(impl_->io, [this, c] { impl_->begin(c); });
  return c->id;
}

void http_client::cancel(handle h) {
  asio::post(impl_->io, [this, h] { impl_->abort(h); });
}

} // namespace troupe::actors
