#pragma once

// The command line's side of the control protocol: one connection, blocking
// calls with timeouts (the CLI has nothing else to do meanwhile).

#include "tools/commands.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

namespace troupe::tools {

/// A failed call, with the exit code the command should end with.
struct client_error : std::runtime_error {
  client_error(int code, const std::string& message,
               std::string protocol_code = {})
      : std::runtime_error(message), exit_code(code),
        code(std::move(protocol_code)) {}
  int exit_code;
  /// The protocol's error code when the node answered with an error (e.g.
  /// "rate_limited"); empty otherwise.
  std::string code;
};

class control_client {
 public:
  struct options {
    /// HOST:PORT, or tls://HOST:PORT for TLS.
    std::string address = "127.0.0.1:7400";
    std::string token;
    /// PEM file of the CA that signed the node's certificate (TLS); empty:
    /// the system's CA store.
    std::string ca_file;
    std::chrono::milliseconds connect_timeout{5'000};
    /// How long `call` retries, with backoff, a request the node refuses as
    /// not ready (still recovering); then it fails with exit code 3.
    std::chrono::milliseconds wait_ready{30'000};
    size_t max_frame_bytes = 64 << 20;
  };

  control_client();
  ~control_client();

  /// Connects and says hello in the newest protocol version both sides
  /// speak; throws client_error (exit 3 when the node cannot be reached, 4
  /// when it refuses the token).
  void connect(const options& opts);

  /// Sends a request (the "id" is set here) and returns the answer's body;
  /// an error answer throws client_error with the code's exit code. A
  /// `not_ready` answer is retried with backoff for up to `wait_ready`.
  nlohmann::json call(nlohmann::json request, std::chrono::milliseconds timeout
                                              = std::chrono::seconds{60});

  /// Sends a request whose answers stream (watch); returns its id.
  uint64_t start(nlohmann::json request);

  /// Returns the next message of any stream ({t, id, body}), or nothing when
  /// `timeout` passes first; throws client_error when the connection is lost
  /// (exit 3) or on an error message.
  std::optional<nlohmann::json> next(std::chrono::milliseconds timeout);

  /// Like `next`, but a keepalive from the node counts as a sign of life:
  /// returns nothing only once the node sent no frame at all for `quiet`.
  /// For streams that may be silent as long as their run (watch).
  std::optional<nlohmann::json> next_alive(std::chrono::milliseconds quiet);

  /// The node's name, from its welcome.
  const std::string& node_name() const;

  /// How long a stream may go without a frame from the node (it sends
  /// keepalives while it owes answers) before the node counts as lost; 0
  /// when the node sends no keepalives (protocol version 1).
  std::chrono::milliseconds quiet_limit() const;

  /// Returns the exit code for an error code of the protocol.
  static int exit_code_for(const std::string& code);

 private:
  void connect_speaking(const options& opts, int64_t version);

  struct impl;
  std::unique_ptr<impl> impl_;
};

/// How to reach the node: `--node`, else TROUPE_NODE, else control.listen;
/// `--token`, else TROUPE_TOKEN; `--ca`; `--wait-ready` (checked when
/// parsed; throws client_error with exit code 2 if it is not a duration).
control_client::options client_options(const global_options& g,
                                       const config::settings& settings);

} // namespace troupe::tools
