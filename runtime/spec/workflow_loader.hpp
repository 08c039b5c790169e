#pragma once

#include "runtime/model/workflow.hpp"
#include "runtime/spec/diagnostic.hpp"
#include "runtime/spec/kind_registry.hpp"

#include <filesystem>
#include <optional>
#include <string_view>

namespace troupe::runtime {

/// A workflow read from text: the definition when it is valid, else every
/// problem found.
struct load_outcome {
  std::optional<workflow_spec> workflow;
  diagnostics errors;

  bool ok() const noexcept { return workflow.has_value(); }
};

/// Most nodes one workflow may declare.
inline constexpr size_t max_workflow_nodes = 10'000;

/// Parses YAML or JSON text and checks everything that can be checked
/// before a run: syntax, fields, kinds and their parameters, `after`
/// references and cycles, templates, durations and retry values.
load_outcome parse_workflow(std::string_view text, const kind_registry& kinds
                                                   = kind_registry::global());

/// Reads `file` (at most 10 MiB) and parses it with `parse_workflow`.
load_outcome load_workflow_file(const std::filesystem::path& file,
                                const kind_registry& kinds
                                = kind_registry::global());

} // namespace troupe::runtime
