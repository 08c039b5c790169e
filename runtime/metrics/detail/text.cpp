#include "runtime/metrics/detail/text.hpp"

#include "runtime/metrics/registry.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>

namespace troupe::runtime::metrics::detail {

namespace {

bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_upper(char c) {
  return c >= 'A' && c <= 'Z';
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size()
         && s.substr(s.size() - suffix.size()) == suffix;
}

/// The first word of `name` (split at '_') that `pred` picks, or "".
template<class Pred>
std::string_view find_word(std::string_view name, Pred pred) {
  size_t start = 0;
  while (start <= name.size()) {
    auto end = name.find('_', start);
    if (end == std::string_view::npos)
      end = name.size();
    auto word = name.substr(start, end - start);
    if (!word.empty() && pred(word))
      return word;
    start = end + 1;
  }
  return {};
}

/// Abbreviations promtool reports as units ("metric names should not contain
/// abbreviated units").
constexpr std::array<std::string_view, 14> abbreviated_units{
  "s",  "ms", "us", "ns", "sec", "b", "kb",
  "mb", "gb", "tb", "pb", "m",   "h", "d"};

constexpr std::array<std::string_view, 4> type_words{"counter", "gauge",
                                                     "histogram", "summary"};

/// The base unit to use in place of `word` (a time unit other than seconds,
/// bits, or a base unit with a prefix such as kilo or milli), or "" if none.
std::string_view base_unit_for(std::string_view word) {
  for (auto w : {"minutes", "hours", "days", "weeks"})
    if (word == w)
      return "seconds";
  if (word == "bits")
    return "bytes";
  constexpr std::array<std::string_view, 20> prefixes{
    "exa",   "peta", "tera",  "giga",  "mega",  "kilo", "hecto",
    "deca",  "deci", "centi", "milli", "micro", "nano", "pico",
    "femto", "kibi", "mebi",  "gibi",  "tebi",  "pebi"};
  constexpr std::array<std::string_view, 9> units{"seconds", "bytes",  "bits",
                                                  "meters",  "metres", "volts",
                                                  "amperes", "joules", "grams"};
  for (auto prefix : prefixes) {
    if (!word.starts_with(prefix))
      continue;
    auto rest = word.substr(prefix.size());
    for (auto unit : units)
      if (rest == unit)
        return unit == "bits" ? "bytes" : unit;
  }
  return {};
}

std::string name_error(std::string_view what, std::string_view name,
                       const std::string& why) {
  return "invalid " + std::string{what} + " name '" + std::string{name}
         + "': " + why;
}

} // namespace

std::string check_metric_name(std::string_view name, metric_type type) {
  auto bad = [name](const std::string& why) {
    return name_error("metric", name, why);
  };
  if (name.empty())
    return "invalid metric name '': a metric name must not be empty";
  bool syntax_ok = is_letter(name[0]) || name[0] == '_' || name[0] == ':';
  for (char c : name)
    syntax_ok
      = syntax_ok && (is_letter(c) || is_digit(c) || c == '_' || c == ':');
  if (!syntax_ok)
    return bad("it must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  if (name.find(':') != std::string_view::npos)
    return bad("colons are reserved for recording rules");
  if (std::any_of(name.begin(), name.end(), is_upper))
    return bad("metric names are snake_case (no upper-case letters)");
  if (name.starts_with("__"))
    return bad("names starting with '__' are reserved");
  bool total = ends_with(name, "_total");
  if (type == metric_type::counter && !total)
    return bad("a counter's name must end in _total");
  if (type != metric_type::counter && total)
    return bad("only a counter's name may end in _total");
  for (auto suffix : {"_count", "_sum", "_bucket"})
    if (ends_with(name, suffix))
      return bad(std::string{"the suffix "} + suffix
                 + " is reserved for the series of histograms");
  auto typed = find_word(name, [](std::string_view w) {
    return std::find(type_words.begin(), type_words.end(), w)
           != type_words.end();
  });
  if (!typed.empty())
    return bad("a name must not include a metric type ('" + std::string{typed}
               + "')");
  auto abbreviated = find_word(name, [](std::string_view w) {
    return std::find(abbreviated_units.begin(), abbreviated_units.end(), w)
           != abbreviated_units.end();
  });
  if (!abbreviated.empty())
    return bad("abbreviated unit '" + std::string{abbreviated}
               + "': spell out a base unit (_seconds, _bytes)");
  auto unit = find_word(
    name, [](std::string_view w) { return !base_unit_for(w).empty(); });
  if (!unit.empty())
    return bad("use the base unit '" + std::string{base_unit_for(unit)}
               + "' instead of '" + std::string{unit} + "'");
  return {};
}

std::string check_label_name(std::string_view name) {
  auto bad
    = [name](const std::string& why) { return name_error("label", name, why); };
  if (name.empty())
    return "invalid label name '': a label name must not be empty";
  bool syntax_ok = is_letter(name[0]) || name[0] == '_';
  for (char c : name)
    syntax_ok = syntax_ok && (is_letter(c) || is_digit(c) || c == '_');
  if (!syntax_ok)
    return bad("it must match [a-zA-Z_][a-zA-Z0-9_]*");
  if (std::any_of(name.begin(), name.end(), is_upper))
    return bad("label names are snake_case (no upper-case letters)");
  if (name.starts_with("__"))
    return bad("names starting with '__' are reserved");
  if (name == "le" || name == "quantile")
    return bad("reserved for histogram buckets and summary quantiles");
  return {};
}

std::string canonicalize(label_set& labels) {
  for (const auto& [name, value] : labels) {
    auto why = check_label_name(name);
    if (!why.empty())
      return why;
  }
  std::sort(labels.begin(), labels.end(),
            [](const label& a, const label& b) { return a.first < b.first; });
  auto dup = std::adjacent_find(
    labels.begin(), labels.end(),
    [](const label& a, const label& b) { return a.first == b.first; });
  if (dup != labels.end())
    return "label '" + dup->first + "' given twice";
  for (auto& l : labels)
    l.second = valid_utf8(l.second);
  return {};
}

std::string valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t min = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      out += s[i++];
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, min = 0x80, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, min = 0x800, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, min = 0x10000, cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      ok = (cc & 0xC0) == 0x80;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates and values past U+10FFFF.
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

std::string_view type_name(metric_type type) {
  switch (type) {
  case metric_type::counter: return "counter";
  case metric_type::gauge: return "gauge";
  case metric_type::histogram: return "histogram";
  }
  return "untyped";
}

void append_header(std::string& out, std::string_view name,
                   std::string_view help, metric_type type) {
  out += "# HELP ";
  out += name;
  out += ' ';
  // HELP text escapes backslash and line feed only (format 0.0.4).
  for (char c : help) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type_name(type);
  out += '\n';
}

void append_labels(std::string& out, const label_set& labels,
                   std::string_view le) {
  if (labels.empty() && le.empty())
    return;
  auto append_one = [&out](std::string_view name, std::string_view value) {
    out += name;
    out += "=\"";
    for (char c : value) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '"')
        out += "\\\"";
      else if (c == '\n')
        out += "\\n";
      else
        out += c;
    }
    out += '"';
  };
  out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first)
      out += ',';
    first = false;
    append_one(name, value);
  }
  if (!le.empty()) {
    if (!first)
      out += ',';
    append_one("le", le);
  }
  out += '}';
}

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    // Whole numbers in full ("300000", not the shorter "3e+05").
    std::array<char, 24> buf;
    auto res = std::to_chars(buf.data(), buf.data() + buf.size(),
                             static_cast<int64_t>(v));
    out.append(buf.data(), res.ptr);
  } else {
    // The shortest digits that read back as `v`; positional notation unless
    // the number is tiny or huge ("0.0001", "5e-05"), as Go's clients do.
    auto fmt = std::fabs(v) >= 1e-4 && std::fabs(v) < 1e15
                 ? std::chars_format::fixed
                 : std::chars_format::scientific;
    std::array<char, 48> buf;
    auto res = std::to_chars(buf.data(), buf.data() + buf.size(), v, fmt);
    out.append(buf.data(), res.ptr);
  }
}

void append_value(std::string& out, uint64_t v) {
  std::array<char, 24> buf;
  auto res = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  out.append(buf.data(), res.ptr);
}

} // namespace troupe::runtime::metrics::detail
