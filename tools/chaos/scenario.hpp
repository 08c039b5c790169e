#pragma once

#include "config/duration.hpp"
#include "runtime/spec/diagnostic.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::chaos {

using config::duration;

/// The faults a scenario can inject.
enum class action {
  kill,        ///< SIGKILL a member, then restart it after `restart_after`.
  stop,        ///< SIGSTOP a member (SIGCONT after `duration`, if given).
  cont,        ///< SIGCONT a stopped member.
  partition,   ///< Cut sets of members (and etcd) from each other.
  slow_disk,   ///< Delay each write of one member's store.
  fail_disk,   ///< Fail the writes of one member's store.
  crash_actor, ///< Crash the actor of one run (the shell's crash).
  kill_etcd,   ///< SIGKILL one etcd member, then restart it.
  clock_jump,  ///< Shift one member's clock by `offset`.
};

/// Returns the action's name as scenario files spell it.
std::string_view to_string(action a);

/// Returns the action named `name`, or nothing.
std::optional<action> parse_action(std::string_view name);

/// What a fault acts on.
struct target {
  enum class kind {
    none,      ///< No target (a partition given by `members`).
    member,    ///< A member or etcd member by name (`m2`, `etcd1`).
    random,    ///< One chosen by the schedule's seeded generator.
    leader_of, ///< The leader of partition `number` when the fault fires.
    owner_of,  ///< The member running the `number`-th run (1-based).
  };
  kind what = kind::none;
  std::string name;
  int64_t number = 0;

  /// Returns the target as scenario files spell it: `m2`, `random`,
  /// `leader_of: 3`, `owner_of: 12`.
  std::string to_string() const;
};

/// One entry of `faults`: when, what, on what, and the action's parameters.
struct fault_spec {
  /// Exactly one of `at` and `every` is set.
  std::optional<duration> at;
  std::optional<duration> every;
  chaos::action action = action::kill;
  chaos::target target;
  /// kill, kill_etcd: how long the process stays down.
  std::optional<duration> restart_after;
  /// stop, partition, slow_disk, fail_disk: how long the fault lasts.
  std::optional<duration> lasts;
  /// slow_disk: the delay added to each write.
  std::optional<duration> delay;
  /// fail_disk: the error the store's writes return (`io_error`, `no_space`).
  std::string error;
  /// clock_jump: the shift, negative for backwards.
  duration offset{0};
  /// partition: the sets of members cut from each other; `etcd` names the
  /// etcd cluster.
  std::vector<std::vector<std::string>> members;
};

/// The local cluster a scenario runs on.
struct cluster_spec {
  int members = 3;
  int etcd_members = 1;
  int replication = 3;
  int min_insync = 2;
  /// Partitions of the cluster: cluster.partitions from `config`, else its
  /// default.
  int64_t partitions = 64;
  /// Config overrides, `section.key` to its text, checked against the
  /// schema.
  std::map<std::string, std::string> config;

  /// Returns the member names: m1..mN.
  std::vector<std::string> member_names() const;
  /// Returns the etcd member names: etcd1..etcdN.
  std::vector<std::string> etcd_names() const;
};

/// The runs a scenario submits.
struct workload_spec {
  /// Workflow files, resolved against the scenario file's folder.
  std::vector<std::filesystem::path> workflows;
  /// Inputs given to every run.
  nlohmann::json inputs = nlohmann::json::object();
  double runs_per_second = 1;
  /// Exactly one of `count` and `duration` is set.
  std::optional<int64_t> count;
  std::optional<duration> length;

  /// Returns when the last run is submitted, from the start.
  duration end() const;
  /// Returns how many runs the workload submits.
  int64_t total_runs() const;
};

/// A parsed scenario file.
struct scenario {
  std::string name;
  std::string description;
  cluster_spec cluster;
  workload_spec workload;
  std::vector<fault_spec> faults;
  /// When every accepted run must have ended, from the start.
  duration deadline{0};
};

/// A scenario read from text: the scenario when it is valid, else every
/// problem found.
struct scenario_outcome {
  std::optional<scenario> value;
  runtime::diagnostics errors;

  bool ok() const noexcept { return value.has_value(); }
};

/// Most faults one scenario may list, and most members and etcd members.
inline constexpr size_t max_faults = 1000;
inline constexpr int max_members = 9;

/// Parses a scenario (YAML or JSON) and checks everything that can be
/// checked before a run. `base` is the folder workflow files are relative
/// to; each is loaded and validated.
scenario_outcome parse_scenario(std::string_view text,
                                const std::filesystem::path& base);

/// Reads `file` and parses it with `parse_scenario`. A file that cannot be
/// read gives one error with code `unreadable`.
scenario_outcome load_scenario_file(const std::filesystem::path& file);

} // namespace troupe::chaos
