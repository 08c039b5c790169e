#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace troupe::config {

/// Returns the candidate closest to `word` by edit distance when it is close
/// enough to be a likely typo, or an empty string.
std::string closest_match(std::string_view word,
                          const std::vector<std::string>& candidates);

/// Returns how many edits (insertions, deletions, substitutions and swaps of
/// neighbouring characters) turn `a` into `b`.
size_t edits_between(std::string_view a, std::string_view b);

/// Returns ` (did you mean 'x'?)` for a likely typo, else an empty string.
std::string did_you_mean(std::string_view word,
                         const std::vector<std::string>& candidates);

/// Returns the candidates joined by ", ".
std::string join(const std::vector<std::string>& items,
                 std::string_view separator = ", ");

} // namespace troupe::config
