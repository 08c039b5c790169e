#pragma once

// A raw control-protocol client past its hello, for requests the CLI has no
// command for. The target links troupe_frame_client.

#include "tests/support/frame_client.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <string>

namespace troupe::test {

struct raw_session {
  frame_client c;
  /// The id of the next request.
  uint64_t next = 2;

  /// Connects to 127.0.0.1:`port` and says hello with `token` in protocol
  /// `version` (0: the newest; the oldest, 1, sends no keepalives).
  raw_session(uint16_t port, const std::string& token, int64_t version = 0)
      : c(port) {
    auto w = c.hello(token, version);
    EXPECT_TRUE(w && (*w)["t"] == "welcome") << (w ? w->dump() : "no answer");
  }

  /// Sends `msg` and returns its answer; an empty object (and a failure of
  /// the test) when none comes within `limit`.
  nlohmann::json call(nlohmann::json msg, std::chrono::milliseconds limit
                                          = std::chrono::seconds{10}) {
    auto r = c.call(std::move(msg), next++, limit);
    EXPECT_TRUE(r) << "no answer within " << limit.count() << " ms";
    return r ? *r : nlohmann::json::object();
  }
};

} // namespace troupe::test
