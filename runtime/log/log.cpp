#include "runtime/log/log.hpp"

#include <nlohmann/json.hpp>
#include <spdlog/async_logger.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/formatter.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <cctype>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <mutex>
#include <pthread.h>
#include <shared_mutex>

namespace troupe::runtime::log {

namespace {

// -- levels -------------------------------------------------------------------

spdlog::level::level_enum to_spdlog(level l) {
  switch (l) {
  case level::trace: return spdlog::level::trace;
  case level::debug: return spdlog::level::debug;
  case level::info: return spdlog::level::info;
  case level::warn: return spdlog::level::warn;
  case level::error: return spdlog::level::err;
  case level::off: return spdlog::level::off;
  }
  return spdlog::level::off;
}

/// Upper-case name padded to five characters, for text lines.
std::string_view text_level(spdlog::level::level_enum l) {
  switch (l) {
  case spdlog::level::trace: return "TRACE";
  case spdlog::level::debug: return "DEBUG";
  case spdlog::level::info: return "INFO ";
  case spdlog::level::warn: return "WARN ";
  case spdlog::level::err: return "ERROR";
  case spdlog::level::critical: return "CRIT ";
  default: return "?    ";
  }
}

std::string_view json_level(spdlog::level::level_enum l) {
  switch (l) {
  case spdlog::level::trace: return "trace";
  case spdlog::level::debug: return "debug";
  case spdlog::level::info: return "info";
  case spdlog::level::warn: return "warn";
  case spdlog::level::err: return "error";
  case spdlog::level::critical: return "critical";
  default: return "unknown";
  }
}

// -- record formatting
// ---------------------------------------------------------

// The fields of the record being written on this thread. Records are
// formatted on the caller's thread (inside logger::log) and only then handed
// to the writer thread; records from plain spdlog calls have none.
thread_local std::span<const field> current_fields;

struct fields_scope {
  explicit fields_scope(std::span<const field> fs) { current_fields = fs; }
  ~fields_scope() { current_fields = {}; }
  fields_scope(const fields_scope&) = delete;
  fields_scope& operator=(const fields_scope&) = delete;
};

/// Returns "2026-11-23T10:00:00.123Z".
std::string timestamp(spdlog::log_clock::time_point t) {
  auto ms = std::chrono::floor<std::chrono::milliseconds>(t.time_since_epoch());
  auto secs = std::chrono::floor<std::chrono::seconds>(ms);
  auto tt = static_cast<std::time_t>(secs.count());
  std::tm tm{};
  gmtime_r(&tt, &tm);
  std::array<char, 40> buf{};
  auto n = std::strftime(buf.data(), buf.size(), "%Y-%m-%dT%H:%M:%S", &tm);
  auto frac = static_cast<int>((ms - secs).count());
  std::snprintf(buf.data() + n, buf.size() - n, ".%03dZ", frac);
  return buf.data();
}

std::string_view view(spdlog::string_view_t s) {
  return {s.data(), s.size()};
}

std::string safe_text(std::string_view s) {
  return needs_redaction(s) ? redact(s) : std::string{s};
}

/// Escapes control characters, so that a record stays on one line.
void append_escaped(std::string& out, std::string_view s, bool quote_too) {
  for (char c : s) {
    switch (c) {
    case '\n': out += "\\n"; break;
    case '\r': out += "\\r"; break;
    case '\t': out += "\\t"; break;
    case '\\': out += quote_too ? "\\\\" : "\\"; break;
    case '"': out += quote_too ? "\\\"" : "\""; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        std::array<char, 8> hex{};
        std::snprintf(hex.data(), hex.size(), "\\x%02x",
                      static_cast<unsigned char>(c));
        out += hex.data();
      } else {
        out += c;
      }
    }
  }
}

/// A text value: bare when it is one plain word, else quoted and escaped.
void append_text_value(std::string& out, std::string_view s) {
  bool plain = !s.empty();
  for (char c : s)
    if (c == ' ' || c == '"' || c == '=' || c == '\\'
        || static_cast<unsigned char>(c) < 0x21 || c == 0x7f)
      plain = false;
  if (plain) {
    out += s;
    return;
  }
  out += '"';
  append_escaped(out, s, true);
  out += '"';
}

/// Keys are written as given, with anything but [A-Za-z0-9_.-] as '_'.
std::string clean_key(std::string_view key) {
  std::string out{key.empty() ? "_" : key};
  for (auto& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.'
        && c != '-')
      c = '_';
  return out;
}

std::string format_double(double d) {
  if (!std::isfinite(d))
    return std::isnan(d) ? "nan" : (d > 0 ? "inf" : "-inf");
  return fmt::format("{}", d);
}

/// Formats records as text or JSON lines, fields included.
class record_formatter {
 public:
  /// One whole line, ending in a newline.
  static std::string line(const spdlog::details::log_msg& msg,
                          log::format format) {
    auto out = format == log::format::json ? json_line(msg) : text_line(msg);
    out += '\n';
    return out;
  }

 private:
  static std::string text_line(const spdlog::details::log_msg& msg) {
    std::string out = timestamp(msg.time);
    out += ' ';
    out += text_level(msg.level);
    out += ' ';
    out += view(msg.logger_name);
    out += ": ";
    append_escaped(out, safe_text(view(msg.payload)), false);
    for (auto& f : current_fields) {
      out += ' ';
      out += clean_key(f.key);
      out += '=';
      if (is_sensitive_key(f.key)) {
        out += masked;
        continue;
      }
      struct visitor {
        std::string& out;
        void operator()(const std::string& s) {
          append_text_value(out, safe_text(s));
        }
        void operator()(int64_t n) { out += std::to_string(n); }
        void operator()(double d) { out += format_double(d); }
        void operator()(bool b) { out += b ? "true" : "false"; }
      };
      std::visit(visitor{out}, f.value.get());
    }
    return out;
  }

  static std::string json_line(const spdlog::details::log_msg& msg) {
    nlohmann::ordered_json j;
    j["ts"] = timestamp(msg.time);
    j["level"] = json_level(msg.level);
    j["logger"] = view(msg.logger_name);
    j["msg"] = safe_text(view(msg.payload));
    for (auto& f : current_fields) {
      auto key = f.key;
      while (key == "ts" || key == "level" || key == "logger" || key == "msg"
             || (key.starts_with('_') && j.contains(key)))
        key.insert(0, "_");
      if (is_sensitive_key(f.key)) {
        j[key] = masked;
        continue;
      }
      std::visit(
        [&](auto& v) {
          if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>)
            j[key] = safe_text(v);
          else
            j[key] = v;
        },
        f.value.get());
    }
    // Invalid UTF-8 is replaced rather than thrown on.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
};

/// Writes each formatted line as it is: the payload is the whole line.
class line_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    dest.append(msg.payload.data(), msg.payload.data() + msg.payload.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<line_formatter>();
  }
};

/// The writer thread's sink: passes lines on to the place `setup` chose,
/// and counts the barriers `flush` sends through the queue (empty lines:
/// every record's line ends in a newline).
class writer_sink final : public spdlog::sinks::sink {
 public:
  explicit writer_sink(std::shared_ptr<spdlog::sinks::dist_sink_mt> target)
      : target_(std::move(target)) {}

  void log(const spdlog::details::log_msg& msg) override {
    if (msg.payload.size() == 0) {
      target_->flush();
      {
        std::lock_guard guard{mtx_};
        ++barriers_passed_;
      }
      passed_.notify_all();
      return;
    }
    target_->log(msg);
  }

  void flush() override { target_->flush(); }
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

  /// Waits until barrier number `n` has passed, at most `limit`.
  bool wait_for_barrier(uint64_t n, std::chrono::milliseconds limit) {
    std::unique_lock guard{mtx_};
    return passed_.wait_for(guard, limit,
                            [&] { return barriers_passed_ >= n; });
  }

 private:
  std::shared_ptr<spdlog::sinks::dist_sink_mt> target_;
  std::mutex mtx_;
  std::condition_variable passed_;
  uint64_t barriers_passed_ = 0;
};

/// Every logger's sink: formats the record on the caller's thread (where
/// its fields are) and queues the line for the writer thread, so that no
/// CAF or I/O thread waits for a write to a file or a terminal.
class queue_sink final : public spdlog::sinks::sink {
 public:
  explicit queue_sink(std::shared_ptr<spdlog::async_logger> writer)
      : writer_(std::move(writer)) {}

  void log(const spdlog::details::log_msg& msg) override {
    auto line = record_formatter::line(msg, format_.load());
    writer_->log(msg.time, {}, msg.level,
                 spdlog::string_view_t{line.data(), line.size()});
  }

  /// log::flush waits for the writer; a logger's own flush needs nothing.
  void flush() override {}
  void set_pattern(const std::string&) override {}
  void set_formatter(std::unique_ptr<spdlog::formatter>) override {}

  void use(log::format f) { format_ = f; }

 private:
  std::shared_ptr<spdlog::async_logger> writer_;
  std::atomic<log::format> format_{log::format::text};
};

// -- the loggers
// ---------------------------------------------------------------

spdlog::sink_ptr make_sink(const log_options& opts) {
  spdlog::sink_ptr sink;
  if (opts.file.empty())
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  else
    sink
      = std::make_shared<spdlog::sinks::basic_file_sink_mt>(opts.file, false);
  sink->set_formatter(std::make_unique<line_formatter>());
  return sink;
}

/// Lines waiting for the writer thread at most. A logger that finds the
/// queue full waits for room (spdlog's `block` policy) rather than drop a
/// line: the writer falls that far behind only when its file or terminal
/// stalls, and then writing synchronously would wait as long.
constexpr size_t queue_lines = 8192;

/// Starts the writer thread with every signal blocked, so that signals go
/// to the threads that wait for them (`troupe node start` takes SIGTERM in
/// sigwait), whichever thread logged first.
std::shared_ptr<spdlog::details::thread_pool> start_writer_thread() {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  auto pool = std::make_shared<spdlog::details::thread_pool>(queue_lines, 1);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return pool;
}

/// Every logger formats records on the caller's thread and queues the
/// lines (queue_sink) for one writer thread (an spdlog async logger), which
/// writes them to one distributing sink whose target `setup` swaps and
/// flushes after each line, so that a process killed outright loses at most
/// the lines still queued. Loggers are never removed, so raw pointers to
/// them stay valid.
struct registry {
  registry()
      : sink(std::make_shared<spdlog::sinks::dist_sink_mt>()),
        writer(std::make_shared<writer_sink>(sink)),
        pool(start_writer_thread()),
        writer_logger(std::make_shared<spdlog::async_logger>(
          "troupe.writer", writer, pool, spdlog::async_overflow_policy::block)),
        front(std::make_shared<queue_sink>(writer_logger)) {
    sink->set_sinks({make_sink(opts)});
    writer_logger->set_level(spdlog::level::trace);
    writer_logger->flush_on(spdlog::level::trace);
    // Lines still queued when the process exits normally are written.
    std::atexit([] { log::flush(); });
  }

  /// Returns once every line queued before the call is written and
  /// flushed (or after a few seconds, if the writer is stuck).
  void drain() {
    uint64_t n;
    {
      std::lock_guard guard{barrier_mtx};
      n = ++barriers_sent;
      writer_logger->log(spdlog::level::critical, spdlog::string_view_t{});
    }
    writer->wait_for_barrier(n, std::chrono::seconds{5});
  }

  spdlog::level::level_enum threshold(std::string_view name) const {
    auto it = opts.levels.find(name);
    return to_spdlog(it == opts.levels.end() ? opts.level : it->second);
  }

  spdlog::logger* find(std::string_view name) {
    {
      std::shared_lock guard{mtx};
      if (auto it = loggers.find(name); it != loggers.end())
        return it->second.get();
    }
    return get_or_create(name).get();
  }

  std::shared_ptr<spdlog::logger> get_or_create(std::string_view name) {
    std::unique_lock guard{mtx};
    if (auto it = loggers.find(name); it != loggers.end())
      return it->second;
    auto lg = std::make_shared<spdlog::logger>(std::string{name}, front);
    lg->set_level(threshold(name));
    loggers.emplace(std::string{name}, lg);
    return lg;
  }

  /// Where the writer thread writes (stderr, or the file).
  std::shared_ptr<spdlog::sinks::dist_sink_mt> sink;
  std::shared_ptr<writer_sink> writer;
  std::shared_ptr<spdlog::details::thread_pool> pool;
  std::shared_ptr<spdlog::async_logger> writer_logger;
  /// Every logger's sink.
  std::shared_ptr<queue_sink> front;
  /// Barriers in the order they are queued.
  std::mutex barrier_mtx;
  uint64_t barriers_sent = 0;
  std::shared_mutex mtx;
  log_options opts;
  std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
  bool default_logger_set = false;
};

// Never destroyed: records written from static destructors stay safe.
registry& the_registry() {
  static auto* r = new registry;
  return *r;
}

} // namespace

const std::vector<std::string>& known_loggers() {
  static const std::vector<std::string> names
    = {"node", "run", "control", "http", "store", "auth", "cluster"};
  return names;
}

std::string setup(const log_options& opts) {
  auto& r = the_registry();
  spdlog::sink_ptr sink;
  try {
    sink = make_sink(opts);
  } catch (const std::exception& e) {
    return "cannot open log file: " + std::string{e.what()};
  }
  for (auto& name : known_loggers())
    r.get_or_create(name);
  // Lines queued so far go where they were meant to.
  r.drain();
  std::unique_lock guard{r.mtx};
  r.opts = opts;
  r.sink->set_sinks({std::move(sink)});
  r.front->use(opts.format);
  for (auto& [name, lg] : r.loggers)
    lg->set_level(r.threshold(name));
  // Plain spdlog calls (spdlog::info) go the same way, as logger "troupe".
  if (!r.default_logger_set) {
    auto lg = std::make_shared<spdlog::logger>("troupe", r.front);
    spdlog::set_default_logger(lg);
    r.default_logger_set = true;
  }
  spdlog::default_logger_raw()->set_level(r.threshold("troupe"));
  return {};
}

std::shared_ptr<spdlog::logger> get(std::string_view name) {
  return the_registry().get_or_create(name);
}

bool enabled(std::string_view logger, level l) {
  return l != level::off
         && the_registry().find(logger)->should_log(to_spdlog(l));
}

void write(std::string_view logger, level l, std::string_view msg,
           std::span<const field> fields) {
  if (l == level::off)
    return;
  write(*the_registry().find(logger), l, msg, fields);
}

void write(spdlog::logger& logger, level l, std::string_view msg,
           std::span<const field> fields) {
  auto sl = to_spdlog(l);
  if (l == level::off || !logger.should_log(sl))
    return;
  fields_scope scope{fields};
  logger.log(sl, spdlog::string_view_t{msg.data(), msg.size()});
}

void flush() {
  the_registry().drain();
}

void shutdown() {
  auto& r = the_registry();
  r.drain();
  std::unique_lock guard{r.mtx};
  auto opts = r.opts;
  opts.file.clear();
  r.opts.file.clear();
  r.sink->set_sinks({make_sink(opts)});
}

} // namespace troupe::runtime::log
