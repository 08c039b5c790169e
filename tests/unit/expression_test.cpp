#include "runtime/spec/expression.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

using namespace troupe::runtime;
using json = nlohmann::json;

namespace {

/// Walks `segments` through `root`: object keys, and digits as list indexes.
std::optional<json> walk(const json& root,
                         const std::vector<std::string>& segments) {
  const json* p = &root;
  for (auto& s : segments) {
    if (p->is_object()) {
      auto it = p->find(s);
      if (it == p->end())
        return std::nullopt;
      p = &*it;
    } else if (p->is_array()) {
      if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
      auto i = std::stoul(s);
      if (i >= p->size())
        return std::nullopt;
      p = &(*p)[i];
    } else {
      return std::nullopt;
    }
  }
  return *p;
}

/// The values paths resolve against in these tests.
const json& context() {
  static const json ctx = json::parse(R"({
    "inputs": {
      "region": "eu",
      "regions": ["eu", "us"],
      "n": 42,
      "flag": true,
      "off": false,
      "name": "hello world",
      "obj": {"a": 1, "b": [1, 2.0]},
      "obj2": {"b": [1.0, 2], "a": 1.0},
      "big": 9007199254740993,
      "big2": 9007199254740992,
      "max": 18446744073709551615,
      "neg": -5,
      "nothing": null
    },
    "nodes": {
      "check": {"output": {"total": 150, "items": [10, 20, 30]}},
      "a-b": {"output": {"ok": true}}
    }
  })");
  return ctx;
}

struct outcome {
  std::optional<bool> value;
  std::string error;
  std::vector<std::string> looked_up;
};

/// Parses `text` (which must parse) and evaluates it against context().
outcome run(std::string_view text) {
  outcome out;
  expression_error perr;
  auto e = parse_expression(text, perr);
  if (!e) {
    out.error
      = "parse error at " + std::to_string(perr.offset) + ": " + perr.message;
    ADD_FAILURE() << "'" << text << "' did not parse: " << out.error;
    return out;
  }
  auto lookup = [&out](const std::vector<std::string>& segments) {
    std::string joined;
    for (auto& s : segments)
      joined += (joined.empty() ? "" : ".") + s;
    out.looked_up.push_back(joined);
    return walk(context(), segments);
  };
  out.value = evaluate(*e, lookup, out.error);
  return out;
}

/// Returns whether `text` evaluates to `expected` without an error.
::testing::AssertionResult evaluates_to(std::string_view text, bool expected) {
  auto out = run(text);
  if (!out.value)
    return ::testing::AssertionFailure()
           << "'" << text << "' failed: " << out.error;
  if (*out.value != expected)
    return ::testing::AssertionFailure()
           << "'" << text << "' is " << *out.value;
  return ::testing::AssertionSuccess();
}

/// Returns the evaluation error of `text` (which must parse and fail).
std::string eval_error(std::string_view text) {
  auto out = run(text);
  EXPECT_FALSE(out.value) << "'" << text << "' evaluated to " << *out.value;
  return out.error;
}

/// Returns the parse error of `text` (which must not parse).
expression_error parse_error(std::string_view text) {
  expression_error err;
  auto e = parse_expression(text, err);
  EXPECT_FALSE(e) << "'" << text << "' parsed";
  return err;
}

} // namespace

// -- parsing ------------------------------------------------------------------

TEST(Expression, ParsesEveryConstruct) {
  const char* valid[] = {
    "true",
    "false",
    "null == null",
    "1 == 1",
    "-1 < 0",
    "2.5 > -0.5e-3",
    "1e3 == 1000",
    "1E+3 == 1000",
    "0 == -0",
    "'single' == \"double\"",
    R"('esc \\ \' \" \n \t' == "x")",
    "[] == []",
    "[1, 'a', [true, null], inputs.n] == [1]",
    "inputs.n",
    "_under.score-dash.x_1",
    "nodes.check.output.items[0] == 10",
    "nodes.check.output.items.0 == 10",
    "a[1][2].b.3",
    "{{ inputs.n }} == 42",
    "{{inputs.n}}==42",
    "(true)",
    "((inputs.flag))",
    "not true",
    "not not not false",
    "a and b and c",
    "a or b or c",
    "a and b or c and not d",
    "a == b",
    "a != b",
    "a < b",
    "a > b",
    "a <= b",
    "a >= b",
    "a in b",
    "x in ['eu', 'us']",
    "x in[1]",
    "inputs.null == inputs.in",
    "true-ish",
    " \t\r\n a \n",
    "(a == 1) == (b == 2)",
    "not (a in b)",
    "not a in b",
  };
  for (auto text : valid) {
    expression_error err;
    EXPECT_TRUE(parse_expression(text, err))
      << "'" << text << "': " << err.offset << ": " << err.message;
  }
}

TEST(Expression, PathsAreSplitLikeTemplatePaths) {
  expression_error err;
  auto e = parse_expression(
    "nodes.a.output.items[0] == 1 and {{ inputs.x }} in [b.0, 'c'] "
    "or not (nodes.a-b.y[12].z)",
    err);
  ASSERT_TRUE(e) << err.message;
  auto paths = expression_paths(*e);
  ASSERT_EQ(paths.size(), 4u);
  EXPECT_EQ(paths[0].segments,
            (std::vector<std::string>{"nodes", "a", "output", "items", "0"}));
  EXPECT_EQ(paths[0].offset, 0u);
  EXPECT_EQ(paths[1].segments, (std::vector<std::string>{"inputs", "x"}));
  EXPECT_EQ(paths[1].offset, 36u);
  EXPECT_EQ(paths[2].segments, (std::vector<std::string>{"b", "0"}));
  EXPECT_EQ(paths[2].offset, 52u);
  EXPECT_EQ(paths[3].segments,
            (std::vector<std::string>{"nodes", "a-b", "y", "12", "z"}));
  EXPECT_EQ(paths[3].offset, 70u);
}

TEST(Expression, KeywordsAreNotPaths) {
  expression_error err;
  auto e = parse_expression("true and not false or null in [] and x.true", err);
  ASSERT_TRUE(e) << err.message;
  auto paths = expression_paths(*e);
  ASSERT_EQ(paths.size(), 1u);
  EXPECT_EQ(paths[0].segments, (std::vector<std::string>{"x", "true"}));
  EXPECT_TRUE(expression_paths(*parse_expression("1 == 1", err)).empty());
}

// -- semantics ----------------------------------------------------------------

TEST(Expression, LiteralsAndBareOperands) {
  EXPECT_TRUE(evaluates_to("true", true));
  EXPECT_TRUE(evaluates_to("false", false));
  EXPECT_TRUE(evaluates_to("inputs.flag", true));
  EXPECT_TRUE(evaluates_to("inputs.off", false));
  EXPECT_TRUE(evaluates_to("(((inputs.flag)))", true));
  EXPECT_TRUE(evaluates_to("nodes.a-b.output.ok", true));
  EXPECT_TRUE(evaluates_to(R"('a\'b' == "a'b")", true));
  EXPECT_TRUE(evaluates_to(R"('tab\there' != 'tab here')", true));
  EXPECT_TRUE(evaluates_to("1e3 == 1000", true));
  EXPECT_TRUE(evaluates_to("-2.5e1 == -25", true));
  EXPECT_EQ(eval_error("inputs.n"), "'inputs.n' is 42, not true or false");
  EXPECT_EQ(eval_error("(inputs.name)"),
            "'inputs.name' is \"hello world\", not true or false");
  EXPECT_EQ(eval_error("inputs.nothing"),
            "'inputs.nothing' is null, not true or false");
  EXPECT_EQ(eval_error("42"), "42 is not true or false");
  EXPECT_EQ(eval_error("[1, 2]"), "'[1, 2]' is [1, 2], not true or false");
}

TEST(Expression, StringEscapes) {
  expression_error err;
  auto e = parse_expression(R"(x == 'a\\b\'c\"d\ne\tf')", err);
  ASSERT_TRUE(e) << err.message;
  std::string error;
  auto result = evaluate(
    *e,
    [](const std::vector<std::string>&) -> std::optional<json> {
      return json("a\\b'c\"d\ne\tf");
    },
    error);
  ASSERT_TRUE(result) << error;
  EXPECT_TRUE(*result);
}

TEST(Expression, EqualityIsStructuralAndNumeric) {
  EXPECT_TRUE(evaluates_to("1 == 1.0", true));
  EXPECT_TRUE(evaluates_to("1 != 1.0", false));
  EXPECT_TRUE(evaluates_to("0 == -0.0", true));
  EXPECT_TRUE(evaluates_to("nodes.check.output.total == 150.0", true));
  EXPECT_TRUE(evaluates_to("1 == '1'", false));
  EXPECT_TRUE(evaluates_to("1 != '1'", true));
  EXPECT_TRUE(evaluates_to("null == false", false));
  EXPECT_TRUE(evaluates_to("inputs.nothing == null", true));
  EXPECT_TRUE(evaluates_to("[1, [2, 'x']] == [1.0, [2.0, 'x']]", true));
  EXPECT_TRUE(evaluates_to("[1, 2] == [2, 1]", false));
  EXPECT_TRUE(evaluates_to("[1] == [1, 1]", false));
  EXPECT_TRUE(evaluates_to("inputs.obj == inputs.obj2", true));
  EXPECT_TRUE(evaluates_to("inputs.obj == inputs.regions", false));
  EXPECT_TRUE(evaluates_to("nodes.check.output.items == [10, 20, 30.0]", true));
  // Integers compare exactly, beyond a double's precision.
  EXPECT_TRUE(evaluates_to("inputs.big == inputs.big2", false));
  EXPECT_TRUE(evaluates_to("inputs.big > inputs.big2", true));
  EXPECT_TRUE(evaluates_to("(1 == 1) == true", true));
}

TEST(Expression, OrderingNeedsTwoNumbersOrTwoStrings) {
  EXPECT_TRUE(evaluates_to("nodes.check.output.total > 100", true));
  EXPECT_TRUE(evaluates_to("nodes.check.output.total < 100", false));
  EXPECT_TRUE(evaluates_to("150 <= nodes.check.output.total", true));
  EXPECT_TRUE(evaluates_to("150 >= 150.5", false));
  EXPECT_TRUE(evaluates_to("-1 < 0", true));
  EXPECT_TRUE(evaluates_to("inputs.neg < inputs.max", true));
  EXPECT_TRUE(evaluates_to("inputs.max > 1e20", false));
  EXPECT_TRUE(evaluates_to("2.5 > 2", true));
  EXPECT_TRUE(evaluates_to("'abc' < 'abd'", true));
  EXPECT_TRUE(evaluates_to("'b' > 'abc'", true));
  EXPECT_TRUE(evaluates_to("'' <= ''", true));
  EXPECT_EQ(eval_error("1 < 'a'"),
            "cannot order 1 (a number) and 'a' (a string) with '<': it "
            "compares two numbers or two strings");
  EXPECT_EQ(eval_error("inputs.regions >= inputs.nothing"),
            "cannot order 'inputs.regions' (a list) and 'inputs.nothing' "
            "(null) with '>=': it compares two numbers or two strings");
  EXPECT_NE(eval_error("true > false")
              .find("(a boolean) and false (a "
                    "boolean)"),
            std::string::npos);
  EXPECT_NE(eval_error("inputs.obj < 1").find("'inputs.obj' (an object)"),
            std::string::npos);
}

TEST(Expression, AndOrNotNeedBooleans) {
  EXPECT_TRUE(evaluates_to("true and true", true));
  EXPECT_TRUE(evaluates_to("true and false", false));
  EXPECT_TRUE(evaluates_to("false or true", true));
  EXPECT_TRUE(evaluates_to("false or false", false));
  EXPECT_TRUE(evaluates_to("not false", true));
  EXPECT_TRUE(evaluates_to("not not true", true));
  EXPECT_TRUE(evaluates_to("not 1 == 2", true)); // not (1 == 2)
  // `and` binds tighter than `or`.
  EXPECT_TRUE(evaluates_to("true or false and false", true));
  EXPECT_TRUE(evaluates_to("(true or false) and false", false));
  EXPECT_EQ(eval_error("inputs.n and true"),
            "'inputs.n' is 42, not true or false");
  EXPECT_EQ(eval_error("true and inputs.region"),
            "'inputs.region' is \"eu\", not true or false");
  EXPECT_EQ(eval_error("false or 1"), "1 is not true or false");
  EXPECT_EQ(eval_error("not inputs.nothing"),
            "'inputs.nothing' is null, not true or false");
}

TEST(Expression, AndOrShortCircuit) {
  auto out = run("false and nodes.missing.output");
  EXPECT_EQ(out.value, false) << out.error;
  EXPECT_TRUE(out.looked_up.empty());
  out = run("inputs.off and nodes.missing.output and nodes.other");
  EXPECT_EQ(out.value, false) << out.error;
  EXPECT_EQ(out.looked_up, (std::vector<std::string>{"inputs.off"}));
  out = run("true or nodes.missing.output");
  EXPECT_EQ(out.value, true) << out.error;
  EXPECT_TRUE(out.looked_up.empty());
  // A non-boolean that is never reached is no error either.
  out = run("inputs.flag or 42");
  EXPECT_EQ(out.value, true) << out.error;
  out = run("true and nodes.missing.output");
  EXPECT_FALSE(out.value);
  EXPECT_EQ(out.error, "'nodes.missing.output' resolved to nothing");
}

TEST(Expression, MembershipOverListsStringsAndObjects) {
  EXPECT_TRUE(evaluates_to("inputs.region in ['eu', 'us']", true));
  EXPECT_TRUE(evaluates_to("'fr' in ['eu', 'us']", false));
  EXPECT_TRUE(evaluates_to("inputs.region in inputs.regions", true));
  EXPECT_TRUE(evaluates_to("1 in [1.0, 2]", true));
  EXPECT_TRUE(evaluates_to("[1] in [[1.0], 2]", true));
  EXPECT_TRUE(evaluates_to("null in []", false));
  EXPECT_TRUE(evaluates_to("'lo w' in inputs.name", true));
  EXPECT_TRUE(evaluates_to("'' in ''", true));
  EXPECT_TRUE(evaluates_to("'xyz' in inputs.name", false));
  EXPECT_TRUE(evaluates_to("'a' in inputs.obj", true));
  EXPECT_TRUE(evaluates_to("'c' in inputs.obj", false));
  EXPECT_TRUE(evaluates_to("not 'c' in inputs.obj", true));
  EXPECT_EQ(eval_error("1 in inputs.name"),
            "1 is a number, but 'in' over 'inputs.name' (a string) needs a "
            "string on the left");
  EXPECT_EQ(eval_error("inputs.n in inputs.obj"),
            "'inputs.n' is a number, but 'in' over 'inputs.obj' (an object) "
            "needs a string key on the left");
  EXPECT_EQ(eval_error("'a' in inputs.n"),
            "'in' needs a list, a string or an object on the right, but "
            "'inputs.n' is a number");
  EXPECT_NE(eval_error("'a' in null").find("null is null"), std::string::npos);
}

TEST(Expression, BracedPathsAndListsOfPaths) {
  EXPECT_TRUE(evaluates_to("{{ inputs.n }} == 42", true));
  EXPECT_TRUE(evaluates_to("{{nodes.check.output.items[1]}} == 20", true));
  EXPECT_TRUE(evaluates_to("{{ nodes.check.output.items.2 }} == 30", true));
  EXPECT_TRUE(evaluates_to("{{ inputs.flag }}", true));
  EXPECT_TRUE(evaluates_to("'us' in [inputs.region, 'us']", true));
  EXPECT_TRUE(
    evaluates_to("[inputs.n, {{ inputs.region }}] == [42, 'eu']", true));
  EXPECT_TRUE(
    evaluates_to("42 in [nodes.check.output.total, [inputs.n]]", false));
  EXPECT_EQ(eval_error("{{ inputs.x }} == 1"),
            "'inputs.x' resolved to nothing");
  EXPECT_EQ(eval_error("1 in [1, nodes.a.output.x]"),
            "'nodes.a.output.x' resolved to nothing");
  EXPECT_EQ(eval_error("nodes.check.output.items[3] == 1"),
            "'nodes.check.output.items[3]' resolved to nothing");
}

TEST(Expression, LookupReceivesSegments) {
  expression_error err;
  auto e = parse_expression("nodes.a.output.items[0] == a.b.7", err);
  ASSERT_TRUE(e) << err.message;
  std::vector<std::vector<std::string>> seen;
  std::string error;
  auto result = evaluate(
    *e,
    [&](const std::vector<std::string>& segments) -> std::optional<json> {
      seen.push_back(segments);
      return json(7);
    },
    error);
  ASSERT_TRUE(result) << error;
  EXPECT_TRUE(*result);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0],
            (std::vector<std::string>{"nodes", "a", "output", "items", "0"}));
  EXPECT_EQ(seen[1], (std::vector<std::string>{"a", "b", "7"}));
}

TEST(Expression, ExceptionsFromTheLookupBecomeErrors) {
  expression_error err;
  auto e = parse_expression("x == 1", err);
  ASSERT_TRUE(e);
  std::string error;
  auto result = evaluate(
    *e,
    [](const std::vector<std::string>&) -> std::optional<json> {
      throw std::runtime_error("boom");
    },
    error);
  EXPECT_FALSE(result);
  EXPECT_NE(error.find("boom"), std::string::npos);
  EXPECT_FALSE(evaluate(*e, expression_lookup{}, error));
  EXPECT_NE(error.find("'x'"), std::string::npos);
}

// -- errors -------------------------------------------------------------------

TEST(Expression, ParseErrorsNameWhatWasFoundWhere) {
  struct bad {
    std::string text;
    size_t offset;
    std::string message;
  };
  const bad cases[] = {
    {"", 0, "the expression is empty"},
    {"  \t ", 0, "the expression is empty"},
    {"'abc", 0, "unterminated string"},
    {"a == \"x", 5, "unterminated string"},
    {"a == 'x\\", 5, "unterminated string"},
    {"a ==", 4,
     "expected an operand after '==', found the end of the expression"},
    {"a and", 5,
     "expected an operand after 'and', found the end of the expression"},
    {"not", 3,
     "expected an operand after 'not', found the end of the expression"},
    {"a in", 4,
     "expected an operand after 'in', found the end of the expression"},
    {")", 0, "expected an operand, found ')'"},
    {"a == )", 5, "expected an operand after '==', found ')'"},
    {"== 1", 0, "expected an operand, found '=='"},
    {"a == $x", 5, "unexpected character '$'"},
    {"a # b", 2, "unexpected character '#'"},
    {"a == \x01", 5, "unexpected character '\\x01'"},
    {"(a", 2,
     "expected ')' to close the '(' opened at character 0, found the end "
     "of the expression"},
    {"((a) == 1", 9,
     "expected ')' to close the '(' opened at character 0, found the end "
     "of the expression"},
    {"(a ]", 3,
     "expected ')' to close the '(' opened at character 0, found ']'"},
    {"a == [1, 2", 10,
     "expected ']' to close the list opened at character 5, found the end "
     "of the expression"},
    {"a in [1 2]", 8,
     "expected ']' to close the list opened at character 5, found '2'"},
    {"[1,]", 3, "expected an operand after ',', found ']'"},
    {"[,]", 1, "expected an operand after '[', found ','"},
    {"a)", 1, "unexpected ')' after the expression"},
    {"a ]", 2, "unexpected ']' after the expression"},
    {"a foo", 2, "unexpected 'foo' after the expression"},
    {"a 'x'", 2, "unexpected string 'x' after the expression"},
    {"a AND b", 2,
     "unexpected 'AND' after the expression; keywords are lowercase: 'and'"},
    {"a not in b", 2,
     "unexpected 'not' after the expression; 'not' goes before what it "
     "negates, as in 'not x in y'"},
    {"a < b < c", 6,
     "comparisons do not chain: found '<' after 'a < b'; join comparisons "
     "with 'and'"},
    {"a = b", 2, "unexpected character '='; to compare, write '=='"},
    {"!a", 0,
     "unexpected character '!'; write 'not' to negate or '!=' to compare"},
    {"a && b", 2, "unexpected character '&'; write 'and'"},
    {"a || b", 2, "unexpected character '|'; write 'or'"},
    {"{ a }", 0,
     "unexpected character '{'; a path in braces is written {{ path }}"},
    {"a }", 2, "unexpected character '}'"},
    {"{{ true }}", 3, "expected a path after '{{', found 'true'"},
    {"{{ a", 4,
     "expected '}}' to close the '{{' opened at character 0, found the end "
     "of the expression"},
    {"{{ a == 1 }}", 5,
     "expected '}}' to close the '{{' opened at character 0, found '=='"},
    {"a.", 2,
     "expected a name or a list index after '.', found the end of the "
     "expression"},
    {"a..b", 2, "expected a name or a list index after '.', found '.'"},
    {"a.0x", 2,
     "'0x' is neither a name nor a list index; a name starts with a letter "
     "or '_', an index is digits"},
    {"a[x]", 2, "expected a list index (digits) after '[', found 'x'"},
    {"a[1", 3,
     "expected ']' to close the index opened at character 1, found the end "
     "of the expression"},
    {"a . b", 2, "unexpected character '.'"},
    {"1. == 1", 2, "expected a digit after the decimal point, found ' '"},
    {"-x", 1, "expected a digit after '-', found 'x'"},
    {"1e+", 3,
     "expected a digit in the exponent, found the end of the "
     "expression"},
    {"01", 1, "malformed number: unexpected '1' after '0'"},
    {"1abc", 1, "malformed number: unexpected 'a' after '1'"},
    {"1.5.2", 3, "malformed number: unexpected '.' after '1.5'"},
    {"x == 1e999", 5, "the number 1e999 is out of range"},
    {R"('a\qb')", 2,
     R"(unknown escape '\q' in a string; the escapes are \\ \' \" \n \t)"},
  };
  for (auto& c : cases) {
    auto err = parse_error(c.text);
    EXPECT_EQ(err.offset, c.offset) << "'" << c.text << "': " << err.message;
    EXPECT_EQ(err.message, c.message) << "'" << c.text << "'";
  }
}

TEST(Expression, NestingIsLimited) {
  // 64 levels of each kind parse and evaluate.
  std::string parens = std::string(64, '(') + "true" + std::string(64, ')');
  EXPECT_TRUE(evaluates_to(parens, true));
  std::string nots;
  for (int i = 0; i < 64; ++i)
    nots += "not ";
  EXPECT_TRUE(evaluates_to(nots + "true", true));
  std::string lists = std::string(63, '[') + "1" + std::string(63, ']');
  EXPECT_TRUE(evaluates_to(lists + " in [" + lists + "]", true));

  auto err = parse_error(std::string(65, '(') + "a" + std::string(65, ')'));
  EXPECT_EQ(err.offset, 64u);
  EXPECT_EQ(err.message, "the expression is nested too deeply: more than 64 "
                         "levels of '(', '[' and 'not'");
  err = parse_error("not " + nots + "true");
  EXPECT_EQ(err.offset, 256u);
  err = parse_error("x in " + std::string(65, '[') + std::string(65, ']'));
  EXPECT_EQ(err.offset, 69u);
  // The three kinds add up: each "[(not " is three levels.
  std::string mixed;
  for (int i = 0; i < 21; ++i)
    mixed += "[(not ";
  std::string closing;
  for (int i = 0; i < 21; ++i)
    closing += ")]";
  expression_error ok;
  EXPECT_TRUE(parse_expression(mixed + "[a]" + closing, ok)) << ok.message;
  err = parse_error(mixed + "[(a");
  EXPECT_EQ(err.offset, 127u);
  EXPECT_NE(err.message.find("nested too deeply"), std::string::npos);

  // Far deeper input fails cleanly, without exhausting the stack: 10,000
  // characters are over the length limit, which is checked first; 4,000
  // are not.
  err = parse_error(std::string(10000, '('));
  EXPECT_EQ(err.offset, 4096u);
  EXPECT_NE(err.message.find("at most 4096"), std::string::npos);
  err = parse_error(std::string(4000, '('));
  EXPECT_EQ(err.offset, 64u);
  EXPECT_NE(err.message.find("nested too deeply"), std::string::npos);
  err = parse_error("x in " + std::string(4000, '['));
  EXPECT_EQ(err.offset, 69u);
}

TEST(Expression, TextLengthIsLimited) {
  std::string at_limit = "true" + std::string(4092, ' ');
  EXPECT_TRUE(evaluates_to(at_limit, true));
  auto err = parse_error(at_limit + " ");
  EXPECT_EQ(err.offset, 4096u);
  EXPECT_EQ(err.message,
            "the expression is 4097 characters long; at most 4096 are "
            "allowed");
  err = parse_error(std::string(100000, '('));
  EXPECT_EQ(err.offset, 4096u);
}

TEST(Expression, LongOperandsAreShortenedInMessages) {
  std::string name(200, 'x');
  auto out = run("inputs." + name);
  EXPECT_FALSE(out.value);
  EXPECT_LT(out.error.size(), 100u);
  EXPECT_NE(out.error.find("...' resolved to nothing"), std::string::npos)
    << out.error;
}

// -- robustness ---------------------------------------------------------------

TEST(Expression, RandomTextParsesOrFailsCleanly) {
  const std::vector<std::string> pieces = {
    "a",       "b.c",  "x[0]",
    ".",       "[",    "]",
    "(",       ")",    "{{",
    "}}",      "{",    "}",
    ",",       "==",   "!=",
    "<",       ">",    "<=",
    ">=",      "=",    "!",
    " in ",    "in",   " and ",
    " or ",    "or",   " not ",
    "not",     "true", "false",
    "null",    "'",    "\"",
    "\\",      "'s'",  "\"d\"",
    "1",       "-",    "2.5",
    "1e3",     "e",    "0",
    "9",       " ",    "\t",
    "\n",      "$",    "_",
    "-x",      "\xff", std::string(1, '\0'),
    "items.0", "&&",   "||",
  };
  std::mt19937 rng{20240607};
  std::uniform_int_distribution<size_t> pick{0, pieces.size() - 1};
  std::uniform_int_distribution<int> length{0, 40};
  std::uniform_int_distribution<int> byte{0, 255};
  auto lookup
    = [](const std::vector<std::string>& segments) -> std::optional<json> {
    if (segments.front() == "a")
      return json(true);
    if (segments.front() == "b")
      return json::array({1, "s"});
    if (segments.front() == "x")
      return std::nullopt;
    return json("text");
  };
  size_t parsed = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string text;
    auto n = length(rng);
    for (int k = 0; k < n; ++k) {
      // Mostly grammar pieces, sometimes an arbitrary byte.
      if (k % 7 == 6)
        text += static_cast<char>(byte(rng));
      else
        text += pieces[pick(rng)];
    }
    expression_error err;
    auto e = parse_expression(text, err);
    if (!e) {
      ASSERT_LE(err.offset, text.size()) << text;
      ASSERT_FALSE(err.message.empty()) << text;
      continue;
    }
    ++parsed;
    for (auto& p : expression_paths(*e)) {
      ASSERT_LT(p.offset, text.size());
      ASSERT_FALSE(p.segments.empty());
    }
    std::string error;
    auto result = evaluate(*e, lookup, error);
    if (!result) {
      ASSERT_FALSE(error.empty()) << text;
    }
  }
  // The generator reaches the evaluator, not only the error paths.
  EXPECT_GT(parsed, 100u);
}
