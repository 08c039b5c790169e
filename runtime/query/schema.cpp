#include "runtime/query/schema.hpp"

namespace troupe::runtime::query {

std::string_view to_string(column_type t) {
  switch (t) {
  case column_type::text: return "text";
  case column_type::number: return "number";
  case column_type::duration: return "duration";
  case column_type::time: return "time";
  case column_type::boolean: return "boolean";
  }
  return "unknown";
}

} // namespace troupe::runtime::query
