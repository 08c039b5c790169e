// Parsing and type-checking of queries; the grammar is in query.hpp.

#include "config/duration.hpp"
#include "config/suggest.hpp"
#include "runtime/query/detail/condition.hpp"
#include "runtime/query/detail/timestamp.hpp"
#include "runtime/query/query.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <exception>
#include <utility>

namespace troupe::runtime::query {

namespace {

using json = nlohmann::json;
using detail::condition;
using detail::predicate_op;

/// Quoted source text in messages is cut at this length.
constexpr size_t max_quoted_length = 40;

// -- tokens -------------------------------------------------------------------

enum class token_kind {
  end,
  error,
  name,
  string,
  number,
  /// Digits followed by letters, such as `10m`: a duration, or a mistake.
  quantity,
  kw_select,
  kw_where,
  kw_order,
  kw_by,
  kw_asc,
  kw_desc,
  kw_limit,
  kw_and,
  kw_or,
  kw_not,
  kw_in,
  kw_like,
  kw_ilike,
  kw_is,
  kw_null,
  kw_true,
  kw_false,
  lparen,
  rparen,
  comma,
  /// Only to explain that `select *` is not how tables are named.
  star,
  eq,
  ne,
  lt,
  le,
  gt,
  ge,
};

struct token {
  token_kind kind = token_kind::end;
  size_t offset = 0;
  size_t length = 0;
  /// The value of a string or number literal.
  json value;
};

struct keyword {
  std::string_view text;
  token_kind kind;
};

constexpr keyword keywords[] = {
  {"select", token_kind::kw_select}, {"where", token_kind::kw_where},
  {"order", token_kind::kw_order},   {"by", token_kind::kw_by},
  {"asc", token_kind::kw_asc},       {"desc", token_kind::kw_desc},
  {"limit", token_kind::kw_limit},   {"and", token_kind::kw_and},
  {"or", token_kind::kw_or},         {"not", token_kind::kw_not},
  {"in", token_kind::kw_in},         {"like", token_kind::kw_like},
  {"ilike", token_kind::kw_ilike},   {"is", token_kind::kw_is},
  {"null", token_kind::kw_null},     {"true", token_kind::kw_true},
  {"false", token_kind::kw_false},
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
  return is_name_start(c) || is_digit(c);
}

char lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size()
         && std::equal(a.begin(), a.end(), b.begin(),
                       [](char x, char y) { return lower(x) == lower(y); });
}

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

/// Returns `text` cut to a readable length, with unprintable bytes escaped.
std::string shorten(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size() && i < max_quoted_length; ++i) {
    auto u = static_cast<unsigned char>(text[i]);
    // Keep UTF-8 as is; escape only control characters.
    out
      += u < 0x20 || u == 0x7f ? render_char(text[i]) : std::string(1, text[i]);
  }
  if (text.size() > max_quoted_length)
    out += "...";
  return out;
}

/// Finds the item named `name`: spelled exactly, else ignoring ASCII case.
template<class T>
const T* find_named(const std::vector<T>& items, std::string_view name) {
  for (auto& item : items)
    if (item.name == name)
      return &item;
  for (auto& item : items)
    if (iequals(item.name, name))
      return &item;
  return nullptr;
}

template<class T>
std::vector<std::string> names_of(const std::vector<T>& items) {
  std::vector<std::string> out;
  out.reserve(items.size());
  for (auto& item : items)
    out.push_back(item.name);
  return out;
}

/// Returns how a message suggests a literal for a column of type `t`.
std::string_view example_of(column_type t) {
  switch (t) {
  case column_type::text: return "a string in single quotes such as 'running'";
  case column_type::number: return "a number such as 3";
  case column_type::duration: return "a duration such as 10m or 500ms";
  case column_type::time:
    return "a timestamp in quotes such as '2024-05-01T12:00:00Z'";
  case column_type::boolean: return "true or false";
  }
  return "a value";
}

/// Returns whether `text` reads as a plain number.
bool looks_numeric(std::string_view text) {
  if (!text.empty() && text.front() == '-')
    text.remove_prefix(1);
  return !text.empty() && is_digit(text.front())
         && std::all_of(text.begin(), text.end(),
                        [](char c) { return is_digit(c) || c == '.'; });
}

/// Returns a duration in the rows' representation: milliseconds, whole when
/// they can be.
json to_millis(config::duration d) {
  auto ns = d.count();
  if (ns % 1'000'000 == 0)
    return json(static_cast<int64_t>(ns / 1'000'000));
  return json(static_cast<double>(ns) / 1e6);
}

/// What a successful parse produces.
struct parts {
  std::string table;
  std::vector<std::string> columns;
  std::shared_ptr<const condition> where;
  std::optional<order_by> order;
  std::optional<size_t> limit;
};

// -- parser -------------------------------------------------------------------

/// A recursive-descent parser that lexes on demand, so that the first
/// problem in the text is the one reported.
class parser {
 public:
  parser(std::string_view text, const std::vector<table>& schema,
         query_error& err)
      : text_(text), schema_(schema), err_(err) {
    // nop
  }

  std::optional<parts> parse() {
    if (text_.size() > max_query_length) {
      fail(max_query_length, "the query is " + std::to_string(text_.size())
                               + " characters long; at most "
                               + std::to_string(max_query_length)
                               + " are allowed");
      return std::nullopt;
    }
    // One trailing ';' is fine, out of habit from SQL shells.
    end_ = text_.size();
    while (end_ > 0 && is_space(text_[end_ - 1]))
      --end_;
    if (end_ > 0 && text_[end_ - 1] == ';')
      --end_;
    if (std::all_of(text_.begin(), text_.begin() + end_, is_space)) {
      fail(0, "the query is empty; write e.g. 'select " + example_table()
                + " where ...'");
      return std::nullopt;
    }
    if (peek().kind != token_kind::kw_select) {
      auto& t = peek();
      if (t.kind == token_kind::error)
        return std::nullopt;
      std::string msg = "a query starts with 'select', found " + describe(t);
      if (t.kind == token_kind::name)
        msg += config::did_you_mean(source(t), {"select"});
      fail(t.offset, msg);
      return std::nullopt;
    }
    next();
    if (!parse_table())
      return std::nullopt;
    if (peek().kind == token_kind::kw_where) {
      next();
      auto where = parse_or();
      if (!where)
        return std::nullopt;
      out_.where = std::make_shared<const condition>(std::move(*where));
    }
    if (peek().kind == token_kind::kw_order && !parse_order())
      return std::nullopt;
    if (peek().kind == token_kind::kw_limit && !parse_limit())
      return std::nullopt;
    if (auto& t = peek(); t.kind != token_kind::end) {
      if (t.kind != token_kind::error)
        unexpected_trailer(t);
      return std::nullopt;
    }
    return std::move(out_);
  }

 private:
  // -- errors -----------------------------------------------------------------

  /// Records an error at the 0-based `offset`; the first one wins.
  void fail(size_t offset, std::string message) {
    if (failed_)
      return;
    failed_ = true;
    err_.column = offset + 1;
    err_.message = std::move(message);
  }

  std::string_view source(const token& t) const {
    return text_.substr(t.offset, t.length);
  }

  /// Returns how a message names `t`.
  std::string describe(const token& t) const {
    switch (t.kind) {
    case token_kind::end: return "the end of the query";
    case token_kind::string: return "the string " + shorten(source(t));
    case token_kind::number: return "the number " + shorten(source(t));
    default: return "'" + shorten(source(t)) + "'";
    }
  }

  /// Fails with "expected <what> after <previous token>, found <token>".
  void expected(std::string_view what, const token& found,
                std::string_view hint = {}) {
    if (found.kind == token_kind::error)
      return;
    std::string msg = "expected ";
    msg += what;
    if (prev_)
      msg += " after " + describe(*prev_);
    msg += ", found " + describe(found);
    msg += hint;
    fail(found.offset, std::move(msg));
  }

  std::string table_list() const {
    if (schema_.empty())
      return "there are no tables";
    return "the tables are: " + config::join(names_of(schema_));
  }

  std::string example_table() const {
    return schema_.empty() ? std::string{"<table>"} : schema_.front().name;
  }

  /// Explains what may follow the clauses read so far.
  void unexpected_trailer(const token& t) {
    std::vector<std::string> options;
    if (!out_.where && !out_.order && !out_.limit)
      options.emplace_back("'where'");
    if (out_.where && !out_.order && !out_.limit) {
      options.emplace_back("'and'");
      options.emplace_back("'or'");
    }
    if (out_.order && !out_.limit && !order_direction_given_) {
      options.emplace_back("'asc'");
      options.emplace_back("'desc'");
    }
    if (!out_.order && !out_.limit)
      options.emplace_back("'order by'");
    if (!out_.limit)
      options.emplace_back("'limit'");
    options.emplace_back("the end of the query");
    std::string list;
    for (size_t i = 0; i < options.size(); ++i) {
      if (i > 0)
        list += i + 1 == options.size() ? " or " : ", ";
      list += options[i];
    }
    std::string msg = "unexpected " + describe(t) + "; expected " + list;
    switch (t.kind) {
    case token_kind::kw_where:
    case token_kind::kw_order:
    case token_kind::kw_limit:
      msg += " (clauses come in the order where, order by, limit, each at "
             "most once)";
      break;
    case token_kind::comma:
      if (out_.order && !out_.limit)
        msg += " (a query orders by one column)";
      break;
    default: break;
    }
    fail(t.offset, std::move(msg));
  }

  // -- lexer ------------------------------------------------------------------

  const token& peek() {
    if (!peeked_)
      peeked_ = lex();
    return *peeked_;
  }

  token next() {
    auto t = std::move(peek());
    peeked_.reset();
    prev_ = t;
    return t;
  }

  char at(size_t i) const { return i < end_ ? text_[i] : '\0'; }

  std::string found_char(size_t i) const {
    if (i >= end_)
      return "the end of the query";
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
    if (failed_)
      return lex_error(pos_, {});
    while (pos_ < end_ && is_space(text_[pos_]))
      ++pos_;
    if (pos_ >= end_) {
      token t;
      t.offset = end_;
      return t;
    }
    char c = text_[pos_];
    char d = at(pos_ + 1);
    switch (c) {
    case '(': return simple(token_kind::lparen, 1);
    case ')': return simple(token_kind::rparen, 1);
    case ',': return simple(token_kind::comma, 1);
    case '*': return simple(token_kind::star, 1);
    case '=':
      if (d == '=')
        return lex_error(pos_, "write '=' to compare, not '=='");
      return simple(token_kind::eq, 1);
    case '!':
      if (d == '=')
        return simple(token_kind::ne, 2);
      return lex_error(pos_, "unexpected character '!'; write 'not' to "
                             "negate or '!=' to compare");
    case '<':
      if (d == '=')
        return simple(token_kind::le, 2);
      if (d == '>')
        return simple(token_kind::ne, 2);
      return simple(token_kind::lt, 1);
    case '>':
      if (d == '=')
        return simple(token_kind::ge, 2);
      return simple(token_kind::gt, 1);
    case '&': return lex_error(pos_, "unexpected character '&'; write 'and'");
    case '|': return lex_error(pos_, "unexpected character '|'; write 'or'");
    case ';':
      return lex_error(pos_, "unexpected ';'; give one query at a time, "
                             "';' may only end it");
    case '\'': return lex_string();
    case '"': return lex_double_quoted();
    default: break;
    }
    if (is_digit(c) || (c == '-' && is_digit(d)))
      return lex_number();
    if (is_name_start(c))
      return lex_name();
    return lex_error(pos_, "unexpected character '" + render_char(c) + "'");
  }

  token lex_string() {
    auto start = pos_++;
    std::string value;
    for (;;) {
      if (pos_ >= end_)
        return lex_error(start, "unterminated string: no closing quote for "
                                "the ' here (write '' for a quote inside a "
                                "string)");
      char c = text_[pos_++];
      if (c == '\'') {
        if (at(pos_) != '\'')
          break;
        ++pos_;
      }
      value += c;
    }
    token t;
    t.kind = token_kind::string;
    t.offset = start;
    t.length = pos_ - start;
    t.value = std::move(value);
    return t;
  }

  token lex_double_quoted() {
    auto close = text_.substr(0, end_).find('"', pos_ + 1);
    if (close == std::string_view::npos)
      return lex_error(pos_, "unexpected character '\"'; strings are written "
                             "in single quotes");
    auto inner = text_.substr(pos_ + 1, close - pos_ - 1);
    return lex_error(pos_, "strings are written in single quotes: '"
                             + shorten(inner) + "', not \"" + shorten(inner)
                             + "\"");
  }

  token lex_number() {
    auto start = pos_;
    if (text_[pos_] == '-')
      ++pos_;
    while (is_digit(at(pos_)))
      ++pos_;
    bool fraction = false;
    if (at(pos_) == '.') {
      ++pos_;
      if (!is_digit(at(pos_)))
        return lex_error(pos_,
                         "expected a digit after the decimal point, found "
                           + found_char(pos_));
      while (is_digit(at(pos_)))
        ++pos_;
      fraction = true;
    }
    if (is_alpha(at(pos_))) {
      // A duration such as 10m or 1h30m, checked once the column is known.
      while (is_name_char(at(pos_)) || at(pos_) == '.')
        ++pos_;
      token t;
      t.kind = token_kind::quantity;
      t.offset = start;
      t.length = pos_ - start;
      return t;
    }
    if (at(pos_) == '_' || at(pos_) == '.')
      return lex_error(pos_, "malformed number: unexpected '"
                               + render_char(at(pos_)) + "' after '"
                               + shorten(text_.substr(start, pos_ - start))
                               + "'");
    auto src = text_.substr(start, pos_ - start);
    token t;
    t.kind = token_kind::number;
    t.offset = start;
    t.length = src.size();
    auto first = src.data();
    auto last = src.data() + src.size();
    if (!fraction) {
      int64_t i = 0;
      if (auto [p, ec] = std::from_chars(first, last, i);
          ec == std::errc{} && p == last) {
        t.value = i;
        return t;
      }
      uint64_t u = 0;
      if (auto [p, ec] = std::from_chars(first, last, u);
          ec == std::errc{} && p == last) {
        t.value = u;
        return t;
      }
    }
    double x = 0;
    if (auto [p, ec] = std::from_chars(first, last, x);
        ec == std::errc{} && p == last) {
      t.value = x;
      return t;
    }
    return lex_error(start, "the number " + shorten(src) + " is out of range");
  }

  token lex_name() {
    auto start = pos_;
    while (is_name_char(at(pos_)))
      ++pos_;
    auto word = text_.substr(start, pos_ - start);
    token t;
    t.kind = token_kind::name;
    t.offset = start;
    t.length = word.size();
    for (auto& kw : keywords)
      if (iequals(word, kw.text))
        t.kind = kw.kind;
    return t;
  }

  // -- clauses ----------------------------------------------------------------

  bool parse_table() {
    auto& t = peek();
    if (t.kind == token_kind::star
        || (t.kind == token_kind::name && iequals(source(t), "from"))) {
      fail(t.offset, "expected a table name after 'select', found "
                       + describe(t) + "; name the table right after it, as "
                       + "in 'select " + example_table()
                       + " where ...' (there is no column list and no "
                         "'from'); "
                       + table_list());
      return false;
    }
    if (t.kind != token_kind::name) {
      expected("a table name", t, "; " + table_list());
      return false;
    }
    auto tok = next();
    auto name = source(tok);
    table_ = find_named(schema_, name);
    if (!table_) {
      fail(tok.offset, "unknown table '" + shorten(name) + "'"
                         + config::did_you_mean(name, names_of(schema_)) + "; "
                         + table_list());
      return false;
    }
    out_.table = table_->name;
    return true;
  }

  /// Reads a column name of the table and records its use.
  const column* parse_column(std::string_view what) {
    auto& t = peek();
    if (t.kind != token_kind::name) {
      std::string hint;
      switch (t.kind) {
      case token_kind::string:
      case token_kind::number:
      case token_kind::quantity:
      case token_kind::kw_true:
      case token_kind::kw_false:
      case token_kind::kw_null:
        hint = "; a condition starts with a column, as in state = "
               "'running'";
        break;
      default: break;
      }
      expected(what, t, hint);
      return nullptr;
    }
    auto tok = next();
    auto name = source(tok);
    auto col = find_named(table_->columns, name);
    if (!col) {
      auto names = names_of(table_->columns);
      fail(tok.offset, "unknown column '" + shorten(name) + "' in table '"
                         + table_->name + "'"
                         + config::did_you_mean(name, names)
                         + "; its columns are: " + config::join(names));
      return nullptr;
    }
    if (std::find(out_.columns.begin(), out_.columns.end(), col->name)
        == out_.columns.end())
      out_.columns.push_back(col->name);
    return col;
  }

  bool parse_order() {
    next();
    if (peek().kind != token_kind::kw_by) {
      expected("'by'", peek());
      return false;
    }
    next();
    auto col = parse_column("a column to order by");
    if (!col)
      return false;
    order_by order{col->name, false};
    if (peek().kind == token_kind::kw_asc
        || peek().kind == token_kind::kw_desc) {
      order.descending = next().kind == token_kind::kw_desc;
      order_direction_given_ = true;
    }
    out_.order = std::move(order);
    return true;
  }

  bool parse_limit() {
    next();
    auto& t = peek();
    if (t.kind == token_kind::error)
      return false;
    if (t.kind == token_kind::number && t.value.is_number_integer()
        && (t.value.is_number_unsigned() || t.value.get<int64_t>() > 0)) {
      out_.limit = static_cast<size_t>(next().value.get<uint64_t>());
      return true;
    }
    fail(t.offset,
         "the limit must be a positive integer, found " + describe(t));
    return false;
  }

  // -- conditions -------------------------------------------------------------

  /// Enters one level of nesting opened at `offset`.
  bool enter(size_t offset) {
    if (++depth_ > max_nesting_depth) {
      fail(offset, "the condition is nested too deeply: more than "
                     + std::to_string(max_nesting_depth)
                     + " levels of '(' and 'not'");
      return false;
    }
    return true;
  }

  void leave() { --depth_; }

  std::optional<condition>
  parse_chain(condition::kind kind, token_kind op,
              std::optional<condition> (parser::*term)()) {
    auto first = (this->*term)();
    if (!first || peek().kind != op)
      return first;
    condition c;
    c.what = kind;
    c.children.push_back(std::move(*first));
    while (peek().kind == op) {
      next();
      auto rhs = (this->*term)();
      if (!rhs)
        return std::nullopt;
      c.children.push_back(std::move(*rhs));
    }
    return c;
  }

  std::optional<condition> parse_or() {
    return parse_chain(condition::kind::or_, token_kind::kw_or,
                       &parser::parse_and);
  }

  std::optional<condition> parse_and() {
    return parse_chain(condition::kind::and_, token_kind::kw_and,
                       &parser::parse_not);
  }

  std::optional<condition> parse_not() {
    auto kind = peek().kind;
    if (kind == token_kind::kw_not) {
      auto t = next();
      if (!enter(t.offset))
        return std::nullopt;
      auto inner = parse_not();
      leave();
      if (!inner)
        return std::nullopt;
      condition c;
      c.what = condition::kind::not_;
      c.children.push_back(std::move(*inner));
      return c;
    }
    if (kind == token_kind::lparen) {
      auto open = next();
      if (!enter(open.offset))
        return std::nullopt;
      auto inner = parse_or();
      if (!inner)
        return std::nullopt;
      if (peek().kind != token_kind::rparen) {
        prev_.reset();
        expected("')' to close the '(' at column "
                   + std::to_string(open.offset + 1),
                 peek());
        return std::nullopt;
      }
      next();
      leave();
      return inner;
    }
    return parse_predicate();
  }

  std::optional<condition> parse_predicate() {
    auto col = parse_column("a column");
    if (!col)
      return std::nullopt;
    condition c;
    c.column = col->name;
    c.type = col->type;
    auto& t = peek();
    switch (t.kind) {
    case token_kind::eq:
    case token_kind::ne:
    case token_kind::lt:
    case token_kind::le:
    case token_kind::gt:
    case token_kind::ge: {
      auto op = next();
      c.op = compare_op(op.kind);
      bool ordering = c.op != predicate_op::eq && c.op != predicate_op::ne;
      if (ordering && col->type == column_type::boolean) {
        fail(op.offset, "'" + std::string{source(op)}
                          + "' cannot order the boolean column '" + col->name
                          + "'; compare it with = or !=");
        return std::nullopt;
      }
      if (ordering && peek().kind == token_kind::kw_null) {
        fail(peek().offset, "'" + std::string{source(op)}
                              + "' cannot compare with null; " + "write '"
                              + col->name + " is null' or '" + col->name
                              + " is not null'");
        return std::nullopt;
      }
      auto v = parse_value(*col);
      if (!v)
        return std::nullopt;
      c.value = std::move(*v);
      return c;
    }
    case token_kind::kw_in: {
      next();
      c.op = predicate_op::in;
      if (!parse_list(*col, c.value))
        return std::nullopt;
      return c;
    }
    case token_kind::kw_like:
    case token_kind::kw_ilike: {
      if (!parse_like(*col, false, c))
        return std::nullopt;
      return c;
    }
    case token_kind::kw_is: {
      next();
      bool negated = false;
      if (peek().kind == token_kind::kw_not) {
        next();
        negated = true;
      }
      if (peek().kind != token_kind::kw_null) {
        expected(negated ? "'null'" : "'null' or 'not null'", peek(),
                 "; compare values with = and !=");
        return std::nullopt;
      }
      next();
      c.op = negated ? predicate_op::is_not_null : predicate_op::is_null;
      return c;
    }
    case token_kind::kw_not: {
      next();
      auto& u = peek();
      if (u.kind == token_kind::kw_in) {
        next();
        c.op = predicate_op::not_in;
        if (!parse_list(*col, c.value))
          return std::nullopt;
        return c;
      }
      if (u.kind == token_kind::kw_like || u.kind == token_kind::kw_ilike) {
        if (!parse_like(*col, true, c))
          return std::nullopt;
        return c;
      }
      expected("'in', 'like' or 'ilike'", u,
               "; to negate a comparison, write 'not' before the column "
               "or use '!='");
      return std::nullopt;
    }
    case token_kind::end:
    case token_kind::kw_and:
    case token_kind::kw_or:
    case token_kind::rparen:
    case token_kind::kw_order:
    case token_kind::kw_limit:
      if (col->type == column_type::boolean) {
        c.op = predicate_op::is_true;
        return c;
      }
      break;
    default: break;
    }
    expected("a comparison operator (=, !=, <, <=, >, >=, in, like, is)", t);
    return std::nullopt;
  }

  static predicate_op compare_op(token_kind k) {
    switch (k) {
    case token_kind::ne: return predicate_op::ne;
    case token_kind::lt: return predicate_op::lt;
    case token_kind::le: return predicate_op::le;
    case token_kind::gt: return predicate_op::gt;
    case token_kind::ge: return predicate_op::ge;
    default: return predicate_op::eq;
    }
  }

  /// Reads `like 'pattern'` or `ilike 'pattern'`; `not` is already read.
  bool parse_like(const column& col, bool negated, condition& c) {
    auto op = next();
    bool ignore_case = op.kind == token_kind::kw_ilike;
    if (col.type != column_type::text) {
      fail(op.offset, "'" + std::string{source(op)} + "' matches text, but '"
                        + col.name + "' is a "
                        + std::string{to_string(col.type)} + " column");
      return false;
    }
    if (peek().kind != token_kind::string) {
      expected("a pattern in single quotes such as '%timeout%'", peek());
      return false;
    }
    if (ignore_case)
      c.op = negated ? predicate_op::not_ilike : predicate_op::ilike;
    else
      c.op = negated ? predicate_op::not_like : predicate_op::like;
    c.value = std::move(next().value);
    return true;
  }

  /// Reads `(value, ...)` after `in` into `out`, a JSON list.
  bool parse_list(const column& col, json& out) {
    if (peek().kind != token_kind::lparen) {
      expected("'(' to start a list of values", peek());
      return false;
    }
    auto open = next();
    if (peek().kind == token_kind::rparen) {
      fail(peek().offset, "an 'in' list needs at least one value");
      return false;
    }
    out = json::array();
    for (;;) {
      auto v = parse_value(col);
      if (!v)
        return false;
      out.push_back(std::move(*v));
      if (peek().kind != token_kind::comma)
        break;
      next();
    }
    if (peek().kind != token_kind::rparen) {
      prev_.reset();
      expected("',' or ')' to close the list at column "
                 + std::to_string(open.offset + 1),
               peek());
      return false;
    }
    next();
    return true;
  }

  /// Fails because `t` does not fit `col`'s type.
  void mismatch(const column& col, const token& t) {
    std::string msg
      = "'" + col.name + "' is a " + std::string{to_string(col.type)}
        + " column; compare it with " + std::string{example_of(col.type)}
        + ", not " + describe(t);
    auto src = source(t);
    bool is_string = t.kind == token_kind::string;
    auto inner
      = is_string ? t.value.get_ref<const std::string&>() : std::string{};
    switch (col.type) {
    case column_type::text:
      if (t.kind == token_kind::number || t.kind == token_kind::quantity)
        msg += " (quote it: '" + shorten(src) + "')";
      break;
    case column_type::number:
      if (is_string && looks_numeric(inner))
        msg += " (drop the quotes)";
      break;
    case column_type::duration:
      if (t.kind == token_kind::number)
        msg += " (a bare number has no unit)";
      else if (is_string && config::parse_duration(inner))
        msg += " (drop the quotes)";
      break;
    default: break;
    }
    fail(t.offset, std::move(msg));
  }

  /// Reads a literal and converts it to the representation of `col`'s
  /// values in rows.
  std::optional<json> parse_value(const column& col) {
    auto& t = peek();
    switch (t.kind) {
    case token_kind::kw_null: next(); return json(nullptr);
    case token_kind::string:
      if (col.type == column_type::text)
        return std::move(next().value);
      if (col.type == column_type::time) {
        std::string reason;
        auto ns = detail::parse_timestamp(t.value.get_ref<const std::string&>(),
                                          reason);
        if (!ns) {
          fail(t.offset, shorten(source(t)) + " is not a timestamp: " + reason
                           + "; write e.g. '2024-05-01T12:00:00Z'");
          return std::nullopt;
        }
        next();
        return json(*ns);
      }
      break;
    case token_kind::number:
      if (col.type == column_type::number)
        return std::move(next().value);
      break;
    case token_kind::quantity:
      if (col.type == column_type::duration) {
        std::string reason;
        auto d = config::parse_duration(source(t), &reason);
        if (!d) {
          fail(t.offset, "bad duration: " + reason);
          return std::nullopt;
        }
        next();
        return to_millis(*d);
      }
      break;
    case token_kind::kw_true:
    case token_kind::kw_false:
      if (col.type == column_type::boolean)
        return json(next().kind == token_kind::kw_true);
      break;
    case token_kind::name: {
      auto name = source(t);
      if (find_named(table_->columns, name)) {
        expected("a value", t,
                 "; a column compares with a literal, not with another "
                 "column");
        return std::nullopt;
      }
      if (col.type == column_type::text) {
        expected("a value", t, "; quote text: '" + shorten(name) + "'");
        return std::nullopt;
      }
      expected("a value", t,
               "; compare '" + col.name + "' with "
                 + std::string{example_of(col.type)});
      return std::nullopt;
    }
    default:
      expected("a value", t,
               "; compare '" + col.name + "' with "
                 + std::string{example_of(col.type)});
      return std::nullopt;
    }
    mismatch(col, t);
    return std::nullopt;
  }

  // -- state ------------------------------------------------------------------

  std::string_view text_;
  const std::vector<table>& schema_;
  query_error& err_;
  /// Where the text ends, not counting a trailing ';'.
  size_t end_ = 0;
  size_t pos_ = 0;
  size_t depth_ = 0;
  bool failed_ = false;
  bool order_direction_given_ = false;
  std::optional<token> peeked_;
  /// The last token consumed, to say what an expected token follows.
  std::optional<token> prev_;
  const table* table_ = nullptr;
  parts out_;
};

} // namespace

std::optional<query> parse_query(std::string_view text,
                                 const std::vector<table>& schema,
                                 query_error& err) {
  try {
    parser p{text, schema, err};
    auto parsed = p.parse();
    if (!parsed)
      return std::nullopt;
    query q;
    q.table_ = std::move(parsed->table);
    q.columns_ = std::move(parsed->columns);
    q.where_ = std::move(parsed->where);
    q.order_ = std::move(parsed->order);
    q.limit_ = parsed->limit;
    return q;
  } catch (const std::exception& ex) {
    err = {std::string{"cannot parse the query: "} + ex.what(), 1};
  } catch (...) {
    err = {"cannot parse the query", 1};
  }
  return std::nullopt;
}

} // namespace troupe::runtime::query
