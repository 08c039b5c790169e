#include "config/loader.hpp"
#include "runtime/log/log.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <fcntl.h>
#include <fstream>
#include <future>
#include <poll.h>
#include <regex>
#include <sstream>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

namespace tlog = troupe::runtime::log;
using troupe::test::temp_dir;

namespace {

/// Logs to a file in a temp folder; reads back what was written.
struct LogTest : ::testing::Test {
  temp_dir dir;
  std::string file = (dir.path() / "logs" / "troupe.log").string();

  void use(tlog::format f, tlog::level l = tlog::level::info,
           std::map<std::string, tlog::level, std::less<>> levels = {}) {
    tlog::log_options opts;
    opts.level = l;
    opts.format = f;
    opts.file = file;
    opts.levels = std::move(levels);
    ASSERT_EQ(tlog::setup(opts), "");
  }

  void TearDown() override { tlog::shutdown(); }

  std::vector<std::string> lines() {
    tlog::flush();
    std::ifstream in{file};
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);)
      out.push_back(line);
    return out;
  }

  std::vector<nlohmann::json> records() {
    std::vector<nlohmann::json> out;
    for (auto& line : lines())
      out.push_back(nlohmann::json::parse(line));
    return out;
  }
};

// A JWT as `troupe token issue` prints one (signature made up).
const std::string jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
                        "eyJzdWIiOiJib2IiLCJyb2xlIjoiYWRtaW4ifQ."
                        "c2lnbmF0dXJlLW1hZGUtdXA";

} // namespace

TEST_F(LogTest, TextLinesHaveTimeLevelLoggerMessageAndFields) {
  use(tlog::format::text);
  tlog::info("run", "attempt failed",
             {{"run_id", "r-1"}, {"node_id", "fetch"}, {"attempt", 2}});
  tlog::warn("store", "slow write",
             {{"path", "a dir/x"}, {"ok", false}, {"ms", 12.5}, {"empty", ""}});
  auto got = lines();
  ASSERT_EQ(got.size(), 2u);
  std::regex first{R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  run: )"
                   R"(attempt failed run_id=r-1 node_id=fetch attempt=2$)"};
  EXPECT_TRUE(std::regex_match(got[0], first)) << got[0];
  EXPECT_NE(
    got[1].find("Z WARN  store: slow write path=\"a dir/x\" ok=false ms=12.5 "
                "empty=\"\""),
    std::string::npos)
    << got[1];
}

TEST_F(LogTest, TextKeepsEachRecordOnOneLine) {
  use(tlog::format::text);
  tlog::error("run", "line one\nline two", {{"out", "say \"hi\"\nbye"}});
  auto got = lines();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(
    got[0].find("ERROR run: line one\\nline two out=\"say \\\"hi\\\"\\nbye\""),
    std::string::npos)
    << got[0];
}

TEST_F(LogTest, JsonLinesParseAndKeepQuotesAndNewlines) {
  use(tlog::format::json);
  std::string tricky = "he said \"hi\"\n\tand left \\ {} %v \xc3\xa9";
  tlog::info("control", tricky,
             {{"client", "127.0.0.1:5000"},
              {"frames", 3},
              {"tls", true},
              {"note", tricky},
              {"msg", "a field named msg"}});
  auto got = records();
  ASSERT_EQ(got.size(), 1u);
  auto& r = got[0];
  EXPECT_EQ(r["level"], "info");
  EXPECT_EQ(r["logger"], "control");
  EXPECT_EQ(r["msg"], tricky);
  EXPECT_EQ(r["note"], tricky);
  EXPECT_EQ(r["client"], "127.0.0.1:5000");
  EXPECT_EQ(r["frames"], 3);
  EXPECT_EQ(r["tls"], true);
  EXPECT_EQ(r["_msg"], "a field named msg");
  EXPECT_TRUE(
    std::regex_match(r["ts"].get<std::string>(),
                     std::regex{R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)"}));
  // Fixed keys first, then the fields in order.
  std::vector<std::string> keys;
  auto ordered = nlohmann::ordered_json::parse(lines()[0]);
  for (auto it = ordered.begin(); it != ordered.end(); ++it)
    keys.push_back(it.key());
  EXPECT_EQ(keys,
            (std::vector<std::string>{"ts", "level", "logger", "msg", "client",
                                      "frames", "tls", "note", "_msg"}));
}

TEST_F(LogTest, JsonSurvivesInvalidUtf8) {
  use(tlog::format::json);
  tlog::info("http", "bad \xff\xfe bytes", {{"body", "\xc3"}});
  auto got = records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["logger"], "http");
}

TEST_F(LogTest, LevelsFilterPerLogger) {
  use(tlog::format::json, tlog::level::warn,
      {{"control", tlog::level::debug}, {"store", tlog::level::off}});
  tlog::info("run", "dropped: below warn");
  tlog::warn("run", "kept");
  tlog::debug("control", "kept: control logs debug");
  tlog::trace("control", "dropped: below debug");
  tlog::error("store", "dropped: store is off");
  tlog::info("newcomer", "dropped: new loggers get the default level");
  tlog::error("newcomer", "kept");
  auto got = records();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0]["msg"], "kept");
  EXPECT_EQ(got[1]["logger"], "control");
  EXPECT_EQ(got[2]["logger"], "newcomer");
  EXPECT_TRUE(tlog::enabled("control", tlog::level::debug));
  EXPECT_FALSE(tlog::enabled("run", tlog::level::info));
  EXPECT_FALSE(tlog::enabled("run", tlog::level::off));
}

TEST_F(LogTest, SetupAgainMovesAndRelevels) {
  use(tlog::format::text, tlog::level::error);
  tlog::info("run", "dropped");
  auto handle = tlog::get("run");
  temp_dir other;
  auto second = (other.path() / "second.log").string();
  tlog::log_options opts;
  opts.level = tlog::level::debug;
  opts.format = tlog::format::json;
  opts.file = second;
  ASSERT_EQ(tlog::setup(opts), "");
  tlog::write(*handle, tlog::level::debug, "through a kept handle");
  tlog::flush();
  EXPECT_TRUE(lines().empty());
  std::ifstream in{second};
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  EXPECT_EQ(nlohmann::json::parse(line)["msg"], "through a kept handle");
}

TEST_F(LogTest, UnwritableFileIsReportedAndTheOldSetupStays) {
  use(tlog::format::json);
  auto blocker = dir.write("file", "x");
  tlog::log_options opts;
  opts.file = (blocker / "under-a-file.log").string();
  auto error = tlog::setup(opts);
  EXPECT_NE(error.find("cannot open log file"), std::string::npos) << error;
  tlog::info("run", "still here");
  ASSERT_EQ(records().size(), 1u);
}

TEST_F(LogTest, SensitiveFieldsAreMasked) {
  use(tlog::format::json);
  tlog::info("auth", "client connected",
             {{"subject", "ci"},
              {"token", jwt},
              {"auth_token", "abc"},
              {"Password", "hunter2"},
              {"client_secret", 42},
              {"Authorization", "Bearer abc"}});
  auto r = records().at(0);
  EXPECT_EQ(r["subject"], "ci");
  for (auto key :
       {"token", "auth_token", "Password", "client_secret", "Authorization"})
    EXPECT_EQ(r[key], "********") << key;
  file = (dir.path() / "second.log").string();
  use(tlog::format::text);
  tlog::info("auth", "x", {{"password", "hunter2"}});
  auto text = lines().at(0);
  EXPECT_NE(text.find("password=********"), std::string::npos) << text;
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
}

TEST_F(LogTest, TokensInMessagesAndValuesAreRedacted) {
  use(tlog::format::json);
  tlog::warn("control", "refused header Authorization: Bearer " + jwt,
             {{"header", "bearer sk-12345"}, {"raw", "token=" + jwt + ";"}});
  auto line = lines().at(0);
  EXPECT_EQ(line.find("eyJ"), std::string::npos) << line;
  EXPECT_EQ(line.find("sk-12345"), std::string::npos) << line;
  auto r = nlohmann::json::parse(line);
  EXPECT_EQ(r["msg"], "refused header Authorization: Bearer [redacted]");
  EXPECT_EQ(r["header"], "bearer [redacted]");
  EXPECT_EQ(r["raw"], "token=[redacted];");
}

TEST_F(LogTest, PlainSpdlogCallsGoTheSameWay) {
  use(tlog::format::json);
  spdlog::warn("from {} with \"quotes\"", "spdlog");
  auto got = records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0]["logger"], "troupe");
  EXPECT_EQ(got[0]["msg"], "from spdlog with \"quotes\"");
}

TEST_F(LogTest, ManyThreadsWriteWholeLines) {
  use(tlog::format::json);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i)
        tlog::info("run", "tick", {{"thread", t}, {"i", i}});
    });
  for (auto& th : threads)
    th.join();
  auto got = records();
  EXPECT_EQ(got.size(), 800u);
}

TEST_F(LogTest, ShutdownClosesTheFile) {
  use(tlog::format::text);
  tlog::info("node", "before");
  tlog::shutdown();
  tlog::info("node", "after: on standard error");
  auto got = lines();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(got[0].find("before"), std::string::npos);
}

TEST_F(LogTest, LoggingDoesNotWaitForAStalledFile) {
  // A named pipe whose reader reads nothing yet: a write to it stalls once
  // the pipe holds 64 KiB, as a slow disk or a stopped terminal would.
  auto fifo = (dir.path() / "stalled.fifo").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  ASSERT_GE(reader, 0);
  tlog::log_options opts;
  opts.format = tlog::format::json;
  opts.file = fifo;
  ASSERT_EQ(tlog::setup(opts), "");
  const int n = 2000;
  const std::string filler(200, 'x');
  auto logging = std::async(std::launch::async, [&] {
    for (int i = 0; i < n; ++i)
      tlog::info("run", "line", {{"i", i}, {"filler", filler}});
  });
  // 400 KB of records: the logging thread only queues them.
  bool returned
    = logging.wait_for(std::chrono::seconds{5}) == std::future_status::ready;
  // Now read: every line arrives, whole and in order (and a logger that
  // waited for the pipe goes on).
  std::string got;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{30};
  while (std::count(got.begin(), got.end(), '\n') < n
         && std::chrono::steady_clock::now() < deadline) {
    pollfd p{reader, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    char buf[65536];
    auto k = ::read(reader, buf, sizeof buf);
    if (k > 0)
      got.append(buf, static_cast<size_t>(k));
  }
  logging.wait();
  // Written before the reader goes (a pipe without one raises SIGPIPE).
  tlog::shutdown();
  ::close(reader);
  EXPECT_TRUE(returned) << "logging waited for the file to take the lines";
  std::istringstream in{got};
  int expected = 0;
  for (std::string line; std::getline(in, line); ++expected) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    ASSERT_EQ(j["i"], expected);
  }
  EXPECT_EQ(expected, n);
}

// -- redaction ----------------------------------------------------------------

TEST(LogRedact, HidesJwtsAndBearerCredentials) {
  EXPECT_EQ(tlog::redact("t=" + jwt), "t=[redacted]");
  EXPECT_EQ(tlog::redact("Bearer abc.def"), "Bearer [redacted]");
  EXPECT_EQ(tlog::redact("x BEARER  abc, y"), "x BEARER  [redacted], y");
  EXPECT_EQ(tlog::redact("nothing to hide: eyJ alone, bearer"),
            "nothing to hide: eyJ alone, bearer");
  EXPECT_EQ(tlog::redact("keyJ.a.b"), "keyJ.a.b");
  EXPECT_FALSE(tlog::needs_redaction("run r-1 failed"));
  EXPECT_TRUE(tlog::is_sensitive_key("TROUPE_AUTH_SECRET"));
  EXPECT_TRUE(tlog::is_sensitive_key("api_key"));
  EXPECT_FALSE(tlog::is_sensitive_key("run_id"));
}

// -- options ------------------------------------------------------------------

TEST(LogOptions, ParsesLoggerLevelsAndNamesTheBadEntry) {
  std::map<std::string, tlog::level, std::less<>> levels;
  EXPECT_EQ(tlog::parse_logger_levels({"control=debug", "store=off"}, levels),
            "");
  EXPECT_EQ(levels["control"], tlog::level::debug);
  EXPECT_EQ(levels["store"], tlog::level::off);
  auto why = tlog::parse_logger_levels({"run=info", "control=verbos"}, levels);
  EXPECT_NE(why.find("\"control=verbos\""), std::string::npos) << why;
  why = tlog::parse_logger_levels({"control"}, levels);
  EXPECT_NE(why.find("\"control\": expected LOGGER=LEVEL"), std::string::npos)
    << why;
  EXPECT_NE(tlog::parse_logger_levels({"=debug"}, levels), "");
}

TEST(LogOptions, ComeFromConfiguration) {
  temp_dir dir;
  troupe::config::load_options opts;
  opts.config_dir = dir.path();
  opts.flags = {{"--set", "log.level", "warn"},
                {"--set", "log.format", "json"},
                {"--set", "log.file", "troupe.log"},
                {"--set", "log.levels", "control=debug,http=error"}};
  auto loaded = troupe::config::load(opts);
  ASSERT_TRUE(loaded.ok());
  std::string error;
  auto o = tlog::options_from(loaded.effective, error);
  ASSERT_TRUE(o) << error;
  EXPECT_EQ(o->level, tlog::level::warn);
  EXPECT_EQ(o->format, tlog::format::json);
  EXPECT_EQ(o->file, "troupe.log");
  EXPECT_EQ(o->levels.size(), 2u);
  EXPECT_EQ(o->levels.at("http"), tlog::level::error);
}

TEST(LogOptions, ConfigurationRefusesABadLevelsEntry) {
  temp_dir dir;
  troupe::config::load_options opts;
  opts.config_dir = dir.path();
  opts.environment = {{"TROUPE_LOG_LEVELS", "control=debug,store=loud"}};
  auto loaded = troupe::config::load(opts);
  ASSERT_EQ(loaded.problems.size(), 1u);
  auto text = loaded.problems[0].to_string();
  EXPECT_NE(text.find("log.levels"), std::string::npos) << text;
  EXPECT_NE(text.find("\"store=loud\""), std::string::npos) << text;
  dir.write("default.toml", "[log]\nlevels = [\"control\"]\n");
  opts.environment.clear();
  loaded = troupe::config::load(opts);
  ASSERT_EQ(loaded.problems.size(), 1u);
  text = loaded.problems[0].to_string();
  EXPECT_NE(text.find("expected NAME=trace|debug|info|warn|error|off"),
            std::string::npos)
    << text;
}
