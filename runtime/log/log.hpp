#pragma once

#include "runtime/log/field.hpp"
#include "runtime/log/log_options.hpp"
#include "runtime/log/redact.hpp"

#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace spdlog {
class logger;
} // namespace spdlog

/// Structured logging on spdlog: named loggers, records with fields, text or
/// JSON lines.
///
///     log::info("run", "attempt failed",
///               {{"run_id", id}, {"node_id", node}, {"attempt", 2}});
///
/// text: `2026-11-23T10:00:00.123Z INFO  run: attempt failed run_id=r-1
///        node_id=fetch attempt=2` (values with spaces or quotes quoted);
/// json: `{"ts":"2026-11-23T10:00:00.123Z","level":"info","logger":"run",
///         "msg":"attempt failed","run_id":"r-1","node_id":"fetch",
///         "attempt":2}`, escaped by a JSON library. A field named like one
/// of the fixed keys (ts, level, logger, msg) is written with a leading `_`.
///
/// Until `setup` runs, records at info and above go to standard error as
/// text. Thread-safe. A record is formatted on the thread that logs it and
/// queued; one writer thread writes each line and flushes it, so logging
/// never waits for a disk or a terminal unless 8192 lines are queued (then
/// it waits for room: lines are never dropped). A normal exit writes what is
/// queued (`flush`, `shutdown`, or at exit); a process killed outright loses
/// only the lines still queued, usually none.
namespace troupe::runtime::log {

/// The loggers Troupe's modules use; any other name is created on first use.
const std::vector<std::string>& known_loggers();

/// Applies `opts`: opens the file (appending) or uses standard error, sets
/// the format and every logger's level. May run again at any time; records
/// then go to the new place. Returns an empty string, or why the file could
/// not be opened (the previous setup then stays in force). Plain spdlog
/// calls (`spdlog::info`) go the same way too, as logger "troupe".
[[nodiscard]] std::string setup(const log_options& opts);

/// Returns the logger named `name`, creating it with the configured level.
/// Keep the handle to skip the lookup on hot paths.
std::shared_ptr<spdlog::logger> get(std::string_view name);

/// Returns whether `logger` writes records at `l`: test it before building
/// costly fields.
bool enabled(std::string_view logger, level l);

/// Writes one record (does nothing when `l` is below the logger's level).
/// Text fields and the message pass through `redact`; values of
/// sensitive keys (`is_sensitive_key`) are masked.
void write(std::string_view logger, level l, std::string_view msg,
           std::span<const field> fields = {});

/// Same as `write` on a logger handle from `get`.
void write(spdlog::logger& logger, level l, std::string_view msg,
           std::span<const field> fields = {});

inline void trace(std::string_view logger, std::string_view msg,
                  std::initializer_list<field> fields = {}) {
  write(logger, level::trace, msg, {fields.begin(), fields.size()});
}

inline void debug(std::string_view logger, std::string_view msg,
                  std::initializer_list<field> fields = {}) {
  write(logger, level::debug, msg, {fields.begin(), fields.size()});
}

inline void info(std::string_view logger, std::string_view msg,
                 std::initializer_list<field> fields = {}) {
  write(logger, level::info, msg, {fields.begin(), fields.size()});
}

inline void warn(std::string_view logger, std::string_view msg,
                 std::initializer_list<field> fields = {}) {
  write(logger, level::warn, msg, {fields.begin(), fields.size()});
}

inline void error(std::string_view logger, std::string_view msg,
                  std::initializer_list<field> fields = {}) {
  write(logger, level::error, msg, {fields.begin(), fields.size()});
}

/// Returns once every record logged before the call is written and
/// flushed (waits at most a few seconds for a stuck file or terminal).
void flush();

/// Flushes and closes the log file; later records go to standard error.
/// Call before the process exits.
void shutdown();

} // namespace troupe::runtime::log
