#pragma once

#include "runtime/model/retry_policy.hpp"
#include "runtime/spec/expression.hpp"

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace troupe::runtime {

/// The JSON type an input must have.
enum class input_type : uint8_t {
  any,
  string,
  integer,
  number,
  boolean,
  object,
  array,
};

/// One declared input of a workflow.
struct input_spec {
  std::string name;
  input_type type = input_type::any;
  /// Whether a submission must give it: an input without a default is
  /// required unless it says `required: false` (then it reads as null when
  /// not given).
  bool required = false;
  std::optional<nlohmann::json> default_value;
};

/// When a node with several `after` nodes runs, given how they ended.
enum class trigger_rule : uint8_t {
  all_success, ///< All completed; skipped if any was skipped. The default.
  all_done,    ///< All completed or skipped.
  one_success, ///< One completed (at once); skipped if all were skipped.
};

/// A circuit breaker on a node. Nodes with the same key (in any run on the
/// node) share one breaker; the first to use a key sets its parameters.
struct circuit_breaker_spec {
  std::string key;
  /// Opens after this many failures within `window`. Default: 5.
  int32_t failure_threshold = 5;
  /// Or when at least `min_calls` calls in `window` failed at this rate
  /// (0 to 1); none: only the threshold counts.
  std::optional<double> error_rate;
  /// Default: 10.
  int32_t min_calls = 10;
  /// Default: 60s.
  duration window = std::chrono::seconds{60};
  /// How long it stays open before letting calls try again. Default: 30s.
  duration reset_timeout = std::chrono::seconds{30};
  /// Calls let through while half-open. Default: 1.
  int32_t half_open_max_calls = 1;
};

/// A limit on how many executions with the same key run at once across
/// all runs on the node.
struct concurrency_spec {
  /// A template (e.g. "{{ inputs.customer }}"), resolved per attempt.
  std::string key;
  int32_t limit = 1;
};

/// One case of a switch node: when `condition` holds, the `go_to` nodes run.
struct switch_case {
  std::string when;
  std::shared_ptr<const expression> condition;
  std::vector<std::string> go_to;
};

/// One node of a workflow's DAG, with its policies resolved against the
/// workflow's defaults.
struct node_spec {
  std::string id;
  std::string kind;
  std::string description;
  /// Nodes that must finish before this one starts.
  std::vector<std::string> after;
  trigger_rule trigger = trigger_rule::all_success;
  /// A switch node's cases, in order (the first that holds is taken), and
  /// the nodes that run when none holds. Every node named in them runs after
  /// the switch; those of the cases not taken are skipped.
  std::vector<switch_case> cases;
  std::vector<std::string> default_goto;
  retry_policy retry;
  /// Per-attempt timeout; none means no limit.
  std::optional<duration> timeout;
  std::optional<circuit_breaker_spec> circuit_breaker;
  std::optional<concurrency_spec> concurrency;
  /// Where its attempts run in a cluster: "local", "spread" or
  /// "least_loaded"; empty: the cluster's default (cluster.placement). A
  /// node alone runs everything itself.
  std::string placement;
  /// Labels a member must have (`on: {label: value}`) to run its attempts.
  std::map<std::string, std::string> on;
  /// A map node: the list to run over (a template or a list), the node run
  /// once per item, and how many items run at once.
  nlohmann::json map_items;
  std::shared_ptr<const node_spec> map_node;
  int32_t map_concurrency = 16;
  /// Limit on the node as a whole, from its first attempt's start across all
  /// attempts and backoffs; when it passes the node fails for good.
  std::optional<duration> schedule_to_close;
  /// The node that runs in this one's place when it fails for good (retries
  /// exhausted or a non-retryable error); its output stands in for this
  /// node's. Empty: none.
  std::string fallback;
  /// The node that undoes this one's effect when the run fails after this
  /// node completed (a saga). Empty: none.
  std::string compensate;
  /// The kind's parameters as written (strings may hold templates).
  nlohmann::json params = nlohmann::json::object();
};

/// Lookups over a workflow's nodes by id and by edge, built once per parsed
/// workflow and shared by every run of it, so that no run scans all nodes
/// to find one.
struct workflow_index {
  /// Hashes ids given as any kind of string, without copying them.
  struct id_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const noexcept {
      return std::hash<std::string_view>{}(s);
    }
  };
  /// Each node's place in `workflow_spec::nodes`, by id.
  std::unordered_map<std::string, uint32_t, id_hash, std::equal_to<>> position;
  /// For each node, the nodes that list it in `after`, in file order.
  std::vector<std::vector<uint32_t>> dependents;
  /// For each node, the node it is the fallback of; -1: none.
  std::vector<int32_t> primary;
  /// For each node, the node it compensates; -1: none.
  std::vector<int32_t> compensates;
};

/// A validated workflow definition.
struct workflow_spec {
  std::string name;
  std::string version;
  std::string description;
  std::vector<input_spec> inputs;
  /// Most nodes of one run executing at once. Default: 16.
  int32_t max_concurrency = 16;
  /// Limit on the whole run from its submission; none means no limit.
  std::optional<duration> timeout;
  /// Nodes in file order.
  std::vector<node_spec> nodes;
  /// Workflow outputs: name and value (strings may hold templates), in file
  /// order.
  std::vector<std::pair<std::string, nlohmann::json>> outputs;
  /// Set by `build_index` (the loader calls it); null in a spec put together
  /// by hand, whose lookups then scan the nodes.
  std::shared_ptr<const workflow_index> index;

  /// Builds `index` from the nodes as they are now.
  void build_index();

  /// Returns whether `index` is set and matches the nodes.
  bool indexed() const noexcept {
    return index && index->primary.size() == nodes.size();
  }

  /// Returns the place of node `id` in `nodes`, or -1.
  int32_t position_of(std::string_view id) const;

  /// Returns the node with `id`, or null.
  const node_spec* find_node(std::string_view id) const;

  /// Returns the node whose fallback `id` is, or null when `id` is not a
  /// fallback (a fallback runs only in place of that node).
  const node_spec* primary_of(std::string_view id) const;

  /// Returns the node that `id` compensates, or null.
  const node_spec* compensated_by(std::string_view id) const;

  /// Returns whether `id` runs only when called on (a fallback or a
  /// compensation), never by its place in the DAG.
  bool is_standby(std::string_view id) const {
    return primary_of(id) || compensated_by(id);
  }

  /// Builds the index of `nodes` (whatever `index` holds).
  workflow_index make_index() const;
};

} // namespace troupe::runtime
