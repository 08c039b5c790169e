// The `when:` expression language of switch nodes.
//
// Grammar (whitespace -- space, tab, CR, LF -- is free between tokens):
//
//   expr    := or
//   or      := and ("or" and)*
//   and     := not ("and" not)*
//   not     := "not" not | cmp
//   cmp     := operand (op operand)?        op: == != < > <= >= in
//   operand := literal | path | "{{" path "}}" | "(" expr ")"
//   literal := number (JSON syntax, e.g. -1, 2.5, 1e3)
//            | 'single' or "double" quoted string
//              (backslash escapes \\ \' \" \n \t)
//            | true | false | null
//            | "[" (operand ("," operand)*)? "]"
//   path    := name ("." name | "[" digits "]")*
//              name: [A-Za-z_][A-Za-z0-9_-]*
//              (a segment that is all digits after a dot indexes a list, as
//              in templates: a.items.0)
//
// The keywords `and or not in true false null` are not paths (they may still
// be a later segment: `inputs.null`). A path is one token: no whitespace
// inside it. Comparisons do not chain (`a < b < c` is an error).
//
// Semantics:
// - Where a boolean is needed (the whole expression, the operands of `and`,
//   `or` and `not`), a bare operand must evaluate to true or false; anything
//   else is an error. Parentheses around a single operand only group it.
// - `==` and `!=` compare JSON values structurally; numbers compare by value
//   (1 == 1.0).
// - `< > <= >=` order two numbers or two strings (bytewise); other pairs are
//   errors.
// - `a in b`: b a list -> some element == a; b a string -> a is a substring
//   (a must be a string); b an object -> a is a key (a must be a string).
// - `and` and `or` short-circuit: the right side of `false and x` is never
//   looked up.
// - A path is resolved through the caller's lookup; one that resolves to
//   nothing is an error.
//
// Limits: at most 4096 characters of text and 64 levels of nesting of `(`,
// `[` and `not`; both are parse errors, so neither parsing nor evaluation
// can exhaust the stack.

#include "runtime/spec/expression.hpp"

#include <algorithm>
#include <compare>
#include <cstdint>
#include <exception>
#include <utility>

namespace troupe::runtime {

namespace {

using json = nlohmann::json;

/// The longest expression text accepted.
constexpr size_t max_text_length = 4096;

/// The deepest nesting of `(`, `[` and `not` accepted.
constexpr size_t max_depth = 64;

/// Quoted source text and values in messages are cut at this length.
constexpr size_t max_quoted_length = 60;

enum class node_kind { literal, path, list, group, not_, and_, or_, compare };

enum class compare_op { eq, ne, lt, gt, le, ge, in };

const char* op_text(compare_op op) {
  switch (op) {
  case compare_op::eq: return "==";
  case compare_op::ne: return "!=";
  case compare_op::lt: return "<";
  case compare_op::gt: return ">";
  case compare_op::le: return "<=";
  case compare_op::ge: return ">=";
  case compare_op::in: return "in";
  }
  return "?";
}

} // namespace

/// A parsed expression: its source text and the root of its syntax tree.
class expression {
 public:
  // -- member types -----------------------------------------------------------

  struct node;
  using node_ptr = std::shared_ptr<const node>;

  /// One node of the syntax tree. `offset` and `length` delimit its source
  /// text, which messages quote to name the operand.
  struct node {
    node_kind kind = node_kind::literal;
    size_t offset = 0;
    size_t length = 0;
    /// The value of a literal.
    json value;
    /// The segments of a path.
    std::vector<std::string> segments;
    /// Where the path itself starts (inside `{{ }}` for a braced path).
    size_t path_offset = 0;
    /// The path as written, without braces.
    std::string path_text;
    /// The operator of a comparison.
    compare_op op = compare_op::eq;
    /// Operands: the elements of a list, the grouped expression, the
    /// negated expression, the terms of `and`/`or`, the sides of a
    /// comparison. Always in source order.
    std::vector<node_ptr> children;
  };

  // -- constructors -----------------------------------------------------------

  expression(std::string text, node_ptr root)
      : text_(std::move(text)), root_(std::move(root)) {
    // nop
  }

  // -- properties -------------------------------------------------------------

  /// Returns the source text.
  const std::string& text() const noexcept { return text_; }

  /// Returns the root of the syntax tree.
  const node& root() const noexcept { return *root_; }

  /// Returns the source text of `n`.
  std::string_view source(const node& n) const {
    return std::string_view{text_}.substr(n.offset, n.length);
  }

 private:
  std::string text_;
  node_ptr root_;
};

namespace {

using node = expression::node;
using node_ptr = expression::node_ptr;

// -- rendering for messages ---------------------------------------------------

/// Returns `c` readable inside a message.
std::string render_char(char c) {
  auto u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f)
    return std::string(1, c);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\\x";
  out += hex[u >> 4];
  out += hex[u & 0xf];
  return out;
}

/// Returns `text` cut to a readable length.
std::string shorten(std::string_view text) {
  if (text.size() <= max_quoted_length)
    return std::string{text};
  return std::string{text.substr(0, max_quoted_length)} + "...";
}

/// Appends `v` as JSON to `out`, stopping soon after `out` grows past the
/// quoting limit. The recursion is bounded by that limit, since every level
/// of nesting adds a character.
void render_value(const json& v, std::string& out) {
  if (out.size() > max_quoted_length)
    return;
  if (v.is_array()) {
    out += '[';
    bool first = true;
    for (auto& x : v) {
      if (out.size() > max_quoted_length)
        return;
      if (!first)
        out += ", ";
      first = false;
      render_value(x, out);
    }
    out += ']';
  } else if (v.is_object()) {
    out += '{';
    bool first = true;
    for (auto& [key, x] : v.items()) {
      if (out.size() > max_quoted_length)
        return;
      if (!first)
        out += ", ";
      first = false;
      out += json(key).dump(-1, ' ', false, json::error_handler_t::replace);
      out += ": ";
      render_value(x, out);
    }
    out += '}';
  } else {
    out += v.dump(-1, ' ', false, json::error_handler_t::replace);
  }
}

/// Returns `v` as JSON, cut to a readable length.
std::string render(const json& v) {
  std::string out;
  render_value(v, out);
  if (out.size() > max_quoted_length) {
    out.resize(max_quoted_length);
    out += "...";
  }
  return out;
}

/// Returns the name of the type of `v`, with its article.
std::string type_name(const json& v) {
  switch (v.type()) {
  case json::value_t::null: return "null";
  case json::value_t::boolean: return "a boolean";
  case json::value_t::number_integer:
  case json::value_t::number_unsigned:
  case json::value_t::number_float: return "a number";
  case json::value_t::string: return "a string";
  case json::value_t::array: return "a list";
  case json::value_t::object: return "an object";
  case json::value_t::binary: return "binary data";
  case json::value_t::discarded: break;
  }
  return "nothing";
}

// -- value comparison ---------------------------------------------------------

/// Orders two numbers by value: exactly between integers, as doubles when
/// either is a float.
std::partial_ordering compare_numbers(const json& a, const json& b) {
  if (a.is_number_integer() && b.is_number_integer()) {
    bool a_neg = !a.is_number_unsigned() && a.get<int64_t>() < 0;
    bool b_neg = !b.is_number_unsigned() && b.get<int64_t>() < 0;
    if (a_neg != b_neg)
      return a_neg ? std::partial_ordering::less
                   : std::partial_ordering::greater;
    if (a_neg)
      return a.get<int64_t>() <=> b.get<int64_t>();
    return a.get<uint64_t>() <=> b.get<uint64_t>();
  }
  return a.get<double>() <=> b.get<double>();
}

/// Returns whether `a` and `b` are the same JSON value, numbers compared by
/// value. Iterative, so deeply nested values cannot exhaust the stack.
bool json_equal(const json& a, const json& b) {
  std::vector<std::pair<const json*, const json*>> todo{{&a, &b}};
  while (!todo.empty()) {
    auto [x, y] = todo.back();
    todo.pop_back();
    if (x->is_number() && y->is_number()) {
      if (compare_numbers(*x, *y) != 0)
        return false;
      continue;
    }
    if (x->type() != y->type())
      return false;
    switch (x->type()) {
    case json::value_t::null: break;
    case json::value_t::boolean:
      if (x->get<bool>() != y->get<bool>())
        return false;
      break;
    case json::value_t::string:
      if (x->get_ref<const std::string&>() != y->get_ref<const std::string&>())
        return false;
      break;
    case json::value_t::array:
      if (x->size() != y->size())
        return false;
      for (size_t i = 0; i < x->size(); ++i)
        todo.emplace_back(&(*x)[i], &(*y)[i]);
      break;
    case json::value_t::object:
      if (x->size() != y->size())
        return false;
      for (auto it = x->begin(); it != x->end(); ++it) {
        auto other = y->find(it.key());
        if (other == y->end())
          return false;
        todo.emplace_back(&*it, &*other);
      }
      break;
    case json::value_t::binary:
      if (*x != *y)
        return false;
      break;
    default: return false;
    }
  }
  return true;
}

// -- tokens -------------------------------------------------------------------

enum class token_kind {
  end,
  error,
  number,
  string,
  path,
  kw_and,
  kw_or,
  kw_not,
  kw_in,
  kw_true,
  kw_false,
  kw_null,
  lparen,
  rparen,
  lbracket,
  rbracket,
  comma,
  open_braces,
  close_braces,
  eq,
  ne,
  lt,
  gt,
  le,
  ge,
};

struct token {
  token_kind kind = token_kind::end;
  size_t offset = 0;
  size_t length = 0;
  /// The value of a number or string literal.
  json value;
  /// The segments of a path.
  std::vector<std::string> segments;
};

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

bool is_alpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

bool is_name_start(char c) {
  return is_alpha(c) || c == '_';
}

bool is_name_char(char c) {
  return is_alpha(c) || is_digit(c) || c == '_' || c == '-';
}

struct keyword {
  std::string_view text;
  token_kind kind;
};

constexpr keyword keywords[] = {
  {"and", token_kind::kw_and},   {"or", token_kind::kw_or},
  {"not", token_kind::kw_not},   {"in", token_kind::kw_in},
  {"true", token_kind::kw_true}, {"false", token_kind::kw_false},
  {"null", token_kind::kw_null},
};

std::optional<compare_op> as_compare_op(token_kind k) {
  switch (k) {
  case token_kind::eq: return compare_op::eq;
  case token_kind::ne: return compare_op::ne;
  case token_kind::lt: return compare_op::lt;
  case token_kind::gt: return compare_op::gt;
  case token_kind::le: return compare_op::le;
  case token_kind::ge: return compare_op::ge;
  case token_kind::kw_in: return compare_op::in;
  default: return std::nullopt;
  }
}

// -- parser -------------------------------------------------------------------

/// A recursive-descent parser that lexes on demand, so that the first error
/// in the text is the one reported.
class parser {
 public:
  parser(std::string_view text, expression_error& error)
      : text_(text), error_(error) {
    // nop
  }

  node_ptr parse() {
    if (text_.size() > max_text_length) {
      fail(max_text_length, "the expression is " + std::to_string(text_.size())
                              + " characters long; at most "
                              + std::to_string(max_text_length)
                              + " are allowed");
      return nullptr;
    }
    if (std::all_of(text_.begin(), text_.end(), is_space)) {
      fail(0, "the expression is empty");
      return nullptr;
    }
    auto root = parse_or();
    if (!root)
      return nullptr;
    auto& t = peek();
    if (t.kind == token_kind::error)
      return nullptr;
    if (t.kind != token_kind::end) {
      // "the string 'x'" reads well after "found", not after "unexpected".
      auto what = t.kind == token_kind::string
                    ? "string " + shorten(text_.substr(t.offset, t.length))
                    : describe(t);
      auto msg = "unexpected " + what + " after the expression";
      if (t.kind == token_kind::kw_not)
        msg += "; 'not' goes before what it negates, as in 'not x in y'";
      else if (t.kind == token_kind::path)
        msg += keyword_hint(t);
      fail(t.offset, msg);
      return nullptr;
    }
    return root;
  }

 private:
  // -- errors -----------------------------------------------------------------

  /// Records an error; the first one wins.
  void fail(size_t offset, std::string message) {
    if (failed_)
      return;
    failed_ = true;
    error_.offset = offset;
    error_.message = std::move(message);
  }

  /// Returns how a message names `t`.
  std::string describe(const token& t) const {
    auto src = text_.substr(t.offset, t.length);
    switch (t.kind) {
    case token_kind::end: return "the end of the expression";
    case token_kind::string: return "the string " + shorten(src);
    default: return "'" + shorten(src) + "'";
    }
  }

  /// Returns a hint when path `t` is a keyword in the wrong case.
  std::string keyword_hint(const token& t) const {
    if (t.segments.size() != 1)
      return {};
    auto lower = t.segments.front();
    for (auto& c : lower)
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
    for (auto& kw : keywords)
      if (lower == kw.text && lower != t.segments.front())
        return "; keywords are lowercase: '" + lower + "'";
    return {};
  }

  // -- lexer ------------------------------------------------------------------

  const token& peek() {
    if (!peeked_) {
      peeked_ = lex();
      if (peeked_->kind == token_kind::error)
        failed_ = true; // lex() recorded the message
    }
    return *peeked_;
  }

  token next() {
    peek();
    token t = std::move(*peeked_);
    peeked_.reset();
    if (t.kind != token_kind::end && t.kind != token_kind::error)
      prev_ = t;
    return t;
  }

  char at(size_t i) const { return i < text_.size() ? text_[i] : '\0'; }

  /// Returns how a message names the character at `i`.
  std::string found_char(size_t i) const {
    if (i >= text_.size())
      return "the end of the expression";
    return "'" + render_char(text_[i]) + "'";
  }

  token lex_error(size_t offset, std::string message) {
    fail(offset, std::move(message));
    token t;
    t.kind = token_kind::error;
    t.offset = offset;
    return t;
  }

  token simple(token_kind kind, size_t length) {
    token t;
    t.kind = kind;
    t.offset = pos_;
    t.length = length;
    pos_ += length;
    return t;
  }

  token lex() {
    while (pos_ < text_.size() && is_space(text_[pos_]))
      ++pos_;
    if (pos_ >= text_.size()) {
      token t;
      t.offset = text_.size();
      return t;
    }
    char c = text_[pos_];
    char d = at(pos_ + 1);
    switch (c) {
    case '(': return simple(token_kind::lparen, 1);
    case ')': return simple(token_kind::rparen, 1);
    case '[': return simple(token_kind::lbracket, 1);
    case ']': return simple(token_kind::rbracket, 1);
    case ',': return simple(token_kind::comma, 1);
    case '{':
      if (d == '{')
        return simple(token_kind::open_braces, 2);
      return lex_error(pos_, "unexpected character '{'; a path in braces "
                             "is written {{ path }}");
    case '}':
      if (d == '}')
        return simple(token_kind::close_braces, 2);
      return lex_error(pos_, "unexpected character '}'");
    case '=':
      if (d == '=')
        return simple(token_kind::eq, 2);
      return lex_error(pos_,
                       "unexpected character '='; to compare, write '=='");
    case '!':
      if (d == '=')
        return simple(token_kind::ne, 2);
      return lex_error(pos_, "unexpected character '!'; write 'not' to "
                             "negate or '!=' to compare");
    case '<':
      if (d == '=')
        return simple(token_kind::le, 2);
      return simple(token_kind::lt, 1);
    case '>':
      if (d == '=')
        return simple(token_kind::ge, 2);
      return simple(token_kind::gt, 1);
    case '&': return lex_error(pos_, "unexpected character '&'; write 'and'");
    case '|': return lex_error(pos_, "unexpected character '|'; write 'or'");
    case '\'':
    case '"': return lex_string();
    default: break;
    }
    if (c == '-' || is_digit(c))
      return lex_number();
    if (is_name_start(c))
      return lex_name();
    return lex_error(pos_, "unexpected character '" + render_char(c) + "'");
  }

  token lex_string() {
    auto start = pos_;
    char quote = text_[pos_++];
    std::string value;
    for (;;) {
      if (pos_ >= text_.size())
        return lex_error(start, "unterminated string");
      char c = text_[pos_];
      if (c == quote) {
        ++pos_;
        break;
      }
      if (c != '\\') {
        value += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= text_.size())
        return lex_error(start, "unterminated string");
      switch (text_[pos_ + 1]) {
      case '\\': value += '\\'; break;
      case '\'': value += '\''; break;
      case '"': value += '"'; break;
      case 'n': value += '\n'; break;
      case 't': value += '\t'; break;
      default:
        return lex_error(pos_, "unknown escape '\\"
                                 + render_char(text_[pos_ + 1])
                                 + "' in a string; the escapes are \\\\ "
                                   "\\' \\\" \\n \\t");
      }
      pos_ += 2;
    }
    token t;
    t.kind = token_kind::string;
    t.offset = start;
    t.length = pos_ - start;
    t.value = std::move(value);
    return t;
  }

  token lex_number() {
    auto start = pos_;
    if (text_[pos_] == '-') {
      ++pos_;
      if (!is_digit(at(pos_)))
        return lex_error(pos_, "expected a digit after '-', found "
                                 + found_char(pos_));
    }
    if (text_[pos_] == '0') {
      ++pos_;
    } else {
      while (is_digit(at(pos_)))
        ++pos_;
    }
    if (at(pos_) == '.') {
      ++pos_;
      if (!is_digit(at(pos_)))
        return lex_error(pos_,
                         "expected a digit after the decimal point, found "
                           + found_char(pos_));
      while (is_digit(at(pos_)))
        ++pos_;
    }
    if (at(pos_) == 'e' || at(pos_) == 'E') {
      ++pos_;
      if (at(pos_) == '+' || at(pos_) == '-')
        ++pos_;
      if (!is_digit(at(pos_)))
        return lex_error(pos_, "expected a digit in the exponent, found "
                                 + found_char(pos_));
      while (is_digit(at(pos_)))
        ++pos_;
    }
    auto src = text_.substr(start, pos_ - start);
    if (auto c = at(pos_); is_name_char(c) || c == '.')
      return lex_error(pos_, "malformed number: unexpected '" + render_char(c)
                               + "' after '" + std::string{src} + "'");
    token t;
    t.kind = token_kind::number;
    t.offset = start;
    t.length = src.size();
    try {
      t.value = json::parse(src);
    } catch (const std::exception&) {
      return lex_error(start,
                       "the number " + shorten(src) + " is out of range");
    }
    return t;
  }

  token lex_name() {
    auto start = pos_;
    auto read_name = [this] {
      auto begin = pos_;
      while (is_name_char(at(pos_)))
        ++pos_;
      return text_.substr(begin, pos_ - begin);
    };
    auto first = read_name();
    for (auto& kw : keywords) {
      if (first == kw.text) {
        token t;
        t.kind = kw.kind;
        t.offset = start;
        t.length = first.size();
        return t;
      }
    }
    token t;
    t.kind = token_kind::path;
    t.offset = start;
    t.segments.emplace_back(first);
    for (;;) {
      if (at(pos_) == '.') {
        ++pos_;
        auto seg_start = pos_;
        auto seg = read_name();
        if (seg.empty())
          return lex_error(seg_start,
                           "expected a name or a list index after '.', found "
                             + found_char(seg_start));
        bool digits = std::all_of(seg.begin(), seg.end(), is_digit);
        if (!digits && !is_name_start(seg.front()))
          return lex_error(seg_start,
                           "'" + shorten(seg)
                             + "' is neither a name nor a list index; a name "
                               "starts with a letter or '_', an index is "
                               "digits");
        t.segments.emplace_back(seg);
      } else if (at(pos_) == '[') {
        auto open = pos_++;
        auto seg_start = pos_;
        while (is_digit(at(pos_)))
          ++pos_;
        if (pos_ == seg_start)
          return lex_error(pos_,
                           "expected a list index (digits) after '[', found "
                             + found_char(pos_));
        if (at(pos_) != ']')
          return lex_error(pos_, "expected ']' to close the index opened at "
                                 "character "
                                   + std::to_string(open) + ", found "
                                   + found_char(pos_));
        t.segments.emplace_back(text_.substr(seg_start, pos_ - seg_start));
        ++pos_;
      } else {
        break;
      }
    }
    t.length = pos_ - start;
    return t;
  }

  // -- grammar ----------------------------------------------------------------

  /// Enters one level of nesting opened at `offset`.
  bool enter(size_t offset) {
    if (++depth_ > max_depth) {
      fail(offset, "the expression is nested too deeply: more than "
                     + std::to_string(max_depth)
                     + " levels of '(', '[' and 'not'");
      return false;
    }
    return true;
  }

  void leave() { --depth_; }

  static node_ptr make(node n) {
    return std::make_shared<const node>(std::move(n));
  }

  static size_t end_of(const node& n) { return n.offset + n.length; }

  node_ptr parse_chain(node_kind kind, token_kind op,
                       node_ptr (parser::*term)()) {
    auto first = (this->*term)();
    if (!first)
      return nullptr;
    if (peek().kind != op)
      return first;
    node n;
    n.kind = kind;
    n.offset = first->offset;
    n.children.push_back(std::move(first));
    while (peek().kind == op) {
      next();
      auto rhs = (this->*term)();
      if (!rhs)
        return nullptr;
      n.children.push_back(std::move(rhs));
    }
    n.length = end_of(*n.children.back()) - n.offset;
    return make(std::move(n));
  }

  node_ptr parse_or() {
    return parse_chain(node_kind::or_, token_kind::kw_or, &parser::parse_and);
  }

  node_ptr parse_and() {
    return parse_chain(node_kind::and_, token_kind::kw_and, &parser::parse_not);
  }

  node_ptr parse_not() {
    if (peek().kind != token_kind::kw_not)
      return parse_cmp();
    auto t = next();
    if (!enter(t.offset))
      return nullptr;
    auto operand = parse_not();
    leave();
    if (!operand)
      return nullptr;
    node n;
    n.kind = node_kind::not_;
    n.offset = t.offset;
    n.length = end_of(*operand) - t.offset;
    n.children.push_back(std::move(operand));
    return make(std::move(n));
  }

  node_ptr parse_cmp() {
    auto lhs = parse_operand();
    if (!lhs)
      return nullptr;
    auto op = as_compare_op(peek().kind);
    if (!op)
      return lhs;
    next();
    auto rhs = parse_operand();
    if (!rhs)
      return nullptr;
    node n;
    n.kind = node_kind::compare;
    n.op = *op;
    n.offset = lhs->offset;
    n.length = end_of(*rhs) - n.offset;
    n.children.push_back(std::move(lhs));
    n.children.push_back(std::move(rhs));
    if (auto& t = peek(); as_compare_op(t.kind)) {
      fail(t.offset, "comparisons do not chain: found " + describe(t)
                       + " after '" + shorten(text_.substr(n.offset, n.length))
                       + "'; join comparisons with 'and'");
      return nullptr;
    }
    return make(std::move(n));
  }

  /// Fails with "expected <what>" naming the token found instead.
  node_ptr expected(std::string_view what, const token& found) {
    if (found.kind == token_kind::error)
      return nullptr;
    std::string msg = "expected ";
    msg += what;
    if (prev_)
      msg += " after " + describe(*prev_);
    msg += ", found " + describe(found);
    fail(found.offset, std::move(msg));
    return nullptr;
  }

  node_ptr parse_operand() {
    auto& t = peek();
    switch (t.kind) {
    case token_kind::number:
    case token_kind::string:
    case token_kind::kw_true:
    case token_kind::kw_false:
    case token_kind::kw_null: {
      auto tok = next();
      node n;
      n.kind = node_kind::literal;
      n.offset = tok.offset;
      n.length = tok.length;
      if (tok.kind == token_kind::kw_true)
        n.value = true;
      else if (tok.kind == token_kind::kw_false)
        n.value = false;
      else if (tok.kind == token_kind::kw_null)
        n.value = nullptr;
      else
        n.value = std::move(tok.value);
      return make(std::move(n));
    }
    case token_kind::path: {
      auto tok = next();
      auto offset = tok.offset;
      auto length = tok.length;
      return make_path(std::move(tok), offset, length);
    }
    case token_kind::open_braces: return parse_braced_path();
    case token_kind::lparen: return parse_group();
    case token_kind::lbracket: return parse_list();
    default: return expected("an operand", t);
    }
  }

  node_ptr make_path(token tok, size_t offset, size_t length) {
    node n;
    n.kind = node_kind::path;
    n.offset = offset;
    n.length = length;
    n.path_offset = tok.offset;
    n.path_text = std::string{text_.substr(tok.offset, tok.length)};
    n.segments = std::move(tok.segments);
    return make(std::move(n));
  }

  node_ptr parse_braced_path() {
    auto open = next();
    if (peek().kind != token_kind::path)
      return expected("a path", peek());
    auto path = next();
    if (peek().kind != token_kind::close_braces) {
      prev_.reset();
      return expected("'}}' to close the '{{' opened at character "
                        + std::to_string(open.offset),
                      peek());
    }
    auto close = next();
    return make_path(std::move(path), open.offset,
                     close.offset + close.length - open.offset);
  }

  node_ptr parse_group() {
    auto open = next();
    if (!enter(open.offset))
      return nullptr;
    auto inner = parse_or();
    if (!inner)
      return nullptr;
    if (peek().kind != token_kind::rparen) {
      prev_.reset();
      return expected("')' to close the '(' opened at character "
                        + std::to_string(open.offset),
                      peek());
    }
    auto close = next();
    leave();
    node n;
    n.kind = node_kind::group;
    n.offset = open.offset;
    n.length = close.offset + 1 - open.offset;
    n.children.push_back(std::move(inner));
    return make(std::move(n));
  }

  node_ptr parse_list() {
    auto open = next();
    if (!enter(open.offset))
      return nullptr;
    node n;
    n.kind = node_kind::list;
    n.offset = open.offset;
    if (peek().kind != token_kind::rbracket) {
      for (;;) {
        auto element = parse_operand();
        if (!element)
          return nullptr;
        n.children.push_back(std::move(element));
        if (peek().kind != token_kind::comma)
          break;
        next();
      }
    }
    if (peek().kind != token_kind::rbracket) {
      prev_.reset();
      return expected("']' to close the list opened at character "
                        + std::to_string(open.offset),
                      peek());
    }
    auto close = next();
    leave();
    n.length = close.offset + 1 - open.offset;
    return make(std::move(n));
  }

  // -- state ------------------------------------------------------------------

  std::string_view text_;
  expression_error& error_;
  size_t pos_ = 0;
  size_t depth_ = 0;
  bool failed_ = false;
  std::optional<token> peeked_;
  /// The last token consumed, to say what an expected operand follows.
  std::optional<token> prev_;
};

// -- evaluator ----------------------------------------------------------------

class evaluator {
 public:
  evaluator(const expression& e, const expression_lookup& lookup,
            std::string& error)
      : e_(e), lookup_(lookup), error_(error) {
    // nop
  }

  /// Evaluates `n` where a boolean is needed.
  std::optional<bool> truth(const node& n) {
    switch (n.kind) {
    case node_kind::group: return truth(*n.children.front());
    case node_kind::not_: {
      auto x = truth(*n.children.front());
      if (!x)
        return std::nullopt;
      return !*x;
    }
    case node_kind::and_:
    case node_kind::or_: {
      // Short-circuit: `and` stops at the first false, `or` at the first
      // true.
      bool stop_at = n.kind == node_kind::or_;
      for (auto& child : n.children) {
        auto x = truth(*child);
        if (!x)
          return std::nullopt;
        if (*x == stop_at)
          return stop_at;
      }
      return !stop_at;
    }
    case node_kind::compare: return compare(n);
    default: break;
    }
    auto v = value(n);
    if (!v)
      return std::nullopt;
    if (!v->is_boolean()) {
      if (unwrap(n).kind == node_kind::literal)
        error_ = name(n) + " is not true or false";
      else
        error_ = name(n) + " is " + render(*v) + ", not true or false";
      return std::nullopt;
    }
    return v->get<bool>();
  }

  /// Evaluates `n` where any value will do.
  std::optional<json> value(const node& n) {
    switch (n.kind) {
    case node_kind::literal: return n.value;
    case node_kind::path: {
      if (!lookup_) {
        error_ = "'" + shorten(n.path_text)
                 + "' cannot be resolved: no lookup was given";
        return std::nullopt;
      }
      auto v = lookup_(n.segments);
      if (!v) {
        error_ = "'" + shorten(n.path_text) + "' resolved to nothing";
        return std::nullopt;
      }
      return v;
    }
    case node_kind::list: {
      auto result = json::array();
      for (auto& child : n.children) {
        auto x = value(*child);
        if (!x)
          return std::nullopt;
        result.push_back(std::move(*x));
      }
      return result;
    }
    case node_kind::group: return value(*n.children.front());
    default: break;
    }
    auto x = truth(n);
    if (!x)
      return std::nullopt;
    return json(*x);
  }

 private:
  /// Returns the operand `n` without the parentheses around it.
  static const node& unwrap(const node& n) {
    const node* p = &n;
    while (p->kind == node_kind::group)
      p = p->children.front().get();
    return *p;
  }

  /// Returns how a message names the operand `n`: a literal as written
  /// (strings bring their own quotes), anything else quoted.
  std::string name(const node& n) const {
    auto& u = unwrap(n);
    if (u.kind == node_kind::literal)
      return shorten(e_.source(u));
    return "'" + shorten(e_.source(u)) + "'";
  }

  std::optional<bool> compare(const node& n) {
    auto& lhs = *n.children[0];
    auto& rhs = *n.children[1];
    auto a = value(lhs);
    if (!a)
      return std::nullopt;
    auto b = value(rhs);
    if (!b)
      return std::nullopt;
    switch (n.op) {
    case compare_op::eq: return json_equal(*a, *b);
    case compare_op::ne: return !json_equal(*a, *b);
    case compare_op::in: return contains(lhs, *a, rhs, *b);
    default: break;
    }
    std::partial_ordering order = std::partial_ordering::unordered;
    if (a->is_number() && b->is_number()) {
      order = compare_numbers(*a, *b);
    } else if (a->is_string() && b->is_string()) {
      order
        = a->get_ref<const std::string&>() <=> b->get_ref<const std::string&>();
    } else {
      error_ = std::string{"cannot order "} + name(lhs) + " (" + type_name(*a)
               + ") and " + name(rhs) + " (" + type_name(*b) + ") with '"
               + op_text(n.op) + "': it compares two numbers or two strings";
      return std::nullopt;
    }
    switch (n.op) {
    case compare_op::lt: return order < 0;
    case compare_op::gt: return order > 0;
    case compare_op::le: return order <= 0;
    case compare_op::ge: return order >= 0;
    default: return false;
    }
  }

  std::optional<bool> contains(const node& lhs, const json& a, const node& rhs,
                               const json& b) {
    if (b.is_array()) {
      for (auto& x : b)
        if (json_equal(a, x))
          return true;
      return false;
    }
    if (b.is_string()) {
      if (!a.is_string()) {
        error_ = name(lhs) + " is " + type_name(a) + ", but 'in' over "
                 + name(rhs) + " (a string) needs a string on the left";
        return std::nullopt;
      }
      return b.get_ref<const std::string&>().find(
               a.get_ref<const std::string&>())
             != std::string::npos;
    }
    if (b.is_object()) {
      if (!a.is_string()) {
        error_ = name(lhs) + " is " + type_name(a) + ", but 'in' over "
                 + name(rhs) + " (an object) needs a string key on the left";
        return std::nullopt;
      }
      return b.contains(a.get_ref<const std::string&>());
    }
    error_ = "'in' needs a list, a string or an object on the right, but "
             + name(rhs) + " is " + type_name(b);
    return std::nullopt;
  }

  const expression& e_;
  const expression_lookup& lookup_;
  std::string& error_;
};

void collect_paths(const node& n, std::vector<expression_path>& out) {
  if (n.kind == node_kind::path)
    out.push_back({n.segments, n.path_offset});
  for (auto& child : n.children)
    collect_paths(*child, out);
}

} // namespace

std::shared_ptr<const expression> parse_expression(std::string_view text,
                                                   expression_error& error) {
  try {
    parser p{text, error};
    auto root = p.parse();
    if (!root)
      return nullptr;
    return std::make_shared<const expression>(std::string{text},
                                              std::move(root));
  } catch (const std::exception& ex) {
    error = {0, std::string{"cannot parse the expression: "} + ex.what()};
  } catch (...) {
    error = {0, "cannot parse the expression"};
  }
  return nullptr;
}

std::vector<expression_path> expression_paths(const expression& e) {
  std::vector<expression_path> result;
  collect_paths(e.root(), result);
  return result;
}

std::optional<bool> evaluate(const expression& e,
                             const expression_lookup& lookup,
                             std::string& error) {
  try {
    evaluator ev{e, lookup, error};
    return ev.truth(e.root());
  } catch (const std::exception& ex) {
    error = std::string{"cannot evaluate the expression: "} + ex.what();
  } catch (...) {
    error = "cannot evaluate the expression";
  }
  return std::nullopt;
}

} // namespace troupe::runtime
