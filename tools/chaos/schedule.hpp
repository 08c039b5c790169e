#pragma once

#include "tools/chaos/scenario.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace troupe::chaos {

/// The seed `troupe chaos` uses when none is given; printed with the
/// schedule so a run can be repeated.
inline constexpr uint64_t default_seed = 17;

/// Draws whole numbers in [0, n) from a 64-bit Mersenne Twister without the
/// standard distributions, whose results differ between standard libraries:
/// the same seed gives the same numbers everywhere.
class seeded_random {
 public:
  explicit seeded_random(uint64_t seed) : engine_(seed) {}

  /// Returns a number in [0, n); n must be above 0. Rejects the top values
  /// that would bias the remainder.
  uint64_t below(uint64_t n);

 private:
  std::mt19937_64 engine_;
};

/// One fault at one time, its target resolved as far as it can be before a
/// run: `random` becomes a name; `leader_of` and `owner_of` are resolved
/// when the fault fires.
struct scheduled_fault {
  /// From the scenario's start.
  duration at{0};
  /// Index of the fault in the scenario's `faults`.
  size_t fault = 0;
  chaos::action action = action::kill;
  /// The target after resolution (never `random`).
  chaos::target target;
  /// Whether the target was `random` in the scenario.
  bool chosen_at_random = false;
  /// The action's parameters as text, e.g. `restart_after=2s`.
  std::string params;
};

/// A scenario's faults in time order.
struct schedule {
  uint64_t seed = default_seed;
  std::vector<scheduled_fault> faults;
};

/// Most entries a schedule may hold once `every` is expanded.
inline constexpr size_t max_scheduled_faults = 100'000;

/// Expands `every` into times from one interval after the start up to (not
/// including) the workload's end, resolves `random` targets with a
/// generator seeded by `seed`, and sorts by time (faults at the same time
/// keep the scenario's order). Draws happen in the sorted order, so the same
/// scenario and seed give the same schedule. Returns an error message when
/// the expansion would exceed max_scheduled_faults, else an empty string.
std::string make_schedule(const scenario& s, uint64_t seed, schedule& out);

/// Returns the schedule as a JSON object: seed, and a list of faults.
nlohmann::json to_json(const schedule& s);

/// Returns the schedule as a text table, with the seed above it.
std::string to_table(const schedule& s);

} // namespace troupe::chaos
