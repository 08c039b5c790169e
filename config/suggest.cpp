#include "config/suggest.hpp"

#include <algorithm>
#include <numeric>

namespace troupe::config {

namespace {

/// Edits (insert, delete, substitute, or swap two neighbours) that turn `a`
/// into `b`: the optimal string alignment distance, so that "tiemout" is one
/// edit from "timeout", as a reader would count it.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> before(b.size() + 1), row(b.size() + 1),
    next(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    next[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      next[j] = std::min({row[j] + 1, next[j - 1] + 1, row[j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        next[j] = std::min(next[j], before[j - 2] + 1);
    }
    std::swap(before, row);
    std::swap(row, next);
  }
  return row[b.size()];
}

} // namespace

std::string closest_match(std::string_view word,
                          const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 3) + 1;
  for (auto& candidate : candidates) {
    auto d = edit_distance(word, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best;
}

size_t edits_between(std::string_view a, std::string_view b) {
  return edit_distance(a, b);
}

std::string did_you_mean(std::string_view word,
                         const std::vector<std::string>& candidates) {
  auto best = closest_match(word, candidates);
  return best.empty() ? std::string{} : " (did you mean '" + best + "'?)";
}

std::string join(const std::vector<std::string>& items,
                 std::string_view separator) {
  std::string out;
  for (auto& item : items) {
    if (!out.empty())
      out += separator;
    out += item;
  }
  return out;
}

} // namespace troupe::config
