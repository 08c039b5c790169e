#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace troupe::runtime::query {

/// Why a query's text was refused, and where.
struct query_error {
  /// One line saying what is wrong and, where it helps, what would be right.
  std::string message;
  /// The 1-based position in the text (counted in chars, i.e. bytes) of the
  /// problem; one past the last char when the text ended too soon.
  size_t column = 0;
};

/// Returns "<message> (at column <column>)", for one-line output.
std::string to_string(const query_error& err);

/// Returns two lines, without a trailing newline: `text` and a caret under
/// the error's column. Control characters show as spaces so the caret stays
/// aligned; a long text is cut to a window around the column.
std::string render_error(std::string_view text, const query_error& err);

} // namespace troupe::runtime::query
