#include "config/size.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>

namespace troupe::config {

namespace {

struct unit {
  std::string_view name;
  uint64_t factor;
};

constexpr uint64_t ki = 1024;
constexpr std::array<unit, 9> units{{{"B", 1},
                                     {"KiB", ki},
                                     {"MiB", ki* ki},
                                     {"GiB", ki* ki* ki},
                                     {"TiB", ki* ki* ki* ki},
                                     {"kB", 1000},
                                     {"MB", 1000'000},
                                     {"GB", 1000'000'000},
                                     {"TB", 1000'000'000'000}}};

void set(std::string* error, std::string text) {
  if (error)
    *error = std::move(text);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

/// Splits `text` into a decimal number (digits, at most one point) and the
/// rest. Returns false when it does not start with a digit.
bool split_number(std::string_view text, double& number,
                  std::string_view& rest) {
  size_t i = 0;
  bool point = false;
  while (
    i < text.size()
    && ((text[i] >= '0' && text[i] <= '9') || (text[i] == '.' && !point))) {
    point |= text[i] == '.';
    ++i;
  }
  if (i == 0 || text[0] == '.' || text[i - 1] == '.')
    return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc{} || ptr != text.data() + i)
    return false;
  rest = trim(text.substr(i));
  return true;
}

} // namespace

std::optional<uint64_t> parse_size(std::string_view text, std::string* error) {
  text = trim(text);
  double number = 0;
  std::string_view rest;
  if (!split_number(text, number, rest)) {
    set(error, "expected a size such as \"512MiB\" or \"1GiB\"");
    return std::nullopt;
  }
  uint64_t factor = 0;
  if (rest.empty())
    factor = 1;
  for (auto& u : units)
    if (u.name == rest)
      factor = u.factor;
  if (factor == 0) {
    set(error, "unknown size unit \"" + std::string{rest}
                 + "\"; use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB");
    return std::nullopt;
  }
  double bytes = std::round(number * static_cast<double>(factor));
  if (!(bytes < 0x1p63)) {
    set(error, "size \"" + std::string{text} + "\" is too large");
    return std::nullopt;
  }
  return static_cast<uint64_t>(bytes);
}

std::string format_size(uint64_t bytes) {
  if (bytes < ki)
    return std::to_string(bytes) + " B";
  static constexpr std::array<std::string_view, 5> names{"KiB", "MiB", "GiB",
                                                         "TiB", "PiB"};
  double v = static_cast<double>(bytes) / ki;
  size_t i = 0;
  while (v >= 1024 && i + 1 < names.size()) {
    v /= 1024;
    ++i;
  }
  char buf[32];
  if (v == std::floor(v))
    std::snprintf(buf, sizeof buf, "%.0f %s", v, names[i].data());
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, names[i].data());
  return buf;
}

uint64_t free_space_floor::resolve(uint64_t total) const {
  std::optional<uint64_t> out = bytes;
  if (percent) {
    auto share
      = static_cast<uint64_t>(static_cast<double>(total) * *percent / 100.0);
    out = out ? std::min(*out, share) : share;
  }
  return out.value_or(0);
}

std::optional<free_space_floor> parse_free_space_floor(std::string_view text,
                                                       std::string* error) {
  const std::string expected
    = "expected a size such as \"1GiB\", a share of the disk such as \"5%\", "
      "or both as \"5%,1GiB\" (the smaller applies)";
  free_space_floor out;
  auto all = trim(text);
  if (all.empty()) {
    set(error, expected);
    return std::nullopt;
  }
  size_t start = 0;
  for (int terms = 0; start <= all.size(); ++terms) {
    auto comma = all.find(',', start);
    auto term = trim(all.substr(
      start, comma == std::string_view::npos ? comma : comma - start));
    if (terms == 2 || term.empty()) {
      set(error, expected);
      return std::nullopt;
    }
    if (term.back() == '%') {
      double number = 0;
      std::string_view rest;
      if (!split_number(term.substr(0, term.size() - 1), number, rest)
          || !rest.empty()) {
        set(error, "\"" + std::string{term} + "\": " + expected);
        return std::nullopt;
      }
      if (out.percent) {
        set(error, "give at most one percentage and one size");
        return std::nullopt;
      }
      if (number > 50) {
        set(error, "\"" + std::string{term}
                     + "\": a share of the disk must be from 0% to 50%");
        return std::nullopt;
      }
      out.percent = number;
    } else {
      std::string why;
      auto bytes = parse_size(term, &why);
      if (!bytes) {
        set(error, "\"" + std::string{term} + "\": " + why);
        return std::nullopt;
      }
      if (out.bytes) {
        set(error, "give at most one percentage and one size");
        return std::nullopt;
      }
      out.bytes = *bytes;
    }
    if (comma == std::string_view::npos)
      break;
    start = comma + 1;
  }
  return out;
}

} // namespace troupe::config
