#pragma once

#include <concepts>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace troupe::runtime::log {

/// The value of a log field: text, a whole number, a number or a flag.
class field_value {
 public:
  using variant_type = std::variant<std::string, int64_t, double, bool>;

  field_value(std::string s) : v_(std::move(s)) {}
  field_value(std::string_view s) : v_(std::string{s}) {}
  field_value(const char* s) : v_(std::string{s ? s : ""}) {}
  field_value(bool b) : v_(b) {}
  field_value(double d) : v_(d) {}

  /// Any integer; unsigned values past INT64_MAX are kept as text.
  template<std::integral T>
  requires(!std::same_as<T, bool> && !std::same_as<T, char>) field_value(T n) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(int64_t)) {
      if (n > static_cast<T>(std::numeric_limits<int64_t>::max())) {
        v_ = std::to_string(n);
        return;
      }
    }
    v_ = static_cast<int64_t>(n);
  }

  const variant_type& get() const noexcept { return v_; }

 private:
  variant_type v_;
};

/// One key-value pair of a structured log record, e.g. {"run_id", id}.
///
/// Keys name what the value is (`run_id`, `attempt`). A key that contains
/// secret, token, password, passwd, credential, authorization or api_key
/// (any case) has its value written as "********": never rely on that, and
/// never log tokens or secrets.
struct field {
  field(std::string_view k, field_value v) : key(k), value(std::move(v)) {}

  std::string key;
  field_value value;
};

} // namespace troupe::runtime::log
