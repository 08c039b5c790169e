#include "runtime/auth/token.hpp"

#include <jwt/jwt.hpp>
#include <nlohmann/json.hpp>

#include <array>
#include <cctype>
#include <ctime>
#include <limits>
#include <openssl/crypto.h>
#include <stdexcept>

namespace troupe::runtime::auth {

namespace {

constexpr std::string_view issuer = "troupe";
constexpr std::string_view algorithm = "HS256";

// Claims past year 9999 are refused, which keeps every conversion in range.
constexpr int64_t max_epoch_seconds = 253'402'300'799;

token_error fail(token_errc code, std::string message) {
  return token_error{code, std::move(message)};
}

int64_t to_epoch_seconds(token_clock::time_point t) {
  return std::chrono::floor<std::chrono::seconds>(t.time_since_epoch()).count();
}

token_clock::time_point from_epoch_seconds(int64_t s) {
  return token_clock::time_point{std::chrono::seconds{s}};
}

std::string format_utc(token_clock::time_point t) {
  auto secs = static_cast<std::time_t>(to_epoch_seconds(t));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  std::array<char, 32> buf{};
  auto n = std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string{buf.data(), n};
}

/// Returns `text` quoted when it is short and plain enough to show in a
/// message, else a placeholder: header values come from the client.
std::string shown(std::string_view text) {
  constexpr size_t max_shown = 32;
  if (text.size() > max_shown)
    return "(too long to show)";
  for (char c : text)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_'
        && c != '.')
      return "(unprintable)";
  return "'" + std::string{text} + "'";
}

bool is_base64url(std::string_view part) {
  if (part.size() % 4 == 1)
    return false;
  for (char c : part)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_')
      return false;
  return true;
}

/// Decodes one base64url part (no padding) holding a JSON object; returns a
/// discarded value on any error.
nlohmann::json decode_json_part(std::string_view part) {
  if (part.empty() || !is_base64url(part))
    return nlohmann::json::value_t::discarded;
  auto text = jwt::base64_uri_decode(part.data(), part.size());
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_object())
    return nlohmann::json::value_t::discarded;
  return j;
}

std::string base64url(std::string_view bytes) {
  auto text = jwt::base64_encode(bytes.data(), bytes.size());
  text.resize(jwt::base64_uri_encode(text.data(), text.size()));
  return text;
}

/// Returns whether `sig` is the HS256 signature of `signed_part` under
/// `secret`, comparing in constant time.
bool signature_matches(std::string_view secret, std::string_view signed_part,
                       std::string_view sig) {
  auto [mac, ec] = jwt::HMACSign<jwt::algo::HS256>::sign(
    jwt::string_view{secret}, jwt::string_view{signed_part});
  if (ec)
    return false;
  auto expected = base64url(mac);
  // The length of an HS256 signature is public; only the bytes are secret.
  if (expected.size() != sig.size())
    return false;
  return CRYPTO_memcmp(expected.data(), sig.data(), sig.size()) == 0;
}

/// Reads an integer claim in [0, max_epoch_seconds].
std::optional<int64_t> epoch_claim(const nlohmann::json& payload,
                                   const char* name) {
  auto it = payload.find(name);
  if (it == payload.end() || !it->is_number_integer())
    return std::nullopt;
  if (it->is_number_unsigned()) {
    auto u = it->get<uint64_t>();
    if (u > static_cast<uint64_t>(max_epoch_seconds))
      return std::nullopt;
    return static_cast<int64_t>(u);
  }
  auto n = it->get<int64_t>();
  if (n < 0 || n > max_epoch_seconds)
    return std::nullopt;
  return n;
}

} // namespace

std::string check_subject(std::string_view subject) {
  if (subject.empty())
    return "must not be empty";
  if (subject.size() > max_subject_bytes)
    return "must be at most " + std::to_string(max_subject_bytes) + " bytes";
  for (char c : subject)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return "must not contain control characters";
  return {};
}

std::string issue_token(std::string_view secret, role r,
                        std::string_view subject, std::chrono::seconds ttl,
                        token_clock::time_point now) {
  if (secret.empty())
    throw std::invalid_argument("cannot sign a token: the secret is empty");
  if (auto why = check_subject(subject); !why.empty())
    throw std::invalid_argument("bad token subject: " + why);
  if (ttl < std::chrono::seconds{1})
    throw std::invalid_argument("token lifetime must be at least 1s");
  auto iat = to_epoch_seconds(now);
  if (iat < 0 || ttl.count() > max_epoch_seconds - iat)
    throw std::invalid_argument("token lifetime ends past year 9999");
  jwt::jwt_object obj{jwt::params::algorithm(std::string{algorithm}),
                      jwt::params::secret(std::string{secret})};
  obj.add_claim("iss", std::string{issuer});
  obj.add_claim("sub", std::string{subject});
  obj.add_claim("role", std::string{to_string(r)});
  obj.add_claim("iat", iat);
  obj.add_claim("exp", iat + ttl.count());
  std::error_code ec;
  auto token = obj.signature(ec);
  if (ec)
    throw std::runtime_error("cannot sign a token: " + ec.message());
  return token;
}

std::string_view to_string(token_errc code) {
  switch (code) {
  case token_errc::missing: return "missing";
  case token_errc::malformed: return "malformed";
  case token_errc::wrong_algorithm: return "wrong_algorithm";
  case token_errc::bad_signature: return "bad_signature";
  case token_errc::expired: return "expired";
  case token_errc::invalid_claims: return "invalid_claims";
  case token_errc::unknown_role: return "unknown_role";
  }
  return "unknown";
}

verify_result verify_token(std::string_view secret, std::string_view token,
                           token_clock::time_point now) {
  using ec = token_errc;
  if (token.empty())
    return fail(ec::missing, "no bearer token");
  if (token.size() > max_token_bytes)
    return fail(ec::malformed, "token longer than "
                                 + std::to_string(max_token_bytes) + " bytes");
  // -- structure: HEADER.PAYLOAD.SIGNATURE, each base64url -------------------
  auto dot1 = token.find('.');
  auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos
      || token.find('.', dot2 + 1) != std::string_view::npos)
    return fail(ec::malformed, "token is not three dot-separated parts");
  auto header_part = token.substr(0, dot1);
  auto payload_part = token.substr(dot1 + 1, dot2 - dot1 - 1);
  auto sig_part = token.substr(dot2 + 1);
  auto header = decode_json_part(header_part);
  if (header.is_discarded())
    return fail(ec::malformed, "token header is not base64url-encoded JSON");
  // -- algorithm, before anything else is trusted ---------------------------
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string())
    return fail(ec::wrong_algorithm, "token header names no algorithm");
  if (alg->get_ref<const std::string&>() != algorithm)
    return fail(ec::wrong_algorithm,
                "token algorithm " + shown(alg->get_ref<const std::string&>())
                  + " is not accepted; only HS256 is");
  if (header.contains("crit"))
    return fail(ec::malformed, "token header has critical extensions");
  if (sig_part.empty() || !is_base64url(sig_part))
    return fail(ec::malformed, "token signature is missing or not base64url");
  if (payload_part.empty() || !is_base64url(payload_part))
    return fail(ec::malformed, "token payload is not base64url");
  // -- signature ------------------------------------------------------------
  if (secret.empty())
    return fail(ec::bad_signature, "no secret is configured to check tokens");
  if (!signature_matches(secret, token.substr(0, dot2), sig_part))
    return fail(ec::bad_signature, "token signature does not match");
  // -- claims ---------------------------------------------------------------
  auto payload = decode_json_part(payload_part);
  if (payload.is_discarded())
    return fail(ec::malformed, "token payload is not a JSON object");
  auto iss = payload.find("iss");
  if (iss == payload.end() || !iss->is_string()
      || iss->get_ref<const std::string&>() != issuer)
    return fail(ec::invalid_claims, "token issuer is not troupe");
  auto sub = payload.find("sub");
  if (sub == payload.end() || !sub->is_string())
    return fail(ec::invalid_claims, "token has no subject (sub)");
  if (auto why = check_subject(sub->get_ref<const std::string&>());
      !why.empty())
    return fail(ec::invalid_claims, "token subject " + why);
  auto role_claim = payload.find("role");
  if (role_claim == payload.end() || !role_claim->is_string())
    return fail(ec::invalid_claims, "token has no role");
  auto r = parse_role(role_claim->get_ref<const std::string&>());
  if (!r)
    return fail(ec::unknown_role,
                "token role " + shown(role_claim->get_ref<const std::string&>())
                  + " is not one of viewer, operator, admin");
  auto exp = epoch_claim(payload, "exp");
  if (!exp)
    return fail(ec::invalid_claims, "token has no valid expiry (exp)");
  int64_t iat = 0;
  if (payload.contains("iat")) {
    auto v = epoch_claim(payload, "iat");
    if (!v)
      return fail(ec::invalid_claims, "token issue time (iat) is invalid");
    iat = *v;
  }
  if (payload.contains("nbf")) {
    auto nbf = epoch_claim(payload, "nbf");
    if (!nbf)
      return fail(ec::invalid_claims, "token start time (nbf) is invalid");
    if (now < from_epoch_seconds(*nbf))
      return fail(ec::invalid_claims, "token is not valid before "
                                        + format_utc(from_epoch_seconds(*nbf)));
  }
  auto expires_at = from_epoch_seconds(*exp);
  if (now >= expires_at)
    return fail(ec::expired, "token expired at " + format_utc(expires_at));
  return token_claims{sub->get<std::string>(), *r, from_epoch_seconds(iat),
                      expires_at};
}

} // namespace troupe::runtime::auth
