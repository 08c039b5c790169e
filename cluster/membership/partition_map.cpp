#include "cluster/membership/partition_map.hpp"

#include "cluster/coordination/coordinator.hpp"
#include "cluster/etcd/follow.hpp"
#include "cluster/membership/lease_election.hpp"
#include "cluster/membership/rebalance.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

namespace troupe::cluster {

using json = nlohmann::json;
using std::chrono::milliseconds;
using steady = std::chrono::steady_clock;

namespace {

/// A member as the map sees it: its key exists; `leaving` once it says so.
struct member_view {
  bool leaving = false;
  int64_t create_revision = 0;
};

/// One partition's two keys as last seen.
struct slot {
  std::string leader;
  /// The leader key's mod_revision (the epoch); 0 when absent.
  int64_t leader_mod = 0;
  std::vector<std::string> isr;
  std::vector<std::string> replicas;
  std::string note;
  /// For a state written by a failover: when the old leader was seen gone.
  int64_t failover_since_ms = 0;
  /// The state key's mod_revision; 0 when absent.
  int64_t state_mod = 0;
};

bool contains(const std::vector<std::string>& xs, const std::string& x) {
  return std::find(xs.begin(), xs.end(), x) != xs.end();
}

std::vector<std::string> without(std::vector<std::string> xs,
                                 const std::string& x) {
  xs.erase(std::remove(xs.begin(), xs.end(), x), xs.end());
  return xs;
}

std::string listed(const std::vector<std::string>& xs) {
  std::string out = "[";
  for (size_t i = 0; i < xs.size(); ++i)
    out += (i ? ", " : "") + xs[i];
  return out + "]";
}

std::string state_value(const std::vector<std::string>& isr,
                        const std::vector<std::string>& replicas,
                        const std::string& note,
                        int64_t failover_since_ms = 0) {
  json j{{"isr", isr}, {"replicas", replicas}, {"note", note}};
  if (failover_since_ms != 0)
    j["failover_since_ms"] = failover_since_ms;
  return j.dump();
}

void read_state(const std::string& value, slot& s) {
  s.isr.clear();
  s.replicas.clear();
  s.note.clear();
  s.failover_since_ms = 0;
  auto j = json::parse(value, nullptr, false);
  if (!j.is_object())
    return;
  auto names = [&](const char* field, std::vector<std::string>& out) {
    if (auto f = j.find(field); f != j.end() && f->is_array())
      for (auto& x : *f)
        if (x.is_string())
          out.push_back(x.get<std::string>());
  };
  names("isr", s.isr);
  names("replicas", s.replicas);
  if (auto n = j.find("note"); n != j.end() && n->is_string())
    s.note = n->get<std::string>();
  if (auto f = j.find("failover_since_ms");
      f != j.end() && f->is_number_integer())
    s.failover_since_ms = f->get<int64_t>();
}

etcd::compare mod_is(const std::string& key, int64_t rev) {
  return {key, etcd::compare::target::mod, rev};
}

etcd::txn_op put(const std::string& key, const std::string& value) {
  return {etcd::txn_op::type::put, key, value, 0};
}

etcd::txn_op get(const std::string& key) {
  return {etcd::txn_op::type::get, key, {}, 0};
}

uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

} // namespace

struct partition_map::impl {
  partition_map_options opts;
  etcd::client client;
  /// For the controller's transactions, so that a stop interrupts both.
  etcd::client control_client;
  /// /troupe/<cluster>/
  std::string root;
  lease_election election;

  mutable std::mutex mtx;
  /// Wakes the controller (a change seen, or stopping).
  std::condition_variable wake;
  /// Wakes those waiting for the view to reach a revision.
  std::condition_variable seen;
  // Guarded by mtx:
  std::vector<slot> slots;
  std::map<std::string, member_view> members;
  /// When a member's key was seen deleted, ms since the epoch (dropped when
  /// it registers again).
  std::map<std::string, int64_t> gone_at_ms;
  /// The controller key's value; "" when absent.
  std::string controller_value;
  /// The newest revision the view holds.
  int64_t view_revision = 0;
  /// The newest revision of changes applied but not yet settled.
  int64_t pending_revision = 0;
  /// Counts changes seen, so that the controller knows when to look again.
  uint64_t changes = 0;
  bool stopping = false;
  /// Whether the watch runs (before, nothing moves the view on).
  bool following = false;
  etcd::watch_stream* watch = nullptr;
  /// What on_change was last told, by partition (watch thread only).
  std::vector<partition_record> told;

  std::thread watcher;
  std::thread controller;
  /// Whether the controller's last write failed (controller thread only).
  bool failing = false;
  // Guarded by mtx too:
  /// Partitions whose leadership the controller moved for balance, and
  /// when: moving for rebalance_settle.
  std::map<uint32_t, steady::time_point> recent_moves;
  /// What the controller moved.
  move_counts counts;

  explicit impl(partition_map_options o)
      : opts(std::move(o)), client(opts.etcd), control_client(opts.etcd),
        root("/troupe/" + opts.cluster + "/"),
        election(controller_key(opts.cluster), opts.member), slots(opts.count),
        told(opts.count) {
    for (uint32_t p = 0; p < opts.count; ++p)
      told[p].partition = p;
  }

  void info(const std::string& line) {
    if (opts.info)
      opts.info(line);
  }

  void warn(const std::string& line) {
    if (opts.warn)
      opts.warn(line);
  }

  // -- the view ---------------------------------------------------------------

  enum class key_kind { none, member, leader, state, controller };

  /// What `key` is: a member's (its name in `name`), a partition's leader
  /// or state (its number in `p`), or the controller's.
  key_kind classify(const std::string& key, std::string& name,
                    uint32_t& p) const {
    if (key.size() <= root.size() || key.compare(0, root.size(), root))
      return key_kind::none;
    std::string_view rest{key};
    rest.remove_prefix(root.size());
    if (rest == "controller")
      return key_kind::controller;
    if (rest.starts_with("members/")) {
      name = std::string{rest.substr(8)};
      return name.empty() ? key_kind::none : key_kind::member;
    }
    if (!rest.starts_with("partition/"))
      return key_kind::none;
    rest.remove_prefix(10);
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0 || slash > 6)
      return key_kind::none;
    uint32_t n = 0;
    for (auto c : rest.substr(0, slash)) {
      if (c < '0' || c > '9')
        return key_kind::none;
      n = n * 10 + static_cast<uint32_t>(c - '0');
    }
    if (n >= opts.count)
      return key_kind::none;
    p = n;
    auto what = rest.substr(slash + 1);
    if (what == "leader")
      return key_kind::leader;
    if (what == "state")
      return key_kind::state;
    return key_kind::none;
  }

  /// Applies one key (put, or deleted) to the view. Under mtx.
  void set_key(const etcd::key_value& kv, bool deleted) {
    std::string name;
    uint32_t p = 0;
    switch (classify(kv.key, name, p)) {
    case key_kind::none: return;
    case key_kind::controller:
      controller_value = deleted ? std::string{} : kv.value;
      return;
    case key_kind::member: {
      if (deleted) {
        if (members.erase(name))
          gone_at_ms[name] = now_ms();
        return;
      }
      gone_at_ms.erase(name);
      member_info m;
      auto j = json::parse(kv.value, nullptr, false);
      if (!member_info::from_json(j, m) || m.name != name) {
        members.erase(name);
        return;
      }
      members[name] = {m.state == "leaving", kv.create_revision};
      return;
    }
    case key_kind::leader:
      slots[p].leader = deleted ? std::string{} : kv.value;
      slots[p].leader_mod = deleted ? 0 : kv.mod_revision;
      return;
    case key_kind::state:
      if (deleted) {
        slots[p].isr.clear();
        slots[p].replicas.clear();
        slots[p].note.clear();
        slots[p].state_mod = 0;
      } else {
        read_state(kv.value, slots[p]);
        slots[p].state_mod = kv.mod_revision;
      }
      return;
    }
  }

  partition_record record_of(uint32_t p) const {
    partition_record r;
    r.partition = p;
    if (p >= slots.size())
      return r;
    auto& s = slots[p];
    if (s.leader_mod == 0 || s.leader.empty())
      return r;
    r.leader = s.leader;
    r.epoch = static_cast<uint64_t>(s.leader_mod);
    r.isr = s.isr;
    r.replicas = s.replicas;
    r.state_revision = s.state_mod;
    r.note = s.note;
    r.failover_since_ms = s.failover_since_ms;
    return r;
  }

  /// Replaces the view with a whole read; tells of changed records when
  /// `report` (the watch thread).
  void load(const etcd::range_result& r, bool report) {
    {
      std::lock_guard guard{mtx};
      slots.assign(opts.count, slot{});
      members.clear();
      controller_value.clear();
      for (auto& kv : r.kvs)
        set_key(kv, false);
      view_revision = std::max(view_revision, r.revision);
      ++changes;
    }
    wake.notify_all();
    seen.notify_all();
    if (report)
      tell_changes();
  }

  void load(const etcd::range_result& r) { load(r, true); }

  /// One change; seen (view_revision, the controller, on_change) once its
  /// whole watch answer is applied: a transaction's changes together.
  void apply(const etcd::watch_event& ev) {
    std::lock_guard guard{mtx};
    set_key(ev.kv, ev.what == etcd::watch_event::type::del);
    pending_revision = std::max(pending_revision, ev.kv.mod_revision);
  }

  void settled() {
    {
      std::lock_guard guard{mtx};
      view_revision = std::max(view_revision, pending_revision);
      ++changes;
    }
    wake.notify_all();
    seen.notify_all();
    tell_changes();
  }

  /// Calls on_change for every record that differs from what it was last
  /// told (the note and state revision alone are no change). Watch thread.
  void tell_changes() {
    if (!opts.on_change)
      return;
    std::vector<partition_record> changed;
    {
      std::lock_guard guard{mtx};
      for (uint32_t p = 0; p < opts.count; ++p) {
        auto r = record_of(p);
        auto& t = told[p];
        if (r.leader != t.leader || r.epoch != t.epoch || r.isr != t.isr
            || r.replicas != t.replicas)
          changed.push_back(r);
        t = r;
      }
    }
    for (auto& r : changed)
      opts.on_change(r);
  }

  bool nap(milliseconds d) {
    std::unique_lock guard{mtx};
    wake.wait_for(guard, d, [&] { return stopping; });
    return !stopping;
  }

  /// Waits until the view holds revision `rev` (at most `limit`).
  bool wait_seen(int64_t rev, milliseconds limit) {
    std::unique_lock guard{mtx};
    if (!following)
      return false;
    return seen.wait_for(guard, limit, [&] {
      return stopping || view_revision >= rev;
    }) && view_revision >= rev;
  }

  void watch_loop() {
    etcd::follow_prefix_into(*this, client, root, opts.resync_interval);
  }

  // -- assignment -------------------------------------------------------------

  /// The up members (not leaving), and every member present. Under mtx.
  std::vector<std::string> up_members() const {
    std::vector<std::string> out;
    for (auto& [name, m] : members)
      if (!m.leaving)
        out.push_back(name);
    return out;
  }

  /// The initial record of `p`: leader = first by rank among the up
  /// members, replicas = the first R, isr = replicas. Under mtx. Empty
  /// when no member is up.
  std::vector<std::string> initial_replicas(uint32_t p) const {
    auto ranked = rank(up_members(), p);
    auto r = std::max<uint32_t>(1, opts.replication);
    if (ranked.size() > r)
      ranked.resize(r);
    return ranked;
  }

  /// Makes `p`'s record if it has none: leader replicas[0], isr =
  /// replicas. Returns the leader then (this record's or the one found),
  /// or "" when etcd did not answer.
  std::string create(uint32_t p, const std::vector<std::string>& replicas,
                     const std::string& note) {
    auto lk = leader_key(opts.cluster, p);
    auto sk = state_key(opts.cluster, p);
    auto r = client.txn({{lk, etcd::compare::target::create, 0},
                         {sk, etcd::compare::target::create, 0}},
                        {put(lk, replicas.front()),
                         put(sk, state_value(replicas, replicas, note))},
                        {get(lk)});
    if (!r)
      return {};
    if (r->succeeded) {
      wait_seen(r->revision, milliseconds{1000});
      return replicas.front();
    }
    if (!r->got.empty() && r->got[0])
      return r->got[0]->value;
    // A state without a leader key (written by hand?): the controller
    // deals with it.
    return {};
  }

  // -- start ------------------------------------------------------------------

  std::string start() {
    auto where = "cluster '" + opts.cluster + "'";
    auto counted = client.create_if_absent(count_key(opts.cluster),
                                           std::to_string(opts.count), 0);
    if (!counted)
      return "cannot read the partition count of " + where + ": "
             + counted.err.message;
    if (!counted->succeeded) {
      auto there = counted->current ? counted->current->value : "";
      if (there != std::to_string(opts.count))
        return where + " has " + there + " partitions, and this member is "
               + "configured with " + std::to_string(opts.count)
               + " (cluster.partitions); a cluster's partitions are fixed "
                 "when it is made, and every member must use that count";
    }
    if (auto why = migrate(where); !why.empty())
      return why;
    auto all = client.range_prefix(root);
    if (!all)
      return "cannot read the partitions of " + where + ": " + all.err.message;
    load(*all, false);
    // The partitions of runs already in this member's store are its own
    // when nobody leads them.
    for (auto p : opts.held) {
      if (p >= opts.count)
        continue;
      auto leader = this->leader(p);
      if (leader.empty())
        leader = create(p, {opts.member},
                        "made by " + opts.member + ": its store holds runs");
      if (leader.empty())
        return "cannot make the record of partition " + std::to_string(p)
               + " of " + where + " (etcd did not answer)";
      if (leader != opts.member)
        warn("partition " + std::to_string(p)
             + " holds runs in this member's store but is led by member '"
             + leader
             + "': those runs are answered here only when asked "
               "here");
    }
    if (!opts.held.empty()) {
      auto again = client.range_prefix(root);
      if (!again)
        return "cannot read the partitions of " + where + ": "
               + again.err.message;
      load(*again, false);
    }
    // Home partitions, for runs submitted without an idempotency key:
    // unused ones this member ranks first in among the up members, best
    // first.
    auto have = led().size();
    std::vector<std::pair<uint64_t, uint32_t>> mine;
    size_t unused = 0;
    {
      std::lock_guard guard{mtx};
      auto up = up_members();
      if (!contains(up, opts.member))
        up.push_back(opts.member);
      for (uint32_t p = 0; p < opts.count; ++p) {
        if (slots[p].leader_mod != 0 || slots[p].state_mod != 0)
          continue;
        ++unused;
        if (rank(up, p).front() == opts.member)
          mine.emplace_back(rendezvous_score(opts.member, p), p);
      }
    }
    std::sort(mine.rbegin(), mine.rend());
    for (auto& [score, p] : mine) {
      if (have >= opts.home)
        break;
      std::vector<std::string> replicas;
      {
        std::lock_guard guard{mtx};
        replicas = initial_replicas(p);
      }
      if (replicas.empty() || replicas.front() != opts.member)
        continue;
      auto leader = create(p, replicas, "made by " + opts.member + " (home)");
      if (leader.empty())
        return "cannot make the record of a partition of " + where
               + " (etcd did not answer)";
      have += leader == opts.member ? 1 : 0;
    }
    // What this member made, in the view before anyone asks.
    auto now = client.range_prefix(root);
    if (!now)
      return "cannot read the partitions of " + where + ": " + now.err.message;
    load(*now, false);
    if (have == 0 && unused == 0)
      warn("every partition of " + where
           + " is led by other members: this member owns no run; runs "
             "submitted to it go to members that lead partitions");
    {
      std::lock_guard guard{mtx};
      following = true;
    }
    watcher = std::thread{[this] { watch_loop(); }};
    controller = std::thread{[this] { control_loop(); }};
    return {};
  }

  /// Turns part 1's claims (/troupe/<c>/partitions/<p> = {member, ...})
  /// into records led by the claimant, its only replica, deleting each
  /// claim in the same transaction. A claim of a partition that has a
  /// record already is only deleted.
  std::string migrate(const std::string& where) {
    auto claims = client.range_prefix(root + "partitions/");
    if (!claims)
      return "cannot read the partitions of " + where + ": "
             + claims.err.message;
    for (auto& kv : claims->kvs) {
      auto digits = kv.key.substr(root.size() + 11);
      if (digits.empty() || digits.size() > 6
          || !std::all_of(digits.begin(), digits.end(),
                          [](char c) { return c >= '0' && c <= '9'; }))
        continue;
      auto p = static_cast<uint32_t>(std::stoul(digits));
      if (p >= opts.count)
        continue;
      auto j = json::parse(kv.value, nullptr, false);
      std::string claimant;
      if (j.is_object() && j.contains("member") && j["member"].is_string())
        claimant = j["member"].get<std::string>();
      auto lk = leader_key(opts.cluster, p);
      auto sk = state_key(opts.cluster, p);
      etcd::txn_op drop{etcd::txn_op::type::del, kv.key, {}, 0};
      std::vector<etcd::compare> cmp{mod_is(kv.key, kv.mod_revision)};
      std::vector<etcd::txn_op> ops{drop};
      if (!claimant.empty()) {
        // Made only if the partition has no record; the claim goes either
        // way (two transactions: the second finds the record made).
        auto made = client.txn(
          {mod_is(kv.key, kv.mod_revision),
           {lk, etcd::compare::target::create, 0},
           {sk, etcd::compare::target::create, 0}},
          {put(lk, claimant),
           put(sk, state_value({claimant}, {claimant},
                               "made from part 1's claim by " + claimant)),
           drop},
          {});
        if (!made)
          return "cannot turn the claims of " + where
                 + " into records: " + made.err.message;
        if (made->succeeded) {
          info("partition " + std::to_string(p) + ": part 1's claim by '"
               + claimant + "' is now a record led by it");
          continue;
        }
      }
      auto dropped = client.txn(cmp, ops, {});
      if (!dropped)
        return "cannot turn the claims of " + where
               + " into records: " + dropped.err.message;
    }
    return {};
  }

  std::string leader(uint32_t p) const {
    std::lock_guard guard{mtx};
    return record_of(p).leader;
  }

  std::vector<uint32_t> leaders_of(const std::string& member) const {
    std::lock_guard guard{mtx};
    std::vector<uint32_t> out;
    for (uint32_t p = 0; p < slots.size(); ++p)
      if (slots[p].leader_mod != 0 && slots[p].leader == member)
        out.push_back(p);
    return out;
  }

  std::vector<uint32_t> led() const { return leaders_of(opts.member); }

  // -- the controller ---------------------------------------------------------

  /// One change the controller makes: a guarded transaction.
  struct change {
    /// What kind of move it is, for move_counts.
    enum class kind {
      other,
      leader_rebalance,
      leader_leaving,
      replica_added,
      replica_removed
    };
    uint32_t p = 0;
    std::vector<etcd::compare> cmp;
    std::vector<etcd::txn_op> ops;
    /// What it does, for the log.
    std::string what;
    /// Failovers go first.
    bool urgent = false;
    kind counts_as = kind::other;
  };

  /// The change that hands `p`'s leadership over to `to`, an up member in
  /// its ISR (the old leader stays a replica): a new epoch, in one
  /// transaction guarded by both keys and by `to`'s registration, so that
  /// it goes only to the incarnation seen in sync. The old leader stops
  /// the partition's runs when it sees the record; the new one resumes
  /// them once its store committed what it holds. Used when the leader is
  /// leaving (a drain) and to move leadership for balance. Under mtx.
  /// With a `note`, the state is written again with it (the same ISR and
  /// replicas) in the same transaction.
  change hand_over(uint32_t p, const std::string& to, const std::string& why,
                   const std::string& note = {}) const {
    auto& s = slots[p];
    auto lk = leader_key(opts.cluster, p);
    auto sk = state_key(opts.cluster, p);
    change c;
    c.p = p;
    c.cmp = {mod_is(lk, s.leader_mod),
             mod_is(sk, s.state_mod),
             {etcd_member_key(to), etcd::compare::target::create,
              members.at(to).create_revision}};
    c.ops = {put(lk, to)};
    if (!note.empty())
      c.ops.push_back(put(sk, state_value(s.isr, s.replicas, note)));
    c.what
      = "partition " + std::to_string(p) + ": " + why + ": '" + to + "' leads";
    return c;
  }

  // -- rebalancing ------------------------------------------------------------

  /// The records and members as the rebalancer sees them. Under mtx.
  std::pair<std::vector<rebalance::partition_view>, rebalance::members_view>
  balance_inputs() const {
    rebalance::members_view mv;
    mv.replication = opts.replication;
    for (auto& [name, m] : members)
      (m.leaving ? mv.leaving : mv.up).push_back(name);
    std::vector<rebalance::partition_view> pv;
    for (uint32_t p = 0; p < opts.count; ++p) {
      auto& s = slots[p];
      if (s.leader_mod == 0 && s.state_mod == 0)
        continue; // unused: made on first use
      pv.push_back(
        {p, s.leader_mod != 0 ? s.leader : std::string{}, s.isr, s.replicas});
    }
    return {std::move(pv), std::move(mv)};
  }

  /// Partitions whose leadership moved for balance less than
  /// rebalance_settle ago; drops the older ones. Under mtx.
  std::set<uint32_t> settling() {
    std::set<uint32_t> out;
    auto now = steady::now();
    for (auto i = recent_moves.begin(); i != recent_moves.end();)
      if (now - i->second >= opts.rebalance_settle) {
        i = recent_moves.erase(i);
      } else {
        out.insert(i->first);
        ++i;
      }
    return out;
  }

  /// The transaction of rebalance step `st` of `p`. Under mtx.
  std::optional<change>
  balance_change(uint32_t p, const rebalance::step& st,
                 const std::vector<std::string>& target) const {
    auto& s = slots[p];
    auto lk = leader_key(opts.cluster, p);
    auto sk = state_key(opts.cluster, p);
    auto by = " (controller " + opts.member + ")";
    auto state_change
      = [&](std::vector<std::string> isr, std::vector<std::string> replicas,
            const std::string& note, change::kind k) {
          change c;
          c.p = p;
          c.cmp = {mod_is(lk, s.leader_mod), mod_is(sk, s.state_mod)};
          c.ops = {put(sk, state_value(isr, replicas, note))};
          c.what = "partition " + std::to_string(p) + ": " + note + ": isr "
                   + listed(isr) + ", replicas " + listed(replicas);
          c.counts_as = k;
          return c;
        };
    switch (st.what) {
    case rebalance::action::move_leader: {
      if (!members.count(st.member))
        return std::nullopt;
      auto c = hand_over(
        p, st.member,
        "rebalance toward " + listed(target) + ": leadership moves from '"
          + s.leader + "' to its preferred leader",
        "rebalance: leadership moved from '" + s.leader + "' to '" + st.member
          + "', its preferred leader" + by);
      c.counts_as = change::kind::leader_rebalance;
      return c;
    }
    case rebalance::action::add_replica: {
      auto replicas = s.replicas;
      replicas.push_back(st.member);
      return state_change(s.isr, replicas,
                          "rebalance: replica '" + st.member + "' added toward "
                            + listed(target)
                            + "; it joins the ISR once caught up" + by,
                          change::kind::replica_added);
    }
    case rebalance::action::remove_replica:
      return state_change(without(s.isr, st.member),
                          without(s.replicas, st.member),
                          "rebalance: replica '" + st.member
                            + "' removed: not in " + listed(target) + by,
                          change::kind::replica_removed);
    default: return std::nullopt;
    }
  }

  /// The moves for balance of one pass, once nothing else is to be done.
  /// Under mtx.
  std::vector<change> balance_changes() {
    auto [pv, mv] = balance_inputs();
    auto planned
      = rebalance::plan(pv, mv, opts.rebalance_concurrency, settling());
    std::vector<change> out;
    for (auto& [p, st] : planned.steps)
      if (auto c
          = balance_change(p, st, rebalance::target(mv.up, p, mv.replication)))
        out.push_back(std::move(*c));
    return out;
  }

  partition_balance balance(uint32_t p) const {
    std::lock_guard guard{mtx};
    partition_balance out;
    auto [pv, mv] = balance_inputs();
    auto at = std::find_if(pv.begin(), pv.end(),
                           [p](auto& v) { return v.partition == p; });
    if (at == pv.end())
      return out;
    out.target = rebalance::target(mv.up, p, mv.replication);
    auto st = rebalance::next_step(*at, mv);
    out.next = st.describe();
    auto now = steady::now();
    std::set<uint32_t> just_moved;
    for (auto& [q, when] : recent_moves)
      if (now - when < opts.rebalance_settle)
        just_moved.insert(q);
    out.moving = rebalance::moving(*at, mv) || just_moved.count(p) > 0;
    if (st.what == rebalance::action::none)
      return out;
    if (opts.rebalance_concurrency == 0) {
      out.waiting = "cluster.rebalance_concurrency is 0";
    } else if (auto why = rebalance::blocked(pv, mv); !why.empty()) {
      out.waiting = why;
    } else if (st.starts) {
      size_t busy = just_moved.size();
      for (auto& v : pv)
        busy += rebalance::moving(v, mv) && !just_moved.count(v.partition);
      if (busy >= opts.rebalance_concurrency)
        out.waiting = std::to_string(busy)
                      + " partition(s) moving, cluster.rebalance_concurrency "
                        "is "
                      + std::to_string(opts.rebalance_concurrency);
    }
    return out;
  }

  /// Decides the one change partition `p` needs now, if any. Under mtx.
  std::optional<change> plan(uint32_t p) const {
    auto& s = slots[p];
    if (s.leader_mod == 0 && s.state_mod == 0)
      return std::nullopt; // unused: made on first use
    auto lk = leader_key(opts.cluster, p);
    auto sk = state_key(opts.cluster, p);
    auto guard_both = [&] {
      return std::vector<etcd::compare>{mod_is(lk, s.leader_mod),
                                        mod_is(sk, s.state_mod)};
    };
    auto present = [&](const std::string& m) { return members.count(m) > 0; };
    auto leaving = [&](const std::string& m) {
      auto i = members.find(m);
      return i != members.end() && i->second.leaving;
    };
    auto up = up_members();
    std::vector<std::string> all_present;
    for (auto& [name, m] : members)
      all_present.push_back(name);
    auto ranked_up = rank(up, p);
    auto ranked_present = rank(all_present, p);
    auto tag = "partition " + std::to_string(p) + ": ";

    // The leader is gone (its member key deleted): fail over to the first
    // ISR member that is up, in rank order (one that is leaving only when
    // no other is); none up: the record stays (no unclean election).
    if (s.leader.empty() || !present(s.leader)) {
      std::string next;
      for (auto& m : ranked_present)
        if (m != s.leader && contains(s.isr, m) && !leaving(m)) {
          next = m;
          break;
        }
      if (next.empty())
        for (auto& m : ranked_present)
          if (m != s.leader && contains(s.isr, m)) {
            next = m;
            break;
          }
      if (next.empty())
        return std::nullopt;
      change c;
      c.p = p;
      c.urgent = true;
      c.cmp = guard_both();
      if (s.leader_mod == 0)
        c.cmp[0] = {lk, etcd::compare::target::create, 0};
      if (!s.leader.empty())
        c.cmp.push_back(
          {etcd_member_key(s.leader), etcd::compare::target::version, 0});
      auto isr = without(s.isr, s.leader);
      auto note = "failover: leader '" + s.leader + "' is down; '" + next
                  + "' leads (controller " + opts.member + ")";
      auto gone = gone_at_ms.find(s.leader);
      auto since = gone != gone_at_ms.end() ? gone->second : now_ms();
      c.ops
        = {put(lk, next), put(sk, state_value(isr, s.replicas, note, since))};
      c.what = tag + note + ", isr " + listed(isr);
      return c;
    }
    // The leader registered again since it was installed (a new
    // incarnation): installed again, so that it leads at a new epoch.
    if (members.at(s.leader).create_revision > s.leader_mod) {
      // Unless this controller has no link to it (it was likely cut off
      // from its peers too, and could not reach a follower): then an
      // in-sync follower that is up and linked leads instead, as on a
      // failover, the old leader out of the ISR until it has caught up
      // again. Only then: after an etcd outage every leader registers again,
      // and the links that carried on keep each where it is.
      if (opts.linked && !opts.linked(s.leader)) {
        std::string next;
        for (auto& m : ranked_up)
          if (m != s.leader && contains(s.isr, m)
              && (m == opts.member || opts.linked(m))) {
            next = m;
            break;
          }
        if (!next.empty()) {
          change c;
          c.p = p;
          c.urgent = true;
          c.cmp = guard_both();
          c.cmp.push_back({etcd_member_key(s.leader),
                           etcd::compare::target::create,
                           members.at(s.leader).create_revision});
          auto isr = without(s.isr, s.leader);
          auto note = "leader '" + s.leader
                      + "' registered again but the controller has no link "
                        "to it; '"
                      + next + "' leads (controller " + opts.member + ")";
          c.ops = {put(lk, next), put(sk, state_value(isr, s.replicas, note))};
          c.what = tag + note + ", isr " + listed(isr);
          return c;
        }
      }
      change c;
      c.p = p;
      c.urgent = true;
      c.cmp = guard_both();
      c.cmp.push_back({etcd_member_key(s.leader), etcd::compare::target::create,
                       members.at(s.leader).create_revision});
      c.ops = {put(lk, s.leader)};
      c.what = tag + "leader '" + s.leader
               + "' registered again: installed again at a new epoch";
      return c;
    }
    // A leader without a state (written by hand?): it alone is in sync.
    if (s.state_mod == 0) {
      change c;
      c.p = p;
      c.cmp = guard_both();
      c.ops
        = {put(sk, state_value({s.leader}, {s.leader},
                               "state made for leader '" + s.leader + "'"))};
      c.what = tag + "state made for leader '" + s.leader + "'";
      return c;
    }
    // An in-sync follower whose member key is gone leaves the ISR at once
    // (as Kafka's controller does when a broker dies), rather than after
    // cluster.replica_lag: the leader's commits stop waiting for it. It is
    // added back once it has caught up again.
    for (auto& m : s.isr)
      if (m != s.leader && !present(m)) {
        change c;
        c.p = p;
        c.urgent = true;
        c.cmp = guard_both();
        c.cmp.push_back(
          {etcd_member_key(m), etcd::compare::target::version, 0});
        auto note = "in-sync replica '" + m + "' is down: out of the ISR "
                    + "(controller " + opts.member + ")";
        c.ops = {put(sk, state_value(without(s.isr, m), s.replicas, note))};
        c.what = tag + note + ", isr " + listed(without(s.isr, m));
        return c;
      }
    auto r_eff
      = std::min<size_t>(std::max<uint32_t>(1, opts.replication), up.size());
    if (r_eff == 0)
      return std::nullopt;
    std::vector<std::string> desired(ranked_up.begin(),
                                     ranked_up.begin() + r_eff);
    size_t up_replicas = 0, up_in_sync = 0;
    for (auto& m : s.replicas)
      if (present(m) && !leaving(m)) {
        ++up_replicas;
        up_in_sync += contains(s.isr, m) ? 1 : 0;
      }
    auto state_change
      = [&](std::vector<std::string> isr, std::vector<std::string> replicas,
            const std::string& note) {
          change c;
          c.p = p;
          c.cmp = guard_both();
          c.ops = {put(sk, state_value(isr, replicas, note))};
          c.what = tag + note + ": isr " + listed(isr) + ", replicas "
                   + listed(replicas);
          return c;
        };
    // Fewer than R up replicas: the best-ranked up member missing joins
    // the replicas (not the ISR: the leader adds it once it caught up).
    if (up_replicas < r_eff)
      for (auto& m : desired)
        if (!contains(s.replicas, m)) {
          auto replicas = s.replicas;
          replicas.push_back(m);
          return state_change(s.isr, replicas,
                              "replica '" + m + "' added (controller "
                                + opts.member + ")");
        }
    // A leaving leader hands over to the first ISR member that is up.
    if (leaving(s.leader))
      for (auto& m : ranked_up)
        if (contains(s.isr, m)) {
          auto c = hand_over(p, m, "leader '" + s.leader + "' is leaving");
          c.urgent = true;
          c.counts_as = change::kind::leader_leaving;
          return c;
        }
    // With as many up members in sync as can be, a leaving replica (not
    // the leader) goes.
    if (up_in_sync >= r_eff) {
      for (auto& m : s.replicas)
        if (m != s.leader && leaving(m))
          return state_change(without(s.isr, m), without(s.replicas, m),
                              "replica '" + m + "' removed: it is leaving");
    }
    // Replicas beyond R (a replacement of one that went down) once R are
    // up and in sync: not one that is in sync or wanted.
    auto r_conf = static_cast<size_t>(std::max<uint32_t>(1, opts.replication));
    if (up_in_sync >= r_conf && s.replicas.size() > r_conf) {
      // Worst first: members down, then by rank from the end.
      std::vector<std::string> order;
      for (auto& m : s.replicas)
        if (!present(m))
          order.push_back(m);
      for (auto i = ranked_present.rbegin(); i != ranked_present.rend(); ++i)
        if (contains(s.replicas, *i))
          order.push_back(*i);
      for (auto& m : order)
        if (m != s.leader && !contains(s.isr, m) && !contains(desired, m))
          return state_change(s.isr, without(s.replicas, m),
                              "replica '" + m
                                + "' removed: R replicas are in sync");
    }
    return std::nullopt;
  }

  std::string etcd_member_key(const std::string& m) const {
    return root + "members/" + m;
  }

  /// One look at every partition, as the controller; returns the newest
  /// revision it wrote (0 when none).
  int64_t control_pass() {
    std::vector<change> todo;
    {
      std::lock_guard guard{mtx};
      for (uint32_t p = 0; p < opts.count; ++p)
        if (auto c = plan(p))
          todo.push_back(std::move(*c));
      // Moves for balance only once the records need nothing else.
      if (todo.empty())
        todo = balance_changes();
    }
    std::stable_partition(todo.begin(), todo.end(),
                          [](auto& c) { return c.urgent; });
    int64_t wrote = 0;
    for (auto& c : todo) {
      {
        std::lock_guard guard{mtx};
        if (stopping)
          break;
      }
      if (!election.held(opts.lease ? opts.lease() : 0))
        break;
      auto r = control_client.txn(c.cmp, c.ops, {});
      if (!r) {
        // Once per outage: the pass is tried again every second.
        if (!failing)
          warn("controller: " + c.what
               + ": not written (will retry): " + r.err.message);
        failing = true;
        break;
      }
      failing = false;
      if (!r->succeeded)
        continue; // the view was stale: the next pass sees it anew
      wrote = std::max(wrote, r->revision);
      info("controller: " + c.what + " (epoch " + std::to_string(r->revision)
           + ")");
      std::lock_guard guard{mtx};
      switch (c.counts_as) {
      case change::kind::leader_rebalance:
        ++counts.leader_rebalance;
        recent_moves[c.p] = steady::now();
        break;
      case change::kind::leader_leaving: ++counts.leader_leaving; break;
      case change::kind::replica_added: ++counts.replicas_added; break;
      case change::kind::replica_removed: ++counts.replicas_removed; break;
      case change::kind::other: break;
      }
    }
    return wrote;
  }

  void control_loop() {
    auto next_elect = steady::time_point{};
    auto next_check = steady::time_point{};
    auto last_pass = steady::time_point{};
    uint64_t woken_at = 0;
    uint64_t passed_at = ~uint64_t{0};
    for (;;) {
      std::string seen_holder;
      uint64_t seen_changes = 0;
      {
        std::unique_lock guard{mtx};
        wake.wait_for(guard, opts.tick,
                      [&] { return stopping || changes != woken_at; });
        if (stopping)
          return;
        woken_at = changes;
        seen_holder = controller_value;
        seen_changes = changes;
      }
      auto lease = opts.lease ? opts.lease() : 0;
      auto now = steady::now();
      if (lease == 0) {
        election.drop();
        continue;
      }
      if (!election.held(lease)) {
        // At once when the key is seen gone; else now and then (a holder
        // that died takes the key with its lease).
        if (now < next_elect && !seen_holder.empty())
          continue;
        next_elect = now + milliseconds{seen_holder.empty() ? 250 : 1000};
        if (election.elect(control_client, lease, true))
          info("elected as the cluster's partition controller (key "
               + election.key() + ")");
        if (!election.held(lease))
          continue;
        passed_at = ~uint64_t{0};
        next_check = now + std::chrono::seconds{1};
      } else if (now >= next_check
                 || (seen_holder != opts.member && !seen_holder.empty())) {
        next_check = now + std::chrono::seconds{1};
        if (!election.check(control_client)) {
          info("no longer the partition controller");
          continue;
        }
      }
      // Acts when something changed, and once a second anyway (a
      // transaction that failed is tried again).
      if (seen_changes == passed_at
          && now - last_pass < std::chrono::seconds{1})
        continue;
      passed_at = seen_changes;
      last_pass = now;
      if (auto wrote = control_pass(); wrote != 0)
        wait_seen(wrote, milliseconds{1000});
    }
  }

  // -- claims and ISR changes -------------------------------------------------

  std::string claim(uint32_t p) {
    if (p >= opts.count)
      return {};
    std::vector<std::string> replicas;
    {
      std::lock_guard guard{mtx};
      auto r = record_of(p);
      if (r.exists())
        return r.leader;
      replicas = initial_replicas(p);
    }
    if (replicas.empty())
      return {};
    return create(p, replicas, "made on first use by " + opts.member);
  }

  /// Changes `p`'s ISR as its leader at `epoch`: `edit` returns the new
  /// ISR from the record as it is, or why not.
  isr_result
  change_isr(uint32_t p, uint64_t epoch, int64_t state_revision,
             const std::function<std::string(const partition_record&,
                                             std::vector<std::string>&)>& edit,
             const std::string& note) {
    using kind = isr_result::kind;
    if (p >= opts.count)
      return {kind::refused, "no partition " + std::to_string(p)};
    partition_record r;
    {
      std::lock_guard guard{mtx};
      r = record_of(p);
    }
    auto lk = leader_key(opts.cluster, p);
    auto sk = state_key(opts.cluster, p);
    // Bounded: each round either takes, is refused, or saw the state
    // change under it (a replica added, say) and tries on the new one.
    for (int round = 0; round < 5; ++round) {
      if (r.epoch < epoch) {
        // The view lags behind the caller: read the record itself.
        auto fresh = client.txn({}, {get(lk), get(sk)}, {});
        if (!fresh)
          return {kind::unreachable, fresh.err.message};
        auto& lead = fresh->got[0];
        auto& state = fresh->got[1];
        r = {};
        r.partition = p;
        if (lead && !lead->value.empty()) {
          slot st;
          if (state)
            read_state(state->value, st);
          r.leader = lead->value;
          r.epoch = static_cast<uint64_t>(lead->mod_revision);
          r.isr = st.isr;
          r.replicas = st.replicas;
          r.state_revision = state ? state->mod_revision : 0;
        }
      }
      if (!r.exists())
        return {kind::refused,
                "partition " + std::to_string(p) + " has no record"};
      if (r.epoch != epoch)
        return {kind::stale_epoch, "partition " + std::to_string(p)
                                     + " is at epoch " + std::to_string(r.epoch)
                                     + ", not " + std::to_string(epoch)};
      if (r.leader != opts.member)
        return {kind::not_leader,
                "member '" + opts.member + "' does not lead partition "
                  + std::to_string(p) + " (its leader is '" + r.leader + "')"};
      auto guard_rev = state_revision != 0 ? state_revision : r.state_revision;
      std::vector<std::string> isr;
      if (auto why = edit(r, isr); !why.empty())
        return {kind::refused, why};
      auto result = client.txn(
        {mod_is(lk, static_cast<int64_t>(epoch)), mod_is(sk, guard_rev)},
        {put(sk, state_value(isr, r.replicas, note))}, {get(lk), get(sk)});
      if (!result)
        return {kind::unreachable, result.err.message};
      if (result->succeeded) {
        wait_seen(result->revision, milliseconds{1000});
        return {kind::done, {}, result->revision};
      }
      // Why not: read what is there.
      auto& lead = result->got[0];
      auto& state = result->got[1];
      if (!lead || lead->mod_revision != static_cast<int64_t>(epoch))
        return {kind::stale_epoch,
                "partition " + std::to_string(p) + " is at epoch "
                  + std::to_string(lead ? lead->mod_revision : 0) + ", not "
                  + std::to_string(epoch) + ": another leader was installed"};
      if (state_revision != 0 || !state)
        return {kind::stale_state,
                "the state of partition " + std::to_string(p)
                  + " changed (revision "
                  + std::to_string(state ? state->mod_revision : 0) + ", not "
                  + std::to_string(guard_rev) + ")"};
      slot s;
      read_state(state->value, s);
      r.leader = lead->value;
      r.epoch = epoch;
      r.isr = s.isr;
      r.replicas = s.replicas;
      r.state_revision = state->mod_revision;
    }
    return {kind::stale_state,
            "the state of partition " + std::to_string(p) + " kept changing"};
  }

  std::string unavailable(uint32_t p) const {
    std::lock_guard guard{mtx};
    return unavailable_locked(p);
  }

  std::string unavailable_locked(uint32_t p) const {
    if (p >= slots.size())
      return {};
    auto& s = slots[p];
    if (s.leader_mod == 0 && s.state_mod == 0)
      return {};
    if (!s.leader.empty() && members.count(s.leader))
      return {};
    std::vector<std::string> up;
    for (auto& m : s.isr)
      if (m != s.leader && members.count(m))
        up.push_back(m);
    auto who = s.leader.empty() ? std::string{"it has no leader"}
                                : "its leader '" + s.leader + "' is down";
    if (!up.empty())
      return who + "; in-sync replica '" + rank(up, p).front()
             + "' is to lead it (failover due)";
    return who + " and no in-sync replica is up (isr " + listed(s.isr)
           + "): it waits for one to come back (no unclean election)";
  }
};

// -- partition_map
// --------------------------------------------------------------

partition_map::partition_map(partition_map_options opts)
    : impl_(std::make_shared<impl>(std::move(opts))) {}

partition_map::~partition_map() {
  stop();
}

std::string partition_map::start() {
  return impl_->start();
}

void partition_map::stop() {
  auto& m = *impl_;
  {
    std::lock_guard guard{m.mtx};
    m.stopping = true;
    if (m.watch)
      m.watch->cancel();
  }
  m.wake.notify_all();
  m.seen.notify_all();
  m.client.interrupt(true);
  m.control_client.interrupt(true);
  if (m.watcher.joinable())
    m.watcher.join();
  if (m.controller.joinable())
    m.controller.join();
  m.election.drop();
  m.client.interrupt(false);
  m.control_client.interrupt(false);
}

partition_record partition_map::record(uint32_t p) const {
  std::lock_guard guard{impl_->mtx};
  return impl_->record_of(p);
}

std::vector<partition_record> partition_map::records() const {
  std::lock_guard guard{impl_->mtx};
  std::vector<partition_record> out;
  out.reserve(impl_->opts.count);
  for (uint32_t p = 0; p < impl_->opts.count; ++p)
    out.push_back(impl_->record_of(p));
  return out;
}

std::string partition_map::leader(uint32_t p) const {
  return impl_->leader(p);
}

std::vector<uint32_t>
partition_map::leaders_of(const std::string& member) const {
  return impl_->leaders_of(member);
}

std::vector<uint32_t> partition_map::led() const {
  return impl_->led();
}

std::string partition_map::claim(uint32_t p) {
  return impl_->claim(p);
}

isr_result partition_map::shrink_isr(uint32_t p, uint64_t epoch,
                                     const std::string& member,
                                     const std::string& reason,
                                     int64_t state_revision) {
  auto note = "'" + member + "' left the ISR: " + reason + " (leader "
              + impl_->opts.member + ")";
  auto result = impl_->change_isr(
    p, epoch, state_revision,
    [&](const partition_record& r, std::vector<std::string>& isr) {
      if (member == r.leader)
        return std::string{"the leader cannot drop itself from the ISR"};
      if (!contains(r.isr, member))
        return "'" + member + "' is not in the ISR of partition "
               + std::to_string(p);
      isr = without(r.isr, member);
      return std::string{};
    },
    note);
  if (result.took())
    impl_->info("partition " + std::to_string(p) + ": " + note);
  return result;
}

isr_result partition_map::expand_isr(uint32_t p, uint64_t epoch,
                                     const std::string& member,
                                     int64_t state_revision) {
  auto note = "'" + member + "' joined the ISR: caught up (leader "
              + impl_->opts.member + ")";
  auto result = impl_->change_isr(
    p, epoch, state_revision,
    [&](const partition_record& r, std::vector<std::string>& isr) {
      if (!contains(r.replicas, member))
        return "'" + member + "' is not a replica of partition "
               + std::to_string(p);
      if (contains(r.isr, member))
        return "'" + member + "' is in the ISR of partition "
               + std::to_string(p) + " already";
      isr = r.isr;
      isr.push_back(member);
      return std::string{};
    },
    note);
  if (result.took())
    impl_->info("partition " + std::to_string(p) + ": " + note);
  return result;
}

bool partition_map::is_controller() const {
  auto lease = impl_->opts.lease ? impl_->opts.lease() : 0;
  return impl_->election.held(lease);
}

std::string partition_map::controller() const {
  std::lock_guard guard{impl_->mtx};
  return impl_->controller_value;
}

std::string partition_map::unavailable(uint32_t p) const {
  return impl_->unavailable(p);
}

partition_balance partition_map::balance(uint32_t p) const {
  return impl_->balance(p);
}

move_counts partition_map::moves() const {
  std::lock_guard guard{impl_->mtx};
  return impl_->counts;
}

std::map<uint32_t, std::string> partition_map::availability() const {
  std::lock_guard guard{impl_->mtx};
  std::map<uint32_t, std::string> out;
  for (uint32_t p = 0; p < impl_->opts.count; ++p)
    if (auto why = impl_->unavailable_locked(p); !why.empty())
      out[p] = why;
  return out;
}

uint64_t partition_map::rendezvous_score(std::string_view member, uint32_t p) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : member) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return splitmix64(h ^ (0x9e3779b97f4a7c15ULL * (uint64_t{p} + 1)));
}

std::vector<std::string> partition_map::rank(std::vector<std::string> members,
                                             uint32_t p) {
  std::vector<std::pair<uint64_t, std::string>> scored;
  scored.reserve(members.size());
  for (auto& m : members)
    scored.emplace_back(rendezvous_score(m, p), std::move(m));
  std::sort(scored.begin(), scored.end(), [](auto& a, auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::string> out;
  out.reserve(scored.size());
  for (auto& [score, m] : scored)
    out.push_back(std::move(m));
  return out;
}

namespace {

std::string partition_dir(const std::string& cluster, uint32_t p) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%04u", p);
  return "/troupe/" + cluster + "/partition/" + digits;
}

} // namespace

std::string partition_map::leader_key(const std::string& cluster, uint32_t p) {
  return partition_dir(cluster, p) + "/leader";
}

std::string partition_map::state_key(const std::string& cluster, uint32_t p) {
  return partition_dir(cluster, p) + "/state";
}

std::string partition_map::count_key(const std::string& cluster) {
  return "/troupe/" + cluster + "/partition_count";
}

std::string partition_map::controller_key(const std::string& cluster) {
  return "/troupe/" + cluster + "/controller";
}

std::string partition_map::claim_key(const std::string& cluster, uint32_t p) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%04u", p);
  return "/troupe/" + cluster + "/partitions/" + digits;
}

} // namespace troupe::cluster
