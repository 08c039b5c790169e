// Sizes and free-space floors (storage.min_free): parsing, limits and the
// messages that name what is wrong.

#include "config/loader.hpp"
#include "config/size.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

using namespace troupe::config;

namespace {

constexpr uint64_t mib = uint64_t{1} << 20;
constexpr uint64_t gib = uint64_t{1} << 30;

std::string size_error(std::string_view text) {
  std::string error;
  EXPECT_FALSE(parse_size(text, &error)) << text;
  return error;
}

std::string floor_error(std::string_view text) {
  std::string error;
  EXPECT_FALSE(parse_free_space_floor(text, &error)) << text;
  return error;
}

} // namespace

TEST(Size, ParsesUnitsOfBothKinds) {
  EXPECT_EQ(parse_size("512MiB"), 512 * mib);
  EXPECT_EQ(parse_size("1GiB"), gib);
  EXPECT_EQ(parse_size("1.5GiB"), gib + gib / 2);
  EXPECT_EQ(parse_size("2 TiB"), 2 * 1024 * gib);
  EXPECT_EQ(parse_size("1GB"), 1'000'000'000u);
  EXPECT_EQ(parse_size("64kB"), 64'000u);
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("10B"), 10u);
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(size_error("1Gib"), "unknown size unit \"Gib\"; use B, KiB, MiB, "
                                "GiB, TiB, kB, MB, GB or TB");
  EXPECT_EQ(size_error("-1GiB"), "expected a size such as \"512MiB\" or "
                                 "\"1GiB\"");
  EXPECT_EQ(size_error("GiB"), "expected a size such as \"512MiB\" or "
                               "\"1GiB\"");
  EXPECT_EQ(size_error(".5GiB"), "expected a size such as \"512MiB\" or "
                                 "\"1GiB\"");
  EXPECT_EQ(size_error("99999999TiB"), "size \"99999999TiB\" is too large");
}

TEST(Size, FormatsForPeople) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(gib), "1 GiB");
  EXPECT_EQ(format_size(812 * mib + mib / 2), "812.5 MiB");
}

TEST(FreeSpaceFloor, TakesASizeAShareOrTheSmallerOfBoth) {
  auto both = parse_free_space_floor("5%,1GiB");
  ASSERT_TRUE(both);
  EXPECT_EQ(both->resolve(10 * gib), 512 * mib); // 5% is smaller
  EXPECT_EQ(both->resolve(100 * gib), gib);      // 1 GiB is smaller
  EXPECT_EQ(parse_free_space_floor("1GiB, 5%"), both);
  EXPECT_EQ(parse_free_space_floor("512MiB")->resolve(10 * gib), 512 * mib);
  EXPECT_EQ(parse_free_space_floor("10%")->resolve(10 * gib), gib);
  EXPECT_EQ(parse_free_space_floor("0.5%")->resolve(100 * gib), gib / 2);
  EXPECT_EQ(parse_free_space_floor("0")->resolve(10 * gib), 0u);
  EXPECT_EQ(floor_error("60%"),
            "\"60%\": a share of the disk must be from 0% to 50%");
  EXPECT_EQ(floor_error("5%,10%"), "give at most one percentage and one size");
  EXPECT_EQ(floor_error("1GiB,2GiB"),
            "give at most one percentage and one size");
  EXPECT_EQ(floor_error("lots"),
            "\"lots\": expected a size such as \"512MiB\" or \"1GiB\"");
  auto expected = "expected a size such as \"1GiB\", a share of the disk "
                  "such as \"5%\", or both as \"5%,1GiB\" (the smaller "
                  "applies)";
  EXPECT_EQ(floor_error(""), expected);
  EXPECT_EQ(floor_error("5%,"), expected);
  EXPECT_EQ(floor_error("5%,1GiB,2GiB"), expected);
  EXPECT_EQ(floor_error("x%"), std::string{"\"x%\": "} + expected);
}

// storage.min_free through every layer: the default, a file, a variable;
// a bad value is refused naming where it came from, the key and why.
TEST(FreeSpaceFloor, IsCheckedAsTheStorageMinFreeKey) {
  troupe::test::temp_dir dir;
  load_options opts;
  opts.config_dir = dir.path();
  auto r = load(opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.effective.get_string("storage.min_free"), "5%,1GiB");

  dir.write("default.toml", "[storage]\nmin_free = \"512MiB\"\n");
  r = load(opts);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.effective.get_string("storage.min_free"), "512MiB");

  dir.write("default.toml", "[storage]\nmin_free = 5\n");
  opts.environment = {{"TROUPE_STORAGE_MIN_FREE", "75%"}};
  r = load(opts);
  ASSERT_EQ(r.problems.size(), 2u);
  EXPECT_NE(r.problems[0].to_string().find(
              "default.toml:2: storage.min_free = 5: expected a size such as "
              "\"1GiB\", a share such as \"5%\", or both as \"5%,1GiB\""),
            std::string::npos)
    << r.problems[0].to_string();
  EXPECT_EQ(r.problems[1].to_string(),
            "environment TROUPE_STORAGE_MIN_FREE: storage.min_free = \"75%\": "
            "\"75%\": a share of the disk must be from 0% to 50%");
}
