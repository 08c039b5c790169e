#pragma once

#include "runtime/spec/diagnostic.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace troupe::runtime {

/// Line and column (1-based) of a value in its source file.
struct mark {
  int line = 0;
  int column = 0;
};

/// A parsed workflow file: its content as JSON values, plus where in the file
/// each value stood, keyed by dotted path.
struct document {
  nlohmann::json root;
  std::unordered_map<std::string, mark> marks;

  /// Returns the mark of `path`, or of its closest ancestor that has one.
  mark find_mark(std::string_view path) const;
};

/// Largest workflow file Troupe reads.
inline constexpr size_t max_workflow_bytes = 10 * 1024 * 1024;

/// Deepest nesting of lists and maps a workflow file may have.
inline constexpr int max_document_depth = 128;

/// Most values a workflow file may hold once YAML aliases are expanded.
inline constexpr size_t max_document_values = 500'000;

/// Parses YAML or JSON text (JSON is read as YAML flow style). Checks first
/// that the text is text: within the size limit, no NUL bytes, valid UTF-8.
/// On failure returns nothing and appends the reason to `errors`.
std::optional<document> parse_document(std::string_view text,
                                       diagnostics& errors);

/// Whether two workflow texts say the same thing: they are equal, or both
/// parse to the same content, whatever their comments, layout, key order,
/// quoting, anchors and aliases, or YAML against JSON. What an idempotency
/// key compares a resubmission's workflow with.
bool same_workflow_text(std::string_view a, std::string_view b);

/// Returns the dotted path of `key` under `parent`.
std::string join_path(std::string_view parent, std::string_view key);

/// Returns the path of item `index` of the list at `parent`: `parent[index]`.
std::string index_path(std::string_view parent, size_t index);

} // namespace troupe::runtime
