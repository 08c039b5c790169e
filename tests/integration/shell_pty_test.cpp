// The pseudo-terminal harness the shell's tests drive programs with.

#include "tests/support/pty_session.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>

using namespace std::chrono_literals;
using troupe::test::pty_session;
using troupe::test::strip_terminal_codes;

namespace {

constexpr auto patience = std::chrono::milliseconds{20'000};

} // namespace

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
