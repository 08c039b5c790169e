#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime {

/// A parsed `when:` expression of a switch node (see expression.cpp for the
/// grammar). Immutable; share it freely.
class expression;

/// An error in an expression: what is wrong and the 0-based character
/// offset where it was found.
struct expression_error {
  size_t offset = 0;
  std::string message;
};

/// Parses `text`. On failure returns null and sets `error`.
std::shared_ptr<const expression> parse_expression(std::string_view text,
                                                   expression_error& error);

/// Every path the expression reads, as template paths are split
/// (`nodes.a.output.items[0]` -> {"nodes", "a", "output", "items", "0"}),
/// each with the offset where it starts: for validating references.
struct expression_path {
  std::vector<std::string> segments;
  size_t offset = 0;
};
std::vector<expression_path> expression_paths(const expression& e);

/// Resolves a path to a value, or nothing when it names no value.
using expression_lookup = std::function<std::optional<nlohmann::json>(
  const std::vector<std::string>& segments)>;

/// Evaluates `e` to true or false. On failure (a path that resolves to
/// nothing, an ordering between values of different types, `in` over a
/// non-container, ...) returns nothing and sets `error` to a message naming
/// the operand.
std::optional<bool> evaluate(const expression& e,
                             const expression_lookup& lookup,
                             std::string& error);

} // namespace troupe::runtime
