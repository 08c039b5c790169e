#pragma once

#include "runtime/model/workflow.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace troupe::runtime {

/// Returns whether `value` is of type `t`.
bool input_matches(input_type t, const nlohmann::json& value);

/// Parses a `--input name=value` value for `input` (null: undeclared): kept
/// as text for string inputs, read as JSON for typed ones, and for `any`
/// read as JSON when it is JSON, else kept as text.
nlohmann::json parse_input_text(const input_spec* input,
                                const std::string& text);

/// Checks `given` (a JSON object) against the workflow's inputs and returns
/// the run's inputs with defaults applied. Reports every unknown, missing
/// or mistyped input in `errors` (one message each) and returns nothing then.
std::optional<nlohmann::json> bind_inputs(const workflow_spec& spec,
                                          const nlohmann::json& given,
                                          std::vector<std::string>& errors);

} // namespace troupe::runtime
