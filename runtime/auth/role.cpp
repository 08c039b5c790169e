#include "runtime/auth/role.hpp"

namespace troupe::runtime::auth {

std::string_view to_string(role r) {
  switch (r) {
  case role::viewer: return "viewer";
  case role::op: return "operator";
  case role::admin: return "admin";
  }
  return "unknown";
}

std::optional<role> parse_role(std::string_view text) {
  for (auto r : {role::viewer, role::op, role::admin})
    if (to_string(r) == text)
      return r;
  return std::nullopt;
}

const std::vector<std::string>& role_names() {
  static const std::vector<std::string> names = {"viewer", "operator", "admin"};
  return names;
}

} // namespace troupe::runtime::auth
