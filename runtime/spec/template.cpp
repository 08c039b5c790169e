#include "runtime/spec/template.hpp"

#include <cctype>

namespace troupe::runtime {

bool template_string::has_expressions() const noexcept {
  for (auto& s : segments)
    if (s.is_expression())
      return true;
  return false;
}

bool template_string::is_single_expression() const noexcept {
  return segments.size() == 1 && segments.front().is_expression();
}

namespace {

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
}

bool is_space(char c) {
  return c == ' ' || c == '\t';
}

} // namespace

std::optional<template_string> parse_template(std::string_view text,
                                              template_error& error) {
  template_string result;
  size_t pos = 0;
  while (pos < text.size()) {
    auto open = text.find("{{", pos);
    if (open == std::string_view::npos) {
      result.segments.push_back({std::string{text.substr(pos)}, {}, pos});
      break;
    }
    if (open > pos)
      result.segments.push_back(
        {std::string{text.substr(pos, open - pos)}, {}, pos});
    auto close = text.find("}}", open + 2);
    if (close == std::string_view::npos) {
      error = {"'{{' is never closed with '}}'", open};
      return std::nullopt;
    }
    auto inner = text.substr(open + 2, close - open - 2);
    size_t begin = 0;
    while (begin < inner.size() && is_space(inner[begin]))
      ++begin;
    size_t end = inner.size();
    while (end > begin && is_space(inner[end - 1]))
      --end;
    auto expr = inner.substr(begin, end - begin);
    auto expr_offset = open + 2 + begin;
    if (expr.empty()) {
      error = {"empty expression '{{ }}'", open};
      return std::nullopt;
    }
    if (expr.find("{{") != std::string_view::npos) {
      error = {"'{{' inside an expression", expr_offset + expr.find("{{")};
      return std::nullopt;
    }
    template_segment seg{std::string{expr}, {}, open};
    size_t start = 0;
    for (size_t i = 0; i <= expr.size(); ++i) {
      if (i == expr.size() || expr[i] == '.') {
        if (i == start) {
          error = {"empty name in path '" + std::string{expr} + "'",
                   expr_offset + i};
          return std::nullopt;
        }
        seg.path.emplace_back(expr.substr(start, i - start));
        start = i + 1;
      } else if (!is_name_char(expr[i])) {
        error = {"unexpected character '" + std::string(1, expr[i])
                   + "' in path '" + std::string{expr}
                   + "'; a path is names joined by dots, e.g. inputs.x",
                 expr_offset + i};
        return std::nullopt;
      }
    }
    result.segments.push_back(std::move(seg));
    pos = close + 2;
  }
  return result;
}

} // namespace troupe::runtime
