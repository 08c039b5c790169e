// The timer service: delayed messages that do not keep their receivers
// alive, and whose entries go once their receivers have.

#include "actors/timer/timer_service.hpp"

#include <caf/all.hpp>
#include <gtest/gtest.h>

#include <thread>

using namespace std::chrono_literals;
using troupe::actors::timer_service;

namespace {

/// A timer service, and an actor system whose scoped actor receives.
struct TimerService : ::testing::Test {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  timer_service timers;
  caf::scoped_actor self{sys};
};

} // namespace

TEST_F(TimerService, DeliversInOrderOfDueTime) {
  auto to = timer_service::make_target(self->address());
  timers.schedule(60ms, to, caf::make_message(3));
  timers.schedule(20ms, to, caf::make_message(1));
  timers.schedule(40ms, to, caf::make_message(2));
  std::vector<int> got;
  for (int i = 0; i < 3; ++i)
    self->receive([&](int x) { got.push_back(x); },
                  caf::after(5s) >> [&] { got.push_back(-1); });
  EXPECT_EQ(got, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(timers.size(), 0u);
}

TEST_F(TimerService, DropsWhatIsLeftForReceiversThatEnded) {
  auto live = timer_service::make_target(self->address());
  // 200 receivers that end with an hour's deliveries pending, and one that
  // lives on.
  for (int i = 0; i < 200; ++i) {
    auto gone = timer_service::make_target(self->address());
    timers.schedule(1h, gone, caf::make_message(i));
    timers.schedule(1h, gone, caf::make_message(i));
    gone.reset();
    timers.forget(2);
  }
  timers.schedule(1h, live, caf::make_message(-1));
  // Purged by the service's thread, long before they are due (bounded).
  for (int i = 0; i < 500 && timers.size() > 1; ++i)
    std::this_thread::sleep_for(10ms);
  EXPECT_EQ(timers.size(), 1u);
  EXPECT_GE(timers.purges(), 1u);
  // An entry whose receiver ended is not delivered when due either.
  auto gone = timer_service::make_target(self->address());
  timers.schedule(10ms, gone, caf::make_message(7));
  gone.reset();
  timers.schedule(30ms, live, caf::make_message(8));
  int got = 0;
  self->receive([&](int x) { got = x; }, caf::after(5s) >> [] {});
  EXPECT_EQ(got, 8);
}
