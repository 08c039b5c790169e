#pragma once

#include "runtime/model/retry_policy.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
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
  bool required = false;
  std::optional<nlohmann::json> default_value;
};

/// One node of a workflow's DAG, with its policies resolved against the
/// workflow's defaults.
struct node_spec {
  std::string id;
  std::string kind;
  std::string description;
  /// Nodes that must finish before this one starts.
  std::vector<std::string> after;
  retry_policy retry;
  /// Per-attempt timeout; none means no limit.
  std::optional<duration> timeout;
  /// Limit on the node as a whole, from its first attempt's start across all
  /// attempts and backoffs; when it passes the node fails for good.
  std::optional<duration> schedule_to_close;
  /// The node that runs in this one's place when it fails for good (retries
  /// exhausted or a non-retryable error); its output stands in for this
  /// node's. Empty: none.
  std::string fallback;
  /// The kind's parameters as written (strings may hold templates).
  nlohmann::json params = nlohmann::json::object();
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

  /// Returns the node with `id`, or null.
  const node_spec* find_node(std::string_view id) const;

  /// Returns the node whose fallback `id` is, or null when `id` is not a
  /// fallback (a fallback runs only in place of that node).
  const node_spec* primary_of(std::string_view id) const;
};

} // namespace troupe::runtime
