#include "cluster/etcd/follow.hpp"

#include <algorithm>

namespace troupe::cluster::etcd {

using std::chrono::milliseconds;

void follow_prefix(client& c, const std::string& prefix, milliseconds resync,
                   const follow_handlers& h) {
  auto retry = milliseconds{100};
  while (!h.stopped()) {
    auto all = c.range_prefix(prefix);
    if (!all) {
      if (!h.nap(retry))
        return;
      retry = std::min(retry * 2, milliseconds{2000});
      continue;
    }
    retry = milliseconds{100};
    h.load(*all);
    auto w = c.watch_prefix(prefix, all->revision + 1);
    if (!h.watching(w.get()))
      return;
    auto quiet_since = std::chrono::steady_clock::now();
    for (;;) {
      auto got = w->next(milliseconds{250});
      if (h.stopped() || !got)
        break;
      if (got->empty()) {
        if (std::chrono::steady_clock::now() - quiet_since >= resync)
          break;
        continue;
      }
      quiet_since = std::chrono::steady_clock::now();
      for (auto& ev : *got)
        h.apply(ev);
      if (h.settled)
        h.settled();
    }
    if (!h.watching(nullptr))
      return;
  }
}

} // namespace troupe::cluster::etcd
