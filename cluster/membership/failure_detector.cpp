#include "cluster/membership/failure_detector.hpp"

#include "cluster/membership/lease_election.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

namespace troupe::cluster {

using clock = std::chrono::steady_clock;

struct failure_detector::impl {
  detector_options opts;
  const etcd_coordinator& membership;
  std::function<std::map<std::string, peer_link>()> links;
  etcd::client etcd;

  mutable std::mutex mtx;
  std::condition_variable wake;
  bool running = false;
  std::thread thread;
  /// Members seen in the last look, and those whose key went since.
  std::map<std::string, member_info> last_seen;
  std::map<std::string, member_info> down;
  /// The detector's office: /troupe/<cluster>/detector.
  lease_election election;

  // Only the thread touches these.
  clock::time_point next_elect{};
  clock::time_point next_check{};
  /// Suspects (name|incarnation) already revoked or found newer.
  std::set<std::string> settled;
  /// When this member last woke from a pause, ms since the epoch: set by
  /// the pause clock, a thread that only sleeps, so that an etcd call that
  /// is slow on the detector's own thread is not taken for a pause.
  std::atomic<int64_t> woke_at_ms{0};
  std::thread pause_clock;

  impl(detector_options o, const etcd_coordinator& m,
       std::function<std::map<std::string, peer_link>()> l)
      : opts(std::move(o)), membership(m), links(std::move(l)), etcd(opts.etcd),
        election(detector_key(opts.cluster), opts.member) {}

  void say(const std::function<void(const std::string&)>& sink,
           const std::string& line) {
    if (sink)
      sink(line);
  }

  /// Notes members whose key was deleted since the last look.
  void track_downs() {
    auto now = now_ms();
    std::map<std::string, member_info> current;
    for (auto& m : membership.members())
      current[m.name] = m;
    std::lock_guard guard{mtx};
    for (auto& [name, m] : last_seen)
      if (!current.count(name) && name != opts.member) {
        auto gone = m;
        gone.state = "down";
        gone.link.clear();
        gone.reason = "its key was deleted (lease expired or revoked)";
        gone.down_at_ms = now;
        down[name] = gone;
      }
    for (auto i = down.begin(); i != down.end();)
      i = current.count(i->first)
              || now - i->second.down_at_ms > opts.down_shown.count()
            ? down.erase(i)
            : ++i;
    last_seen = std::move(current);
  }

  /// Takes the detector key if nobody holds it and `contend`; learns who
  /// holds it either way.
  void elect(int64_t lease, bool contend) {
    if (election.elect(etcd, lease, contend))
      say(opts.info, "elected as the cluster's failure detector (key "
                       + election.key() + ")");
  }

  /// Revokes `name`'s lease if its key still holds `incarnation`.
  void revoke(const std::string& name, const std::string& incarnation) {
    auto tag = name + "|" + incarnation;
    if (settled.count(tag))
      return;
    auto r = etcd.get(etcd_coordinator::member_key(opts.cluster, name));
    if (!r)
      return; // etcd out of reach: try again at the next tick
    if (!*r) {
      settled.insert(tag); // gone already
      return;
    }
    member_info info;
    auto j = nlohmann::json::parse((*r)->value, nullptr, false);
    if (!member_info::from_json(j, info) || info.incarnation != incarnation) {
      settled.insert(tag); // a newer incarnation: never revoked for this
      return;
    }
    auto done = etcd.lease_revoke((*r)->lease);
    if (!done)
      return;
    settled.insert(tag);
    say(opts.warn, "revoked the lease of suspect member '" + name
                     + "' (incarnation " + incarnation + ")");
  }

  /// The pause clock: wakes every tick; a wake much later than asked for
  /// means the whole process stood still (SIGSTOP, a frozen VM, swapping).
  void watch_pauses() {
    std::unique_lock lock{mtx};
    auto last = clock::now();
    while (running) {
      wake.wait_for(lock, opts.tick, [this] { return !running; });
      auto at = clock::now();
      if (at - last > opts.pause) {
        woke_at_ms = now_ms();
        auto paused
          = std::chrono::duration_cast<std::chrono::milliseconds>(at - last);
        lock.unlock();
        say(opts.warn, "this member was paused for "
                         + std::to_string(paused.count())
                         + "ms: links lost meanwhile are not taken as "
                           "failures");
        lock.lock();
      }
      last = at;
    }
  }

  void tick() {
    track_downs();
    auto lease = membership.lease_id();
    auto now = clock::now();
    if (lease == 0) {
      election.drop();
      return;
    }
    // Only a member linked to another (or alone) stands for detector: one
    // that cannot prove the secret to anyone, or is cut off, would suspect
    // nobody and leave every failure to the leases' expiry.
    auto all = links ? links() : std::map<std::string, peer_link>{};
    size_t connected = 0;
    for (auto& [name, link] : all)
      connected += link.state == "connected" ? 1 : 0;
    bool contend = connected > 0 || all.empty();
    if (!election.held(lease)) {
      if (now >= next_elect) {
        // Often while nobody is known to hold the key; else once a second
        // (a holder that died is revoked or expires, and the key with it).
        auto who = election.holder();
        next_elect = now
                     + (who.empty() ? std::chrono::milliseconds{250}
                                    : std::chrono::milliseconds{1000});
        elect(lease, contend);
      }
    } else if (now >= next_check) {
      next_check = now + std::chrono::seconds{1};
      election.check(etcd);
    }
    // Suspicions count when they arose while this registration was held
    // and not just after this member was paused; none while every link is
    // lost.
    int64_t joined_at = 0;
    for (auto& m : membership.members())
      if (m.name == opts.member)
        joined_at = m.joined_at_ms;
    auto from = std::max(joined_at, woke_at_ms.load() + opts.settle.count());
    std::map<std::string, std::string> suspects;
    for (auto& [name, link] : all) {
      if (link.state == "suspect" && joined_at > 0 && link.since_ms >= from)
        suspects[name] = link.incarnation;
    }
    if (all.size() >= 2 && connected == 0)
      suspects.clear();
    for (auto i = settled.begin(); i != settled.end();) {
      auto name = i->substr(0, i->find('|'));
      auto s = suspects.find(name);
      i = s == suspects.end() || name + "|" + s->second != *i ? settled.erase(i)
                                                              : ++i;
    }
    if (suspects.empty())
      return;
    if (election.held(lease)) {
      for (auto& [name, incarnation] : suspects)
        revoke(name, incarnation);
      return;
    }
    auto who = election.holder();
    if (who.empty() && now >= next_elect) {
      // Nobody seems to hold the key: it may have gone with a dead holder.
      next_elect = now + std::chrono::milliseconds{250};
      elect(lease, contend);
      if (election.held(lease)) {
        for (auto& [name, incarnation] : suspects)
          revoke(name, incarnation);
        return;
      }
    }
    if (auto s = suspects.find(who); s != suspects.end())
      revoke(s->first, s->second);
  }

  void run() {
    std::unique_lock lock{mtx};
    for (;;) {
      if (!running)
        return;
      lock.unlock();
      tick();
      lock.lock();
      wake.wait_for(lock, opts.tick, [this] { return !running; });
    }
  }
};

failure_detector::failure_detector(
  detector_options opts, const etcd_coordinator& membership,
  std::function<std::map<std::string, peer_link>()> links)
    : impl_(
      std::make_shared<impl>(std::move(opts), membership, std::move(links))) {}

failure_detector::~failure_detector() {
  stop();
}

void failure_detector::start() {
  std::lock_guard guard{impl_->mtx};
  if (impl_->running || impl_->thread.joinable())
    return;
  impl_->running = true;
  impl_->thread = std::thread{[i = impl_] { i->run(); }};
  impl_->pause_clock = std::thread{[i = impl_] { i->watch_pauses(); }};
}

void failure_detector::stop() {
  {
    std::lock_guard guard{impl_->mtx};
    impl_->running = false;
  }
  impl_->wake.notify_all();
  impl_->etcd.interrupt(true);
  if (impl_->thread.joinable())
    impl_->thread.join();
  if (impl_->pause_clock.joinable())
    impl_->pause_clock.join();
}

uint32_t failure_detector::partition_count() const {
  return impl_->membership.partition_count();
}

std::string failure_detector::owner_of_partition(uint32_t p) const {
  return impl_->membership.owner_of_partition(p);
}

std::string failure_detector::claim_partition(uint32_t p) const {
  return impl_->membership.claim_partition(p);
}

std::map<uint32_t, std::string>
failure_detector::unavailable_partitions() const {
  return impl_->membership.unavailable_partitions();
}

std::vector<uint32_t> failure_detector::owned_partitions() const {
  return impl_->membership.owned_partitions();
}

std::vector<member_info> failure_detector::members() const {
  auto list = impl_->membership.members();
  auto links
    = impl_->links ? impl_->links() : std::map<std::string, peer_link>{};
  auto me = impl_->opts.member;
  for (auto& m : list) {
    if (m.name == me) {
      m.link = "self";
      continue;
    }
    auto l = links.find(m.name);
    if (l == links.end()) {
      m.link = "connecting";
      continue;
    }
    m.link = l->second.state;
    m.reason = l->second.reason;
    if (l->second.state == "suspect" && m.state == "up")
      m.state = "suspect";
  }
  std::lock_guard guard{impl_->mtx};
  auto listed = [&](const std::string& name) {
    for (auto& x : list)
      if (x.name == name)
        return true;
    return false;
  };
  for (auto& [name, m] : impl_->down)
    if (!listed(name))
      list.push_back(m);
  // Gone since the detector's last look (at most a tick ago): down too.
  for (auto& [name, m] : impl_->last_seen)
    if (name != me && !listed(name)) {
      auto gone = m;
      gone.state = "down";
      gone.link.clear();
      gone.reason = "its key was deleted (lease expired or revoked)";
      gone.down_at_ms = now_ms();
      list.push_back(std::move(gone));
    }
  std::sort(list.begin(), list.end(),
            [](auto& a, auto& b) { return a.name < b.name; });
  return list;
}

self_status failure_detector::self() const {
  auto s = impl_->membership.self();
  s.detector = impl_->election.holder();
  return s;
}

std::string failure_detector::detector_key(const std::string& cluster) {
  return "/troupe/" + cluster + "/detector";
}

} // namespace troupe::cluster
