#include "runtime/query/detail/like.hpp"

#include <cstddef>

namespace troupe::runtime::query::detail {

namespace {

/// Returns the length of the UTF-8 character starting at `i`, or 1 for a
/// byte that starts none; never past the end of `s`.
size_t char_length(std::string_view s, size_t i) {
  auto b = static_cast<unsigned char>(s[i]);
  size_t n = 1;
  if (b >= 0xf0 && b < 0xf8)
    n = 4;
  else if (b >= 0xe0)
    n = 3;
  else if (b >= 0xc0)
    n = 2;
  if (b >= 0xf8)
    n = 1;
  size_t end = i + 1;
  while (end < s.size() && end < i + n
         && (static_cast<unsigned char>(s[end]) & 0xc0) == 0x80)
    ++end;
  return end - i;
}

char fold(char c, bool ignore_case) {
  if (ignore_case && c >= 'A' && c <= 'Z')
    return static_cast<char>(c - 'A' + 'a');
  return c;
}

} // namespace

bool like_match(std::string_view text, std::string_view pattern,
                bool ignore_case) {
  // The classic wildcard walk: on a mismatch, go back to the last `%` and let
  // it swallow one more character. Only the last `%` matters, so this never
  // backtracks further and takes at most |text| * |pattern| steps.
  constexpr size_t none = static_cast<size_t>(-1);
  size_t t = 0;
  size_t p = 0;
  size_t star_p = none;
  size_t star_t = 0;
  while (t < text.size()) {
    if (p < pattern.size()) {
      char c = pattern[p];
      if (c == '%') {
        star_p = ++p;
        star_t = t;
        continue;
      }
      if (c == '_') {
        t += char_length(text, t);
        ++p;
        continue;
      }
      size_t lp = c == '\\' && p + 1 < pattern.size() ? p + 1 : p;
      if (fold(text[t], ignore_case) == fold(pattern[lp], ignore_case)) {
        ++t;
        p = lp + 1;
        continue;
      }
    }
    if (star_p == none)
      return false;
    star_t += char_length(text, star_t);
    t = star_t;
    p = star_p;
  }
  while (p < pattern.size() && pattern[p] == '%')
    ++p;
  return p == pattern.size();
}

} // namespace troupe::runtime::query::detail
