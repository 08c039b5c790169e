#include "runtime/query/detail/timestamp.hpp"

namespace troupe::runtime::query::detail {

namespace {

/// Returns the days from 1970-01-01 to the given civil date (proleptic
/// Gregorian calendar), after Howard Hinnant's `days_from_civil`.
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int64_t days_in_month(int64_t y, int64_t m) {
  constexpr int64_t days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/// Reads the timestamp left to right; each step fails with a reason.
class reader {
 public:
  reader(std::string_view text, std::string& error)
      : text_(text), error_(error) {
    // nop
  }

  std::optional<int64_t> read() {
    int64_t year = 0;
    int64_t month = 0;
    int64_t day = 0;
    if (!digits(4, "the year", year) || !literal('-')
        || !digits(2, "the month", month) || !literal('-')
        || !digits(2, "the day", day))
      return std::nullopt;
    if (month < 1 || month > 12)
      return fail("month " + std::to_string(month) + " is out of range");
    if (day < 1 || day > days_in_month(year, month))
      return fail("day " + std::to_string(day) + " is out of range for "
                  + std::string{text_.substr(0, 7)});
    int64_t hour = 0;
    int64_t minute = 0;
    int64_t second = 0;
    int64_t nanos = 0;
    int64_t offset = 0;
    if (pos_ < text_.size()) {
      char sep = text_[pos_];
      if (sep != 'T' && sep != 't' && sep != ' ')
        return fail("expected 'T' or a space after the date, found " + found());
      ++pos_;
      if (!digits(2, "the hour", hour) || !literal(':')
          || !digits(2, "the minute", minute))
        return std::nullopt;
      if (at(':')) {
        ++pos_;
        if (!digits(2, "the second", second))
          return std::nullopt;
        if (at('.')) {
          ++pos_;
          size_t start = pos_;
          while (pos_ < text_.size() && is_digit(text_[pos_])
                 && pos_ - start < 9) {
            nanos = nanos * 10 + (text_[pos_] - '0');
            ++pos_;
          }
          if (pos_ == start)
            return fail("expected digits after the decimal point, found "
                        + found());
          for (auto n = pos_ - start; n < 9; ++n)
            nanos *= 10;
        }
      }
      if (hour > 23)
        return fail("hour " + std::to_string(hour) + " is out of range");
      if (minute > 59)
        return fail("minute " + std::to_string(minute) + " is out of range");
      if (second > 59)
        return fail("second " + std::to_string(second) + " is out of range");
      if (at('Z') || at('z')) {
        ++pos_;
      } else if (at('+') || at('-')) {
        int64_t sign = text_[pos_++] == '-' ? -1 : 1;
        int64_t oh = 0;
        int64_t om = 0;
        if (!digits(2, "the offset's hours", oh))
          return std::nullopt;
        if (at(':'))
          ++pos_;
        if (!digits(2, "the offset's minutes", om))
          return std::nullopt;
        if (oh > 23 || om > 59)
          return fail("the offset is out of range");
        offset = sign * (oh * 3600 + om * 60);
      }
    }
    if (pos_ < text_.size())
      return fail("unexpected " + found() + " at the end");
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600
                      + minute * 60 + second - offset;
    // Nanoseconds since the epoch in an int64_t span the years 1677 to 2262.
    constexpr int64_t max_seconds = 9'223'372'035;
    if (seconds > max_seconds || seconds < -max_seconds)
      return fail("it is out of range (years 1678 to 2261 fit)");
    return seconds * 1'000'000'000 + nanos;
  }

 private:
  static bool is_digit(char c) { return c >= '0' && c <= '9'; }

  bool at(char c) const { return pos_ < text_.size() && text_[pos_] == c; }

  std::string found() const {
    if (pos_ >= text_.size())
      return "the end";
    auto c = static_cast<unsigned char>(text_[pos_]);
    if (c >= 0x80)
      return "a non-ASCII character";
    if (c < 0x20 || c == 0x7f)
      return "a control character";
    return "'" + std::string(1, text_[pos_]) + "'";
  }

  std::nullopt_t fail(std::string reason) {
    error_ = std::move(reason);
    return std::nullopt;
  }

  bool digits(size_t n, const char* what, int64_t& out) {
    out = 0;
    for (size_t i = 0; i < n; ++i) {
      if (pos_ >= text_.size() || !is_digit(text_[pos_])) {
        fail(std::string{"expected "} + std::to_string(n) + " digits for "
             + what + ", found " + found());
        return false;
      }
      out = out * 10 + (text_[pos_++] - '0');
    }
    return true;
  }

  bool literal(char c) {
    if (at(c)) {
      ++pos_;
      return true;
    }
    fail("expected '" + std::string(1, c) + "', found " + found());
    return false;
  }

  std::string_view text_;
  std::string& error_;
  size_t pos_ = 0;
};

} // namespace

std::optional<int64_t> parse_timestamp(std::string_view text,
                                       std::string& error) {
  return reader{text, error}.read();
}

} // namespace troupe::runtime::query::detail
