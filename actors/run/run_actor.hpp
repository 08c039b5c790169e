#pragma once

#include "actors/services.hpp"
#include "runtime/engine/run_engine.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/behavior.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <unordered_map>
#include <vector>

namespace troupe::actors {

/// A random bit generator of 8 bytes (splitmix64), for backoff jitter: a run
/// actor is kept per live run, so its state must stay small (a Mersenne
/// twister alone is 2.5 KiB).
struct small_rng {
  using result_type = uint64_t;
  uint64_t state = 0;
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return UINT64_MAX; }
  void seed(uint64_t s) { state = s; }
  result_type operator()() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

/// A map kept as a vector of pairs, for what a run actor rarely holds more
/// than a few of (guarded calls): a hash table costs 56 bytes empty and an
/// allocation of buckets on first use. Lookups compare keys in order.
template<class K, class V>
class small_map {
 public:
  using value_type = std::pair<K, V>;
  using iterator = typename std::vector<value_type>::iterator;

  iterator begin() { return items_.begin(); }
  iterator end() { return items_.end(); }
  template<class Key>
  iterator find(const Key& key) {
    return std::find_if(items_.begin(), items_.end(),
                        [&](const value_type& p) { return p.first == key; });
  }
  template<class Key>
  size_t count(const Key& key) {
    return find(key) != end() ? 1 : 0;
  }
  /// Adds `key` unless present; returns where it is and whether it is new.
  std::pair<iterator, bool> emplace(K key, V value) {
    if (auto i = find(key); i != end())
      return {i, false};
    items_.emplace_back(std::move(key), std::move(value));
    return {items_.end() - 1, true};
  }
  V& operator[](const K& key) { return emplace(key, V{}).first->second; }
  iterator erase(iterator i) { return items_.erase(i); }
  template<class Key>
  size_t erase(const Key& key) {
    auto i = find(key);
    if (i == end())
      return 0;
    items_.erase(i);
    return 1;
  }
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }

 private:
  std::vector<value_type> items_;
};

/// The state of one run actor: the run's engine plus the attempts it has
/// spawned. Every decision of the engine is journaled before it is acted on:
/// events go to the store, and their effects (spawning attempts, arming
/// timers, telling observers) wait for the store's acknowledgement.
struct run_state {
  static inline const char* name = "troupe.run";

  ~run_state();

  caf::event_based_actor* self = nullptr;
  services_ptr svc;
  std::unique_ptr<runtime::run_engine> engine;
  caf::actor observer;
  /// Whether the observer hears of every event (else only of the end).
  bool progress = true;
  /// Whether the observer hears how the run ended: not when this actor
  /// only found it ended (whoever ended it has told).
  bool tell_end = true;
  /// The attempt actor each node waits for, by node.
  /// (Hash maps: a map node may have thousands of items in flight.)
  std::unordered_map<std::string, caf::actor> attempts;
  /// An attempt actor as its exit message will find it.
  struct attempt_link {
    std::string node;
    /// Whether this actor stopped it (it is no longer in `attempts`).
    bool stopped = false;
  };
  /// Every attempt actor spawned whose exit message has not arrived yet.
  /// Attempts stay linked until then, so that each exit finds its entry: an
  /// exit from an attempt that was stopped or has reported is old news,
  /// and only an exit from anything else (the supervisor) ends this actor.
  std::unordered_map<caf::actor_addr, attempt_link> attempt_nodes;
  /// Events written but not yet durable, by store tag, with the seq of the
  /// first.
  std::map<uint64_t, std::pair<int64_t, std::vector<persistence::event_record>>>
    unacked;
  uint64_t next_tag = 1;
  /// Events in the journal, durable or queued: the next one's seq is one
  /// more.
  int64_t journal_size = 0;
  /// When the run was submitted (its first event), for the index entry.
  int64_t created_at_ns = 0;
  /// Calls let through by a circuit breaker, by node: the breaker (invalid
  /// when it did not answer) and the call's ticket.
  small_map<std::string, std::pair<caf::actor, uint64_t>> breaker_calls;
  /// Concurrency slots by node: the limiter, the holder name, whether the
  /// slot is granted (else the node waits in the limiter's queue), and the
  /// ticket of the request that asked for it.
  struct slot {
    caf::actor limiter;
    std::string holder;
    bool granted = false;
    uint64_t ticket = 0;
  };
  small_map<std::string, slot> slots;
  /// Attempt actors stopped and not gone yet, by node: an exec attempt is
  /// gone once its process group is (SIGTERM, then up to the kill grace).
  /// Until then the node keeps its slot, its next attempt waits, and the
  /// run does not end (its end frees its slots too).
  struct stopping_attempt {
    caf::actor_addr actor;
    int32_t attempt = 0;
    /// The node's slot, given back once it is gone.
    std::optional<slot> held;
    /// Whether its timeout stopped it: journaled once it is gone.
    bool timed_out = false;
    /// Whether the node's next attempt waits to be launched.
    bool relaunch = false;
  };
  small_map<std::string, stopping_attempt> stopping;
  /// Sleep nodes whose timer this actor has armed, with the attempt it is
  /// for (sleeps need no attempt actor).
  small_map<std::string, int32_t> timers;
  /// Nodes whose breaker has been asked and has not answered yet: the
  /// breaker and the request's ticket.
  small_map<std::string, std::pair<caf::actor, uint64_t>> awaiting_breaker;
  /// Attempts waiting to start while the member is fenced (see
  /// services::fence), by node: the attempt.
  std::unordered_map<std::string, int32_t> fenced;
  /// The next ticket, which tells a request to a limiter or breaker from
  /// this actor's earlier ones.
  uint64_t next_ticket = 1;
  /// Jitter source; seeded from the run id and the clock.
  small_rng rng;
  /// This actor as the node's timer service knows it (made on first use):
  /// its timers expire when it goes, with the state.
  std::shared_ptr<const caf::actor_addr> timer_target;
  /// Timers armed in the timer service and not yet received; told to the
  /// service when this actor ends, so it can drop them early.
  uint32_t timers_pending = 0;
  /// What a resumed run launches again once its fence (an empty append
  /// that checks the journal is as read) is durable: the nodes that were in
  /// flight, and whether to announce the resumption then. Null otherwise.
  struct resume_plan {
    std::vector<std::string> nodes;
    uint64_t fence = 0;
    bool announce = false;
  };
  std::unique_ptr<resume_plan> resuming;
};

/// Runs one workflow run, starting from its journal (`start.journal`, whose
/// first event is run_submitted). Quits when the run ends.
caf::behavior run_actor_impl(caf::stateful_actor<run_state>* self,
                             runtime::start_run start, services_ptr svc);

} // namespace troupe::actors
