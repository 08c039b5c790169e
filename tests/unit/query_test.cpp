#include "runtime/query/query.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <random>
#include <string>
#include <vector>

using namespace troupe::runtime::query;
using json = nlohmann::json;
using testing::HasSubstr;

namespace {

const std::vector<table>& schema() {
  static const std::vector<table> tables{
    {"runs",
     {{"id", column_type::text, "run id"},
      {"workflow", column_type::text, "workflow name"},
      {"state", column_type::text, "run state"},
      {"age", column_type::duration, "time since the run started"},
      {"started", column_type::time, "when the run started"},
      {"paused", column_type::boolean, "whether the run is paused"},
      {"steps", column_type::number, "nodes in the run"}}},
    {"nodes",
     {{"run", column_type::text, "run id"},
      {"node", column_type::text, "node id"},
      {"state", column_type::text, "node state"},
      {"attempts", column_type::number, "attempts so far"},
      {"last_error", column_type::text, "the last error"},
      {"age", column_type::duration, "time in this state"}}},
  };
  return tables;
}

/// Parses `text`, failing the test when it does not parse.
query parse(std::string_view text) {
  query_error err;
  auto q = parse_query(text, schema(), err);
  if (!q) {
    ADD_FAILURE() << "'" << text << "' did not parse: " << to_string(err);
    // A query that parses, so that callers can go on.
    return *parse_query("select runs", schema(), err);
  }
  return *q;
}

/// Returns the error for `text`, failing the test when it parses.
query_error error_of(std::string_view text) {
  query_error err;
  if (parse_query(text, schema(), err))
    ADD_FAILURE() << "'" << text << "' parsed, but should not";
  return err;
}

bool match(std::string_view text, const json& row) {
  return matches(parse(text), row);
}

/// Returns the values of `column` in `rows`, in order.
json values(const std::vector<json>& rows, const std::string& column) {
  auto out = json::array();
  for (auto& row : rows)
    out.push_back(row.contains(column) ? row[column] : json());
  return out;
}

} // namespace

// -- parsing ------------------------------------------------------------------

TEST(QueryParse, SelectAlone) {
  auto q = parse("select runs");
  EXPECT_EQ(q.table(), "runs");
  EXPECT_TRUE(q.columns().empty());
  EXPECT_FALSE(q.has_condition());
  EXPECT_FALSE(q.order());
  EXPECT_FALSE(q.limit());
  EXPECT_TRUE(matches(q, json::object()));
}

TEST(QueryParse, KeywordsAndNamesIgnoreCase) {
  auto q = parse("SELECT Runs WHERE State = 'x' Order By AGE Desc LiMiT 3");
  EXPECT_EQ(q.table(), "runs");
  EXPECT_EQ(q.columns(), (std::vector<std::string>{"state", "age"}));
  ASSERT_TRUE(q.order());
  EXPECT_EQ(q.order()->column, "age");
  EXPECT_TRUE(q.order()->descending);
  EXPECT_EQ(q.limit(), 3u);
}

TEST(QueryParse, ColumnsListedOnceInOrderOfUse) {
  auto q = parse("select nodes where attempts > 1 and (state = 'a' or "
                 "attempts < 9) and last_error is null order by state");
  EXPECT_EQ(q.table(), "nodes");
  EXPECT_EQ(q.columns(),
            (std::vector<std::string>{"attempts", "state", "last_error"}));
  EXPECT_FALSE(q.order()->descending);
}

TEST(QueryParse, WhitespaceAndTrailingSemicolon) {
  auto q = parse("\tselect\nruns\r\nwhere state='a'  limit\t2 ;  ");
  EXPECT_EQ(q.limit(), 2u);
  EXPECT_TRUE(matches(q, {{"state", "a"}}));
}

TEST(QueryParse, ExamplesFromTheShell) {
  parse("select runs where state = 'running' and age > 10m");
  parse("select nodes where attempts > 3 and state = 'waiting_retry' "
        "order by attempts desc limit 20");
  parse("select runs where workflow in ('orders', 'refunds') and not "
        "state = 'completed'");
  parse("select nodes where run = '01a2' and last_error like '%timeout%'");
}

// -- evaluation ---------------------------------------------------------------

TEST(QueryEval, EqualAndNotEqual) {
  json row{{"state", "running"}, {"steps", 3}, {"paused", false}};
  EXPECT_TRUE(match("select runs where state = 'running'", row));
  EXPECT_FALSE(match("select runs where state = 'Running'", row));
  EXPECT_FALSE(match("select runs where state != 'running'", row));
  EXPECT_TRUE(match("select runs where state <> 'done'", row));
  EXPECT_TRUE(match("select runs where steps = 3", row));
  EXPECT_TRUE(match("select runs where steps = 3.0", row));
  EXPECT_FALSE(match("select runs where steps = 3.5", row));
  EXPECT_TRUE(match("select runs where paused = false", row));
  EXPECT_TRUE(match("select runs where paused != true", row));
}

TEST(QueryEval, OrderingOperators) {
  json row{{"steps", 5}, {"state", "m"}};
  EXPECT_TRUE(match("select runs where steps < 6", row));
  EXPECT_FALSE(match("select runs where steps < 5", row));
  EXPECT_TRUE(match("select runs where steps <= 5", row));
  EXPECT_TRUE(match("select runs where steps > 4.5", row));
  EXPECT_FALSE(match("select runs where steps > 5", row));
  EXPECT_TRUE(match("select runs where steps >= 5", row));
  EXPECT_TRUE(match("select runs where steps > -1", row));
  EXPECT_TRUE(match("select runs where state > 'a' and state < 'n'", row));
  EXPECT_FALSE(match("select runs where state >= 'n'", row));
  // Exactly, beyond the precision of doubles.
  json big{{"steps", 9007199254740993}};
  EXPECT_TRUE(match("select runs where steps > 9007199254740992", big));
  EXPECT_TRUE(match("select runs where steps > 9007199254740992.0", big));
  EXPECT_TRUE(match("select runs where steps = 9007199254740993", big));
}

TEST(QueryEval, DurationsCompareAsMilliseconds) {
  json row{{"age", 600'000}}; // 10 minutes
  EXPECT_TRUE(match("select runs where age = 10m", row));
  EXPECT_TRUE(match("select runs where age > 9m59s", row));
  EXPECT_TRUE(match("select runs where age < 1h30m", row));
  EXPECT_TRUE(match("select runs where age >= 600000ms", row));
  EXPECT_FALSE(match("select runs where age > 10m", row));
  EXPECT_FALSE(match("select runs where age > 2d", row));
  EXPECT_TRUE(match("select runs where age > 599999999us", row));
  EXPECT_TRUE(match("select runs where age < 600000001us", row));
  EXPECT_TRUE(match("select runs where age = 0.5s", {{"age", 500}}));
  EXPECT_TRUE(match("select runs where age in (1s, 2s)", {{"age", 2000}}));
}

TEST(QueryEval, TimestampsCompareAsNanoseconds) {
  // 2024-05-01T12:00:00Z
  const int64_t noon = 1'714'564'800'000'000'000;
  json row{{"started", noon}};
  EXPECT_TRUE(match("select runs where started = '2024-05-01T12:00:00Z'", row));
  EXPECT_TRUE(match("select runs where started = '2024-05-01 12:00'", row));
  EXPECT_TRUE(match("select runs where started = '2024-05-01t12:00:00z'", row));
  EXPECT_TRUE(
    match("select runs where started = '2024-05-01T14:00:00+02:00'", row));
  EXPECT_TRUE(
    match("select runs where started = '2024-05-01T07:30:00-0430'", row));
  EXPECT_TRUE(match("select runs where started > '2024-05-01'", row));
  EXPECT_TRUE(match("select runs where started < '2024-05-02'", row));
  EXPECT_TRUE(
    match("select runs where started < '2024-05-01T12:00:00.000000001Z'", row));
  EXPECT_FALSE(
    match("select runs where started < '2024-05-01T12:00:00Z'", row));
  EXPECT_TRUE(
    match("select runs where started = '1970-01-01'", {{"started", 0}}));
  EXPECT_TRUE(match("select runs where started = '2024-02-29T00:00:00.5Z'",
                    {{"started", 1'709'164'800'500'000'000}}));
}

TEST(QueryEval, InAndNotIn) {
  json row{{"workflow", "orders"}, {"steps", 2}};
  EXPECT_TRUE(
    match("select runs where workflow in ('orders', 'refunds')", row));
  EXPECT_FALSE(match("select runs where workflow in ('refunds')", row));
  EXPECT_TRUE(match("select runs where workflow not in ('refunds')", row));
  EXPECT_FALSE(match("select runs where workflow not in ('orders')", row));
  EXPECT_TRUE(match("select runs where steps in (1, 2.0, 3)", row));
  EXPECT_TRUE(
    match("select runs where workflow in (null, 'x')", json::object()));
  EXPECT_FALSE(match("select runs where workflow in ('x')", json::object()));
}

TEST(QueryEval, LikePatterns) {
  auto like = [](std::string_view pattern, const std::string& value) {
    return match("select nodes where last_error like '" + std::string{pattern}
                   + "'",
                 {{"last_error", value}});
  };
  EXPECT_TRUE(like("%timeout%", "read timeout after 5s"));
  EXPECT_TRUE(like("%timeout%", "timeout"));
  EXPECT_FALSE(like("%timeout%", "time out"));
  EXPECT_FALSE(like("timeout", "a timeout")); // the whole string
  EXPECT_TRUE(like("t_me%", "time"));
  EXPECT_FALSE(like("t_me", "tme"));
  EXPECT_TRUE(like("%", ""));
  EXPECT_FALSE(like("_", ""));
  EXPECT_TRUE(like("a%b%c", "aXXbYYbc"));
  EXPECT_FALSE(like("a%b%c", "aXXbYYbcd"));
  EXPECT_TRUE(like("100\\%", "100%"));
  EXPECT_FALSE(like("100\\%", "1000"));
  EXPECT_TRUE(like("a\\_b", "a_b"));
  EXPECT_FALSE(like("a\\_b", "axb"));
  EXPECT_TRUE(like("it''s%", "it's done"));
  EXPECT_TRUE(like("caf_", "caf\xc3\xa9"));      // one UTF-8 character
  EXPECT_TRUE(like("_\xc3\xa9_", "x\xc3\xa9y")); // literal UTF-8
  EXPECT_FALSE(like("Timeout%", "timeout"));     // case matters
  EXPECT_TRUE(like(std::string(50, '%') + "x", std::string(2000, 'a') + "x"));
  EXPECT_FALSE(like(std::string(50, '%') + "x", std::string(2000, 'a')));
  json row{{"last_error", "Read TIMEOUT"}};
  EXPECT_TRUE(match("select nodes where last_error ilike '%timeout%'", row));
  EXPECT_FALSE(match("select nodes where last_error not ilike '%time%'", row));
  EXPECT_TRUE(match("select nodes where last_error not like '%timeout%'", row));
  // Not a string: like is false, not like is true.
  EXPECT_FALSE(match("select nodes where last_error like '%'", {{"x", 1}}));
  EXPECT_TRUE(match("select nodes where last_error not like '%'", {{"x", 1}}));
}

TEST(QueryEval, NullHandling) {
  json missing = json::object();
  json null_state{{"state", nullptr}, {"steps", nullptr}};
  for (auto& row : {missing, null_state}) {
    EXPECT_TRUE(match("select runs where state is null", row));
    EXPECT_FALSE(match("select runs where state is not null", row));
    EXPECT_TRUE(match("select runs where state = null", row));
    EXPECT_FALSE(match("select runs where state != null", row));
    EXPECT_FALSE(match("select runs where state = 'running'", row));
    EXPECT_TRUE(match("select runs where state != 'running'", row));
    EXPECT_FALSE(match("select runs where steps < 3", row));
    EXPECT_FALSE(match("select runs where steps >= 3", row));
    EXPECT_FALSE(match("select runs where state like '%'", row));
    EXPECT_FALSE(match("select runs where state in ('a', 'b')", row));
    EXPECT_TRUE(match("select runs where state not in ('a', 'b')", row));
    EXPECT_FALSE(match("select runs where paused", row));
  }
  json set{{"state", "done"}};
  EXPECT_FALSE(match("select runs where state is null", set));
  EXPECT_TRUE(match("select runs where state is not null", set));
  EXPECT_TRUE(match("select runs where state != null", set));
  // A row that is not an object has only nulls.
  EXPECT_TRUE(match("select runs where state is null", json::array()));
}

TEST(QueryEval, BooleanColumnAlone) {
  json paused{{"paused", true}};
  json running{{"paused", false}};
  EXPECT_TRUE(match("select runs where paused", paused));
  EXPECT_FALSE(match("select runs where paused", running));
  EXPECT_TRUE(match("select runs where not paused", running));
  EXPECT_TRUE(match("select runs where (paused) and paused = true", paused));
  EXPECT_TRUE(match("select runs where paused or state = 'x'", paused));
  auto q = parse("select runs where paused order by age limit 1");
  EXPECT_TRUE(matches(q, paused));
  // A truthy value of another type is not true.
  EXPECT_FALSE(match("select runs where paused", {{"paused", 1}}));
}

TEST(QueryEval, NotBindsTighterThanAndTighterThanOr) {
  // `not a and b or c` is `((not a) and b) or c`.
  auto q = parse("select nodes where not state = 'a' and attempts = 1 or "
                 "run = 'r'");
  EXPECT_TRUE(matches(q, {{"state", "b"}, {"attempts", 1}}));
  EXPECT_FALSE(matches(q, {{"state", "a"}, {"attempts", 1}}));
  EXPECT_TRUE(matches(q, {{"state", "a"}, {"attempts", 1}, {"run", "r"}}));
  EXPECT_FALSE(matches(q, {{"state", "b"}, {"attempts", 2}}));
  // `a or b and c` is `a or (b and c)`.
  auto r = parse("select nodes where state = 'a' or state = 'b' and "
                 "attempts = 1");
  EXPECT_TRUE(matches(r, {{"state", "a"}, {"attempts", 5}}));
  EXPECT_FALSE(matches(r, {{"state", "b"}, {"attempts", 5}}));
  EXPECT_TRUE(matches(r, {{"state", "b"}, {"attempts", 1}}));
  // Parentheses override.
  auto s = parse("select nodes where (state = 'a' or state = 'b') and "
                 "attempts = 1");
  EXPECT_FALSE(matches(s, {{"state", "a"}, {"attempts", 5}}));
  EXPECT_TRUE(matches(s, {{"state", "a"}, {"attempts", 1}}));
  auto t = parse("select nodes where not (state = 'a' or attempts = 1)");
  EXPECT_FALSE(matches(t, {{"state", "b"}, {"attempts", 1}}));
  EXPECT_TRUE(matches(t, {{"state", "b"}, {"attempts", 2}}));
  EXPECT_TRUE(
    match("select nodes where not not state = 'a'", {{"state", "a"}}));
}

TEST(QueryEval, RowValuesOfAnotherTypeNeverMatch) {
  json row{{"steps", "3"}, {"state", 3}, {"age", "10m"}};
  EXPECT_FALSE(match("select runs where steps = 3", row));
  EXPECT_FALSE(match("select runs where steps > 1", row));
  EXPECT_FALSE(match("select runs where state = '3'", row));
  EXPECT_FALSE(match("select runs where state like '%'", row));
  EXPECT_FALSE(match("select runs where age > 1m", row));
  EXPECT_TRUE(match("select runs where steps != 3", row));
}

// -- order and limit ----------------------------------------------------------

TEST(QueryRun, FiltersOrdersAndLimits) {
  std::vector<json> rows{
    {{"node", "a"}, {"attempts", 4}, {"state", "waiting_retry"}},
    {{"node", "b"}, {"attempts", 9}, {"state", "waiting_retry"}},
    {{"node", "c"}, {"attempts", 7}, {"state", "failed"}},
    {{"node", "d"}, {"attempts", 5}, {"state", "waiting_retry"}},
    {{"node", "e"}, {"attempts", 1}, {"state", "waiting_retry"}},
  };
  auto q = parse("select nodes where attempts > 3 and state = "
                 "'waiting_retry' order by attempts desc limit 2");
  auto out = run(q, rows);
  EXPECT_EQ(values(out, "node"), json({"b", "d"}));
  auto asc = run(parse("select nodes order by attempts"), rows);
  EXPECT_EQ(values(asc, "node"), json({"e", "a", "d", "c", "b"}));
  // Without an order, limit keeps the first rows as given.
  auto first
    = run(parse("select nodes where state = 'waiting_retry' limit 3"), rows);
  EXPECT_EQ(values(first, "node"), json({"a", "b", "d"}));
  EXPECT_TRUE(run(parse("select nodes where attempts > 100"), rows).empty());
  EXPECT_EQ(run(parse("select nodes limit 100"), rows).size(), 5u);
}

TEST(QueryRun, SortIsStableWithNullsLast) {
  std::vector<json> rows{
    {{"node", "a"}, {"state", "x"}},     {{"node", "b"}},
    {{"node", "c"}, {"state", "w"}},     {{"node", "d"}, {"state", "x"}},
    {{"node", "e"}, {"state", nullptr}},
  };
  auto asc = run(parse("select nodes order by state asc"), rows);
  EXPECT_EQ(values(asc, "node"), json({"c", "a", "d", "b", "e"}));
  auto desc = run(parse("select nodes order by state desc"), rows);
  EXPECT_EQ(values(desc, "node"), json({"a", "d", "c", "b", "e"}));
}

TEST(QueryRun, SortsMixedTypesTotally) {
  // Values that do not fit the column still sort without breaking the
  // comparator: booleans, numbers, strings, then anything else.
  std::vector<json> rows;
  for (int i = 0; i < 40; ++i) {
    json v;
    switch (i % 7) {
    case 0: v = i; break;
    case 1: v = std::to_string(i); break;
    case 2: v = i % 2 == 0; break;
    case 3: v = nullptr; break;
    case 4: v = json::array({i}); break;
    case 5: v = i + 0.5; break;
    default: v = std::nan(""); break;
    }
    rows.push_back({{"attempts", v}, {"i", i}});
  }
  auto out = run(parse("select nodes order by attempts"), rows);
  ASSERT_EQ(out.size(), rows.size());
  EXPECT_TRUE(out.front()["attempts"].is_boolean());
  EXPECT_TRUE(out.back()["attempts"].is_null());
  for (size_t i = 1; i < out.size(); ++i) {
    auto& a = out[i - 1]["attempts"];
    auto& b = out[i]["attempts"];
    if (a.is_number() && b.is_number() && !std::isnan(a.get<double>())
        && !std::isnan(b.get<double>())) {
      EXPECT_LE(a.get<double>(), b.get<double>());
    }
  }
}

// -- errors -------------------------------------------------------------------

TEST(QueryError, UnknownTable) {
  auto err = error_of("select rnus where state = 'a'");
  EXPECT_EQ(err.column, 8u);
  EXPECT_THAT(err.message, HasSubstr("unknown table 'rnus'"));
  EXPECT_THAT(err.message, HasSubstr("did you mean 'runs'?"));
  EXPECT_THAT(err.message, HasSubstr("the tables are: runs, nodes"));
  auto far = error_of("select workflows");
  EXPECT_EQ(far.column, 8u);
  EXPECT_EQ(far.message.find("did you mean"), std::string::npos);
}

TEST(QueryError, UnknownColumn) {
  auto err = error_of("select runs where stat = 'a'");
  EXPECT_EQ(err.column, 19u);
  EXPECT_THAT(err.message, HasSubstr("unknown column 'stat' in table 'runs'"));
  EXPECT_THAT(err.message, HasSubstr("did you mean 'state'?"));
  EXPECT_THAT(err.message, HasSubstr("its columns are: id, workflow, state, "
                                     "age, started, paused, steps"));
  auto order = error_of("select nodes order by atempts");
  EXPECT_EQ(order.column, 23u);
  EXPECT_THAT(order.message, HasSubstr("did you mean 'attempts'?"));
  // A column of another table is unknown here.
  EXPECT_EQ(error_of("select runs where attempts > 1").column, 19u);
}

TEST(QueryError, UnterminatedString) {
  auto err = error_of("select runs where state = 'running");
  EXPECT_EQ(err.column, 27u);
  EXPECT_THAT(err.message, HasSubstr("unterminated string"));
  EXPECT_EQ(error_of("select runs where state in ('a', 'b''").column, 34u);
}

TEST(QueryError, ExpectedComparisonOperator) {
  auto err = error_of("select runs where state 'running'");
  EXPECT_EQ(err.column, 25u);
  EXPECT_THAT(err.message, HasSubstr("expected a comparison operator"));
  EXPECT_THAT(err.message, HasSubstr("after 'state', found the string "
                                     "'running'"));
  auto end = error_of("select runs where state");
  EXPECT_EQ(end.column, 24u);
  EXPECT_THAT(end.message, HasSubstr("found the end of the query"));
  EXPECT_EQ(error_of("select runs where state and paused").column, 25u);
  auto not_op = error_of("select runs where state not = 'a'");
  EXPECT_EQ(not_op.column, 29u);
  EXPECT_THAT(not_op.message, HasSubstr("expected 'in', 'like' or 'ilike'"));
}

TEST(QueryError, TypeMismatch) {
  auto text_number = error_of("select runs where state = 3");
  EXPECT_EQ(text_number.column, 27u);
  EXPECT_THAT(text_number.message, HasSubstr("'state' is a text column"));
  EXPECT_THAT(text_number.message, HasSubstr("not the number 3"));
  auto number_text = error_of("select runs where steps > '3'");
  EXPECT_EQ(number_text.column, 27u);
  EXPECT_THAT(number_text.message, HasSubstr("'steps' is a number column"));
  EXPECT_THAT(number_text.message, HasSubstr("drop the quotes"));
  auto bare = error_of("select runs where age > 10");
  EXPECT_EQ(bare.column, 25u);
  EXPECT_THAT(bare.message, HasSubstr("'age' is a duration column"));
  EXPECT_THAT(bare.message, HasSubstr("a bare number has no unit"));
  auto number_duration = error_of("select nodes where attempts > 10m");
  EXPECT_EQ(number_duration.column, 31u);
  EXPECT_THAT(number_duration.message, HasSubstr("not '10m'"));
  auto boolean = error_of("select runs where paused = 'yes'");
  EXPECT_EQ(boolean.column, 28u);
  EXPECT_THAT(boolean.message, HasSubstr("compare it with true or false"));
  auto in_list = error_of("select runs where state in ('a', 2)");
  EXPECT_EQ(in_list.column, 34u);
  auto time_number = error_of("select runs where started > 1714564800");
  EXPECT_EQ(time_number.column, 29u);
  EXPECT_THAT(time_number.message, HasSubstr("'started' is a time column"));
  // Operators that do not fit the column point at the operator.
  auto order_bool = error_of("select runs where paused < true");
  EXPECT_EQ(order_bool.column, 26u);
  EXPECT_THAT(order_bool.message, HasSubstr("cannot order the boolean "
                                            "column 'paused'"));
  auto like_number = error_of("select nodes where attempts like '1%'");
  EXPECT_EQ(like_number.column, 29u);
  EXPECT_THAT(like_number.message, HasSubstr("'attempts' is a number column"));
  auto order_null = error_of("select runs where steps > null");
  EXPECT_EQ(order_null.column, 27u);
  EXPECT_THAT(order_null.message, HasSubstr("steps is null"));
}

TEST(QueryError, BadDuration) {
  auto err = error_of("select runs where age > 10x");
  EXPECT_EQ(err.column, 25u);
  EXPECT_THAT(err.message,
              HasSubstr("bad duration: unknown unit 'x' in duration '10x'"));
  EXPECT_EQ(error_of("select runs where age > 5m10").column, 25u);
  EXPECT_EQ(error_of("select runs where age > -5m").column, 25u);
  EXPECT_EQ(error_of("select runs where age in (1s, 1q)").column, 31u);
}

TEST(QueryError, BadTimestamp) {
  auto err = error_of("select runs where started > '2024-13-01'");
  EXPECT_EQ(err.column, 29u);
  EXPECT_THAT(err.message, HasSubstr("is not a timestamp: month 13"));
  EXPECT_THAT(error_of("select runs where started > '2023-02-29'").message,
              HasSubstr("day 29 is out of range for 2023-02"));
  EXPECT_THAT(error_of("select runs where started > 'yesterday'").message,
              HasSubstr("expected 4 digits for the year"));
  EXPECT_THAT(
    error_of("select runs where started > '2024-05-01T25:00'").message,
    HasSubstr("hour 25"));
  EXPECT_THAT(
    error_of("select runs where started > '2024-05-01T10:00Q'").message,
    HasSubstr("unexpected 'Q'"));
  EXPECT_THAT(error_of("select runs where started > '2300-01-01'").message,
              HasSubstr("out of range"));
}

TEST(QueryError, TrailingInput) {
  auto err = error_of("select runs where state = 'a' foo");
  EXPECT_EQ(err.column, 31u);
  EXPECT_THAT(err.message, HasSubstr("unexpected 'foo'; expected 'and', "
                                     "'or', 'order by', 'limit' or the end "
                                     "of the query"));
  auto after_table = error_of("select runs state = 'a'");
  EXPECT_EQ(after_table.column, 13u);
  EXPECT_THAT(after_table.message, HasSubstr("expected 'where'"));
  auto out_of_order = error_of("select runs limit 3 where state = 'a'");
  EXPECT_EQ(out_of_order.column, 21u);
  EXPECT_THAT(out_of_order.message, HasSubstr("clauses come in the order"));
  auto two_columns = error_of("select runs order by state, age");
  EXPECT_EQ(two_columns.column, 27u);
  EXPECT_THAT(two_columns.message, HasSubstr("orders by one column"));
  auto rparen = error_of("select runs where state = 'a')");
  EXPECT_EQ(rparen.column, 30u);
  EXPECT_EQ(error_of("select runs; select nodes").column, 12u);
}

TEST(QueryError, LimitNotAPositiveInteger) {
  for (auto [text, column] : std::vector<std::pair<std::string, size_t>>{
         {"select runs limit 0", 19},
         {"select runs limit -1", 19},
         {"select runs limit 2.5", 19},
         {"select runs limit ten", 19},
         {"select runs limit '5'", 19},
         {"select runs limit 5m", 19},
         {"select runs limit", 18},
         {"select runs order by age limit null", 32},
       }) {
    auto err = error_of(text);
    EXPECT_EQ(err.column, column) << text;
    EXPECT_THAT(err.message, HasSubstr("the limit must be a positive integer"))
      << text;
  }
}

TEST(QueryError, StartOfQuery) {
  auto empty = error_of("   ");
  EXPECT_EQ(empty.column, 1u);
  EXPECT_THAT(empty.message, HasSubstr("the query is empty"));
  EXPECT_EQ(error_of("").column, 1u);
  EXPECT_EQ(error_of(";").column, 1u);
  auto typo = error_of("  selct runs");
  EXPECT_EQ(typo.column, 3u);
  EXPECT_THAT(typo.message, HasSubstr("did you mean 'select'?"));
  auto star = error_of("select * from runs");
  EXPECT_EQ(star.column, 8u);
  EXPECT_THAT(star.message, HasSubstr("no column list"));
  auto no_table = error_of("select where");
  EXPECT_EQ(no_table.column, 8u);
  EXPECT_THAT(no_table.message, HasSubstr("expected a table name after "
                                          "'select', found 'where'"));
}

TEST(QueryError, MalformedConditions) {
  auto unclosed = error_of("select runs where (state = 'a'");
  EXPECT_EQ(unclosed.column, 31u);
  EXPECT_THAT(unclosed.message, HasSubstr("expected ')' to close the '(' at "
                                          "column 19, found the end"));
  auto dangling = error_of("select runs where state = 'a' and");
  EXPECT_EQ(dangling.column, 34u);
  EXPECT_THAT(dangling.message, HasSubstr("expected a column after 'and'"));
  auto literal_first = error_of("select runs where 'a' = state");
  EXPECT_EQ(literal_first.column, 19u);
  EXPECT_THAT(literal_first.message, HasSubstr("starts with a column"));
  auto empty_in = error_of("select runs where state in ()");
  EXPECT_EQ(empty_in.column, 29u);
  EXPECT_THAT(empty_in.message, HasSubstr("needs at least one value"));
  EXPECT_EQ(error_of("select runs where state in 'a'").column, 28u);
  EXPECT_EQ(error_of("select runs where state in ('a' 'b')").column, 33u);
  EXPECT_EQ(error_of("select runs where state in ('a',)").column, 33u);
  auto is = error_of("select runs where state is 'a'");
  EXPECT_EQ(is.column, 28u);
  EXPECT_THAT(is.message, HasSubstr("expected 'null' or 'not null'"));
  auto unquoted = error_of("select runs where state = running");
  EXPECT_EQ(unquoted.column, 27u);
  EXPECT_THAT(unquoted.message, HasSubstr("quote text: 'running'"));
  auto two_columns = error_of("select runs where state = workflow");
  EXPECT_EQ(two_columns.column, 27u);
  EXPECT_THAT(two_columns.message, HasSubstr("not with another column"));
  auto like_unquoted = error_of("select nodes where last_error like timeout");
  EXPECT_EQ(like_unquoted.column, 36u);
  EXPECT_EQ(error_of("select runs where order by age").column, 19u);
  EXPECT_EQ(error_of("select runs order age").column, 19u);
}

TEST(QueryError, CharactersWithHints) {
  auto dq = error_of("select runs where state = \"running\"");
  EXPECT_EQ(dq.column, 27u);
  EXPECT_THAT(dq.message, HasSubstr("single quotes: 'running'"));
  auto eqeq = error_of("select runs where state == 'a'");
  EXPECT_EQ(eqeq.column, 25u);
  EXPECT_THAT(eqeq.message, HasSubstr("write '=' to compare"));
  EXPECT_THAT(error_of("select runs where !paused").message,
              HasSubstr("write 'not'"));
  EXPECT_EQ(error_of("select runs where paused && paused").column, 26u);
  EXPECT_EQ(error_of("select runs where paused || paused").column, 26u);
  auto odd = error_of("select runs where state = 'a' # comment");
  EXPECT_EQ(odd.column, 31u);
  EXPECT_THAT(odd.message, HasSubstr("unexpected character '#'"));
  EXPECT_EQ(error_of("select runs where steps > 1.").column, 29u);
  EXPECT_EQ(error_of("select runs where steps > 1_000").column, 28u);
}

TEST(QueryError, TooLongOrTooDeep) {
  std::string longest = "select runs where state = '"
                        + std::string(max_query_length - 28, 'x') + "'";
  ASSERT_EQ(longest.size(), max_query_length);
  EXPECT_TRUE(parse(longest).has_condition());
  auto too_long = error_of(longest + " ");
  EXPECT_EQ(too_long.column, max_query_length + 1);
  EXPECT_THAT(too_long.message, HasSubstr("at most 4096"));

  auto nested = [](size_t depth) {
    return "select runs where " + std::string(depth, '(') + "paused"
           + std::string(depth, ')');
  };
  EXPECT_TRUE(match(nested(max_nesting_depth), {{"paused", true}}));
  auto deep = error_of(nested(max_nesting_depth + 1));
  EXPECT_EQ(deep.column, 19u + max_nesting_depth);
  EXPECT_THAT(deep.message, HasSubstr("nested too deeply"));
  // Far deeper than the stack would allow, within the length limit.
  EXPECT_EQ(error_of("select runs where " + std::string(4000, '(')).column,
            19u + max_nesting_depth);

  std::string nots;
  for (size_t i = 0; i < max_nesting_depth; ++i)
    nots += "not ";
  EXPECT_TRUE(
    match("select runs where " + nots + "paused", {{"paused", true}}));
  EXPECT_EQ(error_of("select runs where " + nots + "not paused").column,
            19u + 4 * max_nesting_depth);
  // Long flat chains are not nesting.
  std::string chain = "select runs where paused";
  for (int i = 0; i < 300; ++i)
    chain += " or paused";
  EXPECT_TRUE(match(chain, {{"paused", true}}));
}

// -- rendering ----------------------------------------------------------------

TEST(QueryRender, CaretUnderTheColumn) {
  std::string text = "select runs where state 'running'";
  auto err = error_of(text);
  EXPECT_EQ(render_error(text, err), text + "\n" + std::string(24, ' ') + "^");
  EXPECT_EQ(to_string(err), err.message + " (at column 25)");
  // At the end: one past the last character.
  std::string end = "select runs where";
  EXPECT_EQ(render_error(end, error_of(end)),
            end + "\n" + std::string(17, ' ') + "^");
  // Tabs and newlines show as spaces; UTF-8 counts once.
  std::string tabs = "select\truns\nwhere st\xc3\xa4te = 'a'";
  auto err2 = error_of(tabs);
  EXPECT_EQ(err2.column, 19u);
  EXPECT_EQ(render_error(tabs, err2), "select runs where st\xc3\xa4te = 'a'\n"
                                        + std::string(18, ' ') + "^");
}

TEST(QueryRender, LongTextIsCutAroundTheColumn) {
  std::string text
    = "select runs where state = '" + std::string(300, 'x') + "' and bogus = 1";
  auto err = error_of(text);
  EXPECT_EQ(err.column, text.find("bogus") + 1);
  auto out = render_error(text, err);
  auto newline = out.find('\n');
  ASSERT_NE(newline, std::string::npos);
  auto line = out.substr(0, newline);
  auto caret = out.substr(newline + 1);
  EXPECT_EQ(line.substr(0, 3), "...");
  EXPECT_LE(line.size(), 106u);
  ASSERT_EQ(caret.back(), '^');
  EXPECT_EQ(line.substr(caret.size() - 1, 5), "bogus");
  // Out-of-range columns stay on the line.
  EXPECT_EQ(render_error("abc", {"x", 99}), "abc\n   ^");
  EXPECT_EQ(render_error("abc", {"x", 0}), "abc\n^");
}

// -- robustness ---------------------------------------------------------------

namespace {

/// Checks what must hold for any text: no crash, and a failure points into
/// the text (or one past it) with a message.
void check_any(const std::string& text) {
  query_error err;
  auto q = parse_query(text, schema(), err);
  if (!q) {
    ASSERT_GE(err.column, 1u) << text;
    ASSERT_LE(err.column, text.size() + 1) << text;
    ASSERT_FALSE(err.message.empty()) << text;
    auto out = render_error(text, err);
    ASSERT_NE(out.find('^'), std::string::npos);
    return;
  }
  static const std::vector<json> rows{
    json::object(),
    {{"state", "running"}, {"age", 5}, {"attempts", 4}, {"paused", true}},
    {{"state", 1}, {"age", "x"}, {"last_error", nullptr}},
    json::array(),
  };
  auto out = run(*q, rows);
  ASSERT_LE(out.size(), rows.size());
}

/// Returns a random, well-typed condition over the columns of `nodes`.
std::string random_condition(std::mt19937& rng, int depth) {
  auto pick = [&rng](const std::vector<std::string>& xs) {
    return xs[rng() % xs.size()];
  };
  switch (depth > 0 ? rng() % 6 : 0) {
  case 1:
    return random_condition(rng, depth - 1) + " and "
           + random_condition(rng, depth - 1);
  case 2:
    return random_condition(rng, depth - 1) + " or "
           + random_condition(rng, depth - 1);
  case 3: return "not " + random_condition(rng, depth - 1);
  case 4: return "(" + random_condition(rng, depth - 1) + ")";
  default: break;
  }
  switch (rng() % 4) {
  case 0:
    return pick({"state", "last_error"})
           + pick({" = 'a'", " != 'b'", " < 'b'", " >= 'a'", " in ('a', null)",
                   " not in ('b')", " like '%a%'", " not ilike 'A_'",
                   " is null", " is not null", " = null"});
  case 1:
    return "attempts"
           + pick({" = 3", " != 2.5", " < 4", " <= -1", " > 0", " in (1, 3)",
                   " not in (3)", " is null"});
  default:
    return "age"
           + pick({" = 1s", " > 500ms", " <= 1h30m", " in (1s, 2m)",
                   " is not null", " != null"});
  }
}

} // namespace

TEST(QueryRobustness, NotIsTheExactNegation) {
  std::mt19937 rng{7};
  const std::vector<json> rows{
    json::object(),
    {{"state", "a"}, {"attempts", 3}, {"age", 1000}},
    {{"state", "b"}, {"last_error", "Ab"}, {"attempts", 2.5}, {"age", 500}},
    {{"state", nullptr}, {"last_error", "xa"}, {"attempts", -1}},
    {{"state", 3}, {"attempts", "3"}, {"age", "1s"}},
  };
  for (int i = 0; i < 500; ++i) {
    auto cond = random_condition(rng, 3);
    auto q = parse("select nodes where " + cond);
    auto n = parse("select nodes where not (" + cond + ")");
    for (auto& row : rows)
      ASSERT_NE(matches(q, row), matches(n, row)) << cond << " on " << row;
  }
}

TEST(QueryRobustness, RandomAndTruncatedInputNeverCrash) {
  const std::vector<std::string> examples{
    "select runs where state = 'running' and age > 10m",
    "select nodes where attempts > 3 and state = 'waiting_retry' order by "
    "attempts desc limit 20",
    "select runs where workflow in ('orders', 'refunds') and not state = "
    "'completed'",
    "select nodes where run = '01a2' and last_error like '%timeout%'",
    "select runs where (paused or started < '2024-05-01T12:00:00+02:00') and "
    "steps is not null",
  };
  std::mt19937 rng{20240501};
  auto seeds = examples;
  for (int i = 0; i < 20; ++i)
    seeds.push_back("select nodes where " + random_condition(rng, 4)
                    + " order by age desc limit 7");
  // Every prefix of every seed.
  for (auto& seed : seeds)
    for (size_t n = 0; n <= seed.size(); ++n)
      check_any(seed.substr(0, n));
  // Seeds with random bytes changed, inserted or deleted.
  auto byte = [&rng] { return static_cast<char>(rng() % 256); };
  for (int i = 0; i < 3000; ++i) {
    auto text = seeds[rng() % seeds.size()];
    for (int edits = 1 + static_cast<int>(rng() % 4); edits > 0; --edits) {
      auto at = rng() % (text.size() + 1);
      switch (rng() % 3) {
      case 0:
        if (at < text.size())
          text[at] = byte();
        break;
      case 1: text.insert(text.begin() + static_cast<long>(at), byte()); break;
      default:
        if (at < text.size())
          text.erase(at, 1);
      }
    }
    check_any(text);
  }
  // Random sequences of tokens, which get further than random bytes.
  const std::vector<std::string> pieces{
    "select",    "runs",
    "nodes",     "where",
    "state",     "age",
    "attempts",  "paused",
    "started",   "last_error",
    "=",         "!=",
    "<",         ">=",
    "<>",        "in",
    "not",       "like",
    "ilike",     "is",
    "null",      "true",
    "false",     "and",
    "or",        "(",
    ")",         ",",
    "'running'", "'%x_'",
    "''",        "'",
    "3",         "-2.5",
    "10m",       "1h30m",
    "5x",        "'2024-05-01'",
    "order",     "by",
    "asc",       "desc",
    "limit",     ";",
    "*",         "\"",
  };
  for (int i = 0; i < 5000; ++i) {
    std::string text = rng() % 4 == 0 ? "" : "select nodes where";
    for (int n = static_cast<int>(rng() % 12); n > 0; --n)
      text += " " + pieces[rng() % pieces.size()];
    check_any(text);
  }
  // Plain random bytes.
  for (int i = 0; i < 1000; ++i) {
    std::string text(rng() % 64, '\0');
    for (auto& c : text)
      c = byte();
    check_any(text);
  }
}
