#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::tools::shell {

/// Returns the words of `line` as a POSIX shell would split them: blanks
/// separate words, 'single quotes' keep everything literally, "double
/// quotes" keep everything but `\"` and `\\`, and outside quotes a backslash
/// escapes the next character (a backslash-newline joins lines). On an
/// unterminated quote or a trailing backslash, returns nothing and sets
/// `error` to a message naming the 1-based column; otherwise clears `error`.
std::vector<std::string> tokenize(std::string_view line, std::string& error);

/// Splits `script` into commands at `;` and newlines outside quotes and
/// escapes. Drops `#` comments (a `#` that starts a word, up to the end of
/// the line) and empty commands; trims the blanks around each command but
/// leaves quotes and escapes in place for `tokenize`.
std::vector<std::string> split_commands(std::string_view script);

/// Returns whether `script` ends inside a quote or with an escaping
/// backslash (as `split_commands` reads it), so that the next line continues
/// its last command.
bool continues_on_next_line(std::string_view script);

/// Returns the longest prefix every string in `words` shares (empty for no
/// words), never ending inside a UTF-8 sequence.
std::string common_prefix(const std::vector<std::string>& words);

/// Returns the candidates that start with `word`, sorted and without
/// duplicates.
std::vector<std::string>
complete_word(const std::string& word,
              const std::vector<std::string>& candidates);

/// Returns `word` quoted so that `tokenize` reads it back as one word
/// (unchanged when it needs no quoting).
std::string quote_word(std::string_view word);

/// Returns the complete words of `line_before_cursor`, leaving out the word
/// the cursor is in (if any): what a completer looks at to decide what may
/// come next. An unterminated quote is taken as the word being typed.
std::vector<std::string> words_before(std::string_view line_before_cursor);

/// Returns `words` laid out for a terminal `width` columns wide: on one line
/// two spaces apart when they fit, else in columns filled top to bottom.
/// Every line ends with a newline.
std::string format_candidates(const std::vector<std::string>& words, int width);

/// Reads lines from the terminal with editing, history and Tab completion,
/// on top of libedit (BSD licence; GNU readline must not be linked).
///
/// Only one line_editor should be reading at a time. While it reads, the
/// terminal is in raw mode with signal keys off: Ctrl-C abandons the line,
/// Ctrl-Z stops the program as usual, and Ctrl-D on an empty line is end of
/// input. Between reads the terminal is back in its normal mode, so Ctrl-C
/// raises SIGINT as usual. Also while it reads, libedit handles SIGINT,
/// SIGTERM, SIGHUP, SIGQUIT, SIGTSTP, SIGCONT and SIGWINCH: it puts the
/// terminal back, then passes the signal on to the program's own handler
/// (by raising it for the process group), and redraws on SIGCONT and
/// SIGWINCH.
///
/// When interactive, the constructor sets LC_CTYPE from the environment if
/// the program left it at "C": libedit drops non-ASCII input otherwise.
class line_editor {
 public:
  // -- member types -----------------------------------------------------------

  /// Returns the completion candidates for `word`, the (unquoted) word that
  /// ends at the cursor, given the text before the cursor (which ends with
  /// that word as typed). The editor keeps the candidates that start with
  /// `word`, so returning every word valid at that position is fine.
  using completer = std::function<std::vector<std::string>(
    const std::string& line_before_cursor, const std::string& word)>;

  /// How a line_editor is set up.
  struct options {
    /// Names the program in `~/.editrc` (lines starting `program:`).
    std::string program = "troupe";
    /// Shown before each line.
    std::string prompt = "> ";
    /// Where history is loaded from and saved to. Default: empty (no file).
    std::string history_file;
    /// Most history entries kept in memory and in the file. Default: 1000.
    int history_size = 1000;
    /// Default: none (Tab inserts nothing).
    completer complete;
  };

  // -- constructors -----------------------------------------------------------

  /// Loads the history file, if any. A missing file is created on the first
  /// line; one that cannot be read, or is not in libedit's format, is never
  /// written to (see `history_error`). When `interactive()` is false, no
  /// terminal and no history file is touched.
  explicit line_editor(options opts);

  /// Same as the options form.
  line_editor(std::string program, std::string prompt, std::string history_file,
              completer complete);

  ~line_editor();

  line_editor(const line_editor&) = delete;
  line_editor& operator=(const line_editor&) = delete;

  // -- properties -------------------------------------------------------------

  /// Returns whether stdin and stdout are both terminals, the only case in
  /// which lines are edited; otherwise `read_line` reads plain lines.
  static bool interactive();

  /// Sets the prompt shown from the next `read_line` on.
  void set_prompt(std::string prompt);

  const std::string& prompt() const noexcept;

  /// Returns the history, oldest entry first.
  std::vector<std::string> history() const;

  /// Returns the last problem with the history file (empty if none), such as
  /// a folder that does not exist. Such problems never stop the editor.
  const std::string& history_error() const noexcept;

  // -- reading ----------------------------------------------------------------

  /// Returns the next line without its newline, or nothing at end of input
  /// (Ctrl-D on an empty line). A non-empty line goes into the history and
  /// the history file is rewritten (mode 0600). Without a terminal, reads a
  /// plain line from stdin with no prompt.
  std::optional<std::string> read_line();

  /// Adds `line` to the history and saves it, as `read_line` does.
  void add_history(const std::string& line);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace troupe::tools::shell
