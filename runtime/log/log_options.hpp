#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::config {
class settings;
} // namespace troupe::config

namespace troupe::runtime::log {

/// How severe a record is; `off` as a threshold logs nothing.
enum class level : uint8_t { trace, debug, info, warn, error, off };

/// Returns "trace", "debug", "info", "warn", "error" or "off".
std::string_view to_string(level l);

/// Parses a level name as written in log.level (lower case).
std::optional<level> parse_level(std::string_view text);

/// How each record is written.
enum class format : uint8_t {
  text, ///< `TIME LEVEL logger: message key=value ...`, for people.
  json, ///< One JSON object per line, for machines.
};

/// Where and what to log; `log.level`, `log.format`, `log.file` and
/// `log.levels` in configuration.
struct log_options {
  /// Least severe level logged by loggers without their own. Default: info.
  log::level level = level::info;
  /// Default: text.
  log::format format = format::text;
  /// File to append to (created with its folders); empty: standard error.
  std::string file;
  /// Per-logger thresholds over `level`, e.g. {"control", debug}.
  std::map<std::string, log::level, std::less<>> levels;
};

/// Parses `LOGGER=LEVEL` entries (log.levels) into `out`. On failure returns
/// a message naming the bad entry and what was expected, else an empty
/// string.
std::string parse_logger_levels(const std::vector<std::string>& entries,
                                std::map<std::string, level, std::less<>>& out);

/// Reads log.level, log.format, log.file and log.levels. On failure returns
/// nothing and sets `error` to a message naming the key and the entry.
std::optional<log_options> options_from(const config::settings& s,
                                        std::string& error);

} // namespace troupe::runtime::log
