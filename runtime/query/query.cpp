#include "runtime/query/query.hpp"

#include "runtime/query/detail/condition.hpp"
#include "runtime/query/detail/like.hpp"
#include "runtime/query/detail/values.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace troupe::runtime::query {

namespace {

using json = nlohmann::json;
using detail::condition;
using detail::predicate_op;

/// Returns the value of `column` in `row`; null when the row has none.
const json& field(const json& row, const std::string& column) {
  static const json null_value;
  if (!row.is_object())
    return null_value;
  auto it = row.find(column);
  return it == row.end() ? null_value : *it;
}

bool like(const json& v, const json& pattern, bool ignore_case) {
  return v.is_string()
         && detail::like_match(v.get_ref<const std::string&>(),
                               pattern.get_ref<const std::string&>(),
                               ignore_case);
}

bool contains(const json& list, const json& v) {
  return std::any_of(list.begin(), list.end(), [&v](const json& x) {
    return detail::values_equal(v, x);
  });
}

bool test(const condition& c, const json& row) {
  auto& v = field(row, c.column);
  switch (c.op) {
  case predicate_op::eq: return detail::values_equal(v, c.value);
  case predicate_op::ne: return !detail::values_equal(v, c.value);
  case predicate_op::lt: return detail::order_values(v, c.value) < 0;
  case predicate_op::le: return detail::order_values(v, c.value) <= 0;
  case predicate_op::gt: return detail::order_values(v, c.value) > 0;
  case predicate_op::ge: return detail::order_values(v, c.value) >= 0;
  case predicate_op::in: return contains(c.value, v);
  case predicate_op::not_in: return !contains(c.value, v);
  case predicate_op::like: return like(v, c.value, false);
  case predicate_op::not_like: return !like(v, c.value, false);
  case predicate_op::ilike: return like(v, c.value, true);
  case predicate_op::not_ilike: return !like(v, c.value, true);
  case predicate_op::is_null: return v.is_null();
  case predicate_op::is_not_null: return !v.is_null();
  case predicate_op::is_true: return v.is_boolean() && v.get<bool>();
  }
  return false;
}

/// Evaluates `c`; the parser bounds its depth.
bool evaluate(const condition& c, const json& row) {
  switch (c.what) {
  case condition::kind::predicate: return test(c, row);
  case condition::kind::not_: return !evaluate(c.children.front(), row);
  case condition::kind::and_:
    return std::all_of(c.children.begin(), c.children.end(),
                       [&row](const condition& x) { return evaluate(x, row); });
  case condition::kind::or_:
    return std::any_of(c.children.begin(), c.children.end(),
                       [&row](const condition& x) { return evaluate(x, row); });
  }
  return false;
}

} // namespace

bool matches(const query& q, const json& row) {
  return !q.where_ || evaluate(*q.where_, row);
}

std::vector<json> run(const query& q, std::vector<json> rows) {
  auto kept = std::remove_if(rows.begin(), rows.end(), [&q](const json& row) {
    return !matches(q, row);
  });
  rows.erase(kept, rows.end());
  if (auto& order = q.order()) {
    auto& column = order->column;
    bool descending = order->descending;
    std::stable_sort(rows.begin(), rows.end(),
                     [&column, descending](const json& a, const json& b) {
                       auto& x = field(a, column);
                       auto& y = field(b, column);
                       // Nulls last in either direction.
                       if (x.is_null() || y.is_null())
                         return !x.is_null() && y.is_null();
                       auto o = detail::sort_order(x, y);
                       return descending ? o > 0 : o < 0;
                     });
  }
  if (auto limit = q.limit(); limit && rows.size() > *limit)
    rows.resize(*limit);
  return rows;
}

} // namespace troupe::runtime::query
