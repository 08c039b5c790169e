#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::config {

/// Troupe measures every configured or declared span of time in nanoseconds.
using duration = std::chrono::nanoseconds;

/// Parses a duration such as `250ms`, `10s`, `5m`, `1h`, `1h30m` or `1.5s`.
/// Units: ns, us, ms, s, m, h, d. Returns nothing and sets `error` (when not
/// null) to a one-line reason on malformed, negative or overflowing input.
std::optional<duration> parse_duration(std::string_view text,
                                       std::string* error = nullptr);

/// Returns `d` in the shortest form `parse_duration` reads back, e.g. `1h30m`.
std::string format_duration(duration d);

} // namespace troupe::config
