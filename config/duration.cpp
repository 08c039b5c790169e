#include "config/duration.hpp"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>

namespace troupe::config {

namespace {

struct unit {
  std::string_view name;
  int64_t nanos;
};

// Longest names first so "ms" wins over "m".
constexpr unit units[] = {
  {"ns", 1},
  {"us", 1'000},
  {"ms", 1'000'000},
  {"s", 1'000'000'000},
  {"m", 60'000'000'000},
  {"h", 3'600'000'000'000},
  {"d", 86'400'000'000'000},
};

bool fail(std::string* error, std::string msg) {
  if (error)
    *error = std::move(msg);
  return false;
}

} // namespace

std::optional<duration> parse_duration(std::string_view text,
                                       std::string* error) {
  const std::string_view expected
    = "expected a duration such as 250ms, 10s, 5m, 1h or 1h30m";
  if (text.empty()) {
    fail(error, "empty duration; " + std::string{expected});
    return std::nullopt;
  }
  if (text.front() == '-') {
    fail(error, "negative duration '" + std::string{text} + "'");
    return std::nullopt;
  }
  long double total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    // Number: digits with an optional fraction.
    size_t start = pos;
    while (pos < text.size()
           && std::isdigit(static_cast<unsigned char>(text[pos])))
      ++pos;
    if (pos < text.size() && text[pos] == '.') {
      ++pos;
      while (pos < text.size()
             && std::isdigit(static_cast<unsigned char>(text[pos])))
        ++pos;
    }
    auto number = text.substr(start, pos - start);
    if (number.empty() || number == ".") {
      fail(error, "bad duration '" + std::string{text} + "'; "
                    + std::string{expected});
      return std::nullopt;
    }
    // Unit: letters.
    size_t ustart = pos;
    while (pos < text.size()
           && std::isalpha(static_cast<unsigned char>(text[pos])))
      ++pos;
    auto uname = text.substr(ustart, pos - ustart);
    if (uname.empty()) {
      fail(error, "duration '" + std::string{text}
                    + "' has no unit; write e.g. " + std::string{number}
                    + "s or " + std::string{number} + "ms");
      return std::nullopt;
    }
    const unit* u = nullptr;
    for (auto& candidate : units)
      if (candidate.name == uname)
        u = &candidate;
    if (!u) {
      fail(error, "unknown unit '" + std::string{uname} + "' in duration '"
                    + std::string{text}
                    + "'; units are ns, us, ms, s, m, h, d");
      return std::nullopt;
    }
    if (number.size() > 24) {
      fail(error, "duration '" + std::string{text} + "' is too large");
      return std::nullopt;
    }
    // std::stold needs a string; the number is short.
    total
      += std::stold(std::string{number}) * static_cast<long double>(u->nanos);
    if (total > static_cast<long double>(std::numeric_limits<int64_t>::max())) {
      fail(error, "duration '" + std::string{text} + "' is too large");
      return std::nullopt;
    }
  }
  return duration{static_cast<int64_t>(std::llround(total))};
}

std::string format_duration(duration d) {
  int64_t n = d.count();
  if (n == 0)
    return "0s";
  std::string out;
  if (n < 0) {
    out = "-";
    n = -n;
  }
  // Sub-second spans print in one unit; longer ones compose h, m, s.
  if (n < 1'000'000'000) {
    if (n % 1'000'000 == 0)
      return out + std::to_string(n / 1'000'000) + "ms";
    if (n % 1'000 == 0)
      return out + std::to_string(n / 1'000) + "us";
    return out + std::to_string(n) + "ns";
  }
  if (n % 1'000'000'000 != 0)
    return out + std::to_string(n / 1'000'000) + "ms";
  int64_t s = n / 1'000'000'000;
  if (s >= 86'400 && s % 86'400 == 0)
    return out + std::to_string(s / 86'400) + "d";
  if (s >= 3600) {
    out += std::to_string(s / 3600) + "h";
    s %= 3600;
  }
  if (s >= 60) {
    out += std::to_string(s / 60) + "m";
    s %= 60;
  }
  if (s > 0)
    out += std::to_string(s) + "s";
  return out;
}

} // namespace troupe::config
