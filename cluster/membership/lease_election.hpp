#pragma once

// An election through one etcd key created under the candidate's own
// lease: whoever creates the key holds the office until its lease ends
// (revoked, or expired with its holder), when the key goes with it and the
// next candidate to try takes it. Used for the failure detector and for the
// partition controller. Nothing here runs on its own: its owner calls
// `elect` and `check` from a thread of its own, as often as it likes.

#include "cluster/etcd/client.hpp"

#include <mutex>
#include <string>

namespace troupe::cluster {

class lease_election {
 public:
  /// Contends for `key` as `member`.
  lease_election(std::string key, std::string member);

  /// One round. When `contend`, creates the key under `lease` if absent;
  /// otherwise only reads who holds it (and holds nothing itself). Returns
  /// whether this member became the holder in this round (it was not
  /// before). etcd out of reach changes nothing.
  bool elect(etcd::client& etcd, int64_t lease, bool contend);

  /// Reads the key again: still this member's, under the lease it was
  /// taken with? If not, it is no longer held. Returns whether it is held.
  bool check(etcd::client& etcd);

  /// Gives up the office in memory (the lease it was taken under is gone).
  void drop();

  /// Whether this member holds the key, under `lease` (the member's
  /// lease now: a key taken under an older lease is not held).
  bool held(int64_t lease) const;

  /// Who holds the key as last seen; "" when nobody.
  std::string holder() const;

  const std::string& key() const noexcept { return key_; }

 private:
  std::string key_;
  std::string member_;
  mutable std::mutex mtx_;
  bool held_ = false;
  int64_t held_lease_ = 0;
  std::string holder_;
};

} // namespace troupe::cluster
