// The query language of the tooling shell, for bulk questions about runs and
// nodes:
//
//   select runs where state = 'running' and age > 10m
//   select nodes where attempts > 3 order by attempts desc limit 20
//
// Grammar (keywords are case-insensitive; whitespace -- space, tab, CR, LF --
// is free between tokens; one trailing ';' is allowed):
//
//   query     := "select" table ["where" or]
//                ["order" "by" column ["asc" | "desc"]] ["limit" integer]
//   or        := and ("or" and)*
//   and       := not ("and" not)*
//   not       := "not" not | "(" or ")" | predicate
//   predicate := column cmp value
//              | column ["not"] "in" "(" value ("," value)* ")"
//              | column ["not"] ("like" | "ilike") string
//              | column "is" ["not"] "null"
//              | column                        (a boolean column only)
//   cmp       := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//   value     := string | number | duration | "true" | "false" | "null"
//   table, column := [A-Za-z_][A-Za-z0-9_]*, from the caller's schema
//   string    := 'single quoted', '' inside stands for one '
//   number    := -?[0-9]+(.[0-9]+)?
//   duration  := a number with units, no spaces: 500ms, 10m, 1h30m, 2d, 1.5s
//                (units ns us ms s m h d)
//   integer   := [0-9]+, at least 1
//
// Precedence: `not` binds tighter than `and`, `and` tighter than `or`, so
// `not a = 1 and b = 2 or c = 3` is `((not a = 1) and b = 2) or c = 3`.
//
// Types are checked against the schema when parsing: text columns compare
// with strings, number columns with numbers, duration columns with durations
// (never bare numbers, whose unit would be a guess), time columns with
// ISO 8601 timestamps written as strings ('2024-05-01', '2024-05-01T12:00Z',
// '2024-05-01 12:00:00.5+02:00'; UTC when no offset is given), boolean columns
// with true and false. `like` and `ilike` need a text column; `<` and friends
// a column that is not boolean. `null` compares with any column.
//
// Semantics, per row (a JSON object keyed by the column names as the schema
// spells them; a missing key is null):
// - `=` with null is true only for null (so `x = null` is `x is null`);
//   otherwise values are equal when they have the same type and value
//   (numbers by value: 3 = 3.0).
// - `<`, `<=`, `>`, `>=` order two numbers or two strings (bytewise); they
//   are false when the row's value is null or of another type.
// - `like` matches the whole string: `%` any run of characters, `_` one
//   character, `\` makes the next character literal. Case-sensitive; `ilike`
//   ignores ASCII case. False when the value is not a string.
// - Every negated form is exactly `not` of its positive form: `x != v` is
//   `not x = v`, `x not in (...)` is `not x in (...)`. Logic is two-valued,
//   unlike SQL: `state != 'done'` matches a row whose state is null.
// - `order by` sorts stably by the column; nulls come last in either
//   direction. Without it rows keep the caller's order. `limit` keeps the
//   first N rows after sorting.
//
// Limits: at most 4096 chars of text and 32 levels of nesting of `(` and
// `not`; both are parse errors, so neither parsing nor evaluation can exhaust
// the stack.

#pragma once

#include "runtime/query/fwd.hpp"
#include "runtime/query/query_error.hpp"
#include "runtime/query/schema.hpp"

#include <nlohmann/json_fwd.hpp>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime::query {

/// The longest query text accepted, in chars.
constexpr size_t max_query_length = 4096;

/// The deepest nesting of `(` and `not` accepted.
constexpr size_t max_nesting_depth = 32;

/// The sort of a query: a column and its direction.
struct order_by {
  std::string column;
  bool descending = false;
};

/// Parses and type-checks `text` against the tables of `schema`. On failure
/// returns nothing and sets `err` to the first problem in the text.
[[nodiscard]] std::optional<query>
parse_query(std::string_view text, const std::vector<struct table>& schema,
            query_error& err);

/// Returns whether `row` satisfies the query's condition (always true without
/// one). Order and limit play no part.
bool matches(const query& q, const nlohmann::json& row);

/// A parsed and type-checked query. Immutable and cheap to copy: copies share
/// the condition.
class query {
 public:
  // -- properties -------------------------------------------------------------

  /// Returns the name of the table, as the schema spells it.
  const std::string& table() const noexcept { return table_; }

  /// Returns every column the query reads (condition, then sort), each once,
  /// as the schema spells them: what a caller needs to fetch per row.
  const std::vector<std::string>& columns() const noexcept { return columns_; }

  /// Returns whether the query has a `where` clause.
  bool has_condition() const noexcept { return where_ != nullptr; }

  /// Returns the sort, if any.
  const std::optional<order_by>& order() const noexcept { return order_; }

  /// Returns the row limit, if any; always at least 1.
  std::optional<size_t> limit() const noexcept { return limit_; }

  // -- friends ----------------------------------------------------------------

  friend std::optional<query>
  parse_query(std::string_view text, const std::vector<struct table>& schema,
              query_error& err);

  friend bool matches(const query& q, const nlohmann::json& row);

 private:
  query() = default;

  std::string table_;
  std::vector<std::string> columns_;
  std::shared_ptr<const detail::condition> where_;
  std::optional<order_by> order_;
  std::optional<size_t> limit_;
};

/// Returns the rows that match, sorted and cut as the query says.
std::vector<nlohmann::json> run(const query& q,
                                std::vector<nlohmann::json> rows);

} // namespace troupe::runtime::query
