#include "tools/chaos/schedule.hpp"

#include <algorithm>
#include <iomanip>
#include <limits>
#include <sstream>

namespace troupe::chaos {

uint64_t seeded_random::below(uint64_t n) {
  // 2^64 mod n values at the top would make small remainders likelier;
  // drawing again when one comes keeps every remainder equally likely.
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t excess = (max % n + 1) % n;
  for (;;) {
    uint64_t r = engine_();
    if (excess == 0 || r <= max - excess)
      return r % n;
  }
}

namespace {

std::string params_of(const fault_spec& f) {
  std::string out;
  auto add = [&](const std::string& item) {
    out.append(out.empty() ? "" : " ").append(item);
  };
  if (f.restart_after)
    add("restart_after=" + config::format_duration(*f.restart_after));
  if (f.lasts)
    add("duration=" + config::format_duration(*f.lasts));
  if (f.delay)
    add("delay=" + config::format_duration(*f.delay));
  if (!f.error.empty())
    add("error=" + f.error);
  if (f.action == action::clock_jump)
    add("offset="
        + (f.offset < duration{0} ? "-" + config::format_duration(-f.offset)
                                  : "+" + config::format_duration(f.offset)));
  if (!f.members.empty()) {
    std::string sets;
    for (auto& set : f.members) {
      std::string one;
      for (auto& m : set)
        one.append(one.empty() ? "" : ",").append(m);
      sets.append(sets.empty() ? "" : "|").append(one);
    }
    add("members=" + sets);
  }
  return out;
}

} // namespace

std::string make_schedule(const scenario& s, uint64_t seed, schedule& out) {
  out.seed = seed;
  out.faults.clear();
  auto end = s.workload.end();
  for (size_t i = 0; i < s.faults.size(); ++i) {
    auto& f = s.faults[i];
    scheduled_fault entry;
    entry.fault = i;
    entry.action = f.action;
    entry.target = f.target;
    entry.params = params_of(f);
    if (f.at) {
      entry.at = *f.at;
      out.faults.push_back(entry);
      continue;
    }
    if (!f.every || *f.every <= duration{0})
      continue;
    for (auto t = *f.every; t < end; t += *f.every) {
      if (out.faults.size() >= max_scheduled_faults)
        return "the faults expand to more than "
               + std::to_string(max_scheduled_faults)
               + " entries; make `every` longer";
      entry.at = t;
      out.faults.push_back(entry);
    }
  }
  std::stable_sort(out.faults.begin(), out.faults.end(),
                   [](const scheduled_fault& a, const scheduled_fault& b) {
                     return a.at < b.at;
                   });
  seeded_random random{seed};
  auto members = s.cluster.member_names();
  auto etcd = s.cluster.etcd_names();
  for (auto& entry : out.faults) {
    if (entry.target.what != target::kind::random)
      continue;
    auto& names = entry.action == action::kill_etcd ? etcd : members;
    entry.chosen_at_random = true;
    entry.target = {target::kind::member, names[random.below(names.size())], 0};
  }
  return {};
}

nlohmann::json to_json(const schedule& s) {
  nlohmann::json faults = nlohmann::json::array();
  for (auto& f : s.faults) {
    nlohmann::json target;
    switch (f.target.what) {
    case target::kind::none: target = nullptr; break;
    case target::kind::member: target = f.target.name; break;
    case target::kind::random: target = "random"; break;
    case target::kind::leader_of:
      target = {{"leader_of", f.target.number}};
      break;
    case target::kind::owner_of:
      target = {{"owner_of", f.target.number}};
      break;
    }
    faults.push_back(
      {{"at_ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(f.at).count()},
       {"at", config::format_duration(f.at)},
       {"fault", f.fault},
       {"action", std::string{to_string(f.action)}},
       {"target", target},
       {"random", f.chosen_at_random},
       {"params", f.params}});
  }
  return {{"seed", s.seed}, {"faults", faults}};
}

std::string to_table(const schedule& s) {
  std::ostringstream out;
  out << "seed " << s.seed << ": " << s.faults.size() << " fault"
      << (s.faults.size() == 1 ? "" : "s") << " scheduled\n";
  std::vector<std::vector<std::string>> rows{
    {"AT", "FAULT", "ACTION", "TARGET", "PARAMS"}};
  for (auto& f : s.faults) {
    auto t = f.target.to_string();
    if (f.chosen_at_random)
      t += " (random)";
    rows.push_back({config::format_duration(f.at),
                    "faults[" + std::to_string(f.fault) + "]",
                    std::string{to_string(f.action)}, t, f.params});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c)
      width[c] = std::max(width[c], row[c].size());
  for (auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size())
        line += std::string(width[c] - row[c].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back();
    out << line << "\n";
  }
  return out.str();
}

} // namespace troupe::chaos
