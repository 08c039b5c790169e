#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::test {

/// Removes terminal escape sequences (CSI such as `ESC [ 2 K`, OSC such as
/// `ESC ] 0 ; title BEL`, and two-byte escapes), carriage returns and other
/// control characters but newline and tab from `raw`. `state` carries an
/// escape sequence cut in half between two calls; start it at 0.
std::string strip_terminal_codes(std::string_view raw, int& state);

/// What a terminal of `rows` x `cols` shows after some output: a small model
/// of a VT100 that knows printable text (wrapping at the right margin and
/// scrolling at the bottom), CR, LF, backspace and the CSI sequences a
/// redrawn table uses (cursor up/down/forward/back/position, erase in line,
/// erase in display). Other sequences are skipped. Counts along the way what
/// tells whether a redrawing program kept within the screen.
class terminal_screen {
 public:
  terminal_screen(int rows, int cols);

  /// Feeds raw output to the terminal.
  void feed(std::string_view raw);

  /// Returns the screen's lines, top to bottom, trailing blanks trimmed.
  std::vector<std::string> lines() const;

  /// Bytes fed so far.
  size_t bytes() const noexcept { return bytes_; }

  /// The largest cursor-up move asked for (ESC [ n A), in lines: how tall a
  /// block of lines a program went back over to redraw.
  int most_lines_up() const noexcept { return most_up_; }

  /// How many times text ran into the right margin and wrapped.
  size_t wraps() const noexcept { return wraps_; }

 private:
  void put(char c);
  void line_feed();
  void csi(char final);

  int rows_, cols_;
  int row_ = 0, col_ = 0;
  /// A character was printed in the last column: the next one wraps.
  bool pending_wrap_ = false;
  std::vector<std::vector<std::string>> cells_;
  size_t bytes_ = 0;
  int most_up_ = 0;
  size_t wraps_ = 0;
  // The escape sequence being read.
  int state_ = 0;
  std::string params_;
};

/// A program running in a pseudo-terminal, driven like a user at a keyboard.
/// Its output is kept with escape sequences stripped: the last `max_output`
/// bytes or more (at most twice that). The destructor kills the child (SIGKILL,
/// its PID only) if it still runs.
class pty_session {
 public:
  /// Most output kept, in bytes, older output is dropped.
  static constexpr size_t max_output = 1 << 20;

  /// Starts argv[0] (a path) in a new terminal of `rows` x `cols` (80x24
  /// unless given), in `cwd` if not empty, with `env` set (or, for an empty
  /// optional, removed) over the parent's environment. Throws
  /// std::runtime_error when it cannot start.
  pty_session(const std::vector<std::string>& argv,
              const std::map<std::string, std::optional<std::string>>& env = {},
              const std::string& cwd = {}, int rows = 24, int cols = 80);
  ~pty_session();

  pty_session(const pty_session&) = delete;
  pty_session& operator=(const pty_session&) = delete;

  int pid() const noexcept { return pid_; }

  /// Types `keys` (raw bytes: "\t" is Tab, "\x03" Ctrl-C, "\x1b[A" Up).
  /// Returns false if the terminal would not take them within 5 seconds.
  bool write(std::string_view keys);

  /// Reads output until `text` shows up after the end of the previous match
  /// (escape sequences and carriage returns stripped), the child's output
  /// ends, or `limit` passes. Returns whether it showed up; on success the
  /// next expect looks only after it.
  bool expect(std::string_view text,
              std::chrono::milliseconds limit = std::chrono::seconds{20});

  /// Returns all (stripped, bounded) output read so far, after reading what
  /// is ready without waiting.
  std::string output();

  /// Returns the output after the end of the last match.
  std::string unmatched();

  /// The terminal as the child left it so far (every byte it wrote went
  /// through it, not only the kept output).
  const terminal_screen& screen() const noexcept { return screen_; }

  /// Waits at most `limit` for the child to end, reading its output
  /// meanwhile; returns its exit code (-N for signal N), or nothing if it
  /// still runs.
  std::optional<int> wait(std::chrono::milliseconds limit);

 private:
  /// Reads what arrives within `limit` (zero: only what is ready); returns
  /// whether anything was read.
  bool pump(std::chrono::milliseconds limit);
  void append(std::string_view raw);
  bool reap(bool block_briefly);

  int pid_ = -1;
  int master_ = -1;
  bool eof_ = false;
  std::optional<int> status_;
  std::string out_;
  /// Where the next expect starts looking in out_.
  size_t mark_ = 0;
  int escape_state_ = 0;
  terminal_screen screen_;
};

} // namespace troupe::test
