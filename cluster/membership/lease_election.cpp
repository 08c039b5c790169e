#include "cluster/membership/lease_election.hpp"

namespace troupe::cluster {

lease_election::lease_election(std::string key, std::string member)
    : key_(std::move(key)), member_(std::move(member)) {}

bool lease_election::elect(etcd::client& etcd, int64_t lease, bool contend) {
  if (!contend || lease == 0) {
    auto r = etcd.get(key_);
    if (!r)
      return false;
    std::lock_guard guard{mtx_};
    held_ = false;
    held_lease_ = 0;
    holder_ = *r ? (*r)->value : std::string{};
    return false;
  }
  auto r = etcd.create_if_absent(key_, member_, lease);
  if (!r)
    return false;
  std::string who;
  if (r->succeeded) {
    who = member_;
  } else if (r->current) {
    who = r->current->value;
    if (who == member_ && r->current->lease != lease)
      who.clear(); // our old lease's key, about to go with that lease
  }
  std::lock_guard guard{mtx_};
  bool was = held_;
  held_ = who == member_;
  held_lease_ = held_ ? lease : 0;
  holder_ = who;
  return held_ && !was;
}

bool lease_election::check(etcd::client& etcd) {
  int64_t lease = 0;
  {
    std::lock_guard guard{mtx_};
    if (!held_)
      return false;
    lease = held_lease_;
  }
  auto r = etcd.get(key_);
  std::lock_guard guard{mtx_};
  if (!r)
    return held_;
  bool ours = *r && (*r)->value == member_ && (*r)->lease == lease;
  if (!ours) {
    held_ = false;
    held_lease_ = 0;
    holder_ = *r ? (*r)->value : std::string{};
  }
  return held_;
}

void lease_election::drop() {
  std::lock_guard guard{mtx_};
  held_ = false;
  held_lease_ = 0;
}

bool lease_election::held(int64_t lease) const {
  std::lock_guard guard{mtx_};
  return held_ && lease != 0 && held_lease_ == lease;
}

std::string lease_election::holder() const {
  std::lock_guard guard{mtx_};
  return holder_;
}

} // namespace troupe::cluster
