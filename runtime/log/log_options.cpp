#include "runtime/log/log_options.hpp"

#include "config/loader.hpp"
#include "config/suggest.hpp"

#include <array>

namespace troupe::runtime::log {

namespace {

constexpr std::array<std::string_view, 6> level_names
  = {"trace", "debug", "info", "warn", "error", "off"};

} // namespace

std::string_view to_string(level l) {
  auto i = static_cast<size_t>(l);
  return i < level_names.size() ? level_names[i] : "unknown";
}

std::optional<level> parse_level(std::string_view text) {
  for (size_t i = 0; i < level_names.size(); ++i)
    if (level_names[i] == text)
      return static_cast<level>(i);
  return std::nullopt;
}

std::string
parse_logger_levels(const std::vector<std::string>& entries,
                    std::map<std::string, level, std::less<>>& out) {
  std::vector<std::string> names(level_names.begin(), level_names.end());
  for (auto& entry : entries) {
    auto eq = entry.find('=');
    if (eq == 0 || eq == std::string::npos)
      return "entry \"" + entry + "\": expected LOGGER=LEVEL, e.g. "
             + "control=debug";
    auto name = entry.substr(0, eq);
    auto text = entry.substr(eq + 1);
    auto l = parse_level(text);
    if (!l)
      return "entry \"" + entry + "\": \"" + text + "\" must be one of "
             + config::join(names) + config::did_you_mean(text, names);
    out[name] = *l;
  }
  return {};
}

std::optional<log_options> options_from(const config::settings& s,
                                        std::string& error) {
  log_options opts;
  auto l = parse_level(s.get_string("log.level"));
  if (!l) {
    error = "log.level: unknown level \"" + s.get_string("log.level") + "\"";
    return std::nullopt;
  }
  opts.level = *l;
  auto& f = s.get_string("log.format");
  if (f == "text")
    opts.format = format::text;
  else if (f == "json")
    opts.format = format::json;
  else {
    error = "log.format: unknown format \"" + f + "\"";
    return std::nullopt;
  }
  opts.file = s.get_string("log.file");
  if (auto why = parse_logger_levels(s.get_list("log.levels"), opts.levels);
      !why.empty()) {
    error = "log.levels: " + why;
    return std::nullopt;
  }
  return opts;
}

} // namespace troupe::runtime::log
