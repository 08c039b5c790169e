#pragma once

// A raw control-protocol client for tests: plain POSIX sockets, so tests can
// send anything (garbage, half frames, one byte at a time) and see exactly
// what the node answers.

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace troupe::test {

class frame_client {
 public:
  /// Connects to `host` (an IPv4 address, 127.0.0.1 by default):`port`;
  /// check connected().
  explicit frame_client(uint16_t port, const std::string& host = "127.0.0.1");
  ~frame_client();

  frame_client(const frame_client&) = delete;
  frame_client& operator=(const frame_client&) = delete;

  bool connected() const { return fd_ >= 0; }

  /// Sends bytes as they are; false when the connection is gone.
  bool send_raw(const std::string& bytes);

  /// Sends one frame holding `msg`.
  bool send(const nlohmann::json& msg);

  /// Reads one frame within `limit`; nothing on timeout or a closed
  /// connection.
  std::optional<nlohmann::json> receive(std::chrono::milliseconds limit
                                        = std::chrono::seconds{10});

  /// Says hello in protocol `version` (0: the newest this build speaks),
  /// with `token` when not empty, and returns the answer.
  std::optional<nlohmann::json> hello(const std::string& token = {},
                                      int64_t version = 0);

  /// Sends a request with id `id` and returns the answer with that id,
  /// skipping others.
  std::optional<nlohmann::json> call(nlohmann::json msg, uint64_t id,
                                     std::chrono::milliseconds limit
                                     = std::chrono::seconds{10});

  /// Whether the peer closes the connection within `limit`.
  bool closed_within(std::chrono::milliseconds limit);

 private:
  /// Reads exactly n bytes by `deadline`.
  bool read_exact(char* out, size_t n,
                  std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
};

} // namespace troupe::test
