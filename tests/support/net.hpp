#pragma once

// Plain sockets for tests of a node's ports on 127.0.0.1.

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

namespace troupe::test {

/// GETs `path` from 127.0.0.1:`port` over plain HTTP/1.0; returns the status
/// line and the body (the status line alone, or nothing, when the answer is
/// cut short or there is none).
std::pair<std::string, std::string> http_get(uint16_t port,
                                             const std::string& path);

/// POSTs the JSON `json_body` to `path` on 127.0.0.1:`port` over plain
/// HTTP/1.0, waiting at most `limit`; answers as http_get does.
std::pair<std::string, std::string> http_post(uint16_t port,
                                              const std::string& path,
                                              const std::string& json_body,
                                              std::chrono::milliseconds limit);

/// A port on 127.0.0.1 that was free a moment ago.
uint16_t free_port();

/// A port on 127.0.0.1 that takes connections (the kernel completes them)
/// and never answers: a server that hangs, as under SIGSTOP.
struct black_hole {
  int fd = -1;
  uint16_t port = 0;

  black_hole();
  ~black_hole();
  black_hole(const black_hole&) = delete;
  black_hole& operator=(const black_hole&) = delete;

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

} // namespace troupe::test
