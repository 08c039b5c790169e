#include "cluster/membership/etcd_coordinator.hpp"

#include "cluster/etcd/follow.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

namespace troupe::cluster {

using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

/// The etcd options of lease renewals: an attempt on one endpoint may take
/// at most half the renewal interval and a whole call at most the
/// interval, so that a renewal stuck on an endpoint that hangs (a stopped
/// etcd member, or a follower still forwarding to a stopped leader) moves
/// on to the next one long before the lease's TTL has passed.
etcd::client_options renewal_options(const membership_options& o) {
  auto c = o.etcd;
  auto interval
    = std::max(milliseconds{100},
               std::chrono::duration_cast<milliseconds>(o.lease_ttl) / 4);
  c.request_timeout
    = std::min(c.request_timeout, std::max(milliseconds{50}, interval / 2));
  c.call_timeout = std::min(c.call_timeout, interval);
  return c;
}

} // namespace

struct etcd_coordinator::impl {
  membership_options opts;
  etcd::client client;
  /// For lease renewals alone, with shorter deadlines (renewal_options).
  etcd::client renewals;
  std::string prefix;
  std::string key;

  mutable std::mutex mtx;
  std::condition_variable wake;
  /// Guarded by mtx.
  member_info self;
  bool joined = false;
  /// When etcd last confirmed the lease (granted or renewed): past it plus
  /// the TTL, the lease may be gone, whatever a renewal still in flight
  /// will say.
  steady::time_point renewed_at;
  int64_t lease = 0;
  int64_t granted_ttl_s = 0;
  int64_t rejoins = 0;
  bool stopping = false;
  /// Set by the watch when it saw this incarnation's key deleted.
  std::string lost_reason;
  std::map<std::string, member_info> others;
  etcd::watch_stream* watch = nullptr;

  std::thread renewer;
  std::thread watcher;
  /// The partitions' records and the controller; null when
  /// opts.partitions is 0. Last, so that it stops first.
  std::unique_ptr<partition_map> partitions;

  explicit impl(membership_options o)
      : opts(std::move(o)), client(opts.etcd), renewals(renewal_options(opts)),
        prefix("/troupe/" + opts.cluster + "/members/"),
        key(prefix + opts.self.name) {
    self = opts.self;
  }

  void info(const std::string& line) {
    if (opts.info)
      opts.info(line);
  }

  void warn(const std::string& line) {
    if (opts.warn)
      opts.warn(line);
  }

  /// Waits `d` or until stopped (or, for the renewer, told of a lost
  /// registration); returns whether to go on.
  bool nap(milliseconds d, bool renewer = false) {
    std::unique_lock guard{mtx};
    wake.wait_for(
      guard, d, [&] { return stopping || (renewer && !lost_reason.empty()); });
    return !stopping;
  }

  /// One registration: a new lease, a new incarnation, and the key created
  /// only if absent. Safe to retry: a key that holds this very incarnation
  /// (a retry whose first answer was lost) counts as ours.
  join_failure register_once() {
    // The lease's TTL runs from when it was asked for, at the latest.
    auto asked = steady::now();
    auto granted = client.lease_grant(opts.lease_ttl.count());
    if (!granted) {
      auto kind = granted.err.what == etcd::error::kind::refused
                    ? join_failure::kind::refused
                    : join_failure::kind::unreachable;
      return {kind, granted.err.message};
    }
    member_info me;
    {
      std::lock_guard guard{mtx};
      me = self;
    }
    me.incarnation = new_incarnation();
    me.joined_at_ms = now_ms();
    auto value = me.to_json().dump();
    // Bounded: the key found may be our own previous incarnation's (its
    // lease not yet expired), which is revoked and the write tried again.
    for (int i = 0; i < 3; ++i) {
      auto put = client.create_if_absent(key, value, granted->id);
      if (!put) {
        (void)client.lease_revoke(granted->id);
        return {join_failure::kind::unreachable, put.err.message};
      }
      if (put->succeeded)
        return commit(me, *granted, asked);
      member_info holder;
      auto parsed
        = json::parse(put->current ? put->current->value : "", nullptr, false);
      bool readable = put->current && member_info::from_json(parsed, holder);
      if (readable && holder.incarnation == me.incarnation)
        return commit(me, *granted, asked);
      bool ours = false;
      {
        std::lock_guard guard{mtx};
        ours = readable && holder.incarnation == self.incarnation
               && !self.incarnation.empty();
      }
      if (ours && put->current->lease != 0) {
        (void)client.lease_revoke(put->current->lease);
        continue;
      }
      (void)client.lease_revoke(granted->id);
      return {join_failure::kind::name_taken,
              "member name '" + opts.self.name + "' is taken in cluster '"
                + opts.cluster + "'"
                + (readable ? " by the member at " + holder.control_address
                                + " (incarnation " + holder.incarnation + ")"
                            : std::string{})
                + "; give this member another name (--member or "
                  "cluster.member)"};
    }
    (void)client.lease_revoke(granted->id);
    return {join_failure::kind::refused,
            "could not replace this member's previous registration"};
  }

  join_failure commit(const member_info& me, const etcd::lease& granted,
                      steady::time_point asked) {
    std::lock_guard guard{mtx};
    self = me;
    self.state = "up";
    joined = true;
    renewed_at = asked;
    lease = granted.id;
    granted_ttl_s = std::max<int64_t>(granted.ttl_s, 1);
    lost_reason.clear();
    others.erase(self.name);
    return {};
  }

  milliseconds renew_interval() {
    std::lock_guard guard{mtx};
    auto ttl = granted_ttl_s > 0 ? granted_ttl_s : opts.lease_ttl.count();
    // At least three renewals per TTL, so one lost answer costs nothing.
    return std::max(milliseconds{100}, milliseconds{ttl * 1000 / 4});
  }

  void mark_lost(const std::string& why) {
    int64_t old_lease = 0;
    {
      std::lock_guard guard{mtx};
      if (!joined)
        return;
      joined = false;
      self.state = "joining";
      old_lease = lease;
      lease = 0;
      lost_reason.clear();
    }
    warn("cluster: member '" + opts.self.name + "' lost its registration ("
         + why + "): not joined; registering again with a new incarnation");
    if (opts.on_joined)
      opts.on_joined(false);
    // If the lease still lives (etcd was out of reach), end it, so that no
    // registration of the old incarnation lingers.
    (void)client.lease_revoke(old_lease);
  }

  /// Renews the lease, notices its loss, and registers again after it.
  void renew_loop() {
    auto retry = milliseconds{100};
    bool warned = false;
    // After a failed renewal the next one is tried soon, not a whole
    // interval later: the lease must be renewed within its TTL.
    bool failing = false;
    while (nap(failing ? milliseconds{100} : renew_interval(), true)) {
      failing = false;
      std::string lost;
      int64_t id = 0;
      int64_t ttl_s = 0;
      steady::time_point renewed;
      {
        std::lock_guard guard{mtx};
        lost = std::exchange(lost_reason, {});
        id = joined ? lease : 0;
        ttl_s = granted_ttl_s;
        renewed = renewed_at;
      }
      if (!lost.empty()) {
        mark_lost(lost);
        id = 0;
      }
      if (id != 0) {
        auto asked = steady::now();
        auto r = renewals.lease_keepalive(id);
        if (r && *r > 0) {
          std::lock_guard guard{mtx};
          // The lease lives TTL from when the renewal was asked, not
          // answered.
          if (lease == id)
            renewed_at = asked;
          warned = false;
          continue;
        }
        if (r) {
          mark_lost("its lease expired or was revoked");
        } else if (steady::now() - renewed >= std::chrono::seconds{ttl_s}) {
          mark_lost("etcd was out of reach for longer than the lease TTL: "
                    + r.err.message);
        } else {
          if (!warned)
            warn("cluster: renewing the lease failed (will retry): "
                 + r.err.message);
          warned = true;
          failing = true;
          continue;
        }
      }
      // Not joined: register again, with backoff while it fails.
      auto failed = register_once();
      if (!failed) {
        std::string incarnation;
        {
          std::lock_guard guard{mtx};
          ++rejoins;
          incarnation = self.incarnation;
        }
        retry = milliseconds{100};
        info("cluster: member '" + opts.self.name + "' joined cluster '"
             + opts.cluster + "' again (incarnation " + incarnation + ")");
        if (opts.on_joined)
          opts.on_joined(true);
        continue;
      }
      warn("cluster: registering again failed (will retry in "
           + std::to_string(retry.count()) + "ms): " + failed.message);
      if (!nap(retry, true))
        break;
      retry = std::min(retry * 2, milliseconds{2000});
    }
  }

  void apply(const etcd::watch_event& ev) {
    auto name = ev.kv.key.substr(std::min(prefix.size(), ev.kv.key.size()));
    std::lock_guard guard{mtx};
    if (ev.what == etcd::watch_event::type::del) {
      if (name == self.name) {
        // Only a deletion of this very incarnation's key means it is lost.
        member_info gone;
        auto parsed
          = json::parse(ev.prev ? ev.prev->value : "", nullptr, false);
        if (joined && ev.prev && member_info::from_json(parsed, gone)
            && gone.incarnation == self.incarnation) {
          lost_reason = "its key was deleted: the lease expired or was "
                        "revoked";
          wake.notify_all();
        }
        return;
      }
      others.erase(name);
      return;
    }
    member_info m;
    auto parsed = json::parse(ev.kv.value, nullptr, false);
    if (!member_info::from_json(parsed, m) || m.name != name)
      return;
    if (name == self.name)
      return;
    others[name] = std::move(m);
  }

  void load(const etcd::range_result& r) {
    std::map<std::string, member_info> fresh;
    for (auto& kv : r.kvs) {
      auto name = kv.key.substr(std::min(prefix.size(), kv.key.size()));
      member_info m;
      auto parsed = json::parse(kv.value, nullptr, false);
      if (name.empty() || !member_info::from_json(parsed, m) || m.name != name)
        continue;
      fresh[name] = std::move(m);
    }
    std::lock_guard guard{mtx};
    fresh.erase(self.name);
    others = std::move(fresh);
  }

  /// How long a watch may stay silent before every key is read again:
  /// resync_interval, at most the lease's TTL. A watch on an etcd member
  /// that stopped stays open and silent, and must not hide a change for
  /// longer than a TTL.
  milliseconds resync() const {
    return std::min(opts.resync_interval,
                    std::chrono::duration_cast<milliseconds>(
                      std::max(opts.lease_ttl, std::chrono::seconds{1})));
  }

  /// Reads every member, then watches for changes; until stopped.
  void watch_loop() {
    etcd::follow_prefix_into(*this, client, prefix, resync());
  }

  /// Whether this member's registration surely still lives: joined, and
  /// renewed less than a TTL ago. Under mtx.
  bool live() const {
    return joined
           && steady::now() - renewed_at < std::chrono::seconds{granted_ttl_s};
  }

  void start_threads() {
    renewer = std::thread{[this] { renew_loop(); }};
    watcher = std::thread{[this] { watch_loop(); }};
  }

  void stop_threads() {
    {
      std::lock_guard guard{mtx};
      stopping = true;
      if (watch)
        watch->cancel();
      wake.notify_all();
    }
    // A call in flight (etcd out of reach) ends after its current attempt.
    client.interrupt(true);
    renewals.interrupt(true);
    if (renewer.joinable())
      renewer.join();
    if (watcher.joinable())
      watcher.join();
    client.interrupt(false);
    renewals.interrupt(false);
  }
};

etcd_coordinator::etcd_coordinator(membership_options opts)
    : impl_(std::make_shared<impl>(std::move(opts))) {}

etcd_coordinator::~etcd_coordinator() {
  impl_->stop_threads();
}

std::string etcd_coordinator::member_key(const std::string& cluster,
                                         const std::string& member) {
  return "/troupe/" + cluster + "/members/" + member;
}

join_failure etcd_coordinator::join() {
  auto failed = impl_->register_once();
  if (failed)
    return failed;
  if (impl_->opts.partitions > 0) {
    partition_map_options po;
    po.cluster = impl_->opts.cluster;
    po.member = impl_->opts.self.name;
    po.count = impl_->opts.partitions;
    po.replication = impl_->opts.replication;
    po.rebalance_concurrency = impl_->opts.rebalance_concurrency;
    po.held = impl_->opts.held_partitions;
    po.etcd = impl_->opts.etcd;
    po.resync_interval = impl_->resync();
    po.lease = [i = impl_.get()] {
      std::lock_guard guard{i->mtx};
      return i->live() ? i->lease : int64_t{0};
    };
    po.on_change = impl_->opts.on_partition_change;
    po.linked = impl_->opts.linked;
    po.info = impl_->opts.info;
    po.warn = impl_->opts.warn;
    auto map = std::make_unique<partition_map>(std::move(po));
    if (auto why = map->start(); !why.empty()) {
      leave();
      return {join_failure::kind::refused, why};
    }
    impl_->partitions = std::move(map);
  }
  // The first view of the others, before anyone asks.
  if (auto all = impl_->client.range_prefix(impl_->prefix))
    impl_->load(*all);
  impl_->start_threads();
  return {};
}

bool etcd_coordinator::mark_leaving() {
  member_info me;
  int64_t id = 0;
  {
    std::lock_guard guard{impl_->mtx};
    if (!impl_->joined)
      return false;
    impl_->self.state = "leaving";
    me = impl_->self;
    id = impl_->lease;
  }
  // Under the same lease: a lease that is gone makes the write fail rather
  // than leave a key behind.
  auto put = impl_->client.put(impl_->key, me.to_json().dump(), id);
  if (!put)
    impl_->warn("cluster: could not mark member '" + me.name
                + "' leaving: " + put.err.message);
  return static_cast<bool>(put);
}

void etcd_coordinator::leave() {
  impl_->stop_threads();
  if (impl_->partitions)
    impl_->partitions->stop();
  int64_t id = 0;
  {
    std::lock_guard guard{impl_->mtx};
    id = impl_->joined ? impl_->lease : 0;
    impl_->joined = false;
    impl_->self.state = "left";
  }
  if (id != 0)
    (void)impl_->client.lease_revoke(id);
}

std::vector<member_info> etcd_coordinator::members() const {
  std::lock_guard guard{impl_->mtx};
  std::vector<member_info> out;
  out.reserve(impl_->others.size() + 1);
  for (auto& [name, m] : impl_->others)
    out.push_back(m);
  out.push_back(impl_->self);
  if (impl_->joined && !impl_->live())
    out.back().state = "joining";
  std::sort(out.begin(), out.end(),
            [](auto& a, auto& b) { return a.name < b.name; });
  return out;
}

self_status etcd_coordinator::self() const {
  std::lock_guard guard{impl_->mtx};
  return {impl_->opts.cluster,     impl_->self.name, impl_->live(),
          impl_->self.incarnation, impl_->rejoins,   impl_->granted_ttl_s};
}

uint32_t etcd_coordinator::partition_count() const {
  return impl_->opts.partitions;
}

std::string etcd_coordinator::owner_of_partition(uint32_t p) const {
  return impl_->partitions ? impl_->partitions->leader(p) : std::string{};
}

std::string etcd_coordinator::claim_partition(uint32_t p) const {
  return impl_->partitions ? impl_->partitions->claim(p) : std::string{};
}

std::vector<uint32_t> etcd_coordinator::owned_partitions() const {
  return impl_->partitions ? impl_->partitions->led() : std::vector<uint32_t>{};
}

std::map<uint32_t, std::string>
etcd_coordinator::unavailable_partitions() const {
  return impl_->partitions ? impl_->partitions->availability()
                           : std::map<uint32_t, std::string>{};
}

partition_map* etcd_coordinator::partitions() const {
  return impl_->partitions.get();
}

int64_t etcd_coordinator::lease_id() const {
  std::lock_guard guard{impl_->mtx};
  return impl_->live() ? impl_->lease : 0;
}

} // namespace troupe::cluster
