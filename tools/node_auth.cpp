#include "tools/node_auth.hpp"

#include "runtime/auth/token.hpp"

namespace troupe::tools {

namespace auth = runtime::auth;
using runtime::control::error_code;

std::optional<cluster::authenticator>
make_authenticator(const config::settings& settings, std::string& error) {
  if (!settings.get_bool("auth.enabled"))
    return cluster::authenticator{[](const std::string&) {
      return std::variant<cluster::principal, cluster::auth_failure>{
        cluster::principal{"anonymous", auth::role::admin, 0}};
    }};
  auto secret = settings.get_string("auth.secret");
  if (secret.empty()) {
    error = "auth is enabled but no secret is configured: set "
            "TROUPE_AUTH_SECRET (or auth.secret), or turn auth off "
            "explicitly with auth.enabled = false";
    return std::nullopt;
  }
  return cluster::authenticator{
    [secret](const std::string& token)
      -> std::variant<cluster::principal, cluster::auth_failure> {
      if (token.empty())
        return cluster::auth_failure{error_code::unauthenticated,
                                     "this node needs a token (--token or "
                                     "TROUPE_TOKEN; mint one with `troupe "
                                     "token issue`)"};
      auto r = auth::verify_token(secret, token, auth::token_clock::now());
      if (!r) {
        auto code = r.error().code == auth::token_errc::expired
                      ? error_code::token_expired
                      : error_code::token_invalid;
        return cluster::auth_failure{code, r.error().message};
      }
      auto& c = r.claims();
      auto exp = std::chrono::duration_cast<std::chrono::seconds>(
                   c.expires_at.time_since_epoch())
                   .count();
      return cluster::principal{c.subject, c.role, exp};
    }};
}

} // namespace troupe::tools
