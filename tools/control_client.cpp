#include "tools/control_client.hpp"

#include "config/duration.hpp"
#include "runtime/control/wire.hpp"
#include "tools/commands.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <thread>
#include <utility> // before Asio: Boost 1.74 with C++20 needs std::exchange

namespace troupe::tools {

namespace asio = boost::asio;
namespace control = runtime::control;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using boost::system::error_code;

struct control_client::impl {
  asio::io_context io;
  asio::ssl::context tls_ctx{asio::ssl::context::tls_client};
  std::unique_ptr<asio::ssl::stream<tcp::socket>> stream;
  bool tls = false;
  options opts;
  std::string where;
  std::string node;
  uint64_t next_id = 1;
  /// The protocol version the connection speaks.
  int64_t version = control::protocol_version;
  /// How often the node sends keepalives while it owes answers (version 2
  /// on); 0: it sends none.
  std::chrono::milliseconds keepalive{0};
  /// Messages read while waiting for another.
  std::deque<json> inbox;

  /// Runs the io_context until the started operation ends or `timeout`
  /// passes; on timeout closes the socket and returns false.
  bool run_for(std::chrono::milliseconds timeout) {
    io.restart();
    io.run_for(timeout);
    if (io.stopped())
      return true;
    error_code ignored;
    stream->lowest_layer().close(ignored);
    io.restart();
    io.run();
    return false;
  }

  void write(const std::string& frame) {
    error_code ec;
    if (tls)
      asio::write(*stream, asio::buffer(frame), ec);
    else
      asio::write(stream->next_layer(), asio::buffer(frame), ec);
    if (ec)
      throw client_error(exit_unreachable, "lost the connection to the node at "
                                             + where + ": " + ec.message());
  }

  /// Whether the node said it is stopping ({t: "draining"}, version 3 on):
  /// the answers it owes still come, then it closes the connection.
  bool draining = false;

  /// Takes a notice that needs no answer (the draining notice); returns
  /// whether `msg` was one.
  bool notice(const json& msg) {
    if (msg.value("t", "") != "draining")
      return false;
    draining = true;
    return true;
  }

  /// Reads one message, answering the node's keepalives on the way;
  /// nothing on timeout.
  std::optional<json> read(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    // Each keepalive takes a turn; bounded by the deadline in practice.
    for (int i = 0; i < 1'000'000; ++i) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      auto msg = read_frame(std::max(left, std::chrono::milliseconds{1}));
      if (msg && notice(*msg))
        continue;
      if (!msg || msg->value("t", "") != "keepalive")
        return msg;
      write(control::encode_frame(json{{"t", "keepalive"}}));
    }
    return std::nullopt;
  }

  /// Reads one frame; nothing on timeout.
  std::optional<json> read_frame(std::chrono::milliseconds timeout) {
    std::array<unsigned char, control::header_size> header{};
    error_code ec = asio::error::would_block;
    auto on_read = [&](const error_code& e, size_t) { ec = e; };
    if (tls)
      asio::async_read(*stream, asio::buffer(header), on_read);
    else
      asio::async_read(stream->next_layer(), asio::buffer(header), on_read);
    if (!run_for(timeout))
      return std::nullopt;
    if (ec)
      throw client_error(exit_unreachable, "lost the connection to the node at "
                                             + where + ": "
                                             + (draining ? "it is shutting down"
                                                : ec == asio::error::eof
                                                  ? "it closed the connection"
                                                  : ec.message()));
    auto n = control::read_length(header.data());
    if (n == 0 || n > opts.max_frame_bytes)
      throw client_error(exit_unreachable,
                         "the node at " + where + " sent a frame of "
                           + std::to_string(n) + " bytes; giving up");
    std::string body(n, '\0');
    ec = asio::error::would_block;
    if (tls)
      asio::async_read(*stream, asio::buffer(body), on_read);
    else
      asio::async_read(stream->next_layer(), asio::buffer(body), on_read);
    if (!run_for(std::chrono::seconds{60}) || ec)
      throw client_error(exit_unreachable, "lost the connection to the node at "
                                             + where
                                             + " in the middle of a frame");
    std::string error;
    auto msg = control::decode_body(body, error);
    if (!msg)
      throw client_error(exit_unreachable, "the node at " + where
                                             + " sent a bad frame: " + error);
    return msg;
  }

  /// Reads until the message answering `id` arrives (others are kept).
  json await(uint64_t id, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (auto i = inbox.begin(); i != inbox.end(); ++i)
      if (i->value("id", uint64_t{0}) == id) {
        auto msg = std::move(*i);
        inbox.erase(i);
        return msg;
      }
    while (true) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        throw client_error(exit_unreachable,
                           "the node at " + where + " did not answer within "
                             + std::to_string(timeout.count() / 1000) + "s");
      auto msg = read(left);
      if (!msg)
        continue;
      auto mid = msg->value("id", uint64_t{0});
      // An error with id 0 is about the connection itself.
      if (mid == id || (mid == 0 && msg->value("t", "") == "error"))
        return std::move(*msg);
      inbox.push_back(std::move(*msg));
    }
  }
};

control_client::control_client() : impl_(std::make_unique<impl>()) {}

control_client::~control_client() = default;

const std::string& control_client::node_name() const {
  return impl_->node;
}

int control_client::exit_code_for(const std::string& code) {
  if (code == "unauthenticated" || code == "token_expired"
      || code == "token_invalid" || code == "forbidden")
    return exit_auth;
  if (code == "bad_request" || code == "invalid_workflow"
      || code == "unknown_type")
    return exit_bad_input;
  // Refusals for now (retry_after_ms says when, for some): exit 3, like no
  // node at all.
  if (code == "draining" || code == "not_ready" || code == "unsupported_version"
      || code == "bad_frame" || code == "frame_too_large" || code == "disk_low"
      || code == "rate_limited" || code == "too_many_requests"
      || code == "owner_unavailable")
    return exit_unreachable;
  return exit_failed;
}

namespace {

/// Whether the server at `endpoints` completes a TLS handshake within
/// `timeout` (its certificate unchecked): asked when a plain connection was
/// closed before any answer, to tell a node that speaks TLS from one that is
/// gone.
bool speaks_tls(const tcp::resolver::results_type& endpoints,
                std::chrono::milliseconds timeout) {
  asio::io_context io;
  asio::ssl::context ctx{asio::ssl::context::tls_client};
  ctx.set_verify_mode(asio::ssl::verify_none);
  asio::ssl::stream<tcp::socket> stream{io, ctx};
  bool done = false;
  asio::async_connect(stream.next_layer(), endpoints,
                      [&](const error_code& ec, const tcp::endpoint&) {
                        if (!ec)
                          stream.async_handshake(
                            asio::ssl::stream_base::client,
                            [&](const error_code& e) { done = !e; });
                      });
  io.run_for(timeout);
  return done;
}

[[noreturn]] void throw_answer(const json& msg) {
  auto code = msg.value("code", std::string{"internal"});
  std::string text = msg.value("message", std::string{"unknown error"});
  // (The node's message already says when to retry; older ones did not.)
  if (code == "rate_limited" && msg.contains("retry_after_ms")
      && text.find("retry in") == std::string::npos)
    text += " (retry after " + msg["retry_after_ms"].dump() + "ms)";
  throw client_error(control_client::exit_code_for(code), text, code);
}

} // namespace

void control_client::connect(const options& opts) {
  // A node older than this client refuses its version: speak the newest one
  // it does (without what came after), on a new connection each.
  for (auto version = control::protocol_version;; --version) {
    try {
      return connect_speaking(opts, version);
    } catch (const client_error& e) {
      if (e.code != "unsupported_version"
          || version <= control::min_protocol_version)
        throw;
      impl_ = std::make_unique<impl>();
    }
  }
}

void control_client::connect_speaking(const options& opts, int64_t version) {
  auto& i = *impl_;
  i.opts = opts;
  i.version = version;
  auto address = opts.address;
  if (address.starts_with("tls://")) {
    i.tls = true;
    address = address.substr(6);
  }
  i.where = address;
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    throw client_error(exit_bad_input,
                       "node address '" + opts.address + "' is not HOST:PORT");
  auto host = address.substr(0, colon);
  auto port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (i.tls) {
    i.tls_ctx.set_verify_mode(asio::ssl::verify_peer);
    error_code ec;
    if (!opts.ca_file.empty())
      i.tls_ctx.load_verify_file(opts.ca_file, ec);
    else
      i.tls_ctx.set_default_verify_paths(ec);
    if (ec)
      throw client_error(exit_bad_input, "cannot load the CA file '"
                                           + opts.ca_file
                                           + "': " + ec.message());
    i.tls_ctx.set_verify_callback(asio::ssl::host_name_verification(host));
  }
  i.stream = std::make_unique<asio::ssl::stream<tcp::socket>>(i.io, i.tls_ctx);
  tcp::resolver resolver{i.io};
  error_code ec;
  auto endpoints = resolver.resolve(host, port, ec);
  if (ec)
    throw client_error(exit_unreachable, "cannot resolve the node address '"
                                           + address + "': " + ec.message());
  ec = asio::error::would_block;
  asio::async_connect(
    i.stream->next_layer(), endpoints,
    [&](const error_code& e, const tcp::endpoint&) { ec = e; });
  if (!i.run_for(opts.connect_timeout))
    throw client_error(exit_unreachable,
                       "cannot reach a node at " + address
                         + ": no answer within "
                         + std::to_string(opts.connect_timeout.count()) + "ms");
  if (ec)
    throw client_error(exit_unreachable, "cannot reach a node at " + address
                                           + ": " + ec.message());
  error_code ignored;
  i.stream->next_layer().set_option(tcp::no_delay{true}, ignored);
  if (i.tls) {
    if (!SSL_set_tlsext_host_name(i.stream->native_handle(), host.c_str()))
      throw client_error(exit_bad_input, "bad TLS host name '" + host + "'");
    ec = asio::error::would_block;
    i.stream->async_handshake(asio::ssl::stream_base::client,
                              [&](const error_code& e) { ec = e; });
    if (!i.run_for(opts.connect_timeout) || ec) {
      // A node without TLS answers the client hello with a frame of its
      // own, which is no TLS record.
      bool plain
        = ec && ec.message().find("wrong version number") != std::string::npos;
      throw client_error(
        plain ? exit_bad_input : exit_unreachable,
        "TLS handshake with " + address + " failed"
          + (ec ? ": " + ec.message() : std::string{})
          + (plain ? "; the node looks like it speaks plain TCP: use --node "
                       + address + ", without tls://"
                   : std::string{}));
    }
  }
  auto id = i.next_id++;
  json hello = {
    {"t", "hello"}, {"id", id}, {"version", version}, {"client", "troupe-cli"}};
  if (!opts.token.empty())
    hello["token"] = opts.token;
  json answer;
  try {
    i.write(control::encode_frame(hello));
    answer = i.await(id, opts.connect_timeout + std::chrono::seconds{5});
  } catch (const client_error& e) {
    // A node that speaks TLS drops a plain hello without a word.
    if (i.tls || !speaks_tls(endpoints, opts.connect_timeout))
      throw;
    throw client_error(exit_bad_input,
                       std::string{e.what()} + "; the node looks like it "
                         + "speaks TLS: use --node tls://" + address
                         + " (and --ca FILE for a private CA)");
  }
  if (answer.value("t", "") == "error")
    throw_answer(answer);
  i.node = answer.value("node", std::string{});
  i.keepalive
    = std::chrono::milliseconds{answer.value("keepalive_ms", int64_t{0})};
}

std::chrono::milliseconds control_client::quiet_limit() const {
  auto k = impl_->keepalive;
  if (k.count() <= 0)
    return std::chrono::milliseconds{0};
  // Three missed keepalives, and room for a node busy for a while.
  return 3 * k + std::chrono::seconds{10};
}

json control_client::call(json request, std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  auto began = std::chrono::steady_clock::now();
  auto backoff = std::chrono::milliseconds{100};
  bool told = false;
  // Bounded by wait_ready; the count only guards against a clock gone wrong.
  for (int tries = 0;; ++tries) {
    auto id = start(request);
    auto answer = i.await(id, timeout);
    if (answer.value("t", "") != "error")
      return answer.value("body", json::object());
    if (answer.value("code", "") != "not_ready" || tries >= 100'000)
      throw_answer(answer);
    // Refused before it was acted on: safe to send again.
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
    auto left = i.opts.wait_ready - waited;
    if (left.count() <= 0)
      throw client_error(
        exit_unreachable,
        "the node at " + i.where + " is not ready after "
          + config::format_duration(i.opts.wait_ready) + " (--wait-ready): "
          + answer.value("message", std::string{"it is still recovering"}),
        "not_ready");
    if (!told) {
      std::cerr << "troupe: the node at " << i.where << " is not ready ("
                << answer.value("message", std::string{"recovering"})
                << "); retrying for up to "
                << config::format_duration(i.opts.wait_ready)
                << " (--wait-ready)\n";
      told = true;
    }
    auto hint
      = std::chrono::milliseconds{answer.value("retry_after_ms", int64_t{0})};
    auto pause = std::min(
      {std::max(backoff, hint), left, std::chrono::milliseconds{2'000}});
    std::this_thread::sleep_for(pause);
    backoff = std::min(backoff * 2, std::chrono::milliseconds{1'000});
  }
}

uint64_t control_client::start(json request) {
  auto id = impl_->next_id++;
  request["id"] = id;
  impl_->write(control::encode_frame(request));
  return id;
}

control_client::options client_options(const global_options& g,
                                       const config::settings& settings) {
  auto env = [](const char* name) {
    auto* v = std::getenv(name);
    return v ? std::string{v} : std::string{};
  };
  control_client::options co;
  co.address = !g.node.empty() ? g.node
               : !env("TROUPE_NODE").empty()
                 ? env("TROUPE_NODE")
                 : settings.get_string("control.listen");
  co.token = !g.token.empty() ? g.token : env("TROUPE_TOKEN");
  co.ca_file = g.ca_file;
  if (!g.wait_ready.empty()) {
    std::string error;
    auto d = config::parse_duration(g.wait_ready, &error);
    if (!d)
      throw client_error(exit_bad_input,
                         "--wait-ready " + g.wait_ready + ": " + error);
    co.wait_ready = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  }
  return co;
}

std::optional<json> control_client::next(std::chrono::milliseconds timeout) {
  auto& i = *impl_;
  if (!i.inbox.empty()) {
    auto msg = std::move(i.inbox.front());
    i.inbox.pop_front();
    return msg;
  }
  auto msg = i.read(timeout);
  if (msg && msg->value("t", "") == "error")
    throw_answer(*msg);
  return msg;
}

std::optional<json>
control_client::next_alive(std::chrono::milliseconds quiet) {
  auto& i = *impl_;
  if (!i.inbox.empty()) {
    auto msg = std::move(i.inbox.front());
    i.inbox.pop_front();
    return msg;
  }
  // Each turn takes a frame from the node: the loop lasts as long as the
  // node keeps speaking, which is the point (a watch lasts as long as its
  // run), and ends after `quiet` of silence.
  while (true) {
    auto msg = i.read_frame(quiet);
    if (!msg)
      return std::nullopt;
    auto t = msg->value("t", "");
    if (t == "keepalive") {
      i.write(control::encode_frame(json{{"t", "keepalive"}}));
      continue;
    }
    if (i.notice(*msg))
      continue;
    if (t == "error")
      throw_answer(*msg);
    return msg;
  }
}

} // namespace troupe::tools
