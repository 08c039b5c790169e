#pragma once

#include <nlohmann/json.hpp>

#include <compare>

namespace troupe::runtime::query::detail {

/// Returns whether a row's value equals a literal: null only null, numbers by
/// value, otherwise the same type and value.
bool values_equal(const nlohmann::json& a, const nlohmann::json& b);

/// Orders two numbers or two strings (bytewise); any other pair, and NaN, is
/// unordered.
std::partial_ordering order_values(const nlohmann::json& a,
                                   const nlohmann::json& b);

/// A total order for sorting rows by one column: booleans, then numbers
/// (NaN last among them), then strings, then anything else; nulls are not
/// ranked here, the caller places them.
std::weak_ordering sort_order(const nlohmann::json& a, const nlohmann::json& b);

} // namespace troupe::runtime::query::detail
