#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace troupe::runtime {

/// The values templates can name while a run executes.
struct template_scope {
  const nlohmann::json* inputs = nullptr;
  /// Node id to its output, for completed nodes.
  const nlohmann::json* outputs = nullptr;
  std::string run_id;
  std::string workflow;
  std::string node_id;
  int32_t attempt = 0;
  /// Inside a map's node: the item and its index.
  const nlohmann::json* item = nullptr;
  int64_t item_index = -1;
};

/// Resolves every template in `value` (strings, recursively in lists and
/// maps). A string that is exactly one expression becomes the named value
/// with its own type; other templated strings become text, with non-string
/// values written as JSON. On a reference that resolves to nothing returns
/// nothing and sets `error` to a readable reason.
std::optional<nlohmann::json> resolve_templates(const nlohmann::json& value,
                                                const template_scope& scope,
                                                std::string& error);

/// Resolves one dotted path (`{"nodes", "a", "output", "x"}`) as a template
/// naming it would; on failure returns nothing with `error` set.
std::optional<nlohmann::json> resolve_path(const std::vector<std::string>& path,
                                           const template_scope& scope,
                                           std::string& error);

} // namespace troupe::runtime
