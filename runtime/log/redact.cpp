#include "runtime/log/redact.hpp"

#include <algorithm>
#include <array>
#include <cctype>

namespace troupe::runtime::log {

namespace {

constexpr std::string_view replacement = "[redacted]";

bool is_b64url(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
}

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

/// Returns the position of `word` (lower case) in `text`, ignoring case,
/// from `from`.
size_t find_nocase(std::string_view text, std::string_view word,
                   size_t from = 0) {
  if (word.size() > text.size())
    return std::string_view::npos;
  for (size_t i = from; i + word.size() <= text.size(); ++i) {
    size_t k = 0;
    while (k < word.size() && lower(text[i + k]) == word[k])
      ++k;
    if (k == word.size())
      return i;
  }
  return std::string_view::npos;
}

/// Returns the length of a JWT starting at `i` (at "eyJ"), or 0.
size_t jwt_length(std::string_view text, size_t i) {
  if (i > 0 && is_b64url(text[i - 1]))
    return 0;
  size_t j = i;
  for (int part = 0; part < 3; ++part) {
    auto start = j;
    while (j < text.size() && is_b64url(text[j]))
      ++j;
    if (part < 2) {
      if (j == start || j >= text.size() || text[j] != '.')
        return 0;
      ++j;
    }
  }
  return j - i;
}

/// Returns where the credential after "bearer" at `i` starts and ends, or
/// an empty range.
std::pair<size_t, size_t> bearer_value(std::string_view text, size_t i) {
  if (i > 0 && std::isalnum(static_cast<unsigned char>(text[i - 1])))
    return {0, 0};
  auto j = i + 6; // "bearer"
  if (j >= text.size() || !is_space(text[j]))
    return {0, 0};
  while (j < text.size() && is_space(text[j]))
    ++j;
  auto start = j;
  while (j < text.size() && !is_space(text[j]) && text[j] != '"'
         && text[j] != '\'' && text[j] != ',')
    ++j;
  return {start, j};
}

} // namespace

bool is_sensitive_key(std::string_view key) {
  static constexpr std::array<std::string_view, 8> words
    = {"secret",     "token",         "password", "passwd",
       "credential", "authorization", "api_key",  "apikey"};
  return std::any_of(words.begin(), words.end(), [&](std::string_view w) {
    return find_nocase(key, w) != std::string_view::npos;
  });
}

bool needs_redaction(std::string_view text) {
  for (auto i = text.find("eyJ"); i != std::string_view::npos;
       i = text.find("eyJ", i + 1))
    if (jwt_length(text, i) > 0)
      return true;
  for (auto i = find_nocase(text, "bearer"); i != std::string_view::npos;
       i = find_nocase(text, "bearer", i + 1)) {
    auto [start, end] = bearer_value(text, i);
    if (end > start)
      return true;
  }
  return false;
}

std::string redact(std::string_view text) {
  if (!needs_redaction(text))
    return std::string{text};
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == 'e' && text.compare(i, 3, "eyJ") == 0) {
      if (auto n = jwt_length(text, i); n > 0) {
        out += replacement;
        i += n;
        continue;
      }
    }
    if (lower(text[i]) == 'b'
        && find_nocase(text.substr(i, 6), "bearer") == 0) {
      auto [start, end] = bearer_value(text, i);
      if (end > start) {
        out.append(text.substr(i, start - i));
        out += replacement;
        i = end;
        continue;
      }
    }
    out += text[i++];
  }
  return out;
}

} // namespace troupe::runtime::log
