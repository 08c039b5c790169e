#include "runtime/spec/template.hpp"

#include <gtest/gtest.h>

using namespace troupe::runtime;

TEST(Template, PlainTextIsOneLiteral) {
  template_error err;
  auto t = parse_template("hello", err);
  ASSERT_TRUE(t);
  ASSERT_EQ(t->segments.size(), 1u);
  EXPECT_FALSE(t->has_expressions());
}

TEST(Template, SplitsLiteralsAndExpressions) {
  template_error err;
  auto t
    = parse_template("Hi {{ inputs.who }}, from {{nodes.a.output.x.0}}!", err);
  ASSERT_TRUE(t) << err.message;
  ASSERT_EQ(t->segments.size(), 5u);
  EXPECT_EQ(t->segments[0].text, "Hi ");
  EXPECT_EQ(t->segments[1].path, (std::vector<std::string>{"inputs", "who"}));
  EXPECT_EQ(t->segments[1].offset, 3u);
  EXPECT_EQ(t->segments[3].path,
            (std::vector<std::string>{"nodes", "a", "output", "x", "0"}));
  EXPECT_EQ(t->segments[4].text, "!");
  EXPECT_FALSE(t->is_single_expression());
}

TEST(Template, WholeExpressionIsSingle) {
  template_error err;
  auto t = parse_template("{{ run.id }}", err);
  ASSERT_TRUE(t);
  EXPECT_TRUE(t->is_single_expression());
}

TEST(Template, ErrorsPointAtTheirOffset) {
  template_error err;
  EXPECT_FALSE(parse_template("abc {{ inputs.x", err));
  EXPECT_EQ(err.offset, 4u);
  EXPECT_NE(err.message.find("never closed"), std::string::npos);
  EXPECT_FALSE(parse_template("{{   }}", err));
  EXPECT_NE(err.message.find("empty expression"), std::string::npos);
  EXPECT_FALSE(parse_template("{{ inputs..x }}", err));
  EXPECT_NE(err.message.find("empty name"), std::string::npos);
  EXPECT_EQ(err.offset, 10u);
  EXPECT_FALSE(parse_template("{{ inputs.x + 1 }}", err));
  EXPECT_NE(err.message.find("unexpected character ' '"), std::string::npos)
    << err.message;
  EXPECT_FALSE(parse_template("{{ a {{ b }}", err));
  EXPECT_NE(err.message.find("inside an expression"), std::string::npos);
}
