#include "cluster/etcd/client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <mutex>
#include <openssl/ssl.h>
#include <thread>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange
#include <variant>

namespace troupe::cluster::etcd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
namespace ssl = asio::ssl;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// -- encoding ----------------------------------------------------------------

constexpr const char* b64_chars
  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string b64_encode(const std::string& in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    auto n = (static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << 16)
             | (static_cast<uint32_t>(static_cast<uint8_t>(in[i + 1])) << 8)
             | static_cast<uint8_t>(in[i + 2]);
    out += b64_chars[(n >> 18) & 63];
    out += b64_chars[(n >> 12) & 63];
    out += b64_chars[(n >> 6) & 63];
    out += b64_chars[n & 63];
  }
  if (i < in.size()) {
    uint32_t n = static_cast<uint32_t>(static_cast<uint8_t>(in[i])) << 16;
    if (i + 1 < in.size())
      n |= static_cast<uint32_t>(static_cast<uint8_t>(in[i + 1])) << 8;
    out += b64_chars[(n >> 18) & 63];
    out += b64_chars[(n >> 12) & 63];
    out += i + 1 < in.size() ? b64_chars[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> b64_decode(const std::string& in) {
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z')
      v = c - 'A';
    else if (c >= 'a' && c <= 'z')
      v = c - 'a' + 26;
    else if (c >= '0' && c <= '9')
      v = c - '0' + 52;
    else if (c == '+' || c == '-')
      v = 62;
    else if (c == '/' || c == '_')
      v = 63;
    else if (c == '=')
      break;
    else
      return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

/// etcd's gateway writes 64-bit integers as strings and leaves out zeros.
int64_t int_field(const json& j, const char* name) {
  auto i = j.find(name);
  if (i == j.end())
    return 0;
  if (i->is_number_integer())
    return i->get<int64_t>();
  if (i->is_string()) {
    auto& s = i->get_ref<const std::string&>();
    int64_t n = 0;
    std::from_chars(s.data(), s.data() + s.size(), n);
    return n;
  }
  return 0;
}

std::string bytes_field(const json& j, const char* name) {
  auto i = j.find(name);
  if (i == j.end() || !i->is_string())
    return {};
  return b64_decode(i->get<std::string>()).value_or(std::string{});
}

key_value to_kv(const json& j) {
  key_value kv;
  kv.key = bytes_field(j, "key");
  kv.value = bytes_field(j, "value");
  kv.create_revision = int_field(j, "create_revision");
  kv.mod_revision = int_field(j, "mod_revision");
  kv.version = int_field(j, "version");
  kv.lease = int_field(j, "lease");
  return kv;
}

int64_t header_revision(const json& j) {
  auto h = j.find("header");
  return h != j.end() && h->is_object() ? int_field(*h, "revision") : 0;
}

// -- endpoints ---------------------------------------------------------------

struct endpoint {
  std::string url;
  std::string host;
  std::string port;
  /// https://: TLS to etcd.
  bool tls = false;
};

std::optional<endpoint> parse_endpoint(const std::string& url,
                                       std::string& why) {
  std::string_view rest{url};
  endpoint ep{url, {}, {}, false};
  std::string scheme = "http://";
  if (rest.starts_with("https://")) {
    ep.tls = true;
    scheme = "https://";
  } else if (!rest.starts_with("http://")) {
    why = "expected a URL such as http://127.0.0.1:2379 (or https://)";
    return std::nullopt;
  }
  rest.remove_prefix(scheme.size());
  while (!rest.empty() && rest.back() == '/')
    rest.remove_suffix(1);
  if (rest.find('/') != std::string_view::npos
      || rest.find('@') != std::string_view::npos) {
    why = "expected " + scheme + "HOST:PORT with no path or user";
    return std::nullopt;
  }
  auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0
      || (rest.front() == '[' && rest[colon - 1] != ']')) {
    why = "expected " + scheme + "HOST:PORT (the port is required)";
    return std::nullopt;
  }
  ep.host = std::string{rest.substr(0, colon)};
  if (ep.host.size() > 2 && ep.host.front() == '[')
    ep.host = ep.host.substr(1, ep.host.size() - 2);
  ep.port = std::string{rest.substr(colon + 1)};
  int port = 0;
  auto [p, ec]
    = std::from_chars(ep.port.data(), ep.port.data() + ep.port.size(), port);
  if (ec != std::errc{} || p != ep.port.data() + ep.port.size() || port < 1
      || port > 65535) {
    why = "the port must be a number from 1 to 65535";
    return std::nullopt;
  }
  return ep;
}

/// A connection to one endpoint: plain TCP, or TLS over it.
struct connection {
  std::variant<std::monostate, beast::tcp_stream, tls_stream> s;

  connection(asio::io_context& io, const endpoint& ep, ssl::context* ctx) {
    if (ep.tls && ctx) {
      auto& t = s.emplace<tls_stream>(io, *ctx);
      // The server's certificate must name the endpoint's host (or IP);
      // SNI for names.
      t.set_verify_callback(ssl::host_name_verification{ep.host});
      boost::system::error_code ec;
      (void)asio::ip::make_address(ep.host, ec);
      if (ec)
        SSL_set_tlsext_host_name(t.native_handle(), ep.host.c_str());
    } else {
      s.emplace<beast::tcp_stream>(io);
    }
  }

  beast::tcp_stream& tcp() {
    if (auto* t = std::get_if<tls_stream>(&s))
      return beast::get_lowest_layer(*t);
    return std::get<beast::tcp_stream>(s);
  }

  bool tls() const { return std::holds_alternative<tls_stream>(s); }

  /// Calls `f` with the stream HTTP goes through.
  template<class F>
  void visit(F&& f) {
    if (auto* t = std::get_if<tls_stream>(&s))
      f(*t);
    else
      f(std::get<beast::tcp_stream>(s));
  }

  void close() {
    beast::error_code ignored;
    tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp().socket().close(ignored);
  }
};

/// Resolves, connects and (over TLS) shakes hands within the stream's
/// deadline, then calls `next`; on failure sets `failure` (and `stage`).
template<class Next>
void open_connection(connection& conn, tcp::resolver& resolver,
                     const endpoint& ep, beast::error_code& failure,
                     const char*& stage, Next next) {
  stage = "connect";
  resolver.async_resolve(
    ep.host, ep.port,
    [&conn, &failure, &stage, next](beast::error_code ec,
                                    tcp::resolver::results_type hosts) mutable {
      if (ec) {
        failure = ec;
        return;
      }
      conn.tcp().async_connect(
        hosts, [&conn, &failure, &stage, next](beast::error_code ec,
                                               const tcp::endpoint&) mutable {
          if (ec) {
            failure = ec;
            return;
          }
          if (!conn.tls())
            return next();
          stage = "TLS handshake";
          std::get<tls_stream>(conn.s).async_handshake(
            ssl::stream_base::client,
            [&failure, &stage, next](beast::error_code ec) mutable {
              if (ec) {
                failure = ec;
                return;
              }
              stage = "request";
              next();
            });
        });
    });
}

/// Says why an exchange with `ep` failed: a TLS failure says so, with a
/// hint about the CA or the client certificate.
std::string describe_failure(const endpoint& ep, const beast::error_code& ec,
                             const char* stage, milliseconds timeout) {
  if (ec == beast::error::timeout || !ec)
    return ep.url + ": no answer within " + std::to_string(timeout.count())
           + "ms";
  auto why = ec.message();
  if (ec.category() == asio::error::get_ssl_category()
      || std::string_view{stage} == "TLS handshake") {
    auto hint = why.find("certificate verify failed") != std::string::npos
                  ? " (etcd's certificate is not signed by the configured CA, "
                    "or does not name "
                      + ep.host + ")"
                  : std::string{" (does etcd want a client certificate, or "
                                "not TLS at all?)"};
    return ep.url + ": TLS with etcd failed: " + why + hint;
  }
  return ep.url + ": " + why;
}

struct http_answer {
  unsigned status = 0;
  std::string body;
};

/// One POST to one endpoint within `timeout`, with `token` (when not
/// empty) in the Authorization header; an error says why no answer came.
result<http_answer> post_once(const endpoint& ep, ssl::context* ctx,
                              const std::string& target,
                              const std::string& body, const std::string& token,
                              milliseconds timeout) {
  asio::io_context io{1};
  connection conn{io, ep, ctx};
  tcp::resolver resolver{io};
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, ep.host + ":" + ep.port);
  req.set(http::field::content_type, "application/json");
  if (!token.empty())
    req.set(http::field::authorization, token);
  req.body() = body;
  req.prepare_payload();
  beast::flat_buffer buf;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64u << 20);
  beast::error_code failure;
  const char* stage = "connect";
  bool done = false;
  conn.tcp().expires_after(timeout);
  open_connection(conn, resolver, ep, failure, stage, [&] {
    conn.visit([&](auto& stream) {
      http::async_write(stream, req, [&](beast::error_code ec, size_t) {
        if (ec) {
          failure = ec;
          return;
        }
        http::async_read(stream, buf, parser,
                         [&](beast::error_code ec, size_t) {
                           failure = ec;
                           done = !ec;
                         });
      });
    });
  });
  // The stream's timer bounds connect, handshake, write and read; this
  // bounds the name lookup too.
  io.run_for(timeout + milliseconds{50});
  conn.close();
  // Let what was cut short finish (aborted) while its state still exists.
  resolver.cancel();
  io.restart();
  io.poll();
  if (!done)
    return error{error::kind::unreachable,
                 describe_failure(ep, failure, stage, timeout)};
  auto res = parser.release();
  return http_answer{res.result_int(), std::move(res.body())};
}

} // namespace

// -- helpers
// -------------------------------------------------------------------

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto c = static_cast<unsigned char>(end.back());
    if (c < 0xff) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  // Every key: etcd reads "\0" as "to the end".
  return std::string(1, '\0');
}

bool is_token_error(const error& e) {
  if (e.what != error::kind::refused)
    return false;
  for (auto text : {"invalid auth token", "revision of auth store is old",
                    "user name is empty"})
    if (e.message.find(text) != std::string::npos)
      return true;
  return false;
}

std::string check_endpoint(const std::string& url) {
  std::string why;
  if (!parse_endpoint(url, why))
    return why;
  return {};
}

// -- client
// --------------------------------------------------------------------

struct client::impl {
  client_options opts;
  std::vector<endpoint> endpoints;
  std::string invalid;
  /// For https:// endpoints: the CA, and the client certificate if any.
  std::unique_ptr<ssl::context> tls;
  /// The endpoint that answered last: calls start there.
  std::atomic<size_t> preferred{0};
  std::atomic<bool> interrupted{false};
  /// The auth token in use (with a user): empty until authenticated.
  mutable std::mutex token_mtx;
  std::string token;

  /// Sets up TLS for https:// endpoints; returns why it cannot, or "".
  std::string setup_tls() {
    bool any = false;
    for (auto& ep : endpoints)
      any = any || ep.tls;
    if (!any)
      return {};
    tls = std::make_unique<ssl::context>(ssl::context::tls_client);
    tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                     | ssl::context::no_sslv3 | ssl::context::no_tlsv1
                     | ssl::context::no_tlsv1_1);
    tls->set_verify_mode(ssl::verify_peer);
    beast::error_code ec;
    if (opts.ca_file.empty())
      tls->set_default_verify_paths(ec);
    else
      tls->load_verify_file(opts.ca_file, ec);
    if (ec)
      return "cannot load etcd's CA from "
             + (opts.ca_file.empty() ? std::string{"the system"} : opts.ca_file)
             + ": " + ec.message();
    if (opts.cert_file.empty() != opts.key_file.empty())
      return "a client certificate needs its key, and a key its certificate";
    if (!opts.cert_file.empty()) {
      tls->use_certificate_chain_file(opts.cert_file, ec);
      if (ec)
        return "cannot load the client certificate " + opts.cert_file + ": "
               + ec.message();
      tls->use_private_key_file(opts.key_file, ssl::context::pem, ec);
      if (ec)
        return "cannot load the client key " + opts.key_file + ": "
               + ec.message();
    }
    return {};
  }

  /// POSTs `text` to `target` on the endpoints in turn until one answers,
  /// until `deadline`; returns the answer's JSON.
  /// Endpoint `at` did not answer: the next calls start at the one after
  /// it (unless another answered meanwhile), so that an endpoint that hangs
  /// costs one attempt's deadline once, not at the start of every call.
  void pass_over(size_t at) {
    auto expected = at;
    preferred.compare_exchange_strong(expected, (at + 1) % endpoints.size());
  }

  result<json> call_raw(const std::string& target, const std::string& text,
                        const std::string& auth, steady::time_point deadline) {
    std::string last;
    // Bounded: every endpoint at most three times, and the deadline.
    auto attempts = endpoints.size() * 3;
    auto start = preferred.load();
    size_t tries = 0;
    for (size_t i = 0; i < attempts; ++i) {
      auto left
        = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
      if (left.count() <= 0 || interrupted)
        break;
      if (i > 0 && i % endpoints.size() == 0) {
        // A whole round failed (etcd restarting, a leader election): pause
        // before the next, on this caller's own thread.
        std::this_thread::sleep_for(std::min(
          left,
          milliseconds{100 * static_cast<int64_t>(i / endpoints.size())}));
        left
          = std::chrono::duration_cast<milliseconds>(deadline - steady::now());
        if (left.count() <= 0 || interrupted)
          break;
      }
      ++tries;
      auto at = (start + i) % endpoints.size();
      auto& ep = endpoints[at];
      auto answer = post_once(ep, tls.get(), target, text, auth,
                              std::min(left, opts.request_timeout));
      if (!answer) {
        last = answer.err.message;
        pass_over(at);
        continue;
      }
      auto parsed = json::parse(answer->body, nullptr, false);
      if (answer->status >= 500) {
        // Unavailable (no leader, a timeout inside etcd): another member
        // may answer.
        last = ep.url + ": " + std::to_string(answer->status) + " "
               + (parsed.is_object() ? parsed.value("message", answer->body)
                                     : answer->body.substr(0, 200));
        pass_over(at);
        continue;
      }
      preferred = at;
      if ((parsed.is_discarded() || !parsed.is_object())
          && answer->status != 200)
        // etcd's own words (the gateway refusing a client certificate's
        // CommonName while auth is on, say).
        return error{error::kind::refused,
                     ep.url + " answered " + std::to_string(answer->status)
                       + ": " + answer->body.substr(0, 200)};
      if (parsed.is_discarded() || !parsed.is_object())
        return error{error::kind::bad_answer,
                     ep.url + ": an answer that is not a JSON object"};
      if (answer->status != 200)
        return error{
          error::kind::refused,
          parsed.value("message", parsed.value("error", answer->body))};
      if (parsed.contains("error") && !parsed.contains("header")
          && !parsed.contains("result"))
        return error{error::kind::refused,
                     parsed["error"].is_string()
                       ? parsed["error"].get<std::string>()
                       : parsed["error"].dump()};
      return parsed;
    }
    if (interrupted)
      return error{error::kind::unreachable, "etcd call interrupted"};
    std::string names;
    for (auto& ep : endpoints)
      names += (names.empty() ? "" : ", ") + ep.url;
    bool tls_failed = last.find("TLS with etcd failed") != std::string::npos;
    return error{error::kind::unreachable,
                 (tls_failed ? "no TLS connection to etcd could be made at "
                             : "etcd did not answer at ")
                   + names + " (" + std::to_string(tries) + " tries, deadline "
                   + std::to_string(opts.call_timeout.count())
                   + "ms; last: " + last + ")"};
  }

  /// The token to send (authenticating first when there is none), or ""
  /// without a user.
  result<std::string> current_token(steady::time_point deadline) {
    if (opts.username.empty())
      return std::string{};
    {
      std::lock_guard guard{token_mtx};
      if (!token.empty())
        return token;
    }
    json body{{"name", opts.username}, {"password", opts.password}};
    auto r = call_raw("/v3/auth/authenticate", body.dump(), {}, deadline);
    if (!r) {
      if (r.err.what == error::kind::refused)
        return error{error::kind::refused, "etcd refused user '" + opts.username
                                             + "': " + r.err.message};
      return r.err;
    }
    auto i = r->find("token");
    if (i == r->end() || !i->is_string() || i->get<std::string>().empty())
      return error{error::kind::bad_answer,
                   "auth/authenticate for user '" + opts.username
                     + "' gave no token (is auth enabled in etcd?)"};
    std::lock_guard guard{token_mtx};
    token = i->get<std::string>();
    return token;
  }

  /// Forgets `used` (etcd no longer takes it); the next call authenticates.
  void drop_token(const std::string& used) {
    std::lock_guard guard{token_mtx};
    if (token == used)
      token.clear();
  }

  /// POSTs `body` to `target` within the call's deadline, with the auth
  /// token when there is a user: a token etcd refuses is replaced (at most
  /// twice) and the request sent again.
  /// call_once, told to opts.observe.
  result<json> call(const std::string& target, const json& body) {
    if (!opts.observe)
      return call_once(target, body);
    auto from = steady::now();
    auto r = call_once(target, body);
    // "/v3/kv/put" -> "kv_put"
    auto op = target.substr(target.rfind("/v3/") == 0 ? 4 : 0);
    std::replace(op.begin(), op.end(), '/', '_');
    const char* why = "";
    switch (r.err.what) {
    case error::kind::none: break;
    case error::kind::invalid: why = "invalid"; break;
    case error::kind::unreachable: why = "unreachable"; break;
    case error::kind::refused: why = "refused"; break;
    case error::kind::bad_answer: why = "bad_answer"; break;
    }
    opts.observe(op, steady::now() - from, why);
    return r;
  }

  result<json> call_once(const std::string& target, const json& body) {
    if (!invalid.empty())
      return error{error::kind::invalid, invalid};
    if (endpoints.empty())
      return error{error::kind::invalid, "no etcd endpoints"};
    auto text = body.dump();
    auto deadline = steady::now() + opts.call_timeout;
    for (int round = 0;; ++round) {
      auto auth = current_token(deadline);
      if (!auth)
        return auth.err;
      auto r = call_raw(target, text, *auth, deadline);
      if (r || auth->empty() || round >= 2 || !is_token_error(r.err))
        return r;
      drop_token(*auth);
    }
  }
};

client::client(client_options opts) : impl_(std::make_shared<impl>()) {
  impl_->opts = std::move(opts);
  for (auto& url : impl_->opts.endpoints) {
    std::string why;
    auto ep = parse_endpoint(url, why);
    if (!ep) {
      impl_->invalid = "etcd endpoint " + url + ": " + why;
      break;
    }
    impl_->endpoints.push_back(std::move(*ep));
  }
  if (impl_->invalid.empty())
    impl_->invalid = impl_->setup_tls();
}

client::~client() = default;

const client_options& client::options() const noexcept {
  return impl_->opts;
}

void client::interrupt(bool on) {
  impl_->interrupted = on;
}

result<int64_t> client::put(const std::string& key, const std::string& value,
                            int64_t lease_id) {
  json body{{"key", b64_encode(key)}, {"value", b64_encode(value)}};
  if (lease_id != 0)
    body["lease"] = std::to_string(lease_id);
  auto r = impl_->call("/v3/kv/put", body);
  if (!r)
    return r.err;
  return header_revision(*r);
}

result<std::optional<key_value>> client::get(const std::string& key) {
  auto r = impl_->call("/v3/kv/range", {{"key", b64_encode(key)}});
  if (!r)
    return r.err;
  auto kvs = r->find("kvs");
  if (kvs == r->end() || !kvs->is_array() || kvs->empty())
    return std::optional<key_value>{};
  return std::optional<key_value>{to_kv(kvs->front())};
}

result<range_result> client::range_prefix(const std::string& prefix) {
  auto r = impl_->call("/v3/kv/range",
                       {{"key", b64_encode(prefix)},
                        {"range_end", b64_encode(prefix_end(prefix))}});
  if (!r)
    return r.err;
  range_result out;
  out.revision = header_revision(*r);
  if (auto kvs = r->find("kvs"); kvs != r->end() && kvs->is_array())
    for (auto& kv : *kvs)
      out.kvs.push_back(to_kv(kv));
  return out;
}

result<int64_t> client::remove(const std::string& key) {
  auto r = impl_->call("/v3/kv/deleterange", {{"key", b64_encode(key)}});
  if (!r)
    return r.err;
  return int_field(*r, "deleted");
}

namespace {

result<txn_result> guarded_put(client::impl& c, const json& compare,
                               const std::string& key, const std::string& value,
                               int64_t lease_id) {
  json put{{"key", b64_encode(key)}, {"value", b64_encode(value)}};
  if (lease_id != 0)
    put["lease"] = std::to_string(lease_id);
  json body{{"compare", json::array({compare})},
            {"success", json::array({{{"request_put", put}}})},
            {"failure",
             json::array({{{"request_range", {{"key", b64_encode(key)}}}}})}};
  auto r = c.call("/v3/kv/txn", body);
  if (!r)
    return r.err;
  txn_result out;
  out.revision = header_revision(*r);
  out.succeeded = r->value("succeeded", false);
  if (!out.succeeded) {
    auto responses = r->find("responses");
    if (responses != r->end() && responses->is_array() && !responses->empty()) {
      auto& range = (*responses)[0];
      if (auto rr = range.find("response_range"); rr != range.end())
        if (auto kvs = rr->find("kvs");
            kvs != rr->end() && kvs->is_array() && !kvs->empty())
          out.current = to_kv(kvs->front());
    }
  }
  return out;
}

} // namespace

result<txn_result> client::create_if_absent(const std::string& key,
                                            const std::string& value,
                                            int64_t lease_id) {
  json compare{{"key", b64_encode(key)},
               {"target", "CREATE"},
               {"result", "EQUAL"},
               {"create_revision", "0"}};
  return guarded_put(*impl_, compare, key, value, lease_id);
}

result<txn_result> client::put_if_mod_revision(const std::string& key,
                                               const std::string& value,
                                               int64_t mod_revision,
                                               int64_t lease_id) {
  json compare{{"key", b64_encode(key)},
               {"target", "MOD"},
               {"result", "EQUAL"},
               {"mod_revision", std::to_string(mod_revision)}};
  return guarded_put(*impl_, compare, key, value, lease_id);
}

result<txn_reply> client::txn(const std::vector<compare>& compares,
                              const std::vector<txn_op>& success,
                              const std::vector<txn_op>& failure) {
  auto cmp = json::array();
  for (auto& c : compares) {
    json j{{"key", b64_encode(c.key)}, {"result", "EQUAL"}};
    auto v = std::to_string(c.value);
    switch (c.what) {
    case compare::target::mod:
      j["target"] = "MOD";
      j["mod_revision"] = v;
      break;
    case compare::target::version:
      j["target"] = "VERSION";
      j["version"] = v;
      break;
    case compare::target::create:
      j["target"] = "CREATE";
      j["create_revision"] = v;
      break;
    }
    cmp.push_back(std::move(j));
  }
  auto ops = [](const std::vector<txn_op>& list) {
    auto out = json::array();
    for (auto& op : list) {
      json k{{"key", b64_encode(op.key)}};
      switch (op.what) {
      case txn_op::type::put:
        k["value"] = b64_encode(op.value);
        if (op.lease != 0)
          k["lease"] = std::to_string(op.lease);
        out.push_back({{"request_put", k}});
        break;
      case txn_op::type::del:
        out.push_back({{"request_delete_range", k}});
        break;
      case txn_op::type::get: out.push_back({{"request_range", k}}); break;
      }
    }
    return out;
  };
  json body{
    {"compare", cmp}, {"success", ops(success)}, {"failure", ops(failure)}};
  auto r = impl_->call("/v3/kv/txn", body);
  if (!r)
    return r.err;
  txn_reply out;
  out.revision = header_revision(*r);
  out.succeeded = r->value("succeeded", false);
  auto& ran = out.succeeded ? success : failure;
  out.got.resize(ran.size());
  auto responses = r->find("responses");
  if (responses != r->end() && responses->is_array())
    for (size_t i = 0; i < ran.size() && i < responses->size(); ++i) {
      if (ran[i].what != txn_op::type::get)
        continue;
      auto& one = (*responses)[i];
      if (auto rr = one.find("response_range"); rr != one.end())
        if (auto kvs = rr->find("kvs");
            kvs != rr->end() && kvs->is_array() && !kvs->empty())
          out.got[i] = to_kv(kvs->front());
    }
  return out;
}

result<lease> client::lease_grant(int64_t ttl_s) {
  auto r = impl_->call("/v3/lease/grant", {{"TTL", std::to_string(ttl_s)}});
  if (!r)
    return r.err;
  lease out{int_field(*r, "ID"), int_field(*r, "TTL")};
  if (out.id == 0)
    return error{error::kind::bad_answer,
                 "lease/grant: no lease id in " + r->dump()};
  return out;
}

namespace {

bool lease_not_found(const error& e) {
  return e.what == error::kind::refused
         && e.message.find("lease not found") != std::string::npos;
}

} // namespace

result<int64_t> client::lease_keepalive(int64_t id) {
  auto r = impl_->call("/v3/lease/keepalive", {{"ID", std::to_string(id)}});
  if (!r) {
    if (lease_not_found(r.err))
      return int64_t{0};
    return r.err;
  }
  // A stream on the gateway: its one answer comes as {"result": ...}.
  auto& body = r->contains("result") ? (*r)["result"] : *r;
  return int_field(body, "TTL");
}

result<bool> client::lease_revoke(int64_t id) {
  auto r = impl_->call("/v3/lease/revoke", {{"ID", std::to_string(id)}});
  if (!r) {
    if (lease_not_found(r.err))
      return true;
    return r.err;
  }
  return true;
}

result<int64_t> client::lease_time_to_live(int64_t id) {
  auto r = impl_->call("/v3/lease/timetolive", {{"ID", std::to_string(id)}});
  if (!r) {
    if (lease_not_found(r.err))
      return int64_t{-1};
    return r.err;
  }
  return int_field(*r, "TTL");
}

std::unique_ptr<watch_stream> client::watch_prefix(const std::string& prefix,
                                                   int64_t start_revision) {
  return std::make_unique<watch_stream>(impl_, prefix, start_revision);
}

// -- watch_stream
// ----------------------------------------------------------------

struct watch_stream::impl {
  std::shared_ptr<client::impl> c;
  std::string prefix;
  int64_t start_revision = 0;
  std::atomic<int64_t> revision{0};

  asio::io_context io{1};
  std::unique_ptr<connection> stream;
  /// The auth token the watch was opened with (with a user).
  std::string token;
  beast::flat_buffer buf;
  std::unique_ptr<http::response_parser<http::string_body>> parser;
  http::request<http::string_body> req;
  /// Body text not yet split into lines.
  std::string pending;
  std::vector<watch_event> ready;
  bool reading = false;
  bool created = false;
  std::optional<error> ended;
  std::atomic<bool> cancelled{false};

  /// Connects to the endpoints in turn and sends the watch request;
  /// returns why none took it.
  std::optional<error> open() {
    if (!c->invalid.empty())
      return error{error::kind::invalid, c->invalid};
    json create{{"key", b64_encode(prefix)},
                {"range_end", b64_encode(prefix_end(prefix))},
                {"prev_kv", true}};
    if (start_revision > 0)
      create["start_revision"] = std::to_string(start_revision);
    auto auth = c->current_token(steady::now() + c->opts.call_timeout);
    if (!auth)
      return error{auth.err.what, "watch: " + auth.err.message};
    token = *auth;
    std::string last = "no etcd endpoints";
    auto n = c->endpoints.size();
    for (size_t i = 0; i < n && !cancelled; ++i) {
      auto& ep = c->endpoints[(c->preferred.load() + i) % n];
      if (auto e = open_at(ep, json{{"create_request", create}}.dump()); !e)
        return std::nullopt;
      else
        last = e->message;
    }
    return error{error::kind::unreachable, "watch: " + last};
  }

  std::optional<error> open_at(const endpoint& ep, const std::string& body) {
    io.restart();
    stream = std::make_unique<connection>(io, ep, c->tls.get());
    buf.clear();
    parser = std::make_unique<http::response_parser<http::string_body>>();
    parser->body_limit(boost::none);
    req = {http::verb::post, "/v3/watch", 11};
    req.set(http::field::host, ep.host + ":" + ep.port);
    req.set(http::field::content_type, "application/json");
    if (!token.empty())
      req.set(http::field::authorization, token);
    req.body() = body;
    req.prepare_payload();
    tcp::resolver resolver{io};
    beast::error_code failure;
    const char* stage = "connect";
    bool headed = false;
    auto timeout = c->opts.request_timeout;
    stream->tcp().expires_after(timeout);
    open_connection(*stream, resolver, ep, failure, stage, [&] {
      stream->visit([&](auto& s) {
        http::async_write(s, req, [&](beast::error_code ec, size_t) {
          if (ec) {
            failure = ec;
            return;
          }
          http::async_read_header(s, buf, *parser,
                                  [&](beast::error_code ec, size_t) {
                                    failure = ec;
                                    headed = !ec;
                                  });
        });
      });
    });
    io.run_for(timeout + milliseconds{50});
    if (!headed) {
      stream->close();
      resolver.cancel();
      io.restart();
      io.poll();
      return error{error::kind::unreachable,
                   describe_failure(ep, failure, stage, timeout)};
    }
    if (parser->get().result_int() != 200)
      return error{error::kind::refused,
                   ep.url + ": watch answered "
                     + std::to_string(parser->get().result_int())};
    stream->tcp().expires_never();
    // Body bytes that came with the header.
    take_body();
    return std::nullopt;
  }

  /// Moves what the parser has of the body into `pending` and splits it
  /// into messages.
  void take_body() {
    auto& body = parser->get().body();
    pending += body;
    body.clear();
    for (;;) {
      auto nl = pending.find('\n');
      if (nl == std::string::npos)
        break;
      auto line = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (!line.empty())
        on_message(line);
    }
    // A message without a newline after it yet may be whole JSON already.
    if (!pending.empty()) {
      auto j = json::parse(pending, nullptr, false);
      if (!j.is_discarded()) {
        auto line = std::move(pending);
        pending.clear();
        on_message(line);
      }
    }
  }

  void on_message(const std::string& line) {
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      ended = error{error::kind::bad_answer, "watch: unreadable message"};
      return;
    }
    if (j.contains("error")) {
      auto& e = j["error"];
      error why{
        error::kind::refused,
        "watch: "
          + (e.is_object() && e.contains("message") && e["message"].is_string()
               ? e["message"].get<std::string>()
               : e.dump())};
      // A token etcd no longer takes: the next watch authenticates again.
      if (!token.empty() && is_token_error(why))
        c->drop_token(token);
      ended = std::move(why);
      return;
    }
    auto& r = j.contains("result") ? j["result"] : j;
    if (r.value("canceled", false)) {
      auto reason = r.value("cancel_reason", std::string{});
      error why{error::kind::refused,
                "watch canceled by etcd"
                  + (int_field(r, "compact_revision") != 0
                       ? std::string{" (revision compacted)"}
                       : std::string{})
                  + (reason.empty() ? std::string{} : ": " + reason)};
      // A token etcd no longer takes: the next watch authenticates again.
      if (!token.empty() && is_token_error(why))
        c->drop_token(token);
      ended = std::move(why);
      return;
    }
    if (r.value("created", false))
      created = true;
    if (auto events = r.find("events");
        events != r.end() && events->is_array()) {
      for (auto& e : *events) {
        watch_event ev;
        ev.what = e.value("type", std::string{}) == "DELETE"
                    ? watch_event::type::del
                    : watch_event::type::put;
        if (auto kv = e.find("kv"); kv != e.end())
          ev.kv = to_kv(*kv);
        if (auto prev = e.find("prev_kv"); prev != e.end())
          ev.prev = to_kv(*prev);
        revision = std::max(revision.load(), ev.kv.mod_revision);
        ready.push_back(std::move(ev));
      }
    }
  }

  void read_more() {
    if (reading || ended)
      return;
    reading = true;
    stream->visit([this](auto& s) {
      http::async_read_some(
        s, buf, *parser, [this](beast::error_code ec, size_t) {
          reading = false;
          if (ec) {
            ended = error{error::kind::unreachable, "watch: " + ec.message()};
          } else {
            take_body();
            if (parser->is_done())
              ended = error{error::kind::unreachable,
                            "watch: etcd ended the stream"};
          }
          if (!ready.empty() || ended)
            io.stop();
          else
            read_more();
        });
    });
  }

  void close() {
    if (stream)
      stream->close();
  }
};

watch_stream::watch_stream(std::shared_ptr<client::impl> c, std::string prefix,
                           int64_t start_revision)
    : impl_(std::make_shared<impl>()) {
  impl_->c = std::move(c);
  impl_->prefix = std::move(prefix);
  impl_->start_revision = start_revision;
  impl_->revision = start_revision > 0 ? start_revision - 1 : 0;
}

watch_stream::~watch_stream() {
  impl_->close();
  // Runs the aborted read's handler before the stream goes away.
  impl_->io.restart();
  impl_->io.poll();
}

result<std::vector<watch_event>>
watch_stream::next(std::chrono::milliseconds limit) {
  auto& w = *impl_;
  if (w.cancelled)
    return error{error::kind::unreachable, "watch: cancelled"};
  if (!w.stream) {
    if (auto e = w.open()) {
      w.ended = *e;
      return *e;
    }
  }
  if (w.ready.empty() && !w.ended) {
    w.read_more();
    w.io.restart();
    w.io.run_for(limit);
  }
  if (!w.ready.empty())
    return std::exchange(w.ready, {});
  if (w.ended)
    return *w.ended;
  if (w.cancelled)
    return error{error::kind::unreachable, "watch: cancelled"};
  return std::vector<watch_event>{};
}

void watch_stream::cancel() {
  impl_->cancelled = true;
  auto w = impl_;
  asio::post(w->io, [w] {
    w->close();
    w->io.stop();
  });
}

int64_t watch_stream::revision() const noexcept {
  return impl_->revision.load();
}

} // namespace troupe::cluster::etcd
