#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::runtime::query::detail {

/// Parses an ISO 8601 timestamp to nanoseconds since the Unix epoch:
/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM`, `:SS`, a
/// fraction of up to 9 digits, and `Z` or an offset `+HH:MM`. Without an
/// offset the time is UTC. On failure returns nothing and sets `error` to a
/// one-line reason.
std::optional<int64_t> parse_timestamp(std::string_view text,
                                       std::string& error);

} // namespace troupe::runtime::query::detail
