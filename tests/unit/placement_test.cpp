// Where an attempt runs among the members that qualify: spread's rotation,
// least_loaded, label constraints and capacity; and the step executor.

#include "cluster/mesh/mesh.hpp"
#include "cluster/mesh/steps.hpp"

#include <caf/all.hpp>
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

TEST(Placement, FullMembersAreSkippedAndWhenAllAreFullNobodyIsChosen) {
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
  // All full: nobody is asked; the attempt waits for room.
  EXPECT_EQ(choose_member("least_loaded", {}, m, turn),
            troupe::cluster::no_member_has_room);
  EXPECT_EQ(choose_member("spread", {}, m, turn),
            troupe::cluster::no_member_has_room);
  // Labels no member carries: no_member_fits, whatever the room.
  EXPECT_EQ(choose_member("spread", {{"zone", "c"}}, m, turn),
            troupe::cluster::no_member_fits);
}

// A member not joined to its cluster (fenced: its lease may be gone) runs
// no attempt another member places on it: it answers the retryable
// member_fenced at once.
TEST(StepExecutor, AFencedMemberRefusesAttemptsAsMemberFenced) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto svc = std::make_shared<troupe::actors::services>();
  svc->member = "m2";
  bool fenced = true;
  svc->fence = [&fenced] {
    return fenced ? std::string{"member fenced: not joined to the cluster"}
                  : std::string{};
  };
  troupe::cluster::placer_options po;
  po.member = "m2";
  troupe::cluster::step_placer placer{sys, po, svc};
  auto executor = placer.executor();
  troupe::runtime::attempt_spec spec;
  spec.run_id = "r1";
  spec.node = "a";
  spec.attempt = 1;
  spec.kind = "exec";
  caf::scoped_actor self{sys};
  bool answered = false;
  self
    ->request(executor, std::chrono::seconds{5},
              troupe::cluster::step_atom::value, spec, std::string{"m1"},
              std::string{"0123456789abcdef"})
    .receive(
      [&](troupe::runtime::attempt_result& r) {
        answered = true;
        EXPECT_FALSE(r.ok);
        EXPECT_EQ(r.error_kind, "member_fenced");
        EXPECT_EQ(r.node, "a");
        EXPECT_EQ(r.attempt, 1);
        EXPECT_NE(r.message.find("not joined"), std::string::npos) << r.message;
      },
      [&](caf::error& e) { ADD_FAILURE() << sys.render(e); });
  EXPECT_TRUE(answered);
}

// A member that leaves runs no new attempt either: member_leaving.
TEST(StepExecutor, ALeavingMemberRefusesAttemptsAsMemberLeaving) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto svc = std::make_shared<troupe::actors::services>();
  svc->member = "m2";
  troupe::cluster::placer_options po;
  po.member = "m2";
  troupe::cluster::step_placer placer{sys, po, svc};
  placer.leave();
  troupe::runtime::attempt_spec spec;
  spec.run_id = "r1";
  spec.node = "a";
  spec.attempt = 2;
  spec.kind = "exec";
  caf::scoped_actor self{sys};
  std::string kind;
  self
    ->request(placer.executor(), std::chrono::seconds{5},
              troupe::cluster::step_atom::value, spec, std::string{"m1"},
              std::string{"0123456789abcdef"})
    .receive([&](troupe::runtime::attempt_result& r) { kind = r.error_kind; },
             [&](caf::error& e) { ADD_FAILURE() << sys.render(e); });
  EXPECT_EQ(kind, "member_leaving");
  EXPECT_EQ(placer.running(), 0);
}
