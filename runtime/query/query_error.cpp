#include "runtime/query/query_error.hpp"

#include <algorithm>

namespace troupe::runtime::query {

namespace {

/// The widest stretch of the text `render_error` shows.
constexpr size_t max_window = 100;

/// How much of the window goes before the caret when the text is cut.
constexpr size_t before_caret = 60;

bool is_continuation(char c) {
  return (static_cast<unsigned char>(c) & 0xc0) == 0x80;
}

/// Returns how many terminal cells `text` takes as `render_error` shows it:
/// one per character, UTF-8 sequences counted once.
size_t cells(std::string_view text) {
  return static_cast<size_t>(std::count_if(
    text.begin(), text.end(), [](char c) { return !is_continuation(c); }));
}

} // namespace

std::string to_string(const query_error& err) {
  return err.message + " (at column " + std::to_string(err.column) + ")";
}

std::string render_error(std::string_view text, const query_error& err) {
  auto index = std::min(err.column > 0 ? err.column - 1 : 0, text.size());
  size_t begin = 0;
  size_t end = text.size();
  if (text.size() > max_window) {
    begin = index > before_caret ? index - before_caret : 0;
    end = std::min(text.size(), begin + max_window);
    if (end - begin < max_window)
      begin = end - max_window;
    // Never cut a UTF-8 sequence in half.
    while (begin < index && is_continuation(text[begin]))
      ++begin;
    while (end > index && end < text.size() && is_continuation(text[end]))
      --end;
  }
  std::string line;
  std::string caret;
  if (begin > 0) {
    line += "...";
    caret += "   ";
  }
  for (size_t i = begin; i < end; ++i) {
    auto u = static_cast<unsigned char>(text[i]);
    line += u < 0x20 || u == 0x7f ? ' ' : text[i];
  }
  if (end < text.size())
    line += "...";
  caret.append(cells(text.substr(begin, index - begin)), ' ');
  caret += '^';
  return line + "\n" + caret;
}

} // namespace troupe::runtime::query
