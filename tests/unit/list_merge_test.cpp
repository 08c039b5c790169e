// How `list` pages of several members merge into one: id order, the page
// size, and a `next` from which no member skips a run, even when a member's
// page stopped early at its scan limit.

#include "cluster/forward/forwarder.hpp"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

using json = nlohmann::json;
using troupe::cluster::merge_list_pages;

namespace {

json page(std::vector<std::string> ids, std::string next = {},
          uint64_t scanned = 0) {
  json runs = json::array();
  for (auto& id : ids)
    runs.push_back(json{{"run_id", id}});
  return json{{"runs", runs},
              {"next", next},
              {"scanned", scanned ? scanned : ids.size()}};
}

std::vector<std::string> ids(const json& p) {
  std::vector<std::string> out;
  for (auto& r : p["runs"])
    out.push_back(r["run_id"]);
  return out;
}

} // namespace

TEST(ListMerge, InterleavesMembersInIdOrderAndEndsWithNoCursor) {
  auto m
    = merge_list_pages({page({"a1", "a4"}), page({"a2", "a3"}), page({})}, 10);
  EXPECT_EQ(ids(m), (std::vector<std::string>{"a1", "a2", "a3", "a4"}));
  EXPECT_EQ(m["next"], "");
  EXPECT_EQ(m["scanned"], 4);
}

TEST(ListMerge, AFullPageContinuesAfterItsLastRun) {
  // Each member sent a whole page (limit 2) and has more after it.
  auto m
    = merge_list_pages({page({"a1", "a4"}, "a4"), page({"a2", "a3"}, "a3")}, 2);
  EXPECT_EQ(ids(m), (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(m["next"], "a2");
  // Runs left over past the page, though no member has more: a next page.
  m = merge_list_pages({page({"a1", "a4"}), page({"a2", "a3"})}, 3);
  EXPECT_EQ(ids(m), (std::vector<std::string>{"a1", "a2", "a3"}));
  EXPECT_EQ(m["next"], "a3");
  // Exactly the last runs: no next page.
  m = merge_list_pages({page({"a1"}), page({"a2"})}, 2);
  EXPECT_EQ(m["next"], "");
}

TEST(ListMerge, GoesNoFurtherThanAMemberWhosePageStoppedEarly) {
  // The second member stopped scanning at a5 (its scan limit) with nothing
  // matching yet: it may hold matching runs after a5, so the merged page
  // ends there, and the next one starts after a5 on every member.
  auto m
    = merge_list_pages({page({"a1", "a7", "a9"}), page({}, "a5", 1000)}, 10);
  EXPECT_EQ(ids(m), (std::vector<std::string>{"a1"}));
  EXPECT_EQ(m["next"], "a5");
  EXPECT_EQ(m["scanned"], 1003);
}

TEST(ListMerge, TheSameRunFromTwoMembersIsListedOnce) {
  auto m = merge_list_pages({page({"a1", "a2"}), page({"a2"})}, 10);
  EXPECT_EQ(ids(m), (std::vector<std::string>{"a1", "a2"}));
}
