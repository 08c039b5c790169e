#pragma once

#include "runtime/auth/role.hpp"

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::runtime::auth {

/// Clock of token times: `iat` and `exp` are whole seconds since the epoch.
using token_clock = std::chrono::system_clock;

/// HS256 wants a key at least as long as its hash (RFC 7518, 3.2): shorter
/// secrets still work, but callers should warn (see `is_weak_secret`).
inline constexpr size_t min_secret_bytes = 32;

/// Longest subject a token may carry, in bytes.
inline constexpr size_t max_subject_bytes = 256;

/// Longest token `verify_token` reads, in bytes; longer ones are malformed.
inline constexpr size_t max_token_bytes = 8192;

/// Returns whether `secret` is shorter than `min_secret_bytes`.
constexpr bool is_weak_secret(std::string_view secret) noexcept {
  return secret.size() < min_secret_bytes;
}

/// Returns why `subject` cannot go in a token (empty, longer than
/// `max_subject_bytes`, or holding control characters), or an empty string.
std::string check_subject(std::string_view subject);

/// Mints a signed token (HS256) with the claims `iss` ("troupe"), `sub`,
/// `role`, `iat` (`now`) and `exp` (`now + ttl`), both in whole seconds.
/// Throws std::invalid_argument on an empty secret, a subject that
/// `check_subject` refuses, or a ttl under one second; the message names
/// neither the secret nor the token.
std::string issue_token(std::string_view secret, role r,
                        std::string_view subject, std::chrono::seconds ttl,
                        token_clock::time_point now);

/// What a verified token says about its holder.
struct token_claims {
  std::string subject;
  auth::role role = role::viewer;
  token_clock::time_point issued_at;
  token_clock::time_point expires_at;
};

/// Why a token was refused.
enum class token_errc : uint8_t {
  missing,         ///< No token at all.
  malformed,       ///< Not three base64url parts of JSON, or too long.
  wrong_algorithm, ///< A header `alg` other than HS256 (e.g. none, RS256).
  bad_signature,   ///< Signed with another secret, or altered after signing.
  expired,         ///< `now` is at or past `exp` (no leeway).
  invalid_claims,  ///< A claim missing, of the wrong type, or `iss` not ours.
  unknown_role,    ///< A `role` claim that names no role.
};

/// Returns the name of `code`, e.g. "bad_signature".
std::string_view to_string(token_errc code);

/// A refused token: the kind, and a one-line message fit for logs and for
/// the client. The message never contains the token or the secret.
struct token_error {
  token_errc code = token_errc::malformed;
  std::string message;
};

/// The outcome of `verify_token`: the claims or the reason for refusal.
class verify_result {
 public:
  verify_result(token_claims claims) : claims_(std::move(claims)) {}
  verify_result(token_error error) : error_(std::move(error)) {}

  /// Returns whether the token was accepted.
  bool ok() const noexcept { return claims_.has_value(); }
  explicit operator bool() const noexcept { return ok(); }

  /// The claims; only when `ok()`.
  const token_claims& claims() const { return claims_.value(); }

  /// Why the token was refused; only when `!ok()`.
  const token_error& error() const noexcept { return error_; }

 private:
  std::optional<token_claims> claims_;
  token_error error_;
};

/// Checks `token` against `secret` at time `now`: the header's `alg` must be
/// HS256, the signature valid (compared in constant time), `iss` "troupe",
/// `sub`, `role` and `exp` present, `now` before `exp` and not before `nbf`
/// (no leeway: `now` is the only clock read). The signature is checked
/// before any claim is looked at. An empty secret refuses every token.
/// Never throws on malformed input.
verify_result verify_token(std::string_view secret, std::string_view token,
                           token_clock::time_point now);

} // namespace troupe::runtime::auth
