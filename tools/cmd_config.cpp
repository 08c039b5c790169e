#include "config/loader.hpp"
#include "config/suggest.hpp"
#include "runtime/spec/kind_registry.hpp"
#include "tools/commands.hpp"

#include <nlohmann/json.hpp>

#include <iostream>

namespace troupe::tools {

bool load_config(const global_options& g,
                 std::vector<config::flag_override> extra,
                 config::settings& out) {
  auto opts = config::load_options::from_process_environment();
  if (!g.config_file.empty())
    opts.config_file = g.config_file;
  std::vector<config::problem> problems;
  for (auto& s : g.sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos) {
      problems.push_back(
        {"flag --set", s, "", "expected --set section.key=value"});
      continue;
    }
    opts.flags.push_back({"--set", s.substr(0, eq), s.substr(eq + 1)});
  }
  for (auto& f : extra)
    opts.flags.push_back(std::move(f));
  auto result = config::load(opts);
  problems.insert(problems.end(), result.problems.begin(),
                  result.problems.end());
  for (auto& p : problems)
    std::cerr << "troupe: config: " << p.to_string() << "\n";
  if (!problems.empty())
    return false;
  out = std::move(result.effective);
  return true;
}

bool load_data_dir_config(const global_options& g, const std::string& data_dir,
                          config::settings& out) {
  std::vector<config::flag_override> flags;
  if (!data_dir.empty())
    flags.push_back({"--data-dir", "node.data_dir", data_dir});
  return load_config(g, std::move(flags), out);
}

int run_config_show(const global_options& g) {
  config::settings s;
  if (!load_config(g, {}, s))
    return exit_bad_input;
  std::cout << (g.json ? config::render_json(s) + "\n"
                       : config::render_toml(s));
  return exit_ok;
}

namespace {

std::string limits_of(const config::key_spec& k) {
  using config::value_kind;
  switch (k.kind) {
  case value_kind::integer:
    return std::to_string(k.min) + " to " + std::to_string(k.max);
  case value_kind::duration:
    return config::format_duration(std::chrono::milliseconds{k.min}) + " to "
           + config::format_duration(std::chrono::milliseconds{k.max});
  case value_kind::choice: {
    std::vector<std::string> c(k.choices.begin(), k.choices.end());
    return config::join(c, " | ");
  }
  default: return "";
  }
}

} // namespace

int run_config_keys(const global_options& g) {
  nlohmann::json all = nlohmann::json::array();
  for (auto& k : config::all_keys()) {
    if (g.json) {
      all.push_back({{"key", k.name()},
                     {"type", std::string{config::describe(k.kind)}},
                     {"default", std::string{k.default_text}},
                     {"limits", limits_of(k)},
                     {"secret", k.is_secret()},
                     {"doc", std::string{k.doc}}});
      continue;
    }
    std::cout << k.name() << " (" << config::describe(k.kind) << ", default \""
              << k.default_text << "\"";
    if (auto l = limits_of(k); !l.empty())
      std::cout << ", " << l;
    std::cout << ")\n    " << k.doc << "\n";
  }
  if (g.json)
    std::cout << all.dump(2) << "\n";
  return exit_ok;
}

int run_kinds(const global_options& g) {
  auto& registry = runtime::kind_registry::global();
  static const char* type_names[]
    = {"string",      "integer",    "number", "boolean", "duration",
       "string list", "string map", "choice", "any"};
  nlohmann::json all = nlohmann::json::array();
  for (auto& name : registry.names()) {
    auto* k = registry.find(name);
    nlohmann::json params = nlohmann::json::array();
    if (!g.json)
      std::cout << name << ": " << k->doc << "\n";
    for (auto& p : k->params) {
      auto type = type_names[static_cast<size_t>(p.type)];
      params.push_back({{"name", p.name},
                        {"type", type},
                        {"required", p.required},
                        {"doc", p.doc}});
      if (!g.json)
        std::cout << "    " << p.name << " (" << type
                  << (p.required ? ", required" : "") << "): " << p.doc << "\n";
    }
    all.push_back({{"kind", name},
                   {"doc", k->doc},
                   {"open_params", k->open_params},
                   {"params", params}});
  }
  if (g.json)
    std::cout << all.dump(2) << "\n";
  return exit_ok;
}

} // namespace troupe::tools
