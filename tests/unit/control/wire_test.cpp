#include "runtime/control/wire.hpp"

#include <gtest/gtest.h>

#include <string>

namespace control = troupe::runtime::control;
using json = nlohmann::json;

namespace {

std::string body_of(const json& msg) {
  return control::encode_frame(msg).substr(control::header_size);
}

std::string decode_error(const std::string& body) {
  std::string error;
  auto msg = control::decode_body(body, error);
  EXPECT_FALSE(msg.has_value());
  return error;
}

} // namespace

TEST(Wire, FrameCarriesItsLengthBigEndian) {
  json msg = {{"t", "ping"}, {"id", 7}};
  auto frame = control::encode_frame(msg);
  ASSERT_GT(frame.size(), control::header_size);
  auto n = control::read_length(
    reinterpret_cast<const unsigned char*>(frame.data()));
  EXPECT_EQ(n, frame.size() - control::header_size);
  EXPECT_EQ(frame[0], 0);
  EXPECT_EQ(frame[1], 0);
}

TEST(Wire, RoundTripsEveryJsonType) {
  json msg = {{"t", "submit"},
              {"id", 18446744073709551615ull},
              {"neg", -42},
              {"pi", 3.25},
              {"yes", true},
              {"none", nullptr},
              {"text", "h\xc3\xa9llo \"quoted\"\n"},
              {"list", json::array({1, "two", json::array({3})})},
              {"map", {{"a", {{"b", {{"c", 1}}}}}}}};
  std::string error;
  auto back = control::decode_body(body_of(msg), error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, msg);
}

TEST(Wire, RefusesWhatIsNotOneMap) {
  EXPECT_EQ(decode_error(""), "an empty frame");
  EXPECT_EQ(decode_error(std::string{"\x93\x01\x02\x03"}),
            "the message is not a map");
  EXPECT_EQ(decode_error(std::string{"\xc1"}).substr(0, 16),
            "not MessagePack ");
  // A map, then a stray byte.
  EXPECT_EQ(decode_error(std::string{"\x80\x01"}), "1 bytes after the message");
  // A map claiming 2 pairs holding 1.
  EXPECT_EQ(decode_error(std::string{"\x82\xa1t\x01"}),
            "a truncated MessagePack value");
}

TEST(Wire, RefusesContainersClaimingMoreThanTheFrameHolds) {
  // An array header claiming 2^32-1 elements in a 6-byte frame: refused
  // before anything is allocated for it.
  std::string body = "\x81\xa1t";
  body += std::string{"\xdd\xff\xff\xff\xff", 5};
  EXPECT_EQ(decode_error(body), "a container or string longer than the frame");
  std::string str = "\x81\xa1t";
  str += std::string{"\xdb\xff\xff\xff\xf0", 5};
  EXPECT_FALSE(decode_error(str).empty());
}

TEST(Wire, RefusesDeepNesting) {
  std::string body = "\x81\xa1t";
  body += std::string(100, '\x91');
  body += '\x01';
  EXPECT_EQ(decode_error(body), "nesting deeper than 32");
  // 30 levels are fine.
  std::string ok = "\x81\xa1t";
  ok += std::string(30, '\x91');
  ok += '\x01';
  std::string error;
  EXPECT_TRUE(control::decode_body(ok, error)) << error;
}

TEST(Wire, RefusesBadStringsKeysAndTypes) {
  EXPECT_EQ(decode_error(std::string{"\x81\xa1t\xa2\xc3\x28"}),
            "invalid UTF-8 in a string");
  // An overlong encoding of '/' and a UTF-16 surrogate.
  EXPECT_EQ(decode_error(std::string{"\x81\xa1t\xa2\xc0\xaf"}),
            "invalid UTF-8 in a string");
  EXPECT_EQ(decode_error(std::string{"\x81\xa1t\xa3\xed\xa0\x80"}),
            "invalid UTF-8 in a string");
  EXPECT_EQ(decode_error(std::string{"\x81\x01\x01"}),
            "a map key that is not a string");
  EXPECT_EQ(decode_error(std::string{"\x82\xa1t\x01\xa1t\x02"}),
            "duplicate map key 't'");
  EXPECT_EQ(decode_error(std::string{"\x81\xa1t\xc4\x01x"}),
            "a binary value (the protocol uses strings)");
  EXPECT_EQ(decode_error(std::string{"\x81\xa1t\xd4\x01x"}),
            "an extension value (the protocol uses none)");
  // NaN as a float64.
  std::string nan = "\x81\xa1t\xcb";
  nan += std::string{"\x7f\xf8\x00\x00\x00\x00\x00\x00", 8};
  EXPECT_EQ(decode_error(nan), "a number that is not finite");
}

TEST(Wire, ErrorCodesHaveStableNames) {
  EXPECT_EQ(control::to_string(control::error_code::frame_too_large),
            "frame_too_large");
  EXPECT_EQ(control::parse_error_code("rate_limited"),
            control::error_code::rate_limited);
  EXPECT_FALSE(control::parse_error_code("nope"));
  auto e = control::make_error(9, control::error_code::not_found, "no run x");
  EXPECT_EQ(e["t"], "error");
  EXPECT_EQ(e["id"], 9);
  EXPECT_EQ(e["code"], "not_found");
}

TEST(Wire, FieldsNameWhatIsWrong) {
  json msg = {{"run_id", 5}, {"limit", -1}, {"yes", "no"}, {"inputs", 3}};
  control::fields f{msg};
  f.text("run_id");
  EXPECT_EQ(f.error(), "field 'run_id' must be a string");
  control::fields g{msg};
  g.text("workflow");
  EXPECT_EQ(g.error(), "missing field 'workflow'");
  control::fields h{msg};
  EXPECT_EQ(h.count("limit", 50, 1000), 50u);
  EXPECT_EQ(h.error(), "field 'limit' must be a whole number from 0 to 1000");
  control::fields i{msg};
  i.flag("yes");
  EXPECT_EQ(i.error(), "field 'yes' must be true or false");
  control::fields j{msg};
  j.object("inputs");
  EXPECT_EQ(j.error(), "field 'inputs' must be a map");
  json good = {{"run_id", "r1"}, {"limit", 20}};
  control::fields k{good};
  EXPECT_EQ(k.text("run_id"), "r1");
  EXPECT_EQ(k.count("limit", 50, 1000), 20u);
  EXPECT_EQ(k.text("after", false), "");
  EXPECT_TRUE(k.ok());
}
