#pragma once

#include <cstddef>
#include <string>

namespace troupe::runtime::query {

/// Why a query's text was refused, and where.
struct query_error {
  /// One line saying what is wrong and, where it helps, what would be right.
  std::string message;
  /// The 1-based position in the text (counted in chars, i.e. bytes) of the
  /// problem; one past the last char when the text ended too soon.
  size_t column = 0;
};

} // namespace troupe::runtime::query
