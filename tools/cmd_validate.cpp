#include "runtime/spec/workflow_loader.hpp"
#include "tools/commands.hpp"

#include <nlohmann/json.hpp>

#include <iostream>

namespace troupe::tools {

nlohmann::json diagnostics_json(const runtime::diagnostics& errors) {
  auto out = nlohmann::json::array();
  for (auto& d : errors)
    out.push_back({{"path", d.path},
                   {"line", d.line},
                   {"column", d.column},
                   {"code", d.code},
                   {"message", d.message}});
  return out;
}

int run_validate(const global_options& g,
                 const std::vector<std::string>& files) {
  bool all_valid = true;
  nlohmann::json report = nlohmann::json::array();
  for (auto& file : files) {
    auto outcome = runtime::load_workflow_file(file);
    all_valid = all_valid && outcome.ok();
    if (g.json) {
      auto errors = diagnostics_json(outcome.errors);
      nlohmann::json entry
        = {{"file", file}, {"valid", outcome.ok()}, {"errors", errors}};
      if (outcome.ok()) {
        entry["workflow"] = outcome.workflow->name;
        entry["nodes"] = outcome.workflow->nodes.size();
      }
      report.push_back(std::move(entry));
      continue;
    }
    if (outcome.ok()) {
      std::cout << file << ": valid (workflow '" << outcome.workflow->name
                << "', " << outcome.workflow->nodes.size() << " node"
                << (outcome.workflow->nodes.size() == 1 ? "" : "s") << ")\n";
      continue;
    }
    for (auto& d : outcome.errors)
      std::cerr << d.to_string(file) << "\n";
    std::cerr << file << ": " << outcome.errors.size() << " error"
              << (outcome.errors.size() == 1 ? "" : "s") << "\n";
  }
  if (g.json)
    std::cout << nlohmann::json{{"valid", all_valid}, {"files", report}}.dump(2)
              << "\n";
  return all_valid ? exit_ok : exit_bad_input;
}

} // namespace troupe::tools
