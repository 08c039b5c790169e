// How long a message round trip between two actors of one actor system
// takes, with the scheduler configured as the embedded node configures it
// and the repository's own message types.

#include "runtime/protocol/messages.hpp"

#include <benchmark/benchmark.h>
#include <caf/all.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

namespace {

using namespace troupe;
using namespace std::chrono_literals;

/// The actor system as embedded_node makes it: the `sharing` scheduler,
/// at least two threads, every Troupe message type registered.
std::unique_ptr<caf::actor_system> make_system(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("sharing"));
  cfg.set("scheduler.max-threads",
          std::max(2u, std::thread::hardware_concurrency()));
  runtime::register_message_types(cfg);
  return std::make_unique<caf::actor_system>(cfg);
}

/// Answers every breaker_acquire at once, letting the call through, as a
/// closed circuit breaker does.
caf::behavior answering_actor(caf::event_based_actor*) {
  return {
    [](runtime::breaker_acquire&) -> caf::result<bool, int64_t, bool> {
      return {true, int64_t{0}, false};
    },
  };
}

/// Echoes every store_ack back to its sender with the next tag.
caf::behavior pong_actor(caf::event_based_actor*) {
  return {
    [](runtime::store_ack& a) {
      return runtime::store_ack{a.tag + 1, {}};
    },
  };
}

/// On a request for `n` round trips, plays them with `pong` (each store_ack
/// sent only once the last came back), then replies with the count.
caf::behavior ping_actor(caf::event_based_actor* self, caf::actor pong) {
  struct game {
    uint64_t left = 0;
    caf::response_promise done;
  };
  auto g = std::make_shared<game>();
  return {
    [self, pong, g](int64_t n) -> caf::result<int64_t> {
      g->left = static_cast<uint64_t>(n);
      g->done = self->make_response_promise();
      self->send(pong, runtime::store_ack{0, {}});
      return g->done;
    },
    [self, pong, g](runtime::store_ack& a) {
      if (--g->left > 0)
        self->send(pong, runtime::store_ack{a.tag, {}});
      else
        g->done.deliver(static_cast<int64_t>(a.tag));
    },
  };
}

/// Request and response of a small message (a breaker_acquire naming a run
/// and a node, answered by three values) from a blocking scoped actor, as a
/// caller outside the actors asks one. Arg: round trips per iteration.
void request_response(benchmark::State& state) {
  caf::actor_system_config cfg;
  auto sys = make_system(cfg);
  auto server = sys->spawn(answering_actor);
  const auto n = state.range(0);
  const runtime::breaker_acquire msg{"run-01HZX3K4Q8W9V2B7", "charge_card"};
  bool failed = false;
  {
    caf::scoped_actor self{*sys};
    for (auto _ : state) {
      for (int64_t i = 0; i < n && !failed; ++i)
        self->request(server, 10s, msg)
          .receive([](bool allowed, int64_t,
                      bool) { benchmark::DoNotOptimize(allowed); },
                   [&](caf::error&) { failed = true; });
      if (failed) {
        state.SkipWithError("request failed");
        break;
      }
    }
    self->send_exit(server, caf::exit_reason::user_shutdown);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

/// Ping-pong between two event-based actors: one sends a store_ack, the
/// other answers it, `n` times per iteration (each waits for the answer).
/// Items: round trips.
void ping_pong(benchmark::State& state) {
  caf::actor_system_config cfg;
  auto sys = make_system(cfg);
  auto pong = sys->spawn(pong_actor);
  auto ping = sys->spawn(ping_actor, pong);
  const auto n = state.range(0);
  {
    caf::scoped_actor self{*sys};
    for (auto _ : state) {
      bool ok = false;
      self->request(ping, 10s, n)
        .receive([&](int64_t tags) { ok = tags == n; }, [](caf::error&) {});
      if (!ok) {
        state.SkipWithError("the game did not finish");
        break;
      }
    }
    self->send_exit(ping, caf::exit_reason::user_shutdown);
    self->send_exit(pong, caf::exit_reason::user_shutdown);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

} // namespace

BENCHMARK(request_response)
  ->ArgName("trips")
  ->Arg(100)
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
BENCHMARK(ping_pong)
  ->ArgName("trips")
  ->Arg(1000)
  ->Unit(benchmark::kMicrosecond)
  ->UseRealTime();
