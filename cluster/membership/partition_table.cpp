#include "cluster/membership/partition_table.hpp"

#include "cluster/coordination/coordinator.hpp"
#include "cluster/etcd/follow.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace troupe::cluster {

using json = nlohmann::json;
using std::chrono::milliseconds;

struct partition_table::impl {
  partition_options opts;
  etcd::client client;
  std::string prefix;

  mutable std::mutex mtx;
  std::condition_variable wake;
  /// Owner by partition; "" while unclaimed. Guarded by mtx.
  std::vector<std::string> owners;
  bool stopping = false;
  etcd::watch_stream* watch = nullptr;
  std::thread watcher;

  explicit impl(partition_options o)
      : opts(std::move(o)), client(opts.etcd),
        prefix("/troupe/" + opts.cluster + "/partitions/"), owners(opts.count) {
  }

  void warn(const std::string& line) {
    if (opts.warn)
      opts.warn(line);
  }

  /// The partition a key names, or count when it names none.
  uint32_t partition_of(const std::string& key) const {
    if (key.size() <= prefix.size() || key.compare(0, prefix.size(), prefix))
      return opts.count;
    auto digits = key.substr(prefix.size());
    if (digits.empty() || digits.size() > 6
        || !std::all_of(digits.begin(), digits.end(),
                        [](char c) { return c >= '0' && c <= '9'; }))
      return opts.count;
    auto p = static_cast<uint32_t>(std::stoul(digits));
    return p < opts.count ? p : opts.count;
  }

  static std::string member_of(const std::string& value) {
    auto j = json::parse(value, nullptr, false);
    if (!j.is_object() || !j.contains("member") || !j["member"].is_string())
      return {};
    return j["member"].get<std::string>();
  }

  void load(const etcd::range_result& r) {
    std::vector<std::string> fresh(opts.count);
    for (auto& kv : r.kvs)
      if (auto p = partition_of(kv.key); p < opts.count)
        fresh[p] = member_of(kv.value);
    std::lock_guard guard{mtx};
    owners = std::move(fresh);
  }

  void apply(const etcd::watch_event& ev) {
    auto p = partition_of(ev.kv.key);
    if (p >= opts.count)
      return;
    std::lock_guard guard{mtx};
    owners[p] = ev.what == etcd::watch_event::type::del
                  ? std::string{}
                  : member_of(ev.kv.value);
  }

  bool nap(milliseconds d) {
    std::unique_lock guard{mtx};
    wake.wait_for(guard, d, [&] { return stopping; });
    return !stopping;
  }

  /// Reads the table, then watches it; until stopped.
  void watch_loop() {
    etcd::follow_prefix_into(*this, client, prefix, opts.resync_interval);
  }

  std::string claim(uint32_t p) {
    if (p >= opts.count)
      return {};
    {
      std::lock_guard guard{mtx};
      if (!owners[p].empty())
        return owners[p];
    }
    json value{{"member", opts.member}, {"claimed_at_ms", now_ms()}};
    auto put = client.create_if_absent(partition_key(opts.cluster, p),
                                       value.dump(), 0);
    if (!put)
      return {};
    auto owner = put->succeeded
                   ? opts.member
                   : member_of(put->current ? put->current->value : "");
    std::lock_guard guard{mtx};
    owners[p] = owner;
    return owner;
  }
};

partition_table::partition_table(partition_options opts)
    : impl_(std::make_shared<impl>(std::move(opts))) {}

partition_table::~partition_table() {
  stop();
}

std::string partition_table::partition_key(const std::string& cluster,
                                           uint32_t p) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%04u", p);
  return "/troupe/" + cluster + "/partitions/" + digits;
}

std::string partition_table::count_key(const std::string& cluster) {
  return "/troupe/" + cluster + "/partition_count";
}

std::string partition_table::start(const std::vector<uint32_t>& held) {
  auto& m = *impl_;
  auto where = "cluster '" + m.opts.cluster + "'";
  // The count: recorded by the cluster's first member, checked by the rest.
  auto counted = m.client.create_if_absent(count_key(m.opts.cluster),
                                           std::to_string(m.opts.count), 0);
  if (!counted)
    return "cannot read the partition count of " + where + ": "
           + counted.err.message;
  if (!counted->succeeded) {
    auto there = counted->current ? counted->current->value : "";
    if (there != std::to_string(m.opts.count))
      return where + " has " + there + " partitions, and this member is "
             + "configured with " + std::to_string(m.opts.count)
             + " (cluster.partitions); a cluster's partitions are fixed "
               "when it is made, and every member must use that count";
  }
  auto all = m.client.range_prefix(m.prefix);
  if (!all)
    return "cannot read the partitions of " + where + ": " + all.err.message;
  m.load(*all);
  // The partitions of runs already in this member's store are its own.
  for (auto p : held) {
    auto owner = m.claim(p);
    if (owner.empty())
      return "cannot claim partition " + std::to_string(p) + " of " + where
             + " (etcd did not answer)";
    if (owner != m.opts.member)
      m.warn("partition " + std::to_string(p)
             + " holds runs in this "
               "member's store but is owned by member '"
             + owner + "': those runs are answered here only when asked here");
  }
  // Home partitions, for runs submitted without an idempotency key: free
  // ones, from a random place, so that members starting together rarely
  // race for the same.
  std::mt19937 rng{std::random_device{}()};
  auto first = static_cast<uint32_t>(rng() % std::max(1u, m.opts.count));
  auto have = owned().size();
  for (uint32_t i = 0; i < m.opts.count && have < m.opts.home; ++i) {
    auto p = (first + i) % m.opts.count;
    if (!owner(p).empty())
      continue;
    auto got = m.claim(p);
    if (got.empty())
      return "cannot claim a partition of " + where + " (etcd did not answer)";
    have += got == m.opts.member ? 1 : 0;
  }
  if (have == 0)
    m.warn("every partition of " + where
           + " is owned by other members: this member owns no run; runs "
             "submitted to it go to members that own partitions");
  m.watcher = std::thread{[&m] { m.watch_loop(); }};
  return {};
}

void partition_table::stop() {
  auto& m = *impl_;
  {
    std::lock_guard guard{m.mtx};
    m.stopping = true;
    if (m.watch)
      m.watch->cancel();
    m.wake.notify_all();
  }
  m.client.interrupt(true);
  if (m.watcher.joinable())
    m.watcher.join();
  m.client.interrupt(false);
}

std::string partition_table::owner(uint32_t p) const {
  std::lock_guard guard{impl_->mtx};
  return p < impl_->owners.size() ? impl_->owners[p] : std::string{};
}

std::string partition_table::claim(uint32_t p) {
  return impl_->claim(p);
}

std::vector<uint32_t> partition_table::owned() const {
  std::lock_guard guard{impl_->mtx};
  std::vector<uint32_t> out;
  for (uint32_t p = 0; p < impl_->owners.size(); ++p)
    if (impl_->owners[p] == impl_->opts.member)
      out.push_back(p);
  return out;
}

std::vector<std::pair<std::string, uint32_t>> partition_table::owners() const {
  std::map<std::string, uint32_t> n;
  {
    std::lock_guard guard{impl_->mtx};
    for (auto& o : impl_->owners)
      if (!o.empty())
        ++n[o];
  }
  return {n.begin(), n.end()};
}

} // namespace troupe::cluster
