#pragma once

#include "actors/node/embedded_node.hpp"
#include "config/loader.hpp"
#include "runtime/model/workflow.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

namespace troupe::tools {

/// Binds a run's inputs from `--input name=value` flags (typed by the
/// workflow's declarations) over an `--inputs-file` (JSON or YAML); nothing,
/// with every problem in `errors`, when they do not fit the workflow.
std::optional<nlohmann::json> bind_cli_inputs(
  const runtime::workflow_spec& spec, const std::vector<std::string>& inputs,
  const std::string& inputs_file, std::vector<std::string>& errors);

/// The embedded node's options from configuration; node-wide notices go to
/// standard error.
actors::embedded_node::options node_options(const config::settings& s);

} // namespace troupe::tools
