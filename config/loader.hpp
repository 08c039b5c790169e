#pragma once

#include "config/schema.hpp"

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace troupe::config {

/// One effective configuration value and the layer it came from.
struct entry {
  value v;
  /// "default", "FILE:LINE", "env TROUPE_X_Y" or "flag --name".
  std::string source;
};

/// One problem found while loading configuration: where it was found, the key,
/// the offending value and what is allowed.
struct problem {
  std::string where;
  std::string key;
  std::string value;
  std::string message;

  /// Returns "WHERE: KEY = VALUE: MESSAGE" (parts that are empty left out).
  std::string to_string() const;
};

/// A value set on the command line: `--set section.key=value` or a dedicated
/// flag such as `--data-dir`.
struct flag_override {
  std::string flag;
  std::string key;
  std::string value;
};

/// Where the layers come from. The built-in defaults always apply first.
struct load_options {
  /// Folder with `default.toml` and `<env>.toml`. Default: ./config.
  std::filesystem::path config_dir = "config";
  /// The environment name. Default: development (not explicit).
  std::string env_name = "development";
  /// Whether env_name was given explicitly (TROUPE_ENV): its file must exist.
  bool env_explicit = false;
  /// A file given with --config; it must exist.
  std::optional<std::filesystem::path> config_file;
  /// TROUPE_* environment variables, name to value.
  std::vector<std::pair<std::string, std::string>> environment;
  /// Command-line overrides, in order.
  std::vector<flag_override> flags;

  /// Fills config_dir, env_name and environment from this process's
  /// environment (TROUPE_CONFIG_DIR, TROUPE_ENV, TROUPE_*).
  static load_options from_process_environment();
};

/// The effective configuration: every key of the schema with its value.
class settings {
 public:
  /// Returns the entry for "section.key"; every schema key has one.
  const entry& at(std::string_view name) const;

  const std::string& get_string(std::string_view name) const;
  int64_t get_int(std::string_view name) const;
  bool get_bool(std::string_view name) const;
  duration get_duration(std::string_view name) const;
  const std::vector<std::string>& get_list(std::string_view name) const;

  /// The environment whose file was layered (e.g. "development").
  const std::string& env_name() const noexcept { return env_name_; }

  /// The layers that were read, lowest first, for display.
  const std::vector<std::string>& layers() const noexcept { return layers_; }

  // -- modifiers (used by the loader) -----------------------------------------

  void set(std::string name, value v, std::string source);
  void set_env_name(std::string name) { env_name_ = std::move(name); }
  void add_layer(std::string layer) { layers_.push_back(std::move(layer)); }

 private:
  std::map<std::string, entry, std::less<>> entries_;
  std::string env_name_;
  std::vector<std::string> layers_;
};

/// The result of loading: the settings and every problem found.
struct load_result {
  settings effective;
  std::vector<problem> problems;

  bool ok() const noexcept { return problems.empty(); }
};

/// Largest configuration file Troupe reads.
inline constexpr size_t max_config_file_bytes = 1 << 20;

/// Loads all layers, lowest first: built-in defaults, config_dir/default.toml,
/// config_dir/<env>.toml, the --config file, TROUPE_* variables, flags. Keeps
/// going after a problem so that every problem is reported at once.
load_result load(const load_options& opts);

/// Renders the settings as TOML with each value's layer as a comment. Secrets
/// are masked.
std::string render_toml(const settings& s);

/// Renders the settings as a JSON object {"section.key": {"value", "source"}}.
/// Secrets are masked.
std::string render_json(const settings& s);

} // namespace troupe::config
