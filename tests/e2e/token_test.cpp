// Runs `troupe token issue` as a child process and checks its tokens with the
// library, and its refusals of bad input.

#include "runtime/auth/token.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ctime>

using namespace troupe::runtime::auth;
using namespace std::chrono_literals;
using troupe::test::process_options;
using troupe::test::process_result;
using troupe::test::run_process;
using troupe::test::temp_dir;

namespace {

const std::string secret = "e2e-secret-of-at-least-32-bytes-xxxxxxxx";

struct TokenCli : ::testing::Test {
  temp_dir dir;

  /// Runs troupe in the temp folder with a config dir of its own, none of
  /// the caller's TROUPE_* variables, and TROUPE_AUTH_SECRET set to
  /// `auth_secret` (unset when there is none).
  process_result troupe(std::vector<std::string> args,
                        std::optional<std::string> auth_secret = secret) {
    args.insert(args.begin(), TROUPE_BINARY);
    process_options opts;
    opts.cwd = dir.path().string();
    opts.env = {{"TROUPE_CONFIG_DIR", (dir.path() / "config").string()},
                {"TROUPE_ENV", std::nullopt},
                {"TROUPE_AUTH_SECRET", auth_secret},
                {"TROUPE_AUTH_TOKEN_TTL", std::nullopt}};
    auto r = run_process(args, opts);
    EXPECT_FALSE(r.timed_out);
    return r;
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r'))
    s.pop_back();
  return s;
}

} // namespace

TEST_F(TokenCli, IssuesATokenTheLibraryAccepts) {
  auto before = token_clock::now();
  auto r = troupe({"token", "issue", "--role", "operator", "--subject",
                   "ci@example.org", "--ttl", "2h"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  auto token = trimmed(r.out);
  EXPECT_EQ(token.find('\n'), std::string::npos) << "only the token: " << r.out;
  auto v = verify_token(secret, token, token_clock::now());
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v.claims().subject, "ci@example.org");
  EXPECT_EQ(v.claims().role, role::op);
  EXPECT_GE(v.claims().expires_at, before + 2h - 1s);
  EXPECT_LE(v.claims().expires_at, token_clock::now() + 2h);
  // Another secret does not accept it.
  EXPECT_FALSE(verify_token("some-other-secret", token, token_clock::now()));
  EXPECT_FALSE(contains(r.out + r.err, secret.substr(0, 16)));
}

TEST_F(TokenCli, TtlDefaultsToTheConfiguredTokenTtl) {
  dir.write("config/default.toml", "[auth]\ntoken_ttl = \"90m\"\n");
  auto before = token_clock::now();
  auto r = troupe({"token", "issue", "--role", "viewer", "--subject", "bob"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto v = verify_token(secret, trimmed(r.out), token_clock::now());
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(v.claims().role, role::viewer);
  EXPECT_GE(v.claims().expires_at, before + 90min - 1s);
  EXPECT_LE(v.claims().expires_at, token_clock::now() + 90min);
}

TEST_F(TokenCli, JsonOutputNamesTokenSubjectRoleAndExpiry) {
  auto r = troupe({"--json", "token", "issue", "--role", "admin", "--subject",
                   "alice", "--ttl", "1d"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["subject"], "alice");
  EXPECT_EQ(j["role"], "admin");
  auto v
    = verify_token(secret, j["token"].get<std::string>(), token_clock::now());
  ASSERT_TRUE(v.ok()) << v.error().message;
  // expires_at is the token's exp, in ISO-8601 UTC.
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                v.claims().expires_at.time_since_epoch())
                .count();
  auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  EXPECT_EQ(j["expires_at"], buf);
  EXPECT_FALSE(j.contains("secret"));
}

TEST_F(TokenCli, WithoutASecretItExitsTwoAndSaysHowToSetOne) {
  auto r = troupe({"token", "issue", "--role", "admin", "--subject", "alice"},
                  std::nullopt);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(contains(r.err, "TROUPE_AUTH_SECRET")) << r.err;
  r = troupe({"token", "issue", "--role", "admin", "--subject", "alice"}, "");
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(TokenCli, UnknownRoleExitsTwoWithASuggestion) {
  auto r = troupe({"token", "issue", "--role", "admn", "--subject", "alice"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(r.out.empty()) << r.out;
  EXPECT_TRUE(contains(r.err, "--role")) << r.err;
  EXPECT_TRUE(contains(r.err, "did you mean 'admin'?")) << r.err;
  EXPECT_TRUE(contains(r.err, "viewer, operator, admin")) << r.err;
}

TEST_F(TokenCli, BadSubjectExitsTwoNamingTheFlag) {
  for (auto& subject :
       std::vector<std::string>{"", "two\nlines", std::string(300, 's')}) {
    auto r
      = troupe({"token", "issue", "--role", "viewer", "--subject", subject});
    EXPECT_EQ(r.exit_code, 2) << subject;
    EXPECT_TRUE(contains(r.err, "--subject")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(TokenCli, BadTtlExitsTwoNamingTheFlag) {
  for (std::string ttl : {"soon", "-1h", "0s", "500ms", "400d"}) {
    auto r = troupe({"token", "issue", "--role", "viewer", "--subject", "bob",
                     "--ttl=" + ttl});
    EXPECT_EQ(r.exit_code, 2) << ttl;
    EXPECT_TRUE(contains(r.err, "--ttl")) << ttl << ": " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

TEST_F(TokenCli, MissingFlagsExitTwoNamingTheFlag) {
  auto r = troupe({"token", "issue", "--subject", "bob"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--role")) << r.err;
  r = troupe({"token", "issue", "--role", "admin"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(contains(r.err, "--subject")) << r.err;
}

TEST_F(TokenCli, AShortSecretWorksWithAWarningThatHidesIt) {
  auto r = troupe({"token", "issue", "--role", "viewer", "--subject", "bob"},
                  "hunter2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "shorter than 32 bytes")) << r.err;
  EXPECT_FALSE(contains(r.err + r.out, "hunter2"));
  EXPECT_TRUE(verify_token("hunter2", trimmed(r.out), token_clock::now()));
}
