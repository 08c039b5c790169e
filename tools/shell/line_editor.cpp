#include "tools/shell/line_editor.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <cwchar>
#include <histedit.h>
#include <iostream>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace troupe::tools::shell {

// -- words --------------------------------------------------------------------

namespace {

bool is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_continuation_byte(char c) {
  return (static_cast<unsigned char>(c) & 0xC0) == 0x80;
}

/// Returns the 1-based column of byte `offset` in `s`, counting characters.
size_t column_of(std::string_view s, size_t offset) {
  size_t col = 1;
  for (size_t i = 0; i < offset && i < s.size(); ++i)
    if (!is_continuation_byte(s[i]))
      ++col;
  return col;
}

size_t count_chars(std::string_view s) {
  return static_cast<size_t>(std::count_if(
    s.begin(), s.end(), [](char c) { return !is_continuation_byte(c); }));
}

/// What scanning a line for words found.
struct scan_result {
  std::vector<std::string> words;
  /// Byte offset where each word starts.
  std::vector<size_t> starts;
  /// Whether the line ends inside the last word (no blank after it).
  bool ends_in_word = false;
  /// The quote left open at the end ('\'' or '"'), or 0.
  char open_quote = 0;
  size_t quote_at = 0;
  /// Whether the line ends with a lone backslash.
  bool dangling_escape = false;
  size_t escape_at = 0;
};

scan_result scan(std::string_view s) {
  scan_result r;
  std::string word;
  bool in_word = false;
  char quote = 0;
  auto start_word = [&](size_t at) {
    if (!in_word) {
      in_word = true;
      r.starts.push_back(at);
    }
  };
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (quote == '\'') {
      if (c == '\'')
        quote = 0;
      else
        word += c;
      continue;
    }
    if (quote == '"') {
      if (c == '"') {
        quote = 0;
      } else if (c == '\\' && i + 1 < s.size()
                 && (s[i + 1] == '"' || s[i + 1] == '\\')) {
        word += s[++i];
      } else if (c == '\\' && i + 1 < s.size() && s[i + 1] == '\n') {
        ++i;
      } else {
        word += c;
      }
      continue;
    }
    if (is_blank(c)) {
      if (in_word) {
        r.words.push_back(std::move(word));
        word.clear();
        in_word = false;
      }
      continue;
    }
    if (c == '\\') {
      if (i + 1 == s.size()) {
        start_word(i);
        r.dangling_escape = true;
        r.escape_at = i;
        break;
      }
      if (s[i + 1] == '\n') {
        // A line continuation joins what is around it.
        ++i;
        continue;
      }
      start_word(i);
      word += s[++i];
      continue;
    }
    start_word(i);
    if (c == '\'' || c == '"') {
      quote = c;
      r.quote_at = i;
      continue;
    }
    word += c;
  }
  if (in_word) {
    r.words.push_back(std::move(word));
    r.ends_in_word = true;
  }
  r.open_quote = quote;
  return r;
}

/// The word that ends at the cursor: where it starts in the line and its
/// text with quotes and escapes removed.
struct partial_word {
  size_t start = 0;
  std::string text;
};

partial_word word_at_end(std::string_view before) {
  auto r = scan(before);
  if (!r.ends_in_word)
    return {before.size(), {}};
  return {r.starts.back(), r.words.back()};
}

} // namespace

std::vector<std::string> tokenize(std::string_view line, std::string& error) {
  auto r = scan(line);
  if (r.open_quote) {
    error = std::string{"unterminated "}
            + (r.open_quote == '\'' ? "single" : "double") + " quote at column "
            + std::to_string(column_of(line, r.quote_at));
    return {};
  }
  if (r.dangling_escape) {
    error = "trailing backslash at column "
            + std::to_string(column_of(line, r.escape_at));
    return {};
  }
  error.clear();
  return std::move(r.words);
}

std::vector<std::string> split_commands(std::string_view script) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    auto first = cur.find_first_not_of(" \t\r\n");
    if (first != std::string::npos) {
      auto last = cur.find_last_not_of(" \t\r\n");
      out.push_back(cur.substr(first, last - first + 1));
    }
    cur.clear();
  };
  char quote = 0;
  bool word_start = true;
  for (size_t i = 0; i < script.size(); ++i) {
    char c = script[i];
    if (quote == '\'') {
      cur += c;
      if (c == '\'')
        quote = 0;
      continue;
    }
    if (quote == '"') {
      cur += c;
      if (c == '\\' && i + 1 < script.size())
        cur += script[++i];
      else if (c == '"')
        quote = 0;
      continue;
    }
    if (c == '\\') {
      cur += c;
      if (i + 1 < script.size())
        cur += script[++i];
      word_start = false;
      continue;
    }
    if (c == ';' || c == '\n') {
      flush();
      word_start = true;
      continue;
    }
    if (c == '#' && word_start) {
      while (i + 1 < script.size() && script[i + 1] != '\n')
        ++i;
      continue;
    }
    if (c == '\'' || c == '"')
      quote = c;
    cur += c;
    word_start = is_blank(c);
  }
  flush();
  return out;
}

bool continues_on_next_line(std::string_view script) {
  char quote = 0;
  bool word_start = true;
  for (size_t i = 0; i < script.size(); ++i) {
    char c = script[i];
    if (quote == '\'') {
      if (c == '\'')
        quote = 0;
      continue;
    }
    if (quote == '"') {
      if (c == '\\' && ++i == script.size())
        return true;
      if (c == '"')
        quote = 0;
      continue;
    }
    if (c == '\\') {
      if (++i == script.size())
        return true;
      word_start = false;
      continue;
    }
    if (c == ';' || c == '\n') {
      word_start = true;
      continue;
    }
    if (c == '#' && word_start) {
      while (i + 1 < script.size() && script[i + 1] != '\n')
        ++i;
      continue;
    }
    if (c == '\'' || c == '"')
      quote = c;
    word_start = is_blank(c);
  }
  return quote != 0;
}

std::string common_prefix(const std::vector<std::string>& words) {
  if (words.empty())
    return {};
  size_t n = words.front().size();
  for (auto& w : words) {
    size_t i = 0;
    while (i < n && i < w.size() && w[i] == words.front()[i])
      ++i;
    n = i;
  }
  std::string prefix = words.front().substr(0, n);
  // Drop a UTF-8 sequence cut short: back up to its lead byte and check the
  // length the lead byte announces.
  size_t lead = prefix.size();
  while (lead > 0 && is_continuation_byte(prefix[lead - 1]))
    --lead;
  if (lead > 0) {
    auto b = static_cast<unsigned char>(prefix[lead - 1]);
    size_t want = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (prefix.size() - (lead - 1) < want)
      prefix.resize(lead - 1);
  }
  return prefix;
}

std::vector<std::string>
complete_word(const std::string& word,
              const std::vector<std::string>& candidates) {
  std::vector<std::string> out;
  for (auto& c : candidates)
    if (c.starts_with(word))
      out.push_back(c);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::string quote_word(std::string_view word) {
  auto plain = [](char c) {
    return static_cast<unsigned char>(c) >= 0x80
           || std::isalnum(static_cast<unsigned char>(c))
           || std::strchr("-_./:=@%+,^~", c) != nullptr;
  };
  if (!word.empty() && std::all_of(word.begin(), word.end(), plain))
    return std::string{word};
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  out += '\'';
  return out;
}

std::vector<std::string> words_before(std::string_view line_before_cursor) {
  auto r = scan(line_before_cursor);
  if (r.ends_in_word)
    r.words.pop_back();
  return std::move(r.words);
}

namespace {

/// Returns how many terminal columns `s` takes (one per undecodable byte).
size_t display_width(std::string_view s) {
  size_t width = 0;
  std::mbstate_t state{};
  size_t i = 0;
  while (i < s.size()) {
    wchar_t wc = 0;
    auto n = std::mbrtowc(&wc, s.data() + i, s.size() - i, &state);
    if (n == static_cast<size_t>(-1) || n == static_cast<size_t>(-2)) {
      state = std::mbstate_t{};
      ++width;
      ++i;
      continue;
    }
    int w = ::wcwidth(wc);
    width += w > 0 ? static_cast<size_t>(w) : 0;
    i += n == 0 ? 1 : n;
  }
  return width;
}

} // namespace

std::string format_candidates(const std::vector<std::string>& words,
                              int width) {
  if (words.empty())
    return {};
  auto cols = static_cast<size_t>(std::max(width, 1));
  size_t widest = 0;
  size_t one_line = 0;
  for (auto& w : words) {
    widest = std::max(widest, display_width(w));
    one_line += display_width(w) + 2;
  }
  std::string out;
  if (one_line - 2 < cols) {
    for (size_t i = 0; i < words.size(); ++i)
      out += (i ? "  " : "") + words[i];
    return out + "\n";
  }
  size_t column_width = widest + 2;
  size_t per_row = std::max<size_t>(1, (cols + 1) / column_width);
  size_t rows = (words.size() + per_row - 1) / per_row;
  for (size_t r = 0; r < rows; ++r) {
    std::string line;
    for (size_t c = 0; c < per_row; ++c) {
      size_t i = c * rows + r;
      if (i >= words.size())
        break;
      if (c > 0)
        line.append(column_width - display_width(words[i - rows]), ' ');
      line += words[i];
    }
    out += line + "\n";
  }
  return out;
}

// -- line_editor --------------------------------------------------------------

struct line_editor::impl {
  options opts;
  std::string history_error;
  EditLine* el = nullptr;
  History* hist = nullptr;
  HistEvent ev{};
  /// Whether the history file could not be loaded and is left as it is.
  bool keep_file = false;
  /// Set by Ctrl-C: the line that el_gets returns is to be dropped.
  bool interrupted = false;
  /// The line and cursor after a Tab that could not finish the word; a
  /// second Tab with nothing typed in between lists the candidates.
  std::optional<std::pair<std::string, size_t>> pending_list;

  ~impl() {
    if (el)
      el_end(el);
    if (hist)
      history_end(hist);
  }

  static impl& of(EditLine* el) {
    void* self = nullptr;
    el_get(el, EL_CLIENTDATA, &self);
    return *static_cast<impl*>(self);
  }

  void fail_history(const char* what) {
    history_error = std::string{what} + " history file " + opts.history_file
                    + ": " + std::strerror(errno);
  }

  void load_history() {
    struct stat st {};
    if (opts.history_file.empty() || ::stat(opts.history_file.c_str(), &st)
        || st.st_size == 0)
      return; // Nothing saved yet.
    errno = 0;
    if (::history(hist, &ev, H_LOAD, opts.history_file.c_str()) >= 0)
      return;
    // A file we cannot read, or one in another format (libedit's starts
    // with a marker line), is left alone rather than overwritten.
    keep_file = true;
    if (errno != 0)
      return fail_history("cannot read");
    history_error = "history file " + opts.history_file
                    + " is not in libedit's format; not writing to it";
  }

  // Writes a temporary file and renames it over the old one, so a crash or
  // a full disk never leaves a truncated history behind. mkstemp creates it
  // with mode 0600: history may hold run inputs.
  void save_history() {
    if (opts.history_file.empty() || keep_file)
      return;
    std::string tmp = opts.history_file + ".XXXXXX";
    int fd = ::mkstemp(tmp.data());
    if (fd < 0)
      return fail_history("cannot write");
    FILE* f = ::fdopen(fd, "w");
    if (!f) {
      fail_history("cannot write");
      ::close(fd);
      ::unlink(tmp.c_str());
      return;
    }
    bool ok = ::history(hist, &ev, H_SAVE_FP, f) >= 0;
    ok = std::fflush(f) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (!ok || std::rename(tmp.c_str(), opts.history_file.c_str()) != 0) {
      fail_history("cannot write");
      ::unlink(tmp.c_str());
      return;
    }
    history_error.clear();
  }

  // -- callbacks from libedit -------------------------------------------------

  static char* prompt(EditLine* el) { return of(el).opts.prompt.data(); }

  static unsigned char complete(EditLine* el, int) {
    try {
      return of(el).on_tab(el);
    } catch (...) {
      // Nothing may unwind through libedit's C frames.
      return CC_ERROR;
    }
  }

  static unsigned char interrupt(EditLine* el, int) {
    auto& self = of(el);
    self.interrupted = true;
    std::fputs("^C", stdout);
    self.move_below_line(el, 2);
    // Ends el_gets; read_line drops the line and starts a fresh one, which
    // also resets history browsing.
    return CC_NEWLINE;
  }

  static unsigned char suspend(EditLine* el, int) {
    // With signal keys off while editing, Ctrl-Z is a key: stop the way the
    // terminal would have, with the terminal in its normal mode meanwhile.
    el_set(el, EL_PREP_TERM, 0);
    ::kill(0, SIGTSTP);
    el_set(el, EL_PREP_TERM, 1);
    return CC_REDISPLAY;
  }

  // -- completion -------------------------------------------------------------

  static int terminal_width() {
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
      return ws.ws_col;
    return 80;
  }

  /// Moves the terminal cursor to the start of the row below the edited
  /// line (which may wrap over several rows); `extra` columns were printed
  /// at the cursor since libedit last drew.
  void move_below_line(EditLine* el, size_t extra) {
    auto* li = el_line(el);
    auto width = static_cast<size_t>(terminal_width());
    auto prompt_width = display_width(opts.prompt);
    std::string_view before{li->buffer,
                            static_cast<size_t>(li->cursor - li->buffer)};
    std::string_view all{li->buffer,
                         static_cast<size_t>(li->lastchar - li->buffer)};
    auto cursor_row = (prompt_width + display_width(before) + extra) / width;
    // The last character's row: a line that exactly fills its last row
    // does not reach into the next one.
    auto last_row
      = (std::max<size_t>(prompt_width + display_width(all), 1) - 1) / width;
    auto down = last_row > cursor_row ? last_row - cursor_row : 0;
    for (size_t i = 0; i <= down; ++i)
      std::fputs("\r\n", stdout);
    std::fflush(stdout);
  }

  /// Replaces the `old_raw` text just before the cursor with `text`.
  static void replace_before_cursor(EditLine* el, std::string_view old_raw,
                                    const std::string& text) {
    if (text.starts_with(old_raw)) {
      if (text.size() > old_raw.size())
        el_insertstr(el, text.c_str() + old_raw.size());
      return;
    }
    if (!old_raw.empty())
      el_deletestr(el, static_cast<int>(count_chars(old_raw)));
    if (!text.empty())
      el_insertstr(el, text.c_str());
  }

  static std::pair<std::string, size_t> line_state(EditLine* el) {
    auto* li = el_line(el);
    return {std::string{li->buffer, li->lastchar},
            static_cast<size_t>(li->cursor - li->buffer)};
  }

  unsigned char on_tab(EditLine* el) {
    auto* li = el_line(el);
    std::string before{li->buffer, li->cursor};
    std::string after{li->cursor, li->lastchar};
    auto part = word_at_end(before);
    std::string_view raw = std::string_view{before}.substr(part.start);
    std::vector<std::string> candidates;
    if (opts.complete)
      candidates = opts.complete(before, part.text);
    auto matches = complete_word(part.text, candidates);
    auto state = line_state(el);
    if (matches.empty()) {
      pending_list.reset();
      return CC_REFRESH_BEEP;
    }
    if (matches.size() == 1) {
      pending_list.reset();
      auto text = quote_word(matches.front());
      if (after.empty() || !is_blank(after.front()))
        text += ' ';
      replace_before_cursor(el, raw, text);
      return CC_REFRESH;
    }
    auto prefix = common_prefix(matches);
    if (prefix.size() > part.text.size()) {
      replace_before_cursor(el, raw, quote_word(prefix));
      pending_list = line_state(el);
      return CC_REFRESH;
    }
    if (pending_list != state) {
      pending_list = state;
      return CC_REFRESH_BEEP;
    }
    list(el, matches);
    return CC_NORM;
  }

  /// Prints `matches` below the line, then the prompt and line again.
  void list(EditLine* el, const std::vector<std::string>& matches) {
    constexpr size_t max_listed = 100;
    move_below_line(el, 0);
    std::vector<std::string> shown{
      matches.begin(),
      matches.begin()
        + static_cast<std::ptrdiff_t>(std::min(matches.size(), max_listed))};
    auto text = format_candidates(shown, terminal_width() - 1);
    if (matches.size() > max_listed)
      text += "(" + std::to_string(matches.size() - max_listed) + " more)\n";
    // In raw mode a bare newline may not return the carriage.
    for (char c : text) {
      if (c == '\n')
        std::fputc('\r', stdout);
      std::fputc(c, stdout);
    }
    std::fflush(stdout);
    // Forget what libedit believes is on screen and draw the prompt and line
    // afresh where the cursor now is.
    el_set(el, EL_REFRESH);
  }
};

line_editor::line_editor(options opts) : impl_(std::make_unique<impl>()) {
  impl_->opts = std::move(opts);
  if (!interactive())
    return;
  // libedit decodes input with the C library's multibyte functions: in the
  // "C" locale it drops every non-ASCII byte.
  if (auto* cur = std::setlocale(LC_CTYPE, nullptr);
      cur && (std::strcmp(cur, "C") == 0 || std::strcmp(cur, "POSIX") == 0))
    std::setlocale(LC_CTYPE, "");
  auto& self = *impl_;
  self.el = el_init(self.opts.program.c_str(), stdin, stdout, stderr);
  if (!self.el)
    return;
  self.hist = history_init();
  if (self.hist) {
    ::history(self.hist, &self.ev, H_SETSIZE,
              std::max(self.opts.history_size, 1));
    ::history(self.hist, &self.ev, H_SETUNIQUE, 1);
    el_set(self.el, EL_HIST, ::history, self.hist);
    self.load_history();
  }
  const char* end = nullptr;
  el_set(self.el, EL_CLIENTDATA, static_cast<void*>(impl_.get()));
  el_set(self.el, EL_EDITOR, "emacs");
  // Restores the terminal if a signal ends the process mid-line, and follows
  // window size changes.
  el_set(self.el, EL_SIGNAL, 1);
  el_set(self.el, EL_PROMPT, &impl::prompt);
  el_set(self.el, EL_BIND, "^R", "em-inc-search-prev", end);
  el_set(self.el, EL_BIND, "^W", "ed-delete-prev-word", end);
  el_source(self.el, nullptr); // ~/.editrc, if any.
  // el_wset, not el_set: the narrow EL_ADDFN copies the name and help text
  // and never frees them, while the wide one keeps these static strings.
  el_wset(self.el, EL_ADDFN, L"troupe-complete",
          L"Complete the word before the cursor", &impl::complete);
  el_wset(self.el, EL_ADDFN, L"troupe-interrupt", L"Abandon the line",
          &impl::interrupt);
  el_wset(self.el, EL_ADDFN, L"troupe-suspend",
          L"Stop the program (job control)", &impl::suspend);
  el_set(self.el, EL_BIND, "^I", "troupe-complete", end);
  el_set(self.el, EL_BIND, "^C", "troupe-interrupt", end);
  el_set(self.el, EL_BIND, "^Z", "troupe-suspend", end);
  // While editing, Ctrl-C and Ctrl-Z are keys (bound above), not signals.
  el_set(self.el, EL_SETTY, "-d", "-isig", end);
}

line_editor::line_editor(std::string program, std::string prompt,
                         std::string history_file, completer complete)
    : line_editor(options{std::move(program), std::move(prompt),
                          std::move(history_file), 1000, std::move(complete)}) {
}

line_editor::~line_editor() = default;

bool line_editor::interactive() {
  return ::isatty(STDIN_FILENO) && ::isatty(STDOUT_FILENO);
}

void line_editor::set_prompt(std::string prompt) {
  impl_->opts.prompt = std::move(prompt);
}

const std::string& line_editor::prompt() const noexcept {
  return impl_->opts.prompt;
}

std::vector<std::string> line_editor::history() const {
  std::vector<std::string> out;
  auto* h = impl_->hist;
  if (!h)
    return out;
  HistEvent ev{};
  // H_LAST is the oldest entry, H_PREV steps towards the newest.
  for (int r = ::history(h, &ev, H_LAST); r != -1;
       r = ::history(h, &ev, H_PREV))
    out.emplace_back(ev.str);
  return out;
}

const std::string& line_editor::history_error() const noexcept {
  return impl_->history_error;
}

void line_editor::add_history(const std::string& line) {
  auto& self = *impl_;
  if (!self.hist || line.find_first_not_of(" \t") == std::string::npos)
    return;
  ::history(self.hist, &self.ev, H_ENTER, line.c_str());
  self.save_history();
}

std::optional<std::string> line_editor::read_line() {
  auto& self = *impl_;
  if (!self.el) {
    std::string line;
    if (!std::getline(std::cin, line))
      return std::nullopt;
    return line;
  }
  for (;;) {
    self.interrupted = false;
    self.pending_list.reset();
    // Raw mode before the prompt shows: keys typed once it is visible must
    // not be echoed by the terminal driver.
    el_set(self.el, EL_PREP_TERM, 1);
    int count = 0;
    const char* got = el_gets(self.el, &count);
    if (self.interrupted)
      continue;
    if (!got || count <= 0) {
      if (count < 0 && errno == EINTR) {
        // A signal the program handles: start over on a fresh line.
        std::fputs("\n", stdout);
        std::fflush(stdout);
        continue;
      }
      std::fputs("\n", stdout);
      std::fflush(stdout);
      return std::nullopt;
    }
    std::string line{got};
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
      line.pop_back();
    add_history(line);
    return line;
  }
}

} // namespace troupe::tools::shell
