#include "tools/chaos/scenario.hpp"
#include "tools/chaos/schedule.hpp"
#include "tools/commands.hpp"

#include <nlohmann/json.hpp>

#include <iostream>

namespace troupe::tools {

/// Runs scenario `s` on its schedule `plan` (tools/cmd_chaos_run.cpp).
int run_chaos_scenario(const global_options& g, const chaos_options& c,
                       const chaos::scenario& s, const chaos::schedule& plan);

int run_chaos(const global_options& g, const chaos_options& c) {
  auto outcome = chaos::load_scenario_file(c.scenario);
  chaos::schedule plan;
  if (outcome.ok()) {
    auto why = chaos::make_schedule(*outcome.value,
                                    c.seed.value_or(chaos::default_seed), plan);
    if (!why.empty())
      outcome.errors.push_back({"faults", 0, 0, "too_many_faults", why});
  }
  if (!outcome.errors.empty()) {
    if (g.json) {
      auto errors = diagnostics_json(outcome.errors);
      std::cout << nlohmann::json{{"file", c.scenario},
                                  {"valid", false},
                                  {"errors", errors}}
                     .dump(2)
                << "\n";
    } else {
      for (auto& d : outcome.errors)
        std::cerr << d.to_string(c.scenario) << "\n";
      std::cerr << c.scenario << ": " << outcome.errors.size() << " error"
                << (outcome.errors.size() == 1 ? "" : "s") << "\n";
    }
    return exit_bad_input;
  }
  auto& s = *outcome.value;
  if (!c.dry_run)
    return run_chaos_scenario(g, c, s, plan);
  if (g.json) {
    auto out = chaos::to_json(plan);
    out["file"] = c.scenario;
    out["valid"] = true;
    out["name"] = s.name;
    out["members"] = s.cluster.members;
    out["runs"] = s.workload.total_runs();
    out["workload_end"] = config::format_duration(s.workload.end());
    out["deadline"] = config::format_duration(s.deadline);
    std::cout << out.dump(2) << "\n";
    return exit_ok;
  }
  std::cout << c.scenario << ": valid scenario"
            << (s.name.empty() ? "" : " '" + s.name + "'") << ", "
            << s.cluster.members << " member"
            << (s.cluster.members == 1 ? "" : "s") << ", "
            << s.workload.total_runs() << " runs over "
            << config::format_duration(s.workload.end()) << ", deadline "
            << config::format_duration(s.deadline) << "\n"
            << chaos::to_table(plan);
  return exit_ok;
}

} // namespace troupe::tools
