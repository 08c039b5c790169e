#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime::query {

/// The type of a column, which decides the literals it compares with and how
/// its values appear in rows.
enum class column_type : uint8_t {
  text,     ///< JSON strings; compared with 'quoted' literals.
  number,   ///< JSON numbers; compared with numeric literals.
  duration, ///< JSON numbers of milliseconds; compared with `10m`, `500ms`.
  time,     ///< JSON numbers of nanoseconds since the Unix epoch; compared
            ///< with ISO 8601 timestamps such as '2024-05-01T12:00:00Z'.
  boolean,  ///< JSON true or false; compared with `true` and `false`.
};

/// Returns "text", "number", "duration", "time" or "boolean".
std::string_view to_string(column_type t);

/// One column a table offers: its name, type and a line of help for the
/// shell.
struct column {
  std::string name;
  column_type type = column_type::text;
  std::string doc;
};

/// One table a query may select from. Names of tables and columns are
/// matched case-insensitively and should not be keywords of the language.
struct table {
  std::string name;
  std::vector<column> columns;
};

} // namespace troupe::runtime::query
