#include "cluster/membership/rebalance.hpp"

#include "cluster/membership/partition_map.hpp"

#include <algorithm>

namespace troupe::cluster::rebalance {

namespace {

bool contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

/// The replicas of `p` that are up, in the record's order.
std::vector<std::string> up_replicas(const partition_view& p,
                                     const members_view& m) {
  std::vector<std::string> out;
  for (auto& r : p.replicas)
    if (contains(m.up, r))
      out.push_back(r);
  return out;
}

std::string listed(const std::vector<std::string>& xs) {
  std::string out = "[";
  for (size_t i = 0; i < xs.size(); ++i)
    out += (i ? ", " : "") + xs[i];
  return out + "]";
}

} // namespace

std::string step::describe() const {
  switch (what) {
  case action::none: return {};
  case action::wait:
    return "adding replica '" + member + "': catching up from the leader's log";
  case action::add_replica: return "adding replica '" + member + "'";
  case action::move_leader: return "moving leader to '" + member + "'";
  case action::remove_replica: return "removing replica '" + member + "'";
  }
  return {};
}

std::vector<std::string> target(const std::vector<std::string>& up, uint32_t p,
                                uint32_t replication) {
  auto ranked = partition_map::rank(up, p);
  auto r = std::max<uint32_t>(1, replication);
  if (ranked.size() > r)
    ranked.resize(r);
  return ranked;
}

bool moving(const partition_view& p, const members_view& m) {
  return up_replicas(p, m).size()
         > target(m.up, p.partition, m.replication).size();
}

step next_step(const partition_view& p, const members_view& m) {
  auto t = target(m.up, p.partition, m.replication);
  if (t.empty() || p.leader.empty() || !contains(m.up, p.leader))
    return {};
  auto up = up_replicas(p, m);
  bool was_moving = up.size() > t.size();
  // The preferred leader is in sync: leadership moves to it.
  if (p.leader != t.front() && contains(p.isr, t.front()))
    return {action::move_leader, t.front(), !was_moving};
  // A target replica catching up: nothing until it is in the ISR.
  for (auto& r : up)
    if (contains(t, r) && !contains(p.isr, r))
      return {action::wait, r, false};
  // One up replica too many: the worst ranked not in the target goes (never
  // the leader: the preferred one leads by now, or is still missing).
  if (was_moving) {
    auto ranked = partition_map::rank(up, p.partition);
    for (auto i = ranked.rbegin(); i != ranked.rend(); ++i)
      if (!contains(t, *i) && *i != p.leader)
        return {action::remove_replica, *i, false};
    return {};
  }
  // Fewer up replicas than the target: the controller grows the replicas
  // (not a move for balance).
  if (up.size() < t.size())
    return {};
  for (auto& r : t)
    if (!contains(up, r))
      return {action::add_replica, r, true};
  return {};
}

std::string blocked(const std::vector<partition_view>& partitions,
                    const members_view& m) {
  if (m.replication <= 1)
    return "cluster.replication is 1: a partition's runs stay with its only "
           "copy";
  if (!m.leaving.empty())
    return "member '" + m.leaving.front() + "' is leaving";
  for (auto& p : partitions) {
    auto tag = "partition " + std::to_string(p.partition);
    if (p.leader.empty() || !contains(m.up, p.leader))
      return tag + " has no leader up";
    auto want = target(m.up, p.partition, m.replication).size();
    size_t in_sync = 0;
    for (auto& r : p.isr)
      in_sync += contains(m.up, r) ? 1 : 0;
    if (in_sync < want)
      return tag + " has " + std::to_string(in_sync)
             + " in-sync replica(s) up of the " + std::to_string(want)
             + " it should have (isr " + listed(p.isr) + ")";
  }
  return {};
}

plan_result plan(const std::vector<partition_view>& partitions,
                 const members_view& m, uint32_t concurrency,
                 const std::set<uint32_t>& recent) {
  plan_result out;
  out.blocked = concurrency == 0
                  ? std::string{"cluster.rebalance_concurrency is 0"}
                  : blocked(partitions, m);
  for (auto& p : partitions)
    out.moving += moving(p, m) || recent.count(p.partition) ? 1 : 0;
  if (!out.blocked.empty())
    return out;
  auto busy = out.moving;
  for (auto& p : partitions) {
    auto s = next_step(p, m);
    if (s.what == action::none || s.what == action::wait)
      continue;
    if (!s.starts) {
      out.steps.emplace_back(p.partition, std::move(s));
      continue;
    }
    // A partition that moved a moment ago waits for the view to settle.
    if (busy >= concurrency || recent.count(p.partition))
      continue;
    ++busy;
    out.steps.emplace_back(p.partition, std::move(s));
  }
  return out;
}

} // namespace troupe::cluster::rebalance
