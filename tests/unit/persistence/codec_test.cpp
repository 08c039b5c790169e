#include "persistence/codec/codec.hpp"
#include "persistence/records.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace troupe::persistence;

namespace {

const std::string binaryish{"a\0b\xff\xfe\x01\x80 \xc1\xd9\n", 11};

std::vector<event_type> all_event_types() {
  std::vector<event_type> out;
  for (int t = 1; t <= static_cast<int>(last_event_type); ++t)
    out.push_back(static_cast<event_type>(t));
  return out;
}

/// An event with every field set, distinct per type.
event_record full_event(event_type t) {
  event_record e;
  e.type = t;
  e.at_ns = 1'700'000'000'123'456'789 + static_cast<int>(t);
  e.node = "node-" + std::to_string(static_cast<int>(t));
  e.attempt = static_cast<int>(t) * 3;
  e.deadline_ns = -42 - static_cast<int>(t);
  e.error_kind = "timeout";
  e.message = "line one\nline two: " + binaryish;
  e.data = R"({"x": [1, 2, 3], "s": "\u00e9"})";
  e.data2 = binaryish + std::string(300, 'z');
  return e;
}

run_index_entry full_index(run_state s) {
  run_index_entry e;
  e.run_id = "run-0042-abc";
  e.workflow = "nightly-etl";
  e.state = s;
  e.created_at_ns = 1'700'000'000'000'000'000;
  e.updated_at_ns = std::numeric_limits<int64_t>::max();
  e.reason = s == run_state::failed ? "node x failed: " + binaryish : "";
  return e;
}

/// A minimal event: 01 99 01 00 a0 00 00 a0 a0 a0 a0.
std::string minimal_event_bytes() {
  return std::string{"\x01\x99\x01\x00\xa0\x00\x00\xa0\xa0\xa0\xa0", 11};
}

} // namespace

TEST(Codec, RoundTripsEveryEventTypeWithAllFields) {
  for (auto t : all_event_types()) {
    auto e = full_event(t);
    auto bytes = encode(e);
    std::string error;
    auto back = decode_event(bytes, error);
    ASSERT_TRUE(back) << to_string(t) << ": " << error;
    EXPECT_EQ(*back, e) << to_string(t);
    EXPECT_TRUE(error.empty());
  }
}

TEST(Codec, RoundTripsEmptyStringsAndExtremeIntegers) {
  for (int64_t v : {int64_t{0}, int64_t{-1}, int64_t{127}, int64_t{-33},
                    std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()}) {
    event_record e;
    e.type = event_type::timer_set;
    e.at_ns = v;
    e.deadline_ns = ~v;
    e.attempt = v < 0 ? std::numeric_limits<int32_t>::min()
                      : std::numeric_limits<int32_t>::max();
    std::string error;
    auto back = decode_event(encode(e), error);
    ASSERT_TRUE(back) << error;
    EXPECT_EQ(*back, e);
  }
}

TEST(Codec, EncodingStartsWithFormatVersionThenArray) {
  auto bytes = encode(event_record{});
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), format_version);
  EXPECT_EQ(static_cast<uint8_t>(bytes[1]), 0x99); // fixarray of 9
  EXPECT_EQ(bytes, minimal_event_bytes());
  auto index = encode(run_index_entry{});
  EXPECT_EQ(static_cast<uint8_t>(index[1]), 0x96); // fixarray of 6
}

TEST(Codec, RoundTripsIndexEntryInEveryState) {
  for (auto s : {run_state::running, run_state::completed, run_state::failed,
                 run_state::cancelled}) {
    auto e = full_index(s);
    std::string error;
    auto back = decode_index(encode(e), error);
    ASSERT_TRUE(back) << to_string(s) << ": " << error;
    EXPECT_EQ(*back, e);
  }
  std::string error;
  auto empty = decode_index(encode(run_index_entry{}), error);
  ASSERT_TRUE(empty) << error;
  EXPECT_EQ(*empty, run_index_entry{});
}

TEST(Codec, RejectsEmptyInput) {
  std::string error;
  EXPECT_FALSE(decode_event("", error));
  EXPECT_FALSE(error.empty());
  error.clear();
  EXPECT_FALSE(decode_index("", error));
  EXPECT_FALSE(error.empty());
}

TEST(Codec, RejectsVersionZero) {
  auto bytes = encode(full_event(event_type::run_submitted));
  bytes[0] = 0;
  std::string error;
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_EQ(error, "unsupported format version 0 (this build reads up to 1)");
}

TEST(Codec, RejectsNewerVersion) {
  auto bytes = encode(full_event(event_type::run_submitted));
  bytes[0] = 2;
  std::string error;
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_EQ(error, "unsupported format version 2 (this build reads up to 1)");
  auto index = encode(full_index(run_state::running));
  index[0] = static_cast<char>(0xff);
  EXPECT_FALSE(decode_index(index, error));
  EXPECT_EQ(error, "unsupported format version 255 (this build reads up to 1)");
}

TEST(Codec, RejectsTruncatedBytes) {
  std::vector<std::string> valid;
  for (auto t : all_event_types())
    valid.push_back(encode(full_event(t)));
  valid.push_back(minimal_event_bytes());
  for (const auto& bytes : valid) {
    for (size_t n = 0; n < bytes.size(); ++n) {
      std::string error;
      auto back = decode_event(std::string_view{bytes}.substr(0, n), error);
      EXPECT_FALSE(back) << "prefix of " << n << " bytes decoded";
      EXPECT_FALSE(error.empty());
      EXPECT_EQ(error.find('\n'), std::string::npos) << error;
    }
  }
  auto index = encode(full_index(run_state::failed));
  for (size_t n = 0; n < index.size(); ++n) {
    std::string error;
    EXPECT_FALSE(decode_index(std::string_view{index}.substr(0, n), error))
      << n;
    EXPECT_FALSE(error.empty());
  }
}

TEST(Codec, RejectsTrailingBytes) {
  std::string error;
  auto bytes = encode(full_event(event_type::node_failed)) + '\x00';
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("trailing"), std::string::npos) << error;
  auto index = encode(full_index(run_state::running)) + "\xc0\xc0";
  EXPECT_FALSE(decode_index(index, error));
  EXPECT_NE(error.find("trailing"), std::string::npos) << error;
}

TEST(Codec, RejectsWrongFieldCount) {
  std::string error;
  // An index entry is an array of 6, an event needs 9.
  EXPECT_FALSE(decode_event(encode(full_index(run_state::running)), error));
  EXPECT_NE(error.find("expected 9 to 10 fields, got 6"), std::string::npos)
    << error;
  EXPECT_FALSE(decode_index(encode(event_record{}), error));
  EXPECT_NE(error.find("expected 6 fields, got 9"), std::string::npos) << error;
  // Not an array at all: a lone integer.
  EXPECT_FALSE(decode_event(std::string{"\x01\x05", 2}, error));
  EXPECT_NE(error.find("array"), std::string::npos) << error;
}

TEST(Codec, AnEventsMemberIsATenthFieldOnlyWhenSet) {
  // Without a member (a node alone, a journal from before clusters) the
  // record is the nine fields it always was, and reads back so.
  auto e = full_event(event_type::node_completed);
  e.member.clear();
  auto nine = encode(e);
  EXPECT_EQ(static_cast<uint8_t>(nine[1]), 0x99); // fixarray of 9
  std::string error;
  auto back = decode_event(nine, error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, e);
  EXPECT_TRUE(back->member.empty());
  // With one, a tenth field that round-trips.
  e.member = "m2";
  auto ten = encode(e);
  EXPECT_EQ(static_cast<uint8_t>(ten[1]), 0x9a);
  back = decode_event(ten, error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(back->member, "m2");
  EXPECT_EQ(*back, e);
}

TEST(Codec, RejectsWrongFieldTypes) {
  std::string error;
  // node (field 2) as an integer.
  auto bytes = minimal_event_bytes();
  bytes[4] = '\x07';
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("field 2 (node)"), std::string::npos) << error;
  // attempt (field 3) as a string.
  bytes = minimal_event_bytes();
  bytes[5] = '\xa0';
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("field 3 (attempt)"), std::string::npos) << error;
  // at_ns (field 1) as nil, then as a float32 (5 bytes).
  bytes = minimal_event_bytes();
  bytes[3] = '\xc0';
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("field 1 (at_ns)"), std::string::npos) << error;
  bytes = minimal_event_bytes();
  bytes.replace(3, 1, std::string{"\xca\x00\x00\x00\x00", 5});
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("field 1 (at_ns)"), std::string::npos) << error;
  // attempt beyond int32.
  bytes = minimal_event_bytes();
  bytes.replace(5, 1, std::string{"\xce\xff\xff\xff\xff", 5});
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("out of range"), std::string::npos) << error;
  // at_ns beyond int64 (uint64 max).
  bytes = minimal_event_bytes();
  bytes.replace(3, 1, std::string{"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9});
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_NE(error.find("out of range"), std::string::npos) << error;
  // A nested array as a field.
  bytes = minimal_event_bytes();
  bytes[4] = '\x90';
  EXPECT_FALSE(decode_event(bytes, error));
}

TEST(Codec, RejectsUnknownEnumValues) {
  std::string error;
  auto bytes = minimal_event_bytes();
  for (char t : {'\x00', '\x11', '\x7f'}) {
    bytes[2] = t;
    EXPECT_FALSE(decode_event(bytes, error));
    EXPECT_NE(error.find("unknown event type"), std::string::npos) << error;
  }
  bytes[2] = '\xff'; // negative fixint
  EXPECT_FALSE(decode_event(bytes, error));
  auto index = encode(run_index_entry{});
  // 01 96 a0 a0 <state> ...
  ASSERT_EQ(index[4], '\x01');
  for (char s : {'\x00', '\x06'}) {
    index[4] = s;
    EXPECT_FALSE(decode_index(index, error));
    EXPECT_NE(error.find("unknown run state"), std::string::npos) << error;
  }
}

TEST(Codec, RejectsHugeDeclaredLengths) {
  std::string error;
  // array32 declaring 4 billion elements.
  EXPECT_FALSE(
    decode_event(std::string{"\x01\xdd\xff\xff\xff\xff\x01", 7}, error));
  EXPECT_FALSE(error.empty());
  // A str32 field declaring 4 GiB.
  auto bytes = minimal_event_bytes();
  bytes.replace(4, 1, std::string{"\xdb\xff\xff\xff\xff", 5});
  EXPECT_FALSE(decode_event(bytes, error));
  EXPECT_FALSE(error.empty());
  // A map32 declaring 4 billion pairs.
  EXPECT_FALSE(decode_index(std::string{"\x01\xdf\xff\xff\xff\xff", 6}, error));
  // Deep nesting.
  EXPECT_FALSE(decode_event("\x01" + std::string(10000, '\x91'), error));
}

TEST(Codec, SurvivesRandomGarbage) {
  std::mt19937 rng{12345};
  std::uniform_int_distribution<int> byte{0, 255};
  std::uniform_int_distribution<int> len{0, 64};
  for (int i = 0; i < 20000; ++i) {
    std::string bytes(static_cast<size_t>(len(rng)), '\0');
    for (auto& c : bytes)
      c = static_cast<char>(byte(rng));
    if (!bytes.empty() && i % 2 == 0)
      bytes[0] = '\x01'; // get past the version check half the time
    std::string error;
    if (!decode_event(bytes, error)) {
      EXPECT_FALSE(error.empty());
    }
    if (!decode_index(bytes, error)) {
      EXPECT_FALSE(error.empty());
    }
  }
}

TEST(Codec, MutatedEncodingsDecodeOrFailCleanly) {
  std::mt19937 rng{777};
  auto base = encode(full_event(event_type::attempt_failed));
  std::uniform_int_distribution<size_t> pos{1, base.size() - 1};
  std::uniform_int_distribution<int> byte{0, 255};
  for (int i = 0; i < 20000; ++i) {
    auto bytes = base;
    for (int k = 0; k < 1 + i % 4; ++k)
      bytes[pos(rng)] = static_cast<char>(byte(rng));
    std::string error;
    if (!decode_event(bytes, error)) {
      EXPECT_FALSE(error.empty());
    }
  }
}

TEST(Records, ToStringNamesEveryValue) {
  EXPECT_EQ(to_string(event_type::run_submitted), "run_submitted");
  EXPECT_EQ(to_string(event_type::attempt_failed), "attempt_failed");
  EXPECT_EQ(to_string(event_type::node_cancelled), "node_cancelled");
  EXPECT_EQ(to_string(event_type::node_fell_back), "node_fell_back");
  EXPECT_EQ(to_string(event_type::node_skipped), "node_skipped");
  EXPECT_EQ(to_string(event_type::run_compensating), "run_compensating");
  for (auto t : all_event_types())
    EXPECT_NE(to_string(t), "unknown");
  EXPECT_EQ(to_string(run_state::running), "running");
  EXPECT_EQ(to_string(run_state::cancelled), "cancelled");
  EXPECT_TRUE(is_terminal(run_state::failed));
  EXPECT_FALSE(is_terminal(run_state::running));
}

// The size checks, through small limits: a field one byte over is refused
// with its name and size, a field at the limit round-trips, and a record
// whose fields add up to more than its limit is refused too.
TEST(Codec, RefusesFieldsAndRecordsOverTheLimits) {
  encode_limits small{/*field_bytes=*/16, /*record_bytes=*/200};
  event_record e;
  e.type = event_type::node_completed;
  e.node = "big";
  e.data = std::string(17, 'x');
  std::string error;
  EXPECT_FALSE(encode(e, error, small));
  EXPECT_EQ(error, "field 'data' of a node_completed event of node 'big' is "
                   "17 bytes; a record field holds at most 16");

  e.data = std::string(16, 'x');
  auto bytes = encode(e, error, small);
  ASSERT_TRUE(bytes) << error;
  EXPECT_EQ(error, "");
  auto back = decode_event(*bytes, error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(*back, e);

  // Five fields at the field limit go over a record limit of 100.
  e.error_kind = e.message = e.data2 = std::string(16, 'y');
  e.node = std::string(16, 'n');
  EXPECT_FALSE(encode(e, error, {16, 100}));
  EXPECT_NE(error.find("needs up to 167 bytes; a record holds at most 100"),
            std::string::npos)
    << error;

  run_index_entry entry;
  entry.run_id = "r";
  entry.reason = std::string(17, 'z');
  EXPECT_FALSE(encode(entry, error, small));
  EXPECT_EQ(error, "field 'reason' of the index entry of run 'r' is 17 "
                   "bytes; a record field holds at most 16");

  // Within the default limits the unchecked overload encodes as before.
  EXPECT_NO_THROW((void)encode(full_event(event_type::run_submitted)));
}

// The default limits are those of msgpack's 32-bit lengths.
TEST(Codec, DefaultLimitsAreThirtyTwoBits) {
  encode_limits limits;
  EXPECT_EQ(limits.field_bytes, std::numeric_limits<uint32_t>::max());
  EXPECT_EQ(limits.record_bytes, std::numeric_limits<uint32_t>::max());
}
