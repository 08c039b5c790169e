#include "runtime/spec/document.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <unordered_set>
#include <yaml.h>

namespace troupe::runtime {

std::string diagnostic::to_string(const std::string& file) const {
  std::string out = file;
  if (line > 0)
    out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!path.empty())
    out += path + ": ";
  return out + message;
}

mark document::find_mark(std::string_view path) const {
  std::string p{path};
  while (true) {
    if (auto i = marks.find(p); i != marks.end())
      return i->second;
    auto cut = p.find_last_of(".[");
    if (cut == std::string::npos)
      break;
    p.resize(cut);
  }
  if (auto i = marks.find(""); i != marks.end())
    return i->second;
  return {};
}

std::string join_path(std::string_view parent, std::string_view key) {
  if (parent.empty())
    return std::string{key};
  std::string out;
  out.reserve(parent.size() + key.size() + 1);
  out.append(parent).append(".").append(key);
  return out;
}

std::string index_path(std::string_view parent, size_t index) {
  return std::string{parent} + "[" + std::to_string(index) + "]";
}

namespace {

diagnostic file_error(std::string code, std::string message, int line = 0,
                      int column = 0) {
  return diagnostic{"", line, column, std::move(code), std::move(message)};
}

/// Returns the byte offset of the first invalid UTF-8 sequence, or npos.
size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xe  ? 3
                 : (c >> 3) == 0x1e ? 4
                                    : 0;
    if (len == 0 || i + len > s.size())
      return i;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80)
        return i;
    // Overlong forms and surrogates.
    uint32_t cp = len == 1 ? c : c & (0xff >> (len + 1));
    for (size_t k = 1; k < len; ++k)
      cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3f);
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800)
        || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

mark line_col_of(std::string_view s, size_t offset) {
  mark m{1, 1};
  for (size_t i = 0; i < offset && i < s.size(); ++i) {
    if (s[i] == '\n') {
      ++m.line;
      m.column = 1;
    } else {
      ++m.column;
    }
  }
  return m;
}

/// Resolves a plain (unquoted) YAML scalar by the YAML 1.2 core schema.
nlohmann::json resolve_plain(const std::string& s) {
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL")
    return nullptr;
  if (s == "true" || s == "True" || s == "TRUE")
    return true;
  if (s == "false" || s == "False" || s == "FALSE")
    return false;
  static const std::regex int_re{"[-+]?[0-9]+"};
  static const std::regex float_re{
    "[-+]?(\\.[0-9]+|[0-9]+(\\.[0-9]*)?)([eE][-+]?[0-9]+)?"};
  if (s.size() < 64 && std::regex_match(s, int_re)) {
    int64_t n = 0;
    auto first = s.data() + (s[0] == '+' ? 1 : 0);
    auto [ptr, ec] = std::from_chars(first, s.data() + s.size(), n);
    if (ec == std::errc{} && ptr == s.data() + s.size())
      return n;
  }
  if (s.size() < 64 && std::regex_match(s, float_re)) {
    errno = 0;
    double d = std::strtod(s.c_str(), nullptr);
    if (errno == 0 && std::isfinite(d))
      return d;
  }
  return s;
}

/// Converts one scalar event to JSON: plain scalars by the core schema,
/// quoted and block scalars as strings, explicit core tags honoured.
nlohmann::json scalar_value(const yaml_event_t& ev) {
  std::string text{reinterpret_cast<const char*>(ev.data.scalar.value),
                   ev.data.scalar.length};
  std::string_view tag = ev.data.scalar.tag
                           ? reinterpret_cast<const char*>(ev.data.scalar.tag)
                           : "";
  if (tag == YAML_STR_TAG)
    return text;
  if (tag == YAML_INT_TAG || tag == YAML_FLOAT_TAG || tag == YAML_BOOL_TAG
      || tag == YAML_NULL_TAG)
    return resolve_plain(text);
  if (ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && tag.empty())
    return resolve_plain(text);
  return text;
}

mark mark_of(const yaml_mark_t& m) {
  return mark{static_cast<int>(m.line) + 1, static_cast<int>(m.column) + 1};
}

/// Builds a document from libyaml's events. libyaml parses with explicit
/// stacks (no recursion), so depth and size are bounded here alone.
class builder {
 public:
  builder(document& doc, diagnostics& errors) : doc_(doc), errors_(errors) {}

  /// Feeds one event; returns false once the document is rejected.
  bool on_event(const yaml_event_t& ev) {
    auto at = mark_of(ev.start_mark);
    switch (ev.type) {
    case YAML_DOCUMENT_START_EVENT:
      if (++documents_ > 1)
        return fail("syntax",
                    "more than one YAML document; a workflow file holds "
                    "exactly one",
                    at);
      return true;
    case YAML_SCALAR_EVENT: {
      if (expecting_key()) {
        auto& f = stack_.back();
        f.key.assign(reinterpret_cast<const char*>(ev.data.scalar.value),
                     ev.data.scalar.length);
        f.key_mark = at;
        f.has_key = true;
        return true;
      }
      return add_value(scalar_value(ev), 1, anchor_of(ev.data.scalar.anchor),
                       at);
    }
    case YAML_ALIAS_EVENT: {
      if (expecting_key())
        return fail("bad_key", "keys must be plain strings, not aliases", at);
      auto name = anchor_of(ev.data.alias.anchor);
      auto i = anchors_.find(name);
      if (i == anchors_.end())
        return fail("syntax", "unknown alias '*" + name + "'", at);
      return add_value(i->second.value, i->second.count, "", at);
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
      if (expecting_key())
        return fail("bad_key", "keys must be strings", at);
      if (stack_.size() >= static_cast<size_t>(max_document_depth))
        return fail("too_deep",
                    "nested deeper than " + std::to_string(max_document_depth)
                      + " levels",
                    at);
      bool is_map = ev.type == YAML_MAPPING_START_EVENT;
      auto anchor = anchor_of(is_map ? ev.data.mapping_start.anchor
                                     : ev.data.sequence_start.anchor);
      auto path = next_path();
      doc_.marks.emplace(path, at);
      if (!count(1, at))
        return false;
      frame f;
      f.value = is_map ? nlohmann::json::object() : nlohmann::json::array();
      f.path = std::move(path);
      f.anchor = std::move(anchor);
      f.start_count = values_;
      f.start = at;
      stack_.push_back(std::move(f));
      return true;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
      auto f = std::move(stack_.back());
      stack_.pop_back();
      auto n = values_ - f.start_count + 1;
      if (!f.anchor.empty())
        anchors_[f.anchor] = anchored{f.value, n};
      return place(std::move(f.value), f.start);
    }
    default: return true;
    }
  }

  /// Returns whether a root value was built.
  bool has_root() const noexcept { return has_root_; }

 private:
  struct frame {
    nlohmann::json value;
    std::string path;
    std::string anchor;
    size_t start_count = 0;
    mark start;
    // Mappings: the key waiting for its value.
    bool has_key = false;
    std::string key;
    mark key_mark;
    // Keys that came from a `<<` merge and may still be overridden.
    std::unordered_set<std::string> merged;
  };

  struct anchored {
    nlohmann::json value;
    size_t count = 0;
  };

  static std::string anchor_of(const yaml_char_t* a) {
    return a ? reinterpret_cast<const char*>(a) : "";
  }

  bool expecting_key() const {
    return !stack_.empty() && stack_.back().value.is_object()
           && !stack_.back().has_key;
  }

  std::string next_path() const {
    if (stack_.empty())
      return "";
    auto& f = stack_.back();
    if (f.value.is_array())
      return index_path(f.path, f.value.size());
    return join_path(f.path, f.key);
  }

  bool count(size_t n, mark at) {
    values_ += n;
    if (values_ > max_document_values)
      return fail("too_large",
                  "more than " + std::to_string(max_document_values)
                    + " values (after expanding YAML aliases)",
                  at);
    return true;
  }

  bool add_value(nlohmann::json v, size_t n, const std::string& anchor,
                 mark at) {
    doc_.marks.emplace(next_path(), at);
    if (!count(n, at))
      return false;
    if (!anchor.empty())
      anchors_[anchor] = anchored{v, n};
    return place(std::move(v), at);
  }

  /// Puts a finished value into its parent, or makes it the root.
  bool place(nlohmann::json v, mark at) {
    if (stack_.empty()) {
      doc_.root = std::move(v);
      has_root_ = true;
      return true;
    }
    auto& f = stack_.back();
    if (f.value.is_array()) {
      f.value.push_back(std::move(v));
      return true;
    }
    f.has_key = false;
    auto path = join_path(f.path, f.key);
    if (f.key == "<<")
      return merge(f, v, at);
    if (f.value.contains(f.key) && !f.merged.erase(f.key))
      return fail("duplicate_key",
                  "duplicate key '" + f.key + "' in "
                    + (f.path.empty() ? std::string{"the top level"} : f.path),
                  f.key_mark);
    // Point errors about a null value at its key.
    if (v.is_null())
      doc_.marks[path] = f.key_mark;
    f.value[f.key] = std::move(v);
    return true;
  }

  /// Applies a `<<` merge key: the entries of a mapping (or of each mapping
  /// in a list) that the mapping does not set itself.
  bool merge(frame& f, const nlohmann::json& v, mark at) {
    auto merge_one = [&](const nlohmann::json& m) {
      for (auto& [k, item] : m.items())
        if (!f.value.contains(k)) {
          f.value[k] = item;
          f.merged.insert(k);
        }
    };
    if (v.is_object()) {
      merge_one(v);
      return true;
    }
    if (v.is_array() && std::all_of(v.begin(), v.end(), [](auto& m) {
          return m.is_object();
        })) {
      for (auto& m : v)
        merge_one(m);
      return true;
    }
    return fail("syntax",
                "the merge key '<<' takes a mapping or a list of mappings", at);
  }

  bool fail(std::string code, std::string message, mark at) {
    errors_.push_back(
      diagnostic{"", at.line, at.column, std::move(code), std::move(message)});
    return false;
  }

  document& doc_;
  diagnostics& errors_;
  std::vector<frame> stack_;
  std::unordered_map<std::string, anchored> anchors_;
  size_t values_ = 0;
  int documents_ = 0;
  bool has_root_ = false;
};

/// Owns a libyaml parser.
struct yaml_parser {
  yaml_parser_t p;
  yaml_parser() { yaml_parser_initialize(&p); }
  ~yaml_parser() { yaml_parser_delete(&p); }
  yaml_parser(const yaml_parser&) = delete;
  yaml_parser& operator=(const yaml_parser&) = delete;
};

/// Owns one libyaml event.
struct yaml_event {
  yaml_event_t e;
  ~yaml_event() { yaml_event_delete(&e); }
};

} // namespace

std::optional<document> parse_document(std::string_view text,
                                       diagnostics& errors) {
  if (text.size() > max_workflow_bytes) {
    errors.push_back(file_error(
      "too_large", "file is " + std::to_string(text.size())
                     + " bytes; workflow files are limited to 10 MiB"));
    return std::nullopt;
  }
  if (auto nul = text.find('\0'); nul != std::string_view::npos) {
    auto m = line_col_of(text, nul);
    errors.push_back(file_error("not_text",
                                "binary data (a NUL byte at offset "
                                  + std::to_string(nul)
                                  + "); expected a YAML or JSON text file",
                                m.line, m.column));
    return std::nullopt;
  }
  if (auto bad = find_invalid_utf8(text); bad != std::string_view::npos) {
    auto m = line_col_of(text, bad);
    errors.push_back(file_error("not_text",
                                "invalid UTF-8 at offset " + std::to_string(bad)
                                  + "; expected a YAML or JSON text file",
                                m.line, m.column));
    return std::nullopt;
  }
  document doc;
  builder b{doc, errors};
  yaml_parser parser;
  yaml_parser_set_input_string(
    &parser.p, reinterpret_cast<const unsigned char*>(text.data()),
    text.size());
  yaml_parser_set_encoding(&parser.p, YAML_UTF8_ENCODING);
  for (;;) {
    yaml_event ev;
    if (!yaml_parser_parse(&parser.p, &ev.e)) {
      auto& p = parser.p;
      std::string msg = p.problem ? p.problem : "malformed YAML";
      if (p.context)
        msg = std::string{p.context} + ": " + msg;
      errors.push_back(file_error("syntax", "syntax error: " + msg,
                                  static_cast<int>(p.problem_mark.line) + 1,
                                  static_cast<int>(p.problem_mark.column) + 1));
      return std::nullopt;
    }
    if (!b.on_event(ev.e))
      return std::nullopt;
    if (ev.e.type == YAML_STREAM_END_EVENT)
      break;
  }
  if (!b.has_root() || doc.root.is_null()) {
    errors.push_back(file_error(
      "empty", "the file is empty; expected a workflow with name and nodes"));
    return std::nullopt;
  }
  return doc;
}

bool same_workflow_text(std::string_view a, std::string_view b) {
  if (a == b)
    return true;
  diagnostics errors;
  auto x = parse_document(a, errors);
  if (!x)
    return false;
  auto y = parse_document(b, errors);
  return y && x->root == y->root;
}

} // namespace troupe::runtime
