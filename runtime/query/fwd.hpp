#pragma once

#include <cstdint>

namespace troupe::runtime::query {

enum class column_type : uint8_t;

struct column;
struct table;
struct query_error;
struct order_by;

class query;

namespace detail {

struct condition;

} // namespace detail

} // namespace troupe::runtime::query
