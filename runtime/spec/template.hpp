#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime {

/// One piece of a template string: literal text, or an expression `{{ path }}`
/// naming a value by its dotted path (`inputs.x`, `nodes.a.output.field.0`).
struct template_segment {
  /// The literal text, or the expression's source text (trimmed).
  std::string text;
  /// The expression's path segments; empty for literal text.
  std::vector<std::string> path;
  /// Byte offset of the segment in the template string.
  size_t offset = 0;

  bool is_expression() const noexcept { return !path.empty(); }
};

/// A string parsed into literal text and `{{ ... }}` expressions.
///
/// Grammar: an expression is `{{`, optional spaces, a path, optional spaces,
/// `}}`. A path is names separated by dots; a name is letters, digits, `_`
/// and `-` (digits alone index a list). Text outside `{{ }}` is literal.
struct template_string {
  std::vector<template_segment> segments;

  /// Returns whether the string holds at least one expression.
  bool has_expressions() const noexcept;

  /// Returns whether the whole string is exactly one expression, so that it
  /// stands for a value of any JSON type rather than for text.
  bool is_single_expression() const noexcept;
};

/// An error in a template: what is wrong and the byte offset where.
struct template_error {
  std::string message;
  size_t offset = 0;
};

/// Parses `text`; on failure returns nothing and fills `error`.
std::optional<template_string> parse_template(std::string_view text,
                                              template_error& error);

} // namespace troupe::runtime
