#include "config/loader.hpp"

#include "config/cluster_check.hpp"
#include "config/suggest.hpp"

#include <nlohmann/json.hpp>
#include <toml.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <sstream>

extern char** environ;

namespace troupe::config {

namespace fs = std::filesystem;

// -- problem ------------------------------------------------------------------

std::string problem::to_string() const {
  std::string out = where;
  if (!key.empty())
    out += (out.empty() ? "" : ": ") + key;
  if (!value.empty())
    out += " = " + value;
  if (!message.empty())
    out += (out.empty() ? "" : ": ") + message;
  return out;
}

// -- load_options -------------------------------------------------------------

load_options load_options::from_process_environment() {
  load_options opts;
  for (char** e = environ; e && *e; ++e) {
    std::string_view kv{*e};
    auto eq = kv.find('=');
    if (eq == std::string_view::npos || !kv.starts_with("TROUPE_"))
      continue;
    auto name = std::string{kv.substr(0, eq)};
    auto val = std::string{kv.substr(eq + 1)};
    if (name == "TROUPE_ENV") {
      opts.env_name = val;
      opts.env_explicit = true;
    } else if (name == "TROUPE_CONFIG_DIR") {
      opts.config_dir = val;
    } else {
      opts.environment.emplace_back(std::move(name), std::move(val));
    }
  }
  std::sort(opts.environment.begin(), opts.environment.end());
  return opts;
}

// -- settings -----------------------------------------------------------------

const entry& settings::at(std::string_view name) const {
  auto i = entries_.find(name);
  if (i == entries_.end())
    throw std::logic_error("no configuration key " + std::string{name});
  return i->second;
}

const std::string& settings::get_string(std::string_view name) const {
  return std::get<std::string>(at(name).v);
}

int64_t settings::get_int(std::string_view name) const {
  return std::get<int64_t>(at(name).v);
}

bool settings::get_bool(std::string_view name) const {
  return std::get<bool>(at(name).v);
}

duration settings::get_duration(std::string_view name) const {
  return std::get<duration>(at(name).v);
}

const std::vector<std::string>&
settings::get_list(std::string_view name) const {
  return std::get<std::vector<std::string>>(at(name).v);
}

void settings::set(std::string name, value v, std::string source) {
  entries_[std::move(name)] = entry{std::move(v), std::move(source)};
}

// -- loading ------------------------------------------------------------------

namespace {

std::string shorten(std::string s) {
  constexpr size_t limit = 80;
  if (s.size() > limit)
    s = s.substr(0, limit) + "...";
  return s;
}

std::string render(const toml::value& v) {
  std::ostringstream out;
  out << v;
  auto s = out.str();
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.pop_back();
  return shorten(s);
}

/// Converts a TOML value to the key's type, or explains the mismatch.
std::optional<value> from_toml(const key_spec& spec, const toml::value& v,
                               std::string& error) {
  auto mismatch = [&] {
    error = "expected " + std::string{describe(spec.kind)};
    return std::nullopt;
  };
  switch (spec.kind) {
  case value_kind::string:
  case value_kind::path:
  case value_kind::choice:
  case value_kind::address:
  case value_kind::duration:
  case value_kind::free_space:
    if (!v.is_string())
      return mismatch();
    return parse_text(spec, v.as_string().str, error);
  case value_kind::integer:
    if (!v.is_integer())
      return mismatch();
    {
      value result = static_cast<int64_t>(v.as_integer());
      error = check_limits(spec, result);
      if (!error.empty())
        return std::nullopt;
      return result;
    }
  case value_kind::boolean:
    if (!v.is_boolean())
      return mismatch();
    return value{v.as_boolean()};
  case value_kind::string_list: {
    if (!v.is_array())
      return mismatch();
    std::vector<std::string> items;
    for (auto& item : v.as_array()) {
      if (!item.is_string())
        return mismatch();
      items.push_back(item.as_string().str);
    }
    value result = std::move(items);
    error = check_limits(spec, result);
    if (!error.empty())
      return std::nullopt;
    return result;
  }
  }
  return mismatch();
}

/// Reads a file whole, refusing what is not a small regular file.
std::optional<std::string> read_config_file(const fs::path& path,
                                            std::string& error) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    error = "file does not exist";
    return std::nullopt;
  }
  if (!fs::is_regular_file(status)) {
    error = "not a regular file";
    return std::nullopt;
  }
  auto size = fs::file_size(path, ec);
  if (ec) {
    error = "cannot read: " + ec.message();
    return std::nullopt;
  }
  if (size > max_config_file_bytes) {
    error = "file is " + std::to_string(size) + " bytes; the limit is "
            + std::to_string(max_config_file_bytes);
    return std::nullopt;
  }
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    error = "cannot open for reading";
    return std::nullopt;
  }
  std::string content{std::istreambuf_iterator<char>{in}, {}};
  if (in.bad()) {
    error = "read failed";
    return std::nullopt;
  }
  return content;
}

/// Returns the first line of a toml11 error, which names the problem, plus
/// the "--> file" and line-number part that follows it.
std::string summarize_toml_error(const std::string& what) {
  // toml11 messages look like:
  //   [error] toml::parse_key_value_pair: missing key-value separator `=`
  //    --> file.toml
  //      |
  //    3 | oops
  //      |     ^- expected `=`
  std::istringstream in{what};
  std::string line, first, where;
  std::getline(in, first);
  if (first.starts_with("[error] "))
    first = first.substr(8);
  while (std::getline(in, line)) {
    auto bar = line.find(" | ");
    if (bar == std::string::npos)
      continue;
    auto num = line.substr(0, bar);
    num.erase(0, num.find_first_not_of(' '));
    if (!num.empty() && std::isdigit(static_cast<unsigned char>(num[0]))) {
      where = "line " + num;
      break;
    }
  }
  return where.empty() ? first : where + ": " + first;
}

class loader {
 public:
  explicit loader(const load_options& opts) : opts_(opts) {}

  load_result run() {
    apply_defaults();
    apply_file(opts_.config_dir / "default.toml", false);
    apply_env_file();
    if (opts_.config_file)
      apply_file(*opts_.config_file, true);
    apply_environment();
    apply_flags();
    check_cross_keys();
    result_.effective.set_env_name(opts_.env_name);
    return std::move(result_);
  }

 private:
  void report(std::string where, std::string key, std::string val,
              std::string message) {
    result_.problems.push_back(problem{std::move(where), std::move(key),
                                       std::move(val), std::move(message)});
  }

  void apply_defaults() {
    for (auto& spec : all_keys()) {
      std::string error;
      auto v = parse_text(spec, spec.default_text, error);
      if (!v)
        throw std::logic_error("bad built-in default for " + spec.name() + ": "
                               + error);
      result_.effective.set(spec.name(), std::move(*v), "default");
    }
    result_.effective.add_layer("built-in defaults");
  }

  void apply_env_file() {
    auto& name = opts_.env_name;
    bool valid
      = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
          return std::islower(static_cast<unsigned char>(c))
                 || std::isdigit(static_cast<unsigned char>(c)) || c == '-'
                 || c == '_';
        });
    if (!valid) {
      report("environment TROUPE_ENV", "", shorten(name),
             "must be a name of lower-case letters, digits, '-' and '_'");
      return;
    }
    apply_file(opts_.config_dir / (name + ".toml"), opts_.env_explicit);
  }

  void apply_file(const fs::path& path, bool required) {
    auto where = path.string();
    std::string error;
    std::error_code ec;
    if (!required && !fs::exists(path, ec))
      return;
    auto content = read_config_file(path, error);
    if (!content) {
      report(where, "", "", error);
      return;
    }
    toml::value root;
    try {
      std::istringstream in{*content};
      root = toml::parse(in, where);
    } catch (const std::exception& e) {
      report(where, "", "", "syntax error: " + summarize_toml_error(e.what()));
      return;
    }
    result_.effective.add_layer(where);
    if (!root.is_table())
      return;
    // Sorted so that problems come out in a stable order.
    std::vector<std::string> names;
    for (auto& [name, _] : root.as_table())
      names.push_back(name);
    std::sort(names.begin(), names.end());
    for (auto& section : names) {
      auto& body = root.as_table().at(section);
      auto at = where + ":" + std::to_string(body.location().line());
      if (std::find(all_sections().begin(), all_sections().end(), section)
          == all_sections().end()) {
        report(at, section, "",
               "unknown section; sections are " + join(all_sections())
                 + did_you_mean(section, all_sections()));
        continue;
      }
      if (!body.is_table()) {
        report(at, section, render(body),
               "expected a table [" + section + "] of keys");
        continue;
      }
      std::vector<std::string> keys;
      for (auto& [key, _] : body.as_table())
        keys.push_back(key);
      std::sort(keys.begin(), keys.end());
      for (auto& key : keys) {
        auto& v = body.as_table().at(key);
        auto key_at = where + ":" + std::to_string(v.location().line());
        apply_toml_value(key_at, section, key, v);
      }
    }
  }

  void apply_toml_value(const std::string& where, const std::string& section,
                        const std::string& key, const toml::value& v) {
    auto* spec = find_key(section, key);
    if (!spec) {
      auto known = keys_of(section);
      report(where, section + "." + key, "",
             "unknown key; [" + section + "] has " + join(known)
               + did_you_mean(key, known));
      return;
    }
    std::string error;
    auto typed = from_toml(*spec, v, error);
    if (!typed) {
      report(where, spec->name(), spec->is_secret() ? "(secret)" : render(v),
             error);
      return;
    }
    result_.effective.set(spec->name(), std::move(*typed), where);
  }

  void apply_environment() {
    bool any = false;
    for (auto& [name, text] : opts_.environment) {
      // TROUPE_<SECTION>_<KEY>; other TROUPE_* names (TROUPE_NODE,
      // TROUPE_TOKEN, ...) belong to the CLI and are not configuration.
      auto rest = std::string_view{name}.substr(7);
      auto underscore = rest.find('_');
      if (underscore == std::string_view::npos)
        continue;
      std::string section, key;
      for (char c : rest.substr(0, underscore))
        section
          += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (char c : rest.substr(underscore + 1))
        key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (std::find(all_sections().begin(), all_sections().end(), section)
          == all_sections().end())
        continue;
      auto where = "environment " + name;
      auto* spec = find_key(section, key);
      if (!spec) {
        std::vector<std::string> names;
        for (auto& k : keys_of(section)) {
          std::string upper = "TROUPE_";
          for (char c : section + "_" + k)
            upper
              += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          names.push_back(upper);
        }
        report(where, section + "." + key, "",
               "unknown key; [" + section + "] has " + join(keys_of(section))
                 + did_you_mean(name, names));
        continue;
      }
      set_from_text(where, "env " + name, *spec, text);
      any = true;
    }
    if (any)
      result_.effective.add_layer("environment TROUPE_*");
  }

  void apply_flags() {
    for (auto& f : opts_.flags) {
      auto where = "flag " + f.flag;
      auto dot = f.key.find('.');
      auto* spec = dot == std::string::npos
                     ? nullptr
                     : find_key(f.key.substr(0, dot), f.key.substr(dot + 1));
      if (!spec) {
        std::vector<std::string> names;
        for (auto& k : all_keys())
          names.push_back(k.name());
        report(where, f.key, "",
               "unknown key; keys are SECTION.KEY such as node.data_dir"
                 + did_you_mean(f.key, names));
        continue;
      }
      set_from_text(where, where, *spec, f.value);
    }
    if (!opts_.flags.empty())
      result_.effective.add_layer("command-line flags");
  }

  void set_from_text(const std::string& where, const std::string& source,
                     const key_spec& spec, const std::string& text) {
    std::string error;
    auto v = parse_text(spec, text, error);
    if (!v) {
      report(where, spec.name(),
             spec.is_secret() ? "(secret)" : "\"" + shorten(text) + "\"",
             error);
      return;
    }
    result_.effective.set(spec.name(), std::move(*v), source);
  }

  void check_cross_keys() {
    auto& s = result_.effective;
    auto hb = s.get_duration("cluster.heartbeat_interval");
    auto& ct = s.at("cluster.connection_timeout");
    if (std::get<duration>(ct.v) <= hb)
      report(
        ct.source, "cluster.connection_timeout", "\"" + to_text(ct.v) + "\"",
        "must exceed cluster.heartbeat_interval (" + format_duration(hb) + ")");
    auto& cert = s.at("tls.cert");
    auto& key = s.at("tls.key");
    if (to_text(cert.v).empty() != to_text(key.v).empty())
      report(to_text(cert.v).empty() ? key.source : cert.source,
             "tls.cert/tls.key", "",
             "set both tls.cert and tls.key, or neither");
    for (auto& p : check_cluster(s))
      result_.problems.push_back(std::move(p));
  }

  const load_options& opts_;
  load_result result_;
};

std::string mask(const key_spec& spec, const value& v) {
  if (spec.is_secret() && !to_text(v).empty())
    return "\"********\"";
  return to_toml(v);
}

} // namespace

load_result load(const load_options& opts) {
  return loader{opts}.run();
}

std::string render_toml(const settings& s) {
  std::ostringstream out;
  out << "# environment: " << s.env_name() << "\n";
  out << "# layers, lowest first: " << join(s.layers()) << "\n";
  std::string_view section;
  for (auto& spec : all_keys()) {
    if (spec.section != section) {
      section = spec.section;
      out << "\n[" << section << "]\n";
    }
    auto& e = s.at(spec.name());
    auto line = std::string{spec.key} + " = " + mask(spec, e.v);
    constexpr size_t column = 44;
    if (line.size() < column)
      line.resize(column, ' ');
    else
      line += "  ";
    out << line << "# " << e.source << "\n";
  }
  return out.str();
}

std::string render_json(const settings& s) {
  nlohmann::json root = nlohmann::json::object();
  for (auto& spec : all_keys()) {
    auto& e = s.at(spec.name());
    nlohmann::json v;
    if (spec.is_secret() && !to_text(e.v).empty())
      v = "********";
    else if (auto* n = std::get_if<int64_t>(&e.v))
      v = *n;
    else if (auto* b = std::get_if<bool>(&e.v))
      v = *b;
    else if (auto* l = std::get_if<std::vector<std::string>>(&e.v))
      v = *l;
    else
      v = to_text(e.v);
    root[spec.name()] = {{"value", v}, {"source", e.source}};
  }
  nlohmann::json out = {
    {"environment", s.env_name()}, {"layers", s.layers()}, {"settings", root}};
  return out.dump(2);
}

} // namespace troupe::config
