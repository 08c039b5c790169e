#pragma once

// The node's control listener: Boost.Asio TCP (optionally TLS) carrying the
// frames of runtime/control/wire.hpp. It reads and checks frames, runs the
// hello exchange, checks every request's token and role, and hands requests
// to a `control_handler`. Everything it does runs on the io_context it is
// given, so handlers must not block: they post slow work elsewhere and
// answer through the request's context, from any thread.

#include "runtime/auth/role.hpp"
#include "runtime/control/wire.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <variant>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace troupe::cluster {

namespace control = runtime::control;

using runtime::auth::role;

/// Whom a connection speaks for, once its hello is accepted.
struct principal {
  std::string subject;
  role grants = role::viewer;
  /// When its token expires (seconds since the epoch); 0 for never.
  int64_t expires_at_s = 0;
};

/// Why a token was refused.
struct auth_failure {
  control::error_code code = control::error_code::token_invalid;
  std::string message;
};

/// Checks a hello's token (empty when none was given).
using authenticator
  = std::function<std::variant<principal, auth_failure>(const std::string&)>;

/// One request, and the way back to its connection. Safe to use from any
/// thread; after the connection closed, answers are dropped.
class request_context {
 public:
  virtual ~request_context() = default;

  /// The request's id (echoed in every answer) and its sender.
  virtual uint64_t id() const = 0;
  virtual const principal& who() const = 0;

  /// Answers the request: {t: "reply", id, body}.
  virtual void reply(nlohmann::json body) = 0;

  /// Refuses the request: {t: "error", id, code, message, ...extra}.
  virtual void fail(control::error_code code, const std::string& message,
                    nlohmann::json extra = nlohmann::json::object())
    = 0;

  /// One event of a stream (watch): {t: "event", id, body}.
  virtual void event(nlohmann::json body) = 0;

  /// Ends a stream: {t: "end", id, body}.
  virtual void end(nlohmann::json body) = 0;

  /// Whether the connection has closed.
  virtual bool closed() const = 0;

  /// Calls `f` once on the io_context when the connection closes (at once
  /// when it already has).
  virtual void on_close(std::function<void()> f) = 0;
};

using request_ptr = std::shared_ptr<request_context>;

/// Carries out requests. Called on the io_context thread; must not block.
class control_handler {
 public:
  virtual ~control_handler() = default;

  /// `type` is the message's "t"; the role was checked already.
  virtual void handle(const request_ptr& req, const std::string& type,
                      const nlohmann::json& msg)
    = 0;
};

/// Returns the role a request type needs, or nothing for unknown types.
std::optional<role> required_role(std::string_view type);

class control_server {
 public:
  struct options {
    std::string host = "127.0.0.1";
    /// 0: any free port (see port()).
    uint16_t port = 7400;
    std::string node_name = "node-1";
    size_t max_frame_bytes = control::default_max_frame;
    /// Largest frame before the hello is accepted.
    size_t max_hello_bytes = 64 << 10;
    size_t max_connections = 1024;
    /// Most connections from one source address at once; more are closed
    /// at once, so that one client cannot take every connection.
    size_t max_connections_per_address = 256;
    /// A connection that has not said hello this long after it was
    /// accepted is closed (so silent sockets do not hold connections for
    /// the whole idle timeout).
    std::chrono::milliseconds hello_timeout{10'000};
    /// Requests of one connection that may wait for their first answer at
    /// once; more are refused with too_many_requests.
    size_t max_in_flight = 128;
    /// A connection silent this long between frames is closed.
    std::chrono::milliseconds idle_timeout{300'000};
    /// A connection (protocol version 2 or later) that waits for answers
    /// and whose client said nothing for this long is sent a keepalive,
    /// which the client answers: a watch then lasts as long as its run, and
    /// a client that stops answering is still closed after idle_timeout. 0:
    /// a third of idle_timeout, at most 30 s.
    std::chrono::milliseconds keepalive_interval{0};
    /// A frame, once begun, must arrive whole within this span; so must
    /// the TLS handshake.
    std::chrono::milliseconds read_timeout{30'000};
    /// A connection whose unsent answers exceed this is closed (a client
    /// that stopped reading).
    size_t max_pending_bytes = 64 << 20;
    /// PEM files; both empty: plain TCP.
    std::string tls_cert;
    std::string tls_key;
  };

  control_server(boost::asio::io_context& io, options opts, authenticator auth,
                 control_handler& handler);
  ~control_server();

  control_server(const control_server&) = delete;
  control_server& operator=(const control_server&) = delete;

  /// Binds and starts accepting; returns an empty string or why it cannot
  /// ("cannot listen on 127.0.0.1:7400: Address already in use").
  std::string start();

  /// The bound port.
  uint16_t port() const;

  /// Stops accepting and closes every connection; from any thread.
  void stop();

  /// Begins a graceful stop; from any thread, returns at once. Accepts no
  /// more connections and closes those that have not said hello. Tells
  /// the others (version 3 on: {t: "draining", within_ms}), goes on
  /// serving them (the handler refuses what it will not do now), and
  /// closes each once it owes no answers and `linger` has passed (time for
  /// requests already on their way to be answered rather than cut), or
  /// once `within` has passed, whatever it owes.
  void drain(std::chrono::milliseconds within,
             std::chrono::milliseconds linger = std::chrono::milliseconds{200});

  /// Waits until every connection is closed, at most `limit`; returns
  /// whether they all are.
  bool wait_closed(std::chrono::milliseconds limit) const;

  /// Connections open now.
  size_t connections() const;

  /// The listener's state, shared with its connections.
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster
