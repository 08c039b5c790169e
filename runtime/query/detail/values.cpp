#include "runtime/query/detail/values.hpp"

#include <cmath>
#include <cstdint>

namespace troupe::runtime::query::detail {

namespace {

using json = nlohmann::json;

// Integers and doubles compare exactly: converting the integer to double
// would make 2^53 + 1 equal to 2^53 as a double but not as an integer, and
// sorting needs equality to be transitive.

std::strong_ordering compare_int_double(int64_t i, double d) {
  if (d >= 9223372036854775808.0)
    return std::strong_ordering::less;
  if (d < -9223372036854775808.0)
    return std::strong_ordering::greater;
  auto whole = std::trunc(d);
  auto w = static_cast<int64_t>(whole);
  if (i != w)
    return i <=> w;
  if (d > whole)
    return std::strong_ordering::less;
  if (d < whole)
    return std::strong_ordering::greater;
  return std::strong_ordering::equal;
}

std::strong_ordering compare_uint_double(uint64_t u, double d) {
  if (d < 0)
    return std::strong_ordering::greater;
  if (d >= 18446744073709551616.0)
    return std::strong_ordering::less;
  auto whole = std::trunc(d);
  auto w = static_cast<uint64_t>(whole);
  if (u != w)
    return u <=> w;
  if (d > whole)
    return std::strong_ordering::less;
  return std::strong_ordering::equal;
}

std::strong_ordering reverse(std::strong_ordering o) {
  return 0 <=> o;
}

/// Orders two numbers, neither of them NaN.
std::strong_ordering compare_numbers(const json& a, const json& b) {
  if (a.is_number_float() && b.is_number_float()) {
    auto x = a.get<double>();
    auto y = b.get<double>();
    if (x < y)
      return std::strong_ordering::less;
    if (x > y)
      return std::strong_ordering::greater;
    return std::strong_ordering::equal;
  }
  if (a.is_number_float())
    return reverse(compare_numbers(b, a));
  // `a` is an integer from here on.
  if (b.is_number_float()) {
    auto d = b.get<double>();
    if (a.is_number_unsigned())
      return compare_uint_double(a.get<uint64_t>(), d);
    return compare_int_double(a.get<int64_t>(), d);
  }
  bool a_neg = !a.is_number_unsigned() && a.get<int64_t>() < 0;
  bool b_neg = !b.is_number_unsigned() && b.get<int64_t>() < 0;
  if (a_neg != b_neg)
    return a_neg ? std::strong_ordering::less : std::strong_ordering::greater;
  if (a_neg)
    return a.get<int64_t>() <=> b.get<int64_t>();
  return a.get<uint64_t>() <=> b.get<uint64_t>();
}

bool is_nan(const json& v) {
  return v.is_number_float() && std::isnan(v.get<double>());
}

/// Returns the rank of `v`'s kind in the sort order.
int sort_rank(const json& v) {
  if (v.is_boolean())
    return 0;
  if (v.is_number())
    return is_nan(v) ? 2 : 1;
  if (v.is_string())
    return 3;
  return 4;
}

} // namespace

bool values_equal(const json& a, const json& b) {
  if (a.is_null() || b.is_null())
    return a.is_null() && b.is_null();
  if (a.is_number() && b.is_number())
    return !is_nan(a) && !is_nan(b) && compare_numbers(a, b) == 0;
  if (a.is_string() && b.is_string())
    return a.get_ref<const std::string&>() == b.get_ref<const std::string&>();
  if (a.is_boolean() && b.is_boolean())
    return a.get<bool>() == b.get<bool>();
  return false;
}

std::partial_ordering order_values(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) {
    if (is_nan(a) || is_nan(b))
      return std::partial_ordering::unordered;
    return compare_numbers(a, b);
  }
  if (a.is_string() && b.is_string())
    return a.get_ref<const std::string&>() <=> b.get_ref<const std::string&>();
  return std::partial_ordering::unordered;
}

std::weak_ordering sort_order(const json& a, const json& b) {
  auto ra = sort_rank(a);
  auto rb = sort_rank(b);
  if (ra != rb)
    return ra <=> rb;
  switch (ra) {
  case 0: return a.get<bool>() <=> b.get<bool>();
  case 1: return compare_numbers(a, b);
  case 3:
    return a.get_ref<const std::string&>() <=> b.get_ref<const std::string&>();
  default: return std::weak_ordering::equivalent;
  }
}

} // namespace troupe::runtime::query::detail
