#pragma once

#include <string_view>

namespace troupe::runtime::query::detail {

/// Returns whether `pattern` matches all of `text`: `%` matches any run of
/// characters, `_` one UTF-8 character, `\` makes the next one literal. With
/// `ignore_case`, ASCII letters match either case. Linear in the product of
/// the lengths at worst; never recursive.
bool like_match(std::string_view text, std::string_view pattern,
                bool ignore_case);

} // namespace troupe::runtime::query::detail
