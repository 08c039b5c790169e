#include "runtime/auth/rate_limiter.hpp"
#include "runtime/auth/role.hpp"
#include "runtime/auth/token.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <thread>
#include <vector>

using namespace troupe::runtime::auth;
using namespace std::chrono_literals;

namespace {

const std::string secret = "0123456789abcdef0123456789abcdef-test";
// 2026-11-23T10:00:00Z
const token_clock::time_point t0{std::chrono::seconds{1'795'428'000}};

std::string base64url(std::string_view bytes) {
  static const char* alphabet
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  size_t i = 0;
  auto byte = [&](size_t k) {
    return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k]));
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    auto n = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    for (int s = 18; s >= 0; s -= 6)
      out += alphabet[(n >> s) & 63];
  }
  if (auto rest = bytes.size() - i; rest > 0) {
    auto n = byte(i) << 16;
    if (rest == 2)
      n |= byte(i + 1) << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    if (rest == 2)
      out += alphabet[(n >> 6) & 63];
  }
  return out;
}

std::string hs256(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac,
       &len);
  return base64url(std::string_view{reinterpret_cast<char*>(mac), len});
}

/// Builds a token by hand: any header, any payload, signed with `key` under
/// HS256 (or left unsigned when `key` is empty).
std::string craft(const nlohmann::json& header, const nlohmann::json& payload,
                  std::string_view key = secret) {
  auto head = base64url(header.dump()) + "." + base64url(payload.dump());
  return head + "." + (key.empty() ? "" : hs256(key, head));
}

int64_t epoch(token_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch())
    .count();
}

nlohmann::json good_claims() {
  return {{"iss", "troupe"},
          {"sub", "alice"},
          {"role", "operator"},
          {"iat", epoch(t0)},
          {"exp", epoch(t0 + 1h)}};
}

const nlohmann::json hs256_header = {{"alg", "HS256"}, {"typ", "JWT"}};

/// Checks the refusal kind, and that its message gives away neither the
/// token nor the secret.
void expect_refused(const std::string& token, token_errc code,
                    token_clock::time_point now = t0) {
  auto r = verify_token(secret, token, now);
  ASSERT_FALSE(r.ok()) << "accepted: " << token;
  EXPECT_EQ(r.error().code, code)
    << to_string(r.error().code) << ": " << r.error().message;
  EXPECT_FALSE(r.error().message.empty());
  EXPECT_EQ(r.error().message.find(secret), std::string::npos);
  if (!token.empty()) {
    EXPECT_EQ(r.error().message.find(token), std::string::npos);
  }
}

} // namespace

// -- roles --------------------------------------------------------------------

TEST(AuthRole, ParsesAndPrintsEachRole) {
  for (auto r : {role::viewer, role::op, role::admin})
    EXPECT_EQ(parse_role(to_string(r)), r);
  EXPECT_EQ(to_string(role::op), "operator");
  EXPECT_FALSE(parse_role("Admin"));
  EXPECT_FALSE(parse_role(""));
  EXPECT_FALSE(parse_role("root"));
  EXPECT_EQ(role_names().size(), 3u);
}

TEST(AuthRole, AdminIncludesOperatorIncludesViewer) {
  EXPECT_TRUE(allows(role::admin, role::admin));
  EXPECT_TRUE(allows(role::admin, role::op));
  EXPECT_TRUE(allows(role::admin, role::viewer));
  EXPECT_TRUE(allows(role::op, role::op));
  EXPECT_TRUE(allows(role::op, role::viewer));
  EXPECT_FALSE(allows(role::op, role::admin));
  EXPECT_TRUE(allows(role::viewer, role::viewer));
  EXPECT_FALSE(allows(role::viewer, role::op));
  EXPECT_FALSE(allows(role::viewer, role::admin));
}

// -- issuing and verifying ----------------------------------------------------

TEST(AuthToken, RoundTripKeepsSubjectRoleAndExpiry) {
  for (auto r : {role::viewer, role::op, role::admin}) {
    auto token = issue_token(secret, r, "ci@example.org", 90min, t0);
    auto v = verify_token(secret, token, t0);
    ASSERT_TRUE(v.ok()) << v.error().message;
    EXPECT_EQ(v.claims().subject, "ci@example.org");
    EXPECT_EQ(v.claims().role, r);
    EXPECT_EQ(v.claims().issued_at, t0);
    EXPECT_EQ(v.claims().expires_at, t0 + 90min);
  }
}

TEST(AuthToken, CarriesTheDocumentedClaims) {
  auto token = issue_token(secret, role::admin, "bob", 10s, t0);
  auto dot1 = token.find('.');
  auto dot2 = token.find('.', dot1 + 1);
  ASSERT_NE(dot2, std::string::npos);
  // Re-sign the payload by hand: the test's own HS256 must agree.
  EXPECT_EQ(hs256(secret, token.substr(0, dot2)), token.substr(dot2 + 1));
}

TEST(AuthToken, RefusesToIssueWithoutSecretOrSubject) {
  EXPECT_THROW(issue_token("", role::admin, "bob", 1h, t0),
               std::invalid_argument);
  EXPECT_THROW(issue_token(secret, role::admin, "", 1h, t0),
               std::invalid_argument);
  EXPECT_THROW(issue_token(secret, role::admin, "a\nb", 1h, t0),
               std::invalid_argument);
  EXPECT_THROW(issue_token(secret, role::admin, std::string(257, 'x'), 1h, t0),
               std::invalid_argument);
  EXPECT_THROW(issue_token(secret, role::admin, "bob", 0s, t0),
               std::invalid_argument);
  try {
    issue_token(secret, role::admin, "", 1h, t0);
  } catch (const std::invalid_argument& e) {
    EXPECT_EQ(std::string{e.what()}.find(secret), std::string::npos);
  }
}

TEST(AuthToken, MissingTokenIsItsOwnKind) {
  expect_refused("", token_errc::missing);
}

TEST(AuthToken, GarbageIsMalformed) {
  for (auto& bad : std::vector<std::string>{
         "abc", "a.b", "a.b.c.d", "...", "!!!.@@@.###", "eyJhbGciOiJIUzI1NiJ9",
         base64url("not json") + "." + base64url("{}") + ".sig",
         base64url("[1,2]") + "." + base64url("{}") + ".sig",
         std::string(max_token_bytes + 1, 'a')})
    expect_refused(bad, token_errc::malformed);
  // A good header and signature over a payload that is not JSON.
  auto head = base64url(hs256_header.dump()) + "." + base64url("{oops");
  expect_refused(head + "." + hs256(secret, head), token_errc::malformed);
  // An HS256 header without a signature.
  expect_refused(craft(hs256_header, good_claims(), ""), token_errc::malformed);
}

TEST(AuthToken, ForgedSignatureIsRefused) {
  auto forged = issue_token("another-secret-another-secret-00", role::admin,
                            "mallory", 1h, t0);
  expect_refused(forged, token_errc::bad_signature);
  expect_refused(craft(hs256_header, good_claims(), "wrong"),
                 token_errc::bad_signature);
  // Any secret refuses everything when none is configured.
  auto good = issue_token(secret, role::viewer, "bob", 1h, t0);
  auto r = verify_token("", good, t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, token_errc::bad_signature);
}

TEST(AuthToken, TamperedPayloadIsRefused) {
  auto token = issue_token(secret, role::viewer, "eve", 1h, t0);
  auto dot1 = token.find('.');
  auto dot2 = token.find('.', dot1 + 1);
  auto claims = good_claims();
  claims["sub"] = "eve";
  claims["role"] = "admin";
  auto tampered = token.substr(0, dot1) + "." + base64url(claims.dump())
                  + token.substr(dot2);
  expect_refused(tampered, token_errc::bad_signature);
  // One flipped character in the signature, too.
  auto flipped = token;
  flipped.back() = flipped.back() == 'A' ? 'B' : 'A';
  expect_refused(flipped, token_errc::bad_signature);
}

TEST(AuthToken, AlgNoneAndOtherAlgorithmsAreRefused) {
  // The classic attack: {"alg":"none"} and an empty signature.
  auto none = base64url(R"({"alg":"none"})") + "."
              + base64url(good_claims().dump()) + ".";
  expect_refused(none, token_errc::wrong_algorithm);
  expect_refused(craft({{"alg", "none"}, {"typ", "JWT"}}, good_claims(), ""),
                 token_errc::wrong_algorithm);
  // Signed correctly, but the header claims another algorithm.
  for (auto alg : {"RS256", "HS512", "ES256", "hs256", "None", ""})
    expect_refused(craft({{"alg", alg}}, good_claims()),
                   token_errc::wrong_algorithm);
  expect_refused(craft({{"typ", "JWT"}}, good_claims()),
                 token_errc::wrong_algorithm);
  expect_refused(craft({{"alg", 256}}, good_claims()),
                 token_errc::wrong_algorithm);
  auto r = verify_token(secret, none, t0);
  EXPECT_NE(r.error().message.find("'none'"), std::string::npos)
    << r.error().message;
}

TEST(AuthToken, ExpiresExactlyAtExpWithoutLeeway) {
  auto token = issue_token(secret, role::op, "bob", 60s, t0);
  EXPECT_TRUE(verify_token(secret, token, t0 + 59s));
  EXPECT_TRUE(verify_token(secret, token, t0 + 59s + 999ms));
  expect_refused(token, token_errc::expired, t0 + 60s);
  expect_refused(token, token_errc::expired, t0 + 24h);
  auto r = verify_token(secret, token, t0 + 60s);
  EXPECT_NE(r.error().message.find("2026-11-23T10:01:00Z"), std::string::npos)
    << r.error().message;
}

TEST(AuthToken, ForgedExpiredTokenIsABadSignatureNotExpired) {
  auto forged = issue_token("not-the-secret", role::admin, "bob", 1s, t0);
  expect_refused(forged, token_errc::bad_signature, t0 + 1h);
}

TEST(AuthToken, MissingOrMistypedClaimsAreRefused) {
  for (auto key : {"sub", "role", "exp", "iss"}) {
    auto claims = good_claims();
    claims.erase(key);
    expect_refused(craft(hs256_header, claims), token_errc::invalid_claims);
  }
  std::vector<std::pair<std::string, nlohmann::json>> bad
    = {{"sub", 42},
       {"sub", ""},
       {"role", 2},
       {"exp", "tomorrow"},
       {"exp", 1.5e9},
       {"exp", -1},
       {"iat", "now"},
       {"iss", "someone-else"},
       {"nbf", epoch(t0 + 1s)}};
  for (auto& [key, value] : bad) {
    auto claims = good_claims();
    claims[key] = value;
    expect_refused(craft(hs256_header, claims), token_errc::invalid_claims);
  }
  auto claims = good_claims();
  claims["nbf"] = epoch(t0);
  EXPECT_TRUE(verify_token(secret, craft(hs256_header, claims), t0));
}

TEST(AuthToken, UnknownRoleIsItsOwnKind) {
  auto claims = good_claims();
  claims["role"] = "superuser";
  expect_refused(craft(hs256_header, claims), token_errc::unknown_role);
  claims["role"] = "Admin";
  expect_refused(craft(hs256_header, claims), token_errc::unknown_role);
}

TEST(AuthToken, AcceptsHandMadeTokensOfTheSameShape) {
  auto v = verify_token(secret, craft(hs256_header, good_claims()), t0);
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v.claims().subject, "alice");
  EXPECT_EQ(v.claims().role, role::op);
}

TEST(AuthToken, WeakSecretsAreFlagged) {
  EXPECT_TRUE(is_weak_secret("short"));
  EXPECT_TRUE(is_weak_secret(std::string(31, 'k')));
  EXPECT_FALSE(is_weak_secret(std::string(32, 'k')));
}

TEST(AuthToken, EveryKindHasAName) {
  for (auto c :
       {token_errc::missing, token_errc::malformed, token_errc::wrong_algorithm,
        token_errc::bad_signature, token_errc::expired,
        token_errc::invalid_claims, token_errc::unknown_role})
    EXPECT_NE(to_string(c), "unknown");
  EXPECT_EQ(to_string(token_errc::bad_signature), "bad_signature");
}

// -- rate limits --------------------------------------------------------------

namespace {

const rate_limiter::clock::time_point s0{std::chrono::hours{1}};

} // namespace

TEST(AuthRateLimiter, AllowsTheBurstThenAsksToWait) {
  rate_limiter limiter{2, 3}; // 2 per second, 3 at once
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(limiter.acquire("alice", s0), 0ms) << i;
  EXPECT_EQ(limiter.acquire("alice", s0), 500ms);
  // A refused call takes nothing: the wait only shrinks with time.
  EXPECT_EQ(limiter.acquire("alice", s0), 500ms);
  EXPECT_EQ(limiter.acquire("alice", s0 + 200ms), 300ms);
  EXPECT_EQ(limiter.acquire("alice", s0 + 499ms), 1ms);
  EXPECT_EQ(limiter.acquire("alice", s0 + 500ms), 0ms);
  EXPECT_EQ(limiter.acquire("alice", s0 + 500ms), 500ms);
}

TEST(AuthRateLimiter, RefillsAtTheRateUpToTheBurst) {
  rate_limiter limiter{10, 5};
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(limiter.acquire("bob", s0), 0ms);
  EXPECT_EQ(limiter.acquire("bob", s0), 100ms);
  // After 250 ms, two tokens are back (and half of a third).
  EXPECT_EQ(limiter.acquire("bob", s0 + 250ms), 0ms);
  EXPECT_EQ(limiter.acquire("bob", s0 + 250ms), 0ms);
  EXPECT_EQ(limiter.acquire("bob", s0 + 250ms), 50ms);
  // A long idle spell refills no more than the burst.
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(limiter.acquire("bob", s0 + 1h), 0ms) << i;
  EXPECT_EQ(limiter.acquire("bob", s0 + 1h), 100ms);
}

TEST(AuthRateLimiter, RetryAfterRoundsUpToWholeMilliseconds) {
  rate_limiter limiter{3, 1}; // one token every 333.33 ms
  EXPECT_EQ(limiter.acquire("c", s0), 0ms);
  EXPECT_EQ(limiter.acquire("c", s0), 334ms);
  EXPECT_EQ(limiter.acquire("c", s0 + 333ms), 1ms);
  EXPECT_EQ(limiter.acquire("c", s0 + 334ms), 0ms);
  rate_limiter slow{0.5, 1}; // one every 2 s
  EXPECT_EQ(slow.acquire("d", s0), 0ms);
  EXPECT_EQ(slow.acquire("d", s0), 2000ms);
}

TEST(AuthRateLimiter, SubjectsHaveSeparateBuckets) {
  rate_limiter limiter{1, 1};
  EXPECT_EQ(limiter.acquire("alice", s0), 0ms);
  EXPECT_EQ(limiter.acquire("alice", s0), 1000ms);
  EXPECT_EQ(limiter.acquire("bob", s0), 0ms);
  EXPECT_EQ(limiter.tracked_subjects(), 2u);
}

TEST(AuthRateLimiter, ManySubjectsStayWithinTheBound) {
  rate_limiter limiter{1, 2, 100};
  // Idle subjects refill and are dropped first.
  for (int i = 0; i < 1000; ++i)
    EXPECT_EQ(limiter.acquire("idle-" + std::to_string(i), s0 + i * 1s), 0ms);
  EXPECT_LE(limiter.tracked_subjects(), 100u);
  // Busy subjects: the bound holds all the same.
  for (int i = 0; i < 1000; ++i)
    limiter.acquire("busy-" + std::to_string(i), s0 + 1h);
  EXPECT_LE(limiter.tracked_subjects(), 100u);
  // Full buckets go first: a subject that was just limited keeps its bucket.
  rate_limiter small{1, 1, 3};
  EXPECT_EQ(small.acquire("a", s0), 0ms);
  EXPECT_EQ(small.acquire("b", s0), 0ms);
  EXPECT_EQ(small.acquire("hot", s0), 0ms);
  EXPECT_EQ(small.acquire("hot", s0 + 1s), 0ms);
  EXPECT_EQ(small.acquire("hot", s0 + 1s), 1000ms);
  EXPECT_EQ(small.acquire("c", s0 + 1s), 0ms); // a and b are full: dropped
  EXPECT_EQ(small.tracked_subjects(), 2u);
  EXPECT_EQ(small.acquire("hot", s0 + 1s), 1000ms);
}

TEST(AuthRateLimiter, IsSafeAcrossThreads) {
  rate_limiter limiter{1, 1000};
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i)
        if (limiter.acquire("shared", s0) == 0ms)
          ++allowed;
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(allowed.load(), 1000);
}

TEST(AuthRateLimiter, RefusesNonsenseSettings) {
  EXPECT_THROW(rate_limiter(0, 1), std::invalid_argument);
  EXPECT_THROW(rate_limiter(-1, 1), std::invalid_argument);
  EXPECT_THROW(rate_limiter(1, 0), std::invalid_argument);
  EXPECT_THROW(rate_limiter(1, 1, 0), std::invalid_argument);
}
