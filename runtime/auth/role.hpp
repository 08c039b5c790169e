#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime::auth {

/// What a token's holder may do. Each role includes the ones before it.
enum class role : uint8_t {
  viewer, ///< Reads state: runs, history, health.
  op,     ///< Also submits, cancels and resumes runs ("operator").
  admin,  ///< Also changes the node: configuration, shutdown, tokens.
};

/// Returns "viewer", "operator" or "admin".
std::string_view to_string(role r);

/// Parses "viewer", "operator" or "admin" (exact, lower case).
std::optional<role> parse_role(std::string_view text);

/// Returns every role name, least privileged first.
const std::vector<std::string>& role_names();

/// Returns whether a holder of `have` may do what needs `needed`
/// (admin > operator > viewer).
constexpr bool allows(role have, role needed) noexcept {
  return static_cast<uint8_t>(have) >= static_cast<uint8_t>(needed);
}

} // namespace troupe::runtime::auth
