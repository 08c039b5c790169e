#pragma once

#include "actors/services.hpp"

#include <caf/actor_addr.hpp>
#include <caf/actor_cast.hpp>
#include <caf/local_actor.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace troupe::actors {

/// What a node-wide keyed actor (a circuit breaker, a concurrency limiter)
/// needs to look after itself: who holds something of it, and when it may
/// retire.

/// The actors that hold something of a keyed actor (calls, slots, places in
/// its queue), with how many things each: each is monitored while it holds
/// any, so that the keyed actor hears of its death and frees what it held.
class holder_watch {
 public:
  /// Counts one more thing held by the sender of the message `self` is
  /// handling, and monitors it from its first. (Monitored through the
  /// message's strong reference: the sender is alive while its message is
  /// handled.) Anonymous senders are not counted.
  void hold(caf::local_actor* self) {
    auto& sender = self->current_sender();
    if (sender && ++counts_[caf::actor_cast<caf::actor_addr>(sender)] == 1)
      self->monitor(sender);
  }

  /// Counts one thing less held by `owner`; stops monitoring it once it
  /// holds nothing.
  void unhold(caf::local_actor* self, const caf::actor_addr& owner) {
    auto i = counts_.find(owner);
    if (i == counts_.end() || --i->second > 0)
      return;
    self->demonitor(owner);
    counts_.erase(i);
  }

  /// Forgets `owner`, which died; returns whether it held anything (else
  /// its down message is not about this).
  bool forget(const caf::actor_addr& owner) { return counts_.erase(owner) > 0; }

 private:
  std::unordered_map<caf::actor_addr, int32_t> counts_;
};

/// Retires `self`, the actor of `key` in `registry`, when it `is_free` and
/// has done nothing since `last_used_ns` for svc.options.keyed_idle: it
/// leaves the registry (so no caller is given it any more) and quits, and
/// the key's next use starts a fresh one. Else it sends itself `check`
/// when that time will have passed.
template<class Self, class Atom>
void retire_when_idle(Self* self, keyed_actors& registry,
                      const std::string& key, const services& svc,
                      int64_t last_used_ns, bool is_free, Atom check) {
  auto idle = std::chrono::nanoseconds{svc.options.keyed_idle};
  auto quiet = std::chrono::nanoseconds{now_ns() - last_used_ns};
  if (is_free && quiet >= idle) {
    registry.retire(key, self->address());
    self->quit();
    return;
  }
  auto wait = quiet < idle ? idle - quiet : idle;
  self->delayed_send(self, wait, check);
}

} // namespace troupe::actors
