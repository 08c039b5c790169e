// The shell's line editor in a real pseudo-terminal: completion, listing,
// history across runs, Ctrl-C and Ctrl-D, driven through a small REPL
// (tests/support/line_editor_demo.cpp). Also the pty harness itself.

#include "tests/support/process.hpp"
#include "tests/support/pty_session.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <fstream>
#include <sys/stat.h>

using namespace std::chrono_literals;
using troupe::test::pty_session;
using troupe::test::strip_terminal_codes;
using troupe::test::temp_dir;

namespace {

// Generous: the demo starts on a loaded machine in a few milliseconds, but
// CI may be busier still.
constexpr auto patience = std::chrono::milliseconds{20'000};

struct LineEditorPty : ::testing::Test {
  temp_dir dir;
  std::string history = (dir.path() / "history").string();

  /// Starts the demo with a clean, known environment: no ~/.editrc, a
  /// UTF-8 locale and an xterm.
  std::unique_ptr<pty_session> start(const std::string& history_file) {
    auto s = std::make_unique<pty_session>(
      std::vector<std::string>{LINE_EDITOR_DEMO},
      std::map<std::string, std::optional<std::string>>{
        {"TERM", "xterm"},
        {"HOME", dir.path().string()},
        {"EDITRC", std::nullopt},
        {"LANG", "C.UTF-8"},
        {"LC_ALL", std::nullopt},
        {"LC_CTYPE", std::nullopt},
        {"LINE_EDITOR_DEMO_HISTORY", history_file}},
      dir.path().string());
    EXPECT_TRUE(s->expect("interactive\n", patience)) << s->output();
    return s;
  }

  std::unique_ptr<pty_session> start() { return start(history); }
};

/// Waits for a fresh prompt, then types `keys`. Typing only once the prompt
/// shows matters: before that the terminal is in its normal mode and would
/// echo the keys itself.
::testing::AssertionResult type_at_prompt(pty_session& s,
                                          std::string_view keys) {
  if (!s.expect("demo> ", patience))
    return ::testing::AssertionFailure() << "no prompt; output:\n"
                                         << s.output();
  if (!s.write(keys))
    return ::testing::AssertionFailure() << "could not type";
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult shows(pty_session& s, std::string_view text) {
  if (s.expect(text, patience))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "no \"" << text << "\"; output:\n"
                                       << s.output();
}

mode_t file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return 0;
  return st.st_mode & 07777;
}

std::string slurp(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  return {std::istreambuf_iterator<char>{in}, {}};
}

} // namespace

TEST_F(LineEditorPty, TabCompletesAUniqueCommand) {
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "ins\t"));
  EXPECT_TRUE(shows(*s, "inspect "));
  ASSERT_TRUE(s->write("\r"));
  EXPECT_TRUE(shows(*s, "got: inspect \n"));
}

TEST_F(LineEditorPty, TabCompletesTheWordAfterInspect) {
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "inspect b\t"));
  EXPECT_TRUE(shows(*s, "inspect breaker "));
  // Typing goes on after the inserted space.
  ASSERT_TRUE(s->write("r-1\r"));
  EXPECT_TRUE(shows(*s, "got: inspect breaker r-1\n"));
}

TEST_F(LineEditorPty, SecondTabListsTheCandidates) {
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "h\t"));
  // The first Tab cannot extend "h" and lists nothing yet; the second does,
  // then draws the prompt and the line again.
  ASSERT_TRUE(s->write("\t"));
  EXPECT_TRUE(shows(*s, "\nhelp  history\n"));
  EXPECT_TRUE(shows(*s, "demo> h"));
  ASSERT_TRUE(s->write("el\t\r"));
  EXPECT_TRUE(shows(*s, "got: help \n"));
}

TEST_F(LineEditorPty, HistorySurvivesARestart) {
  {
    auto s = start();
    ASSERT_TRUE(type_at_prompt(*s, "first\r"));
    ASSERT_TRUE(shows(*s, "got: first\n"));
    ASSERT_TRUE(type_at_prompt(*s, "second\r"));
    ASSERT_TRUE(shows(*s, "got: second\n"));
    ASSERT_TRUE(type_at_prompt(*s, "\x04"));
    EXPECT_EQ(s->wait(patience), 0) << s->output();
  }
  EXPECT_EQ(file_mode(history), 0600);
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "\x1b[A")); // Up
  EXPECT_TRUE(shows(*s, "second"));
  ASSERT_TRUE(s->write("\r"));
  EXPECT_TRUE(shows(*s, "got: second\n"));
  ASSERT_TRUE(type_at_prompt(*s, "\x1b[A\x1b[A\r"));
  EXPECT_TRUE(shows(*s, "got: first\n"));
}

TEST_F(LineEditorPty, WritesTheHistoryFileForItsOwnerOnly) {
  // An existing file readable by all is replaced by one only we can read.
  std::ofstream{history} << "";
  ASSERT_EQ(::chmod(history.c_str(), 0644), 0);
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "inspect run r-1\r"));
  ASSERT_TRUE(shows(*s, "got: inspect run r-1\n"));
  EXPECT_EQ(file_mode(history), 0600);
  // libedit's format escapes blanks (strvis), so look for a word.
  EXPECT_NE(slurp(history).find("r-1"), std::string::npos) << slurp(history);
  ASSERT_TRUE(type_at_prompt(*s, "quit\r"));
  EXPECT_EQ(s->wait(patience), 0) << s->output();
}

TEST_F(LineEditorPty, GoesOnWhenTheHistoryFileCannotBeWritten) {
  auto s = start((dir.path() / "missing" / "history").string());
  ASSERT_TRUE(type_at_prompt(*s, "actors\r"));
  EXPECT_TRUE(shows(*s, "got: actors\n"));
  EXPECT_TRUE(shows(*s, "note: cannot write history file"));
  // The line still went into the history in memory.
  ASSERT_TRUE(type_at_prompt(*s, "\x1b[A\r"));
  EXPECT_TRUE(shows(*s, "got: actors\n"));
}

TEST_F(LineEditorPty, LeavesAForeignHistoryFileAlone) {
  std::ofstream{history} << "ls -l\ncd /tmp\n";
  auto s = start();
  // The demo prints the note before anything else.
  EXPECT_NE(
    s->output().find("note: history file " + history
                     + " is not in libedit's format; not writing to it\n"),
    std::string::npos)
    << s->output();
  ASSERT_TRUE(type_at_prompt(*s, "actors\r"));
  ASSERT_TRUE(shows(*s, "got: actors\n"));
  EXPECT_EQ(slurp(history), "ls -l\ncd /tmp\n");
}

TEST_F(LineEditorPty, CtrlCClearsTheLineAndKeepsRunning) {
  auto s = start();
  ASSERT_TRUE(type_at_prompt(*s, "inspect par"));
  ASSERT_TRUE(shows(*s, "inspect par"));
  ASSERT_TRUE(s->write("\x03"));
  EXPECT_TRUE(shows(*s, "^C\n"));
  ASSERT_TRUE(type_at_prompt(*s, "ok\r"));
  EXPECT_TRUE(shows(*s, "got: ok\n"));
  EXPECT_EQ(s->output().find("got: inspect"), std::string::npos) << s->output();
  EXPECT_EQ(s->wait(0ms), std::nullopt);
  // Nor did the abandoned line go into the history.
  ASSERT_TRUE(type_at_prompt(*s, "history\r"));
  EXPECT_TRUE(shows(*s, "  ok\n  history\n"));
  EXPECT_EQ(s->output().find("  inspect par"), std::string::npos)
    << s->output();
}

TEST_F(LineEditorPty, CtrlDEndsInputOnlyOnAnEmptyLine) {
  auto s = start();
  // On a non-empty line Ctrl-D does not end input.
  ASSERT_TRUE(type_at_prompt(*s, "ab\x04"));
  ASSERT_TRUE(s->write("\r"));
  EXPECT_TRUE(shows(*s, "got: ab\n"));
  ASSERT_TRUE(type_at_prompt(*s, "\x04"));
  EXPECT_TRUE(shows(*s, "bye\n"));
  EXPECT_EQ(s->wait(patience), 0) << s->output();
}

TEST(LineEditorPlain, ReadsPlainLinesWithoutATerminal) {
  temp_dir dir;
  auto history = (dir.path() / "history").string();
  troupe::test::process_options opts;
  opts.stdin_data = "actors\n  inspect  run \nquit\nnot read\n";
  opts.env = {{"LINE_EDITOR_DEMO_HISTORY", history}};
  opts.time_limit = patience;
  auto r = troupe::test::run_process({LINE_EDITOR_DEMO}, opts);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "plain\ngot: actors\ngot:   inspect  run \ngot: quit\n");
  // Piped input is not the user's typing: no history is written.
  EXPECT_EQ(file_mode(history), 0);
}

TEST(PtySession, StripsEscapeSequences) {
  int state = 0;
  EXPECT_EQ(strip_terminal_codes("\x1b[1mbold\x1b[0m\r\n", state), "bold\n");
  EXPECT_EQ(strip_terminal_codes("\x1b]0;title\x07text\x1b]2;t\x1b\\!", state),
            "text!");
  EXPECT_EQ(strip_terminal_codes("a\x1b(Bb\x1b=c\x07\x08\td", state), "abc\td");
  // A sequence cut between two reads.
  EXPECT_EQ(strip_terminal_codes("x\x1b[3", state), "x");
  EXPECT_EQ(strip_terminal_codes("8;5;1my", state), "y");
  EXPECT_EQ(state, 0);
  EXPECT_EQ(strip_terminal_codes("née", state), "née");
}

TEST(PtySession, RunsInAnEightyByTwentyFourTerminal) {
  pty_session s{{"/bin/sh", "-c",
                 "stty size; printf '\\033[31mred\\033[0m\\n';"
                 " exit 3"}};
  EXPECT_TRUE(s.expect("24 80\n", patience)) << s.output();
  EXPECT_TRUE(s.expect("red\n", patience)) << s.output();
  EXPECT_EQ(s.wait(patience), 3);
}

TEST(PtySession, ExpectGivesUpAtItsLimit) {
  pty_session s{{"/bin/cat"}};
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(s.expect("never", 300ms));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 10s);
  // cat echoes what it is sent (and the terminal echoes it too).
  ASSERT_TRUE(s.write("hello\n"));
  EXPECT_TRUE(s.expect("hello\nhello\n", patience)) << s.output();
  EXPECT_EQ(s.wait(0ms), std::nullopt);
}

TEST(PtySession, KillsTheChildWhenDestroyed) {
  int pid = -1;
  {
    pty_session s{{"/bin/sleep", "600"}};
    pid = s.pid();
    ASSERT_GT(pid, 0);
    EXPECT_EQ(::kill(pid, 0), 0);
  }
  // Killed and reaped: the PID is gone.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}
