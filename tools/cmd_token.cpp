#include "config/duration.hpp"
#include "config/schema.hpp"
#include "config/suggest.hpp"
#include "runtime/auth/role.hpp"
#include "runtime/auth/token.hpp"
#include "tools/commands.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <ctime>
#include <iostream>
#include <optional>

namespace troupe::tools {

namespace {

namespace auth = runtime::auth;

/// Returns `t` as UTC ISO-8601, e.g. "2026-11-24T10:00:00Z".
std::string iso_utc(auth::token_clock::time_point t) {
  auto secs = static_cast<std::time_t>(
    std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count());
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::array<char, 32> buf{};
  auto n = std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string{buf.data(), n};
}

int bad_input(const std::string& message) {
  std::cerr << "troupe: token issue: " << message << "\n";
  return exit_bad_input;
}

} // namespace

int run_token_issue(const global_options& g, const std::string& role,
                    const std::string& subject, const std::string& ttl) {
  // Flags first: they need no configuration.
  auto r = auth::parse_role(role);
  if (!r)
    return bad_input("--role: unknown role '" + role
                     + "'; roles: " + config::join(auth::role_names())
                     + config::did_you_mean(role, auth::role_names()));
  if (auto why = auth::check_subject(subject); !why.empty())
    return bad_input("--subject: " + why);
  std::optional<config::duration> lifetime;
  if (!ttl.empty()) {
    std::string error;
    lifetime = config::parse_duration(ttl, &error);
    if (!lifetime)
      return bad_input("--ttl: \"" + ttl + "\": " + error);
    // The same limits as auth.token_ttl.
    auto* spec = config::find_key("auth", "token_ttl");
    if (auto why = config::check_limits(*spec, *lifetime); !why.empty())
      return bad_input("--ttl: \"" + ttl + "\": " + why);
  }
  config::settings s;
  if (!load_config(g, {}, s))
    return exit_bad_input;
  if (!lifetime)
    lifetime = s.get_duration("auth.token_ttl");
  auto& secret = s.get_string("auth.secret");
  if (secret.empty())
    return bad_input(
      "no signing secret: set TROUPE_AUTH_SECRET (or auth.secret "
      "in a config file)");
  if (auth::is_weak_secret(secret))
    std::cerr << "troupe: token issue: warning: auth.secret is shorter than "
              << auth::min_secret_bytes
              << " bytes; use a longer random secret, e.g. from "
                 "`openssl rand -base64 32`\n";
  auto now = auth::token_clock::now();
  auto seconds = std::chrono::floor<std::chrono::seconds>(*lifetime);
  auto token = auth::issue_token(secret, *r, subject, seconds, now);
  if (!g.json) {
    std::cout << token << "\n";
    return exit_ok;
  }
  auto expires_at = std::chrono::floor<std::chrono::seconds>(now) + seconds;
  nlohmann::ordered_json out = {{"token", token},
                                {"subject", subject},
                                {"role", std::string{auth::to_string(*r)}},
                                {"expires_at", iso_utc(expires_at)}};
  std::cout << out.dump() << "\n";
  return exit_ok;
}

} // namespace troupe::tools
