#include "config/duration.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;
using troupe::config::format_duration;
using troupe::config::parse_duration;

TEST(Duration, ParsesEachUnit) {
  EXPECT_EQ(parse_duration("250ms"), 250ms);
  EXPECT_EQ(parse_duration("10s"), 10s);
  EXPECT_EQ(parse_duration("5m"), 5min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("2d"), 48h);
  EXPECT_EQ(parse_duration("7us"), 7us);
  EXPECT_EQ(parse_duration("9ns"), 9ns);
  EXPECT_EQ(parse_duration("0s"), 0s);
}

TEST(Duration, ParsesCompoundAndFractions) {
  EXPECT_EQ(parse_duration("1h30m"), 90min);
  EXPECT_EQ(parse_duration("1m30s500ms"), 90500ms);
  EXPECT_EQ(parse_duration("1.5s"), 1500ms);
  EXPECT_EQ(parse_duration(".5s"), 500ms);
}

TEST(Duration, RejectsMalformedInputWithReason) {
  std::string err;
  EXPECT_FALSE(parse_duration("", &err));
  EXPECT_NE(err.find("empty"), std::string::npos);
  EXPECT_FALSE(parse_duration("10", &err));
  EXPECT_NE(err.find("no unit"), std::string::npos) << err;
  EXPECT_NE(err.find("10s"), std::string::npos) << err;
  EXPECT_FALSE(parse_duration("5x", &err));
  EXPECT_NE(err.find("unknown unit 'x'"), std::string::npos) << err;
  EXPECT_FALSE(parse_duration("-1s", &err));
  EXPECT_NE(err.find("negative"), std::string::npos) << err;
  EXPECT_FALSE(parse_duration("s", &err));
  EXPECT_FALSE(parse_duration("1s ", &err));
  EXPECT_FALSE(parse_duration("1 s", &err));
  EXPECT_FALSE(parse_duration("99999999999999999999d", &err));
  EXPECT_NE(err.find("too large"), std::string::npos) << err;
  EXPECT_FALSE(parse_duration(std::string(5000, '9') + "s", &err));
}

TEST(Duration, FormatsInAFormItParsesBack) {
  for (std::chrono::nanoseconds d :
       std::initializer_list<std::chrono::nanoseconds>{
         0ns, 1ns, 7us, 250ms, 1s, 90s, 1h + 30min + 5s, 48h, 1500ms}) {
    auto text = format_duration(d);
    EXPECT_EQ(parse_duration(text), d) << text;
  }
  EXPECT_EQ(format_duration(90min), "1h30m");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(48h), "2d");
}
