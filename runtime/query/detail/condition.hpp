#pragma once

#include "runtime/query/schema.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::runtime::query::detail {

/// What a predicate tests. Negated forms are separate so that evaluation
/// needs no extra nodes.
enum class predicate_op : uint8_t {
  eq,
  ne,
  lt,
  le,
  gt,
  ge,
  in,
  not_in,
  like,
  not_like,
  ilike,
  not_ilike,
  is_null,
  is_not_null,
  /// A bare boolean column: true when its value is `true`.
  is_true,
};

/// One node of a checked condition. Children are held by value; the parser
/// bounds the depth, so recursion over them is safe.
struct condition {
  enum class kind : uint8_t { predicate, not_, and_, or_ };

  kind what = kind::predicate;
  /// The column a predicate reads, as the schema spells it.
  std::string column;
  column_type type = column_type::text;
  predicate_op op = predicate_op::eq;
  /// The literal a predicate compares with, in the rows' representation
  /// (durations as milliseconds, times as nanoseconds); a list for `in`, the
  /// pattern for `like`.
  nlohmann::json value;
  /// The negated condition of `not`, the terms of `and` and `or`.
  std::vector<condition> children;
};

} // namespace troupe::runtime::query::detail
