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

/// A program running in a pseudo-terminal, driven like a user at a keyboard.
/// Its output is kept with escape sequences stripped, at most the last
/// `max_output` bytes. The destructor kills the child (SIGKILL, its PID
/// only) if it still runs.
class pty_session {
 public:
  /// Most output kept, in bytes, older output is dropped.
  static constexpr size_t max_output = 1 << 20;

  /// Starts argv[0] (a path) in a new 80x24 terminal, in `cwd` if not
  /// empty, with `env` set (or, for an empty optional, removed) over the
  /// parent's environment. Throws std::runtime_error when it cannot start.
  pty_session(const std::vector<std::string>& argv,
              const std::map<std::string, std::optional<std::string>>& env = {},
              const std::string& cwd = {});
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
};

} // namespace troupe::test
