#pragma once

// Following a prefix: a caller's view of every key under it, read whole and
// then kept up to date by a watch, read whole again after any error or a
// long silence (a connection gone quiet cannot hide changes for longer).

#include "cluster/etcd/client.hpp"

#include <chrono>
#include <functional>
#include <mutex>
#include <string>

namespace troupe::cluster::etcd {

struct follow_handlers {
  /// Every key under the prefix, read whole: replaces the view.
  std::function<void(const range_result&)> load;
  /// One change after the last load.
  std::function<void(const watch_event&)> apply;
  /// After the changes of one watch answer were applied (etcd never splits
  /// one revision's changes across answers, so a transaction's are all
  /// applied by then); may be empty.
  std::function<void()> settled;
  /// Told of the watch in use, so that another thread can cancel it, and
  /// of null once it ended. Returns false when the caller stops.
  std::function<bool(watch_stream*)> watching;
  /// Waits `d` before a retry, unless the caller stops first; returns
  /// whether to go on.
  std::function<bool(std::chrono::milliseconds d)> nap;
  /// Whether the caller stops; asked at least every 250 ms.
  std::function<bool()> stopped;
};

/// Follows `prefix` until stopped, on the calling thread (a thread of the
/// caller's own: it blocks). A watch silent for `resync` is made again
/// after a fresh read. Retries back off from 100 ms to 2 s.
void follow_prefix(client& c, const std::string& prefix,
                   std::chrono::milliseconds resync, const follow_handlers& h);

/// follow_prefix for a follower that keeps, under its `mtx`, a `stopping`
/// flag and the `watch` in use (cancelled by whoever sets `stopping`), and
/// has `load(range_result)`, `apply(watch_event)` and `nap(d)` (false once
/// stopping), and may have `settled()`.
template<class Follower>
void follow_prefix_into(Follower& f, client& c, const std::string& prefix,
                        std::chrono::milliseconds resync) {
  follow_handlers h;
  h.load = [&f](const range_result& r) { f.load(r); };
  h.apply = [&f](const watch_event& ev) { f.apply(ev); };
  if constexpr (requires { f.settled(); })
    h.settled = [&f] { f.settled(); };
  h.watching = [&f](watch_stream* w) {
    std::lock_guard guard{f.mtx};
    f.watch = f.stopping ? nullptr : w;
    return !f.stopping;
  };
  h.nap = [&f](std::chrono::milliseconds d) { return f.nap(d); };
  h.stopped = [&f] {
    std::lock_guard guard{f.mtx};
    return f.stopping;
  };
  follow_prefix(c, prefix, resync, h);
}

} // namespace troupe::cluster::etcd
