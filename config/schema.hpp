#pragma once

#include "config/duration.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace troupe::config {

/// What a configuration key holds, and so how it is read and checked.
enum class value_kind {
  string,      ///< Free text.
  path,        ///< A file or folder path; may be empty where `optional`.
  integer,     ///< A whole number within [min, max].
  boolean,     ///< true or false.
  duration,    ///< A duration string within [min, max] milliseconds.
  choice,      ///< One of `choices`.
  address,     ///< HOST:PORT, port 0 to 65535; may be empty where `optional`.
  string_list, ///< A list of strings (comma-separated in env and flags).
  free_space,  ///< A free-space floor: "1GiB", "5%" or "5%,1GiB" (size.hpp).
};

/// Returns a short noun for `kind`, e.g. "a duration".
std::string_view describe(value_kind kind);

/// One configuration value, typed by its key's `value_kind`.
using value = std::variant<std::string, int64_t, bool, duration,
                           std::vector<std::string>>;

/// Declares one configuration key: its type, built-in default and limits.
/// The schema is the one place where defaults and limits are written.
struct key_spec {
  std::string_view section;
  std::string_view key;
  value_kind kind;
  /// The built-in default, written as an environment variable would be.
  std::string_view default_text;
  std::string_view doc;
  /// Limits for integers, or milliseconds for durations.
  int64_t min = 0;
  int64_t max = 0;
  /// The values a choice key allows. On a string_list key, each item must be
  /// NAME=CHOICE instead (log.levels: `control=debug`).
  std::vector<std::string_view> choices = {};
  /// Whether an empty string is allowed (paths, addresses).
  bool optional = false;

  /// Returns "section.key".
  std::string name() const;

  /// Returns whether the key holds a secret that output must mask.
  bool is_secret() const;
};

/// Returns every key Troupe reads, grouped by section in display order.
std::span<const key_spec> all_keys();

/// Returns the section names in display order.
const std::vector<std::string>& all_sections();

/// Returns the key named `section.key`, or null.
const key_spec* find_key(std::string_view section, std::string_view key);

/// Returns the names of the keys in `section`.
std::vector<std::string> keys_of(std::string_view section);

/// Parses `text` (as given in an environment variable or flag) for `spec`
/// and checks its limits. On failure returns nothing and sets `error`.
std::optional<value> parse_text(const key_spec& spec, std::string_view text,
                                std::string& error);

/// Checks a typed value against the limits of `spec`; returns the reason it
/// is out of range or an empty string.
std::string check_limits(const key_spec& spec, const value& v);

/// Renders `v` as TOML (`"text"`, `42`, `true`, `"10s"`, `["a", "b"]`).
std::string to_toml(const value& v);

/// Renders `v` as plain text, as an environment variable would hold it.
std::string to_text(const value& v);

} // namespace troupe::config
