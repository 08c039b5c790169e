// Where an attempt runs among the members that qualify: spread's rotation,
// least_loaded, label constraints and capacity.

#include "cluster/mesh/steps.hpp"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

using troupe::cluster::choose_member;
using troupe::cluster::placement_candidate;

namespace {

std::vector<placement_candidate> three() {
  return {{"m1", {{"zone", "a"}}, -1, 0, 0},
          {"m2", {{"zone", "b"}, {"disk", "ssd"}}, -1, 0, 0},
          {"m3", {{"zone", "b"}}, -1, 0, 0}};
}

} // namespace

TEST(Placement, SpreadTakesEachMemberInTurn) {
  auto m = three();
  uint64_t turn = 0;
  std::vector<int> picks;
  for (int i = 0; i < 6; ++i)
    picks.push_back(choose_member("spread", {}, m, turn));
  EXPECT_EQ(picks, (std::vector<int>{0, 1, 2, 0, 1, 2}));
}

TEST(Placement, LeastLoadedTakesTheFewestInFlight) {
  auto m = three();
  m[0].in_flight = 3;
  m[1].in_flight = 1;
  m[2].in_flight = 2;
  uint64_t turn = 0;
  EXPECT_EQ(choose_member("least_loaded", {}, m, turn), 1);
}

TEST(Placement, OnlyMembersWithEveryLabelQualify) {
  auto m = three();
  uint64_t turn = 0;
  for (int i = 0; i < 4; ++i) {
    auto c = choose_member("spread", {{"zone", "b"}}, m, turn);
    EXPECT_TRUE(c == 1 || c == 2) << c;
  }
  EXPECT_EQ(choose_member("spread", {{"zone", "b"}, {"disk", "ssd"}}, m, turn),
            1);
  EXPECT_EQ(choose_member("spread", {{"zone", "c"}}, m, turn), -1);
  EXPECT_EQ(choose_member("least_loaded", {{"gpu", "yes"}}, m, turn), -1);
}

TEST(Placement, FullMembersAreSkippedUnlessAllAreFull) {
  auto m = three();
  m[0].capacity = 2;
  m[0].in_flight_kind = 2;
  m[1].capacity = 0;
  uint64_t turn = 0;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(choose_member("spread", {}, m, turn), 2);
  m[2].capacity = 1;
  m[2].in_flight_kind = 1;
  m[2].in_flight = 1;
  m[0].in_flight = 2;
  // All full: the least loaded is asked anyway (it refuses: member_full).
  EXPECT_EQ(choose_member("least_loaded", {}, m, turn), 1);
}
