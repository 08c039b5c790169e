// The replicator (replicator.hpp): the leader's shipments, the followers'
// acknowledgements and KIP-101 truncation, the high watermark, and the ISR
// checks, all on one worker thread per member.

#include "cluster/replication/replicator.hpp"

#include <algorithm>
#include <cstring>
#include <future>
#include <stdexcept>

namespace troupe::cluster::replication {

namespace {

using clock = std::chrono::steady_clock;
using persistence::plog_errc;

// -- the wire format ----------------------------------------------------------
//
// A message is: u8 version (1), u32 count, then `count` entries, each a u8
// kind and its fields; integers little-endian, strings as u32 length and
// bytes. Entries of any kinds and partitions share one message, so that a
// group commit over many partitions costs one message per member.

constexpr uint8_t wire_version = 1;

enum class kind : uint8_t {
  /// Leader -> follower: u32 partition, u64 epoch, u64 leader's committed
  /// offset, u32 n, n × (u64 offset, string record). n = 0: a heartbeat.
  ship = 1,
  /// Follower -> leader: u32 partition, u64 epoch (of the shipment), u8
  /// code (plog_errc), u64 follower's log end, u64 offset (of the code),
  /// u64 highest epoch the follower has seen.
  ack = 2,
  /// Follower -> leader: u32 partition, u64 leader epoch, u64 the
  /// follower's last epoch (KIP-101's question).
  ask_end = 3,
  /// Leader -> follower: u32 partition, u64 leader epoch, u8 code, u64 the
  /// largest epoch of the leader's log not newer than the one asked, u64
  /// the end offset of that epoch in the leader's log (KIP-279's answer).
  end = 4,
  /// Leader -> follower, for a follower that lacks records trimmed from
  /// the leader's log: one chunk of a snapshot of the partition's applied
  /// state. u32 partition, u64 leader epoch, u64 snapshot id (the leader's,
  /// new for each snapshot), u64 snapshot offset, u64 snapshot epoch, u32
  /// chunk index (0 for the first), u8 last (1 for the last chunk), string
  /// chunk (journal_store::snapshot_chunk::bytes).
  snap_chunk = 5,
  /// Follower -> leader: u32 partition, u64 leader epoch, u64 snapshot id,
  /// u32 the chunk index it expects next (past the last: installed), u8
  /// code (plog_errc; not ok: the install failed, start again), u64 its
  /// log end.
  snap_ack = 6,
};

struct writer {
  std::string out;
  void u8(uint8_t v) { out.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i)
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(uint64_t v) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    out.append(s);
  }
};

/// Reads a message; throws std::runtime_error naming what is wrong.
struct reader {
  std::string_view in;
  size_t at = 0;

  void need(size_t n, const char* what) {
    if (in.size() - at < n)
      throw std::runtime_error(std::string{"truncated "} + what + " at byte "
                               + std::to_string(at));
  }
  uint8_t u8(const char* what) {
    need(1, what);
    return static_cast<uint8_t>(in[at++]);
  }
  uint32_t u32(const char* what) {
    need(4, what);
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= uint32_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
    at += 4;
    return v;
  }
  uint64_t u64(const char* what) {
    need(8, what);
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i)
      v |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
    at += 8;
    return v;
  }
  std::string str(const char* what) {
    auto n = u32(what);
    need(n, what);
    std::string s{in.substr(at, n)};
    at += n;
    return s;
  }
};

struct ship_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  uint64_t committed = 0;
  std::vector<std::pair<uint64_t, std::string>> records;
};

struct ack_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  plog_errc code = plog_errc::ok;
  uint64_t log_end = 0;
  uint64_t offset = 0;
  uint64_t seen_epoch = 0;
};

struct ask_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  uint64_t last_epoch = 0;
};

struct snap_chunk_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  uint64_t id = 0;
  uint64_t offset = 0;
  uint64_t snap_epoch = 0;
  uint32_t index = 0;
  bool last = false;
  std::string bytes;
};

struct snap_ack_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  uint64_t id = 0;
  uint32_t next = 0;
  plog_errc code = plog_errc::ok;
  uint64_t log_end = 0;
};

struct end_entry {
  uint32_t partition = 0;
  uint64_t epoch = 0;
  plog_errc code = plog_errc::ok;
  uint64_t answer_epoch = 0;
  uint64_t end_offset = 0;
};

plog_errc code_of(uint8_t v) {
  if (v > static_cast<uint8_t>(plog_errc::io))
    throw std::runtime_error("unknown result code " + std::to_string(v));
  return static_cast<plog_errc>(v);
}

bool contains(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : ", ") + s;
  return out;
}

int64_t ms_between(clock::time_point a, clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

class engine;

} // namespace

// -- the worker's state -------------------------------------------------------

struct replicator::state {
  /// The leader's view of one follower of a partition.
  struct follower {
    /// The next offset to ship.
    uint64_t next = 1;
    /// Its log end as it last acknowledged it at this epoch (valid when
    /// `known`: it answered since this member leads, after its KIP-101
    /// truncation, so its log is a prefix of ours).
    uint64_t log_end = 0;
    bool known = false;
    /// When the oldest shipment of records on its way was sent (or the
    /// follower last made progress on them).
    clock::time_point shipped_at{};
    /// When anything (records or a heartbeat) was last sent to it.
    clock::time_point last_sent{};
    /// When it last answered.
    clock::time_point acked_at{};
    /// The last offset of each shipment on its way, oldest first: at most
    /// max_in_flight per partition and follower (what is written meanwhile
    /// waits for the next), so that records go out without waiting for
    /// the previous answer, yet a slow follower is never flooded.
    std::deque<uint64_t> on_way;
    /// A snapshot being sent to it (it lacks records trimmed from our
    /// log): no records are shipped until it is installed.
    struct snapshot_out {
      std::shared_ptr<persistence::journal_store::partition_snapshot> snap;
      uint64_t id = 0;
      /// The chunk on its way, and where it and the next start.
      uint32_t index = 0;
      std::string cursor;
      std::string next_cursor;
      bool last = false;
      clock::time_point sent_at{};
    };
    std::optional<snapshot_out> snapshot;
    clock::time_point shrink_asked{};
    clock::time_point expand_asked{};
    bool shrink_pending = false;
    bool expand_pending = false;
  };

  enum class role { none, leader, follower };

  struct partition {
    role as = role::none;
    std::string leader;
    uint64_t epoch = 0;
    std::vector<std::string> isr;
    std::vector<std::string> replicas;
    // Leader.
    uint64_t log_end = 0;
    uint64_t committed = 0;
    std::map<std::string, follower> followers;
    /// (log end, when written), one per write: how long a follower's
    /// first missing record has waited.
    std::deque<std::pair<uint64_t, clock::time_point>> written;
    /// Followers to be told the committed offset in this round.
    bool committed_news = false;
    /// Why this member stopped leading, if it did (for writable()).
    std::string deposed;
    /// When this member began to lead at this epoch: a follower that has
    /// not answered since is silent from then.
    clock::time_point led_since{};
    // Follower.
    /// The leader epoch whose KIP-101 truncation is done: records of it
    /// are accepted.
    uint64_t synced_epoch = 0;
    bool asking = false;
    clock::time_point asked_at{};
    /// The snapshot being installed from the leader (id 0: none), and the
    /// chunk it expects next.
    uint64_t snap_id = 0;
    uint32_t snap_next = 0;
    /// The last snapshot installed from this leader, whose last chunk may
    /// come again (its answer was lost).
    uint64_t snap_done = 0;
  };

  std::map<uint32_t, partition> parts;

  /// The message being built per destination this round.
  struct outgoing {
    uint32_t count = 0;
    writer body;
    size_t record_bytes = 0;
  };
  std::map<std::string, outgoing> outbox;
  /// (destination, partition) given an entry of kind ship this round.
  std::set<std::pair<std::string, uint32_t>> shipped;
  /// Commits decided this round, by partition: the offset to commit up to
  /// (a leader's high watermark, a follower's leader's committed offset).
  /// All go to the store in one commit_many at the round's end.
  std::map<uint32_t, uint64_t> to_commit;
  /// Ids of the snapshots this member sends, as a leader.
  uint64_t snapshot_ids = 0;
  /// When the logs were last trimmed (retention).
  clock::time_point trimmed_at{};

  /// Published for the other threads, under replicator::mu_.
  std::map<uint32_t, partition_metrics> views;
  std::map<uint32_t, writability> writable;
  replicator_counters counters;
  replicator_counters published_counters;
  std::set<uint32_t> dirty;
  /// The worker's engine, while it runs (tasks call it).
  engine* eng = nullptr;
};

// -- replicator ---------------------------------------------------------------

namespace {

/// The work of one member, on its worker thread. A friend of nothing: it
/// gets what it needs by reference.
class engine {
 public:
  using state = replicator::state;
  using role = state::role;

  engine(persistence::journal_store& store, transport& net,
         const replicator_options& opts, state& st, std::mutex& mu)
      : store_(store), net_(net), opts_(opts), st_(st), mu_(mu) {}

  void warn(const std::string& what) {
    if (opts_.warn)
      opts_.warn("replication: " + what);
  }

  // -- assignments ------------------------------------------------------------

  void assign(uint32_t p, const std::string& leader, uint64_t epoch,
              std::vector<std::string> isr, std::vector<std::string> replicas) {
    // What this round decided to commit is applied before the partition
    // changes hands.
    commit_pending();
    auto& ps = st_.parts[p];
    st_.dirty.insert(p);
    auto now = clock::now();
    if (epoch < ps.epoch) {
      warn("partition " + std::to_string(p)
           + ": ignored an assignment at epoch " + std::to_string(epoch)
           + ", older than " + std::to_string(ps.epoch));
      return;
    }
    const auto& self = opts_.member;
    if (leader == self) {
      if (ps.as != role::leader || ps.epoch != epoch) {
        abandon_install(p, ps);
        auto r = store_.lead(p, epoch);
        if (!r.ok()) {
          warn("cannot lead partition " + std::to_string(p) + " at epoch "
               + std::to_string(epoch) + ": " + r.message);
          ps.as = role::none;
          ps.deposed = r.message;
          ps.epoch = std::max(ps.epoch, r.epoch);
          return;
        }
        auto ls = store_.log_state(p);
        ps = state::partition{};
        ps.as = role::leader;
        ps.epoch = epoch;
        ps.leader = self;
        ps.log_end = ls ? ls->log_end : 0;
        ps.committed = ls ? ls->committed : 0;
        ps.written.emplace_back(ps.log_end, now);
        ps.led_since = now;
      }
      ps.isr = std::move(isr);
      ps.replicas = std::move(replicas);
      for (auto i = ps.followers.begin(); i != ps.followers.end();)
        i = contains(ps.replicas, i->first) ? std::next(i)
                                            : ps.followers.erase(i);
      for (const auto& m : ps.replicas)
        if (m != self && !ps.followers.contains(m)) {
          auto& f = ps.followers[m];
          f.next = ps.log_end + 1;
        }
      for (auto& [m, f] : ps.followers) {
        // The controller answered: ask again only if still needed.
        f.shrink_pending = f.shrink_pending && contains(ps.isr, m);
        f.expand_pending = f.expand_pending && !contains(ps.isr, m);
      }
      // Heartbeats now: followers learn the epoch and truncate.
      for (const auto& [m, f] : ps.followers)
        heartbeat(p, ps, m);
      advance(p, ps);
      return;
    }
    if (ps.as == role::leader && epoch > ps.epoch)
      depose(p, ps, epoch, "assigned to " + leader);
    if (!contains(replicas, self)) {
      if (epoch > ps.epoch)
        (void)store_.fence(p, epoch);
      // No longer a replica: what this member recorded and did not see
      // committed is not its to keep (the replicas hold what was), and the
      // appends waiting on it fail rather than wait for ever.
      if (auto ls = store_.log_state(p); ls && ls->log_end > ls->committed) {
        auto r = store_.truncate(p, ls->committed);
        if (r.ok())
          st_.counters.truncated += ls->log_end - ls->committed;
        else
          warn("cannot truncate partition " + std::to_string(p) + ": "
               + r.message);
      }
      abandon_install(p, ps);
      auto deposed = ps.deposed;
      ps = state::partition{};
      ps.deposed = deposed;
      ps.leader = leader;
      ps.epoch = epoch;
      ps.isr = std::move(isr);
      ps.replicas = std::move(replicas);
      return;
    }
    follow(p, ps, leader, epoch);
    ps.isr = std::move(isr);
    ps.replicas = std::move(replicas);
  }

  /// Becomes (or stays) a follower of `leader` at `epoch`, and if not
  /// synced at that epoch, fences it and asks the leader where to truncate.
  void follow(uint32_t p, state::partition& ps, const std::string& leader,
              uint64_t epoch) {
    if (ps.as == role::follower && ps.leader == leader && ps.epoch == epoch)
      return;
    auto r = store_.fence(p, epoch);
    if (!r.ok()) {
      warn("cannot follow " + leader + " in partition " + std::to_string(p)
           + " at epoch " + std::to_string(epoch) + ": " + r.message);
      return;
    }
    // A snapshot install of another leader or epoch will not be finished:
    // what it wrote goes, and the partition starts empty.
    abandon_install(p, ps);
    auto deposed = ps.deposed;
    ps = state::partition{};
    ps.deposed = deposed;
    ps.as = role::follower;
    ps.leader = leader;
    ps.epoch = epoch;
    ask_end(p, ps);
  }

  void ask_end(uint32_t p, state::partition& ps) {
    auto ls = store_.log_state(p);
    uint64_t last = ls && !ls->epochs.empty() ? ls->epochs.back().first : 0;
    auto& w = entry(ps.leader, kind::ask_end);
    w.u32(p);
    w.u64(ps.epoch);
    w.u64(last);
    ps.asking = true;
    ps.asked_at = clock::now();
  }

  void depose(uint32_t p, state::partition& ps, uint64_t newer,
              const std::string& how) {
    auto old = ps.epoch;
    // Fencing the newer epoch ends the store's leadership: appends of the
    // partition are refused from now on.
    auto r = store_.fence(p, newer);
    if (!r.ok() && r.code != plog_errc::stale_epoch)
      warn("cannot fence partition " + std::to_string(p) + ": " + r.message);
    ps.deposed = "this member was deposed as leader of partition "
                 + std::to_string(p) + " (epoch " + std::to_string(old)
                 + "): epoch " + std::to_string(newer) + " exists (" + how
                 + ")";
    warn(ps.deposed);
    ps.as = role::none;
    ps.epoch = newer;
    // Who leads now is for the controller (or the new leader's first
    // shipment) to say.
    ps.leader.clear();
    ps.followers.clear();
    ps.written.clear();
    ++st_.counters.deposed;
    st_.dirty.insert(p);
    if (opts_.deposed)
      opts_.deposed(p, old, newer);
  }

  // -- the leader's side ------------------------------------------------------

  void on_records(const std::vector<std::pair<uint32_t, uint64_t>>& written,
                  clock::time_point at) {
    for (const auto& [p, end] : written) {
      auto i = st_.parts.find(p);
      if (i == st_.parts.end() || i->second.as != role::leader)
        continue;
      auto& ps = i->second;
      if (end <= ps.log_end)
        continue;
      ps.log_end = end;
      ps.written.emplace_back(end, at);
      st_.dirty.insert(p);
      for (auto& [m, f] : ps.followers)
        ship(p, ps, m, f);
      advance(p, ps);
    }
  }

  /// Ships the follower what it lacks, within the budgets.
  void ship(uint32_t p, state::partition& ps, const std::string& m,
            state::follower& f) {
    // Records go only to a follower that answered at this epoch: its log is
    // then a prefix of ours, truncated by KIP-101. Others get heartbeats.
    if (!f.known || f.snapshot
        || f.on_way.size() >= std::max<size_t>(1, opts_.max_in_flight)
        || f.next > ps.log_end)
      return;
    if (st_.outbox[m].record_bytes >= opts_.max_message_bytes)
      flush(m);
    std::vector<persistence::log_record> records;
    auto budget = opts_.max_message_bytes - st_.outbox[m].record_bytes;
    auto r = store_.read_records(p, f.next, budget, records);
    if (!r.ok()) {
      if (r.code == plog_errc::beyond_end)
        f.next = ps.log_end + 1;
      else if (r.code == plog_errc::trimmed)
        start_snapshot(p, ps, m, f);
      else
        warn("cannot read partition " + std::to_string(p) + " from offset "
             + std::to_string(f.next) + " for " + m + ": " + r.message);
      return;
    }
    if (records.empty())
      return;
    auto& w = entry(m, kind::ship);
    w.u32(p);
    w.u64(ps.epoch);
    w.u64(ps.committed);
    w.u32(static_cast<uint32_t>(records.size()));
    size_t bytes = 0;
    for (auto& rec : records) {
      w.u64(rec.offset);
      w.str(rec.bytes);
      bytes += rec.bytes.size();
    }
    st_.outbox[m].record_bytes += bytes;
    st_.counters.records_shipped += records.size();
    f.next = records.back().offset + 1;
    f.last_sent = clock::now();
    if (f.on_way.empty())
      f.shipped_at = f.last_sent;
    f.on_way.push_back(records.back().offset);
    st_.shipped.emplace(m, p);
  }

  /// A shipment of no record: the epoch and committed offset, answered
  /// with the follower's log end.
  void heartbeat(uint32_t p, state::partition& ps, const std::string& m) {
    if (st_.shipped.contains({m, p}))
      return;
    auto& w = entry(m, kind::ship);
    w.u32(p);
    w.u64(ps.epoch);
    w.u64(ps.committed);
    w.u32(0);
    st_.shipped.emplace(m, p);
    ps.followers[m].last_sent = clock::now();
  }

  /// The high watermark: the smallest log end among the ISR (this member
  /// included). Commits up to it, if the ISR has min_insync members.
  void advance(uint32_t p, state::partition& ps) {
    if (ps.as != role::leader || !contains(ps.isr, opts_.member)
        || ps.isr.size() < opts_.min_insync)
      return;
    uint64_t hw = ps.log_end;
    for (const auto& m : ps.isr) {
      if (m == opts_.member)
        continue;
      auto i = ps.followers.find(m);
      if (i == ps.followers.end() || !i->second.known)
        return;
      hw = std::min(hw, i->second.log_end);
    }
    if (hw <= ps.committed)
      return;
    auto& to = st_.to_commit[p];
    to = std::max(to, hw);
    ps.committed = hw;
    ps.committed_news = true;
    st_.dirty.insert(p);
    trim_written(ps);
  }

  /// Forgets write times every follower in the ISR is past.
  void trim_written(state::partition& ps) {
    uint64_t low = ps.log_end;
    for (const auto& [m, f] : ps.followers)
      if (contains(ps.isr, m))
        low = std::min(low, f.known ? f.log_end : 0);
    while (ps.written.size() > 1 && ps.written[1].first <= low)
      ps.written.pop_front();
    while (ps.written.size() > 100'000)
      ps.written.pop_front();
  }

  void on_ack(const std::string& from, const ack_entry& a) {
    auto i = st_.parts.find(a.partition);
    if (i == st_.parts.end() || i->second.as != role::leader)
      return;
    auto& ps = i->second;
    if (a.code == plog_errc::stale_epoch && a.seen_epoch > ps.epoch) {
      depose(a.partition, ps, a.seen_epoch,
             "member " + from + " refused its shipment as stale");
      return;
    }
    if (a.epoch != ps.epoch)
      return;
    auto f = ps.followers.find(from);
    if (f == ps.followers.end())
      return;
    auto& fs = f->second;
    auto now = clock::now();
    fs.acked_at = now;
    st_.dirty.insert(a.partition);
    // Its log is being replaced by a snapshot: its answers to heartbeats
    // say nothing until the snapshot's last chunk is answered.
    if (fs.snapshot)
      return;
    switch (a.code) {
    case plog_errc::ok:
      if (!fs.known) {
        // Its first answer at this epoch (after its truncation): ship from
        // its end.
        fs.next = a.log_end + 1;
        fs.on_way.clear();
      } else if (a.log_end + 1 >= fs.next) {
        // It has all that was shipped.
        fs.on_way.clear();
      } else {
        // Shipments it answered: gone from the way.
        if (!fs.on_way.empty() && fs.on_way.front() <= a.log_end) {
          while (!fs.on_way.empty() && fs.on_way.front() <= a.log_end)
            fs.on_way.pop_front();
          fs.shipped_at = now;
        }
        // Nothing on its way, and it lacks what it was sent (it lost an
        // unsynced tail): ship again from its end. While a shipment is on
        // its way, an answer to an earlier message says nothing of it
        // (messages keep their order); the retry timer covers its loss.
        if (fs.on_way.empty())
          fs.next = a.log_end + 1;
      }
      fs.known = true;
      fs.log_end = a.log_end;
      if (fs.next <= a.log_end)
        fs.next = a.log_end + 1;
      break;
    case plog_errc::gap:
      // Records were lost on the way: ship again from what it expects.
      fs.known = true;
      fs.on_way.clear();
      fs.log_end = a.log_end;
      fs.next = a.offset;
      break;
    case plog_errc::diverged:
      // It truncates again (it asked already): wait for its answer.
      fs.known = false;
      fs.on_way.clear();
      break;
    default:
      warn("member " + from + " refused partition "
           + std::to_string(a.partition)
           + "'s records: " + std::string{persistence::to_string(a.code)});
      fs.on_way.clear();
      fs.next = fs.log_end + 1;
      break;
    }
    ship(a.partition, ps, from, fs);
    advance(a.partition, ps);
  }

  void on_ask(const std::string& from, const ask_entry& q) {
    auto i = st_.parts.find(q.partition);
    if (i == st_.parts.end() || i->second.as != role::leader
        || i->second.epoch != q.epoch)
      return;
    // The largest epoch we wrote in that is not newer than the follower's
    // last: an epoch only the follower has (it led alone) is answered with
    // the one before it, and the follower truncates to the smaller end of
    // that epoch in both logs (KIP-279).
    uint64_t answer = 0;
    if (auto ls = store_.log_state(q.partition))
      for (const auto& [epoch, first] : ls->epochs)
        if (epoch <= q.last_epoch)
          answer = epoch;
    auto r = store_.end_offset_for_epoch(q.partition, answer);
    auto& w = entry(from, kind::end);
    w.u32(q.partition);
    w.u64(q.epoch);
    w.u8(static_cast<uint8_t>(r.code));
    w.u64(answer);
    w.u64(r.offset);
  }

  // -- the follower's side ----------------------------------------------------

  void ack(const std::string& to, uint32_t p, uint64_t epoch, plog_errc code,
           uint64_t offset, uint64_t seen) {
    auto ls = store_.log_state(p);
    auto& w = entry(to, kind::ack);
    w.u32(p);
    w.u64(epoch);
    w.u8(static_cast<uint8_t>(code));
    w.u64(ls ? ls->log_end : 0);
    w.u64(offset);
    w.u64(seen ? seen : (ls ? ls->epoch : 0));
  }

  /// A message's shipments: each checked, then every record of those that
  /// may be accepted written at once (one write, one sync: accept_many),
  /// then each answered.
  void on_ships(const std::string& from, std::vector<ship_entry>& ships) {
    std::vector<persistence::journal_store::accept_item> items;
    std::vector<size_t> first_item(ships.size(), 0);
    std::vector<bool> ready(ships.size(), false);
    for (size_t i = 0; i < ships.size(); ++i) {
      ready[i] = ship_ready(from, ships[i]);
      first_item[i] = items.size();
      if (ready[i])
        for (auto& [offset, bytes] : ships[i].records)
          items.push_back({ships[i].partition, ships[i].epoch, offset, bytes});
    }
    auto results = items.empty() ? std::vector<persistence::plog_result>{}
                                 : store_.accept_many(items);
    for (size_t i = 0; i < ships.size(); ++i)
      if (ready[i])
        ship_accepted(from, ships[i], results, first_item[i]);
  }

  /// Whether shipment `s`'s records may be accepted now; when not, it was
  /// answered (or a question was asked) already.
  bool ship_ready(const std::string& from, ship_entry& s) {
    auto p = s.partition;
    auto ls = store_.log_state(p);
    if (!ls) {
      ack(from, p, s.epoch, plog_errc::bad_partition, 0, 0);
      return false;
    }
    if (s.epoch < ls->epoch) {
      // A deposed leader: refuse, and say which epoch exists.
      ack(from, p, s.epoch, plog_errc::stale_epoch, 0, ls->epoch);
      return false;
    }
    auto& ps = st_.parts[p];
    if (ps.as == role::leader) {
      if (s.epoch <= ps.epoch) {
        warn("member " + from + " shipped partition " + std::to_string(p)
             + " at epoch " + std::to_string(s.epoch)
             + ", which this member leads");
        return false;
      }
      depose(p, ps, s.epoch, "member " + from + " leads it");
    }
    if (ps.as != role::follower || ps.leader != from || ps.epoch != s.epoch) {
      // A newer leader than we were told of: follow it.
      follow(p, ps, from, s.epoch);
      return false;
    }
    if (ps.synced_epoch != s.epoch) {
      // Not truncated yet: the answer to our question comes first (asked
      // again if the leader did not lead yet when first asked).
      if (!ps.asking || clock::now() - ps.asked_at >= opts_.heartbeat)
        ask_end(p, ps);
      return false;
    }
    st_.dirty.insert(p);
    return true;
  }

  /// Answers shipment `s`, whose records' results start at `at` in
  /// `results`.
  void ship_accepted(const std::string& from, ship_entry& s,
                     const std::vector<persistence::plog_result>& results,
                     size_t at) {
    auto p = s.partition;
    auto& ps = st_.parts[p];
    for (size_t k = 0; k < s.records.size(); ++k) {
      const auto& r = results[at + k];
      if (!r.ok()) {
        if (r.code == plog_errc::diverged) {
          // Our tail is not the leader's: truncate by epoch again.
          ps.synced_epoch = 0;
          ask_end(p, ps);
        }
        ack(from, p, s.epoch, r.code, r.offset, r.epoch);
        // A prefix of the leader's log is committed as far as it goes; a
        // diverged one waits for its truncation.
        if (r.code != plog_errc::diverged)
          commit_to(p, s.committed);
        return;
      }
      ++st_.counters.records_accepted;
    }
    commit_to(p, s.committed);
    ack(from, p, s.epoch, plog_errc::ok, 0, 0);
  }

  /// Commits what the leader committed, as far as this log reaches (at
  /// the round's end).
  void commit_to(uint32_t p, uint64_t leader_committed) {
    auto& to = st_.to_commit[p];
    to = std::max(to, leader_committed);
  }

  /// Applies the commits decided this round, in one store write. A leader
  /// whose commit failed goes back to what its store has committed, so
  /// that the next round tries again.
  void commit_pending() {
    if (st_.to_commit.empty())
      return;
    std::vector<std::pair<uint32_t, uint64_t>> items;
    items.reserve(st_.to_commit.size());
    for (auto [p, to] : st_.to_commit) {
      auto ls = store_.log_state(p);
      if (!ls)
        continue;
      // A follower commits what it holds of what the leader committed.
      to = std::min(to, ls->log_end);
      if (to > ls->committed)
        items.emplace_back(p, to);
    }
    st_.to_commit.clear();
    if (items.empty())
      return;
    auto results = store_.commit_many(items);
    for (size_t k = 0; k < items.size(); ++k) {
      if (results[k].ok())
        continue;
      auto [p, to] = items[k];
      warn("cannot commit partition " + std::to_string(p) + " up to "
           + std::to_string(to) + ": " + results[k].message);
      if (auto i = st_.parts.find(p);
          i != st_.parts.end() && i->second.as == role::leader)
        if (auto ls = store_.log_state(p))
          i->second.committed = std::min(i->second.committed, ls->committed);
    }
  }

  void on_end(const std::string& from, const end_entry& e) {
    // Commits come before a truncation.
    commit_pending();
    auto i = st_.parts.find(e.partition);
    if (i == st_.parts.end())
      return;
    auto& ps = i->second;
    if (ps.as != role::follower || ps.leader != from || ps.epoch != e.epoch
        || !ps.asking)
      return;
    if (e.code != plog_errc::ok) {
      warn("leader " + from + " could not say where partition "
           + std::to_string(e.partition)
           + " diverges: " + std::string{persistence::to_string(e.code)});
      return;
    }
    auto ls = store_.log_state(e.partition);
    if (!ls)
      return;
    // KIP-101: keep what the leader has of our last epoch, drop the rest;
    // if the leader answered for an older epoch (ours it never had), keep
    // only what both logs hold of that one.
    auto cut = std::min(e.end_offset, ls->log_end);
    uint64_t ours = ls->epochs.empty() ? 0 : ls->epochs.back().first;
    if (e.answer_epoch < ours) {
      auto own = store_.end_offset_for_epoch(e.partition, e.answer_epoch);
      if (!own.ok()) {
        warn("cannot find where epoch " + std::to_string(e.answer_epoch)
             + " ends in partition " + std::to_string(e.partition) + ": "
             + own.message);
        return;
      }
      cut = std::min(cut, own.offset);
    }
    if (cut < ls->log_end) {
      auto r = store_.truncate(e.partition, cut);
      if (!r.ok()) {
        warn("cannot truncate partition " + std::to_string(e.partition)
             + " after offset " + std::to_string(cut) + ": " + r.message);
        return;
      }
      st_.counters.truncated += ls->log_end - cut;
    }
    ps.asking = false;
    ps.synced_epoch = ps.epoch;
    st_.dirty.insert(e.partition);
    // Our log end, from which the leader ships.
    ack(from, e.partition, ps.epoch, plog_errc::ok, 0, 0);
  }

  // -- snapshots
  // ----------------------------------------------------------------

  /// Starts sending follower `m` a snapshot of the partition: it lacks
  /// records trimmed from our log.
  void start_snapshot(uint32_t p, state::partition& ps, const std::string& m,
                      state::follower& f) {
    persistence::plog_result r;
    std::shared_ptr<persistence::journal_store::partition_snapshot> snap
      = store_.open_snapshot(p, r);
    if (!snap) {
      warn("cannot take a snapshot of partition " + std::to_string(p) + " for "
           + m + ": " + r.message);
      return;
    }
    f.on_way.clear();
    f.snapshot.emplace();
    f.snapshot->snap = std::move(snap);
    f.snapshot->id = ++st_.snapshot_ids;
    send_chunk(p, ps, m, f);
  }

  /// Sends the snapshot's chunk on its way (again, if it was lost).
  void send_chunk(uint32_t p, state::partition& ps, const std::string& m,
                  state::follower& f) {
    auto& so = *f.snapshot;
    persistence::journal_store::snapshot_chunk chunk;
    auto r = so.snap->read(so.cursor, opts_.snapshot_chunk_bytes, chunk);
    if (!r.ok()) {
      warn("cannot read the snapshot of partition " + std::to_string(p)
           + " for " + m + ": " + r.message);
      f.snapshot.reset();
      return;
    }
    if (st_.outbox[m].record_bytes >= opts_.max_message_bytes)
      flush(m);
    so.next_cursor = chunk.next;
    so.last = chunk.next.empty();
    auto& w = entry(m, kind::snap_chunk);
    w.u32(p);
    w.u64(ps.epoch);
    w.u64(so.id);
    w.u64(so.snap->offset());
    w.u64(so.snap->epoch());
    w.u32(so.index);
    w.u8(so.last ? 1 : 0);
    w.str(chunk.bytes);
    st_.outbox[m].record_bytes += chunk.bytes.size();
    so.sent_at = f.last_sent = clock::now();
  }

  void on_snap_ack(const std::string& from, const snap_ack_entry& a) {
    auto i = st_.parts.find(a.partition);
    if (i == st_.parts.end() || i->second.as != role::leader
        || i->second.epoch != a.epoch)
      return;
    auto& ps = i->second;
    auto f = ps.followers.find(from);
    if (f == ps.followers.end() || !f->second.snapshot
        || f->second.snapshot->id != a.id)
      return;
    auto& fs = f->second;
    auto& so = *fs.snapshot;
    fs.acked_at = clock::now();
    st_.dirty.insert(a.partition);
    if (a.code != plog_errc::ok) {
      warn("member " + from + " could not install a snapshot of partition "
           + std::to_string(a.partition) + ": "
           + std::string{persistence::to_string(a.code)}
           + "; a new one is sent");
      fs.snapshot.reset();
      start_snapshot(a.partition, ps, from, fs);
      return;
    }
    if (a.next == so.index + 1 && so.last) {
      // Installed: the stream goes on from the snapshot's offset.
      ++st_.counters.snapshots_sent;
      fs.known = true;
      fs.log_end = a.log_end;
      fs.next = a.log_end + 1;
      fs.on_way.clear();
      fs.shipped_at = clock::now();
      fs.snapshot.reset();
      ship(a.partition, ps, from, fs);
      advance(a.partition, ps);
    } else if (a.next == so.index + 1) {
      so.index = a.next;
      so.cursor = so.next_cursor;
      send_chunk(a.partition, ps, from, fs);
    } else if (a.next != so.index) {
      // It lost its place (it restarted, say): from the start again.
      fs.snapshot.reset();
      start_snapshot(a.partition, ps, from, fs);
    }
    // a.next == so.index: an answer to an earlier copy; the retry timer
    // resends if the chunk was lost.
  }

  void snap_ack(const std::string& to, uint32_t p, const snap_chunk_entry& c,
                uint32_t next, plog_errc code) {
    auto ls = store_.log_state(p);
    auto& w = entry(to, kind::snap_ack);
    w.u32(p);
    w.u64(c.epoch);
    w.u64(c.id);
    w.u32(next);
    w.u8(static_cast<uint8_t>(code));
    w.u64(ls ? ls->log_end : 0);
  }

  /// Gives up the snapshot install under way in the store, if any.
  void abandon_install(uint32_t p, state::partition& ps) {
    ps.snap_id = 0;
    ps.snap_next = 0;
    if (!store_.snapshot_install_incomplete(p))
      return;
    auto r = store_.abort_snapshot_install(p);
    if (!r.ok())
      warn("cannot undo the snapshot install of partition " + std::to_string(p)
           + ": " + r.message);
  }

  void on_snap_chunk(const std::string& from, snap_chunk_entry& c) {
    auto p = c.partition;
    auto ls = store_.log_state(p);
    if (!ls)
      return;
    if (c.epoch < ls->epoch) {
      // A deposed leader: refuse, and say which epoch exists.
      ack(from, p, c.epoch, plog_errc::stale_epoch, 0, ls->epoch);
      return;
    }
    auto& ps = st_.parts[p];
    if (ps.as == role::leader && c.epoch <= ps.epoch) {
      warn("member " + from + " sent a snapshot of partition "
           + std::to_string(p) + " at epoch " + std::to_string(c.epoch)
           + ", which this member leads");
      return;
    }
    if (ps.as == role::leader)
      depose(p, ps, c.epoch, "member " + from + " leads it");
    if (ps.as != role::follower || ps.leader != from || ps.epoch != c.epoch) {
      // A newer leader than we were told of: follow it; it sends again.
      follow(p, ps, from, c.epoch);
      return;
    }
    st_.dirty.insert(p);
    if (c.id == ps.snap_done) {
      // Installed already: its last chunk again, our answer was lost.
      snap_ack(from, p, c, c.index + 1, plog_errc::ok);
      return;
    }
    if (c.index == 0 && (ps.snap_id != c.id || ps.snap_next == 0)) {
      // A new snapshot: what this member holds of the partition goes.
      auto r = store_.begin_snapshot_install(p, c.epoch);
      if (!r.ok()) {
        warn("cannot install a snapshot of partition " + std::to_string(p)
             + " from " + from + ": " + r.message);
        snap_ack(from, p, c, 0, r.code);
        return;
      }
      ps.snap_id = c.id;
      ps.snap_next = 0;
    }
    if (ps.snap_id != c.id || c.index != ps.snap_next) {
      // Another snapshot's chunk, or one out of turn: say where we are.
      snap_ack(from, p, c, ps.snap_id == c.id ? ps.snap_next : 0,
               plog_errc::ok);
      return;
    }
    auto r = store_.install_snapshot_chunk(p, c.bytes);
    if (r.ok() && c.last)
      r = store_.finish_snapshot_install(p, c.offset, c.snap_epoch);
    if (!r.ok()) {
      warn("cannot install chunk " + std::to_string(c.index)
           + " of a snapshot of partition " + std::to_string(p) + " from "
           + from + ": " + r.message);
      abandon_install(p, ps);
      snap_ack(from, p, c, 0, r.code);
      return;
    }
    ++ps.snap_next;
    if (c.last) {
      ++st_.counters.snapshots_installed;
      // The log now stands where the leader's state did: a prefix of the
      // leader's, so its records are accepted from here on.
      ps.snap_done = c.id;
      ps.snap_id = 0;
      ps.snap_next = 0;
      ps.asking = false;
      ps.synced_epoch = ps.epoch;
      snap_ack(from, p, c, c.index + 1, plog_errc::ok);
      return;
    }
    snap_ack(from, p, c, ps.snap_next, plog_errc::ok);
  }

  // -- retention
  // ---------------------------------------------------------------

  static constexpr std::chrono::milliseconds trim_interval{500};

  /// Trims each log up to what every replica that counts holds, less
  /// log_retain_records (replicator_options).
  void trim_logs(clock::time_point now) {
    const uint64_t margin = opts_.log_retain_records;
    for (auto& [p, ps] : st_.parts) {
      if (ps.as == role::none || ps.snap_id != 0)
        continue;
      auto ls = store_.log_state(p);
      if (!ls)
        continue;
      uint64_t bound = std::min(ls->applied, ls->committed);
      if (ps.as == role::leader)
        for (const auto& [m, f] : ps.followers) {
          if (f.snapshot)
            bound = std::min(bound, f.snapshot->snap->offset());
          else if (contains(ps.isr, m))
            bound = std::min(bound, f.known ? f.log_end : 0);
          else if (f.known && now - f.acked_at < opts_.replica_lag)
            // Catching up from the stream, and answering.
            bound = std::min(bound, f.log_end);
        }
      if (bound <= margin)
        continue;
      uint64_t up_to = bound - margin;
      // In steps, not a write per record.
      uint64_t step = std::max<uint64_t>(1, margin / 4);
      if (up_to + 1 < ls->log_start + step)
        continue;
      auto r = store_.trim_log(p, up_to);
      if (!r.ok()) {
        warn("cannot trim the log of partition " + std::to_string(p) + ": "
             + r.message);
        continue;
      }
      st_.counters.trimmed += up_to + 1 - ls->log_start;
      st_.dirty.insert(p);
    }
  }

  // -- timers -----------------------------------------------------------------

  void tick() {
    auto now = clock::now();
    if (now - st_.trimmed_at >= trim_interval) {
      st_.trimmed_at = now;
      trim_logs(now);
    }
    for (auto& [p, ps] : st_.parts) {
      if (ps.as == role::follower) {
        if (ps.asking && now - ps.asked_at >= opts_.retry)
          ask_end(p, ps);
        continue;
      }
      if (ps.as != role::leader)
        continue;
      for (auto& [m, f] : ps.followers) {
        // A snapshot chunk not answered in time: sent again; a follower
        // silent for long is given up on, so that its RocksDB snapshot is
        // not held for ever (it gets a new one once it answers again).
        if (f.snapshot
            && now - f.acked_at
                 >= std::max(5 * opts_.replica_lag, 10 * opts_.retry)) {
          warn("gave up sending a snapshot of partition " + std::to_string(p)
               + " to " + m + ": it has not answered for "
               + std::to_string(ms_between(f.acked_at, now)) + " ms");
          f.snapshot.reset();
          f.known = false;
        } else if (f.snapshot && now - f.snapshot->sent_at >= opts_.retry) {
          send_chunk(p, ps, m, f);
        }
        // A shipment not answered in time: lost; ship again from what the
        // follower acknowledged.
        if (!f.on_way.empty() && now - f.shipped_at >= opts_.retry) {
          f.on_way.clear();
          f.next = f.log_end + 1;
        }
        ship(p, ps, m, f);
        if (now - f.last_sent >= opts_.heartbeat)
          heartbeat(p, ps, m);
        check_isr(p, ps, m, f, now);
      }
      st_.dirty.insert(p);
    }
  }

  int64_t lag_ms(const state::partition& ps, const state::follower& f,
                 clock::time_point now) const {
    uint64_t have = f.known ? f.log_end : 0;
    if (have >= ps.log_end)
      return 0;
    for (const auto& [end, at] : ps.written)
      if (end > have)
        return std::max<int64_t>(0, ms_between(at, now));
    return 0;
  }

  void check_isr(uint32_t p, state::partition& ps, const std::string& m,
                 state::follower& f, clock::time_point now) {
    bool in = contains(ps.isr, m);
    if (in && opts_.shrink_isr) {
      auto lag = lag_ms(ps, f, now);
      // A follower silent that long is out too, records or not (Kafka's
      // replica.lag.time.max.ms): an idle partition's ISR then says who
      // really holds it, and its next write does not wait on the silent.
      auto silent = ms_between(std::max(f.acked_at, ps.led_since), now);
      if ((lag > opts_.replica_lag.count()
           || silent > opts_.replica_lag.count())
          && (!f.shrink_pending || now - f.shrink_asked >= opts_.replica_lag)) {
        f.shrink_pending = true;
        f.shrink_asked = now;
        uint64_t behind = ps.log_end - std::min(ps.log_end, f.log_end);
        opts_.shrink_isr(
          p, ps.epoch, m,
          lag > opts_.replica_lag.count()
            ? "member " + m + " is " + std::to_string(behind) + " records and "
                + std::to_string(lag) + " ms behind in partition "
                + std::to_string(p) + " (cluster.replica_lag is "
                + std::to_string(opts_.replica_lag.count()) + " ms)"
            : "member " + m + " has not answered for " + std::to_string(silent)
                + " ms in partition " + std::to_string(p)
                + " (cluster.replica_lag is "
                + std::to_string(opts_.replica_lag.count()) + " ms)");
      }
    } else if (!in && opts_.expand_isr
               && f.known
               // Caught up, and answering: a member that went away with
               // all that was committed then is not back.
               && f.log_end >= ps.committed && now - f.acked_at < opts_.retry
               && lag_ms(ps, f, now) < opts_.replica_lag.count()
               && (!f.expand_pending
                   || now - f.expand_asked >= opts_.replica_lag)) {
      f.expand_pending = true;
      f.expand_asked = now;
      opts_.expand_isr(p, ps.epoch, m);
    }
  }

  // -- messages ---------------------------------------------------------------

  writer& entry(const std::string& to, kind k) {
    auto& out = st_.outbox[to];
    ++out.count;
    out.body.u8(static_cast<uint8_t>(k));
    return out.body;
  }

  /// Sends what is queued for `to`. By value: `to` may be the outbox's own
  /// key, which goes with its entry.
  void flush(std::string to) {
    auto i = st_.outbox.find(to);
    if (i == st_.outbox.end())
      return;
    auto count = i->second.count;
    writer msg;
    msg.u8(wire_version);
    msg.u32(count);
    msg.out += i->second.body.out;
    st_.outbox.erase(i);
    if (count == 0)
      return;
    ++st_.counters.messages_sent;
    net_.send(to, std::move(msg.out));
  }

  void flush_all() {
    // The committed offset reaches followers not shipped to this round.
    for (auto& [p, ps] : st_.parts)
      if (ps.as == role::leader && ps.committed_news) {
        ps.committed_news = false;
        for (const auto& [m, f] : ps.followers)
          heartbeat(p, ps, m);
      }
    while (!st_.outbox.empty())
      flush(st_.outbox.begin()->first);
    st_.shipped.clear();
  }

  void on_message(const std::string& from, const std::string& bytes) {
    ++st_.counters.messages_received;
    std::vector<ship_entry> ships;
    std::vector<ack_entry> acks;
    std::vector<ask_entry> asks;
    std::vector<end_entry> ends;
    std::vector<snap_chunk_entry> chunks;
    std::vector<snap_ack_entry> snap_acks;
    try {
      reader r{bytes};
      auto v = r.u8("version");
      if (v != wire_version)
        throw std::runtime_error("unknown version " + std::to_string(v));
      auto n = r.u32("entry count");
      for (uint32_t i = 0; i < n; ++i) {
        auto k = r.u8("entry kind");
        switch (static_cast<kind>(k)) {
        case kind::ship: {
          ship_entry s;
          s.partition = r.u32("partition");
          s.epoch = r.u64("epoch");
          s.committed = r.u64("committed offset");
          auto count = r.u32("record count");
          for (uint32_t j = 0; j < count; ++j) {
            auto off = r.u64("record offset");
            s.records.emplace_back(off, r.str("record"));
          }
          ships.push_back(std::move(s));
          break;
        }
        case kind::ack: {
          ack_entry a;
          a.partition = r.u32("partition");
          a.epoch = r.u64("epoch");
          a.code = code_of(r.u8("code"));
          a.log_end = r.u64("log end");
          a.offset = r.u64("offset");
          a.seen_epoch = r.u64("epoch seen");
          acks.push_back(a);
          break;
        }
        case kind::ask_end: {
          ask_entry q;
          q.partition = r.u32("partition");
          q.epoch = r.u64("epoch");
          q.last_epoch = r.u64("last epoch");
          asks.push_back(q);
          break;
        }
        case kind::snap_chunk: {
          snap_chunk_entry c;
          c.partition = r.u32("partition");
          c.epoch = r.u64("epoch");
          c.id = r.u64("snapshot id");
          c.offset = r.u64("snapshot offset");
          c.snap_epoch = r.u64("snapshot epoch");
          c.index = r.u32("chunk index");
          auto last = r.u8("last flag");
          if (last > 1)
            throw std::runtime_error("bad last flag " + std::to_string(last));
          c.last = last == 1;
          c.bytes = r.str("snapshot chunk");
          chunks.push_back(std::move(c));
          break;
        }
        case kind::snap_ack: {
          snap_ack_entry a;
          a.partition = r.u32("partition");
          a.epoch = r.u64("epoch");
          a.id = r.u64("snapshot id");
          a.next = r.u32("next chunk index");
          a.code = code_of(r.u8("code"));
          a.log_end = r.u64("log end");
          snap_acks.push_back(a);
          break;
        }
        case kind::end: {
          end_entry e;
          e.partition = r.u32("partition");
          e.epoch = r.u64("epoch");
          e.code = code_of(r.u8("code"));
          e.answer_epoch = r.u64("answer epoch");
          e.end_offset = r.u64("end offset");
          ends.push_back(e);
          break;
        }
        default:
          throw std::runtime_error("unknown entry kind " + std::to_string(k));
        }
      }
      if (r.at != bytes.size())
        throw std::runtime_error(std::to_string(bytes.size() - r.at)
                                 + " bytes after the last entry");
    } catch (const std::exception& e) {
      ++st_.counters.malformed;
      warn("dropped a malformed message from member " + from + ": " + e.what());
      return;
    }
    // Answers first: a leader's acks advance before more is shipped.
    for (auto& e : ends)
      on_end(from, e);
    for (auto& a : acks)
      on_ack(from, a);
    for (auto& a : snap_acks)
      on_snap_ack(from, a);
    for (auto& q : asks)
      on_ask(from, q);
    // Chunks before shipments: the records after a snapshot follow it.
    for (auto& c : chunks)
      on_snap_chunk(from, c);
    on_ships(from, ships);
  }

  // -- views ------------------------------------------------------------------

  void publish() {
    if (st_.dirty.empty()) {
      std::lock_guard lock{mu_};
      st_.published_counters = st_.counters;
      return;
    }
    auto now = clock::now();
    std::map<uint32_t, partition_metrics> views;
    std::map<uint32_t, writability> writable;
    for (auto p : st_.dirty) {
      auto i = st_.parts.find(p);
      if (i == st_.parts.end())
        continue;
      auto& ps = i->second;
      partition_metrics v;
      v.partition = p;
      v.role = ps.as == role::leader     ? "leader"
               : ps.as == role::follower ? "follower"
                                         : "none";
      v.leader = ps.leader;
      v.epoch = ps.epoch;
      v.isr_size = ps.isr.size();
      if (ps.as == role::leader) {
        v.log_end = ps.log_end;
        v.committed = ps.committed;
        v.waiting = ps.log_end - std::min(ps.log_end, ps.committed);
        for (const auto& [m, f] : ps.followers) {
          follower_metrics fm;
          fm.member = m;
          fm.in_isr = contains(ps.isr, m);
          fm.log_end = f.known ? f.log_end : 0;
          fm.lag_records = ps.log_end - std::min(ps.log_end, fm.log_end);
          fm.lag_ms = lag_ms(ps, f, now);
          v.max_lag_records = std::max(v.max_lag_records, fm.lag_records);
          v.max_lag_ms = std::max(v.max_lag_ms, fm.lag_ms);
          v.followers.push_back(std::move(fm));
        }
      } else if (auto ls = store_.log_state(p)) {
        v.log_end = ls->log_end;
        v.committed = ls->committed;
      }
      views[p] = std::move(v);
      writable[p] = writable_now(p, ps);
    }
    st_.dirty.clear();
    std::lock_guard lock{mu_};
    st_.published_counters = st_.counters;
    for (auto& [p, v] : views)
      st_.views[p] = std::move(v);
    for (auto& [p, w] : writable)
      st_.writable[p] = std::move(w);
  }

  writability writable_now(uint32_t p, const state::partition& ps) const {
    auto name = "partition " + std::to_string(p);
    if (ps.as != role::leader) {
      if (!ps.deposed.empty() && ps.leader.empty())
        return {false, ps.deposed};
      if (ps.leader.empty())
        return {false, name + " has no leader"};
      return {false, name + " is led by " + ps.leader + " (epoch "
                       + std::to_string(ps.epoch) + "), not by this member"};
    }
    if (!contains(ps.isr, opts_.member) || ps.isr.size() < opts_.min_insync)
      return {false, name + " has " + std::to_string(ps.isr.size())
                       + " in-sync replica(s) (" + join(ps.isr)
                       + "), fewer than cluster.min_insync ("
                       + std::to_string(opts_.min_insync)
                       + "): it takes no writes until a replica catches up"};
    return {true, {}};
  }

 private:
  persistence::journal_store& store_;
  transport& net_;
  const replicator_options& opts_;
  state& st_;
  std::mutex& mu_;
};

} // namespace

replicator::replicator(persistence::journal_store& store, transport& net,
                       replicator_options opts)
    : store_(store), net_(net), opts_(std::move(opts)),
      st_(std::make_unique<state>()) {
  worker_ = std::thread([this] { run(); });
}

replicator::~replicator() {
  stop();
}

void replicator::stop() {
  {
    std::lock_guard lock{mu_};
    if (stopping_)
      return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable())
    worker_.join();
}

void replicator::post(std::function<void()> task) {
  {
    std::lock_guard lock{mu_};
    if (stopping_)
      return;
    tasks_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void replicator::run() {
  engine e{store_, net_, opts_, *st_, mu_};
  st_->eng = &e;
  auto next_tick = clock::now() + opts_.heartbeat;
  for (;;) {
    std::deque<std::function<void()>> batch;
    {
      std::unique_lock lock{mu_};
      cv_.wait_until(lock, next_tick,
                     [&] { return stopping_ || !tasks_.empty(); });
      if (stopping_) {
        st_->eng = nullptr;
        return;
      }
      batch.swap(tasks_);
    }
    for (auto& t : batch) {
      try {
        t();
      } catch (const std::exception& ex) {
        e.warn(std::string{"a task failed: "} + ex.what());
      }
    }
    e.commit_pending();
    if (clock::now() >= next_tick) {
      e.tick();
      next_tick = clock::now() + opts_.heartbeat;
    }
    e.commit_pending();
    e.flush_all();
    e.publish();
  }
}

void replicator::assign(uint32_t partition, std::string leader, uint64_t epoch,
                        std::vector<std::string> isr,
                        std::vector<std::string> replicas) {
  post([this, partition, leader = std::move(leader), epoch,
        isr = std::move(isr), replicas = std::move(replicas)]() mutable {
    st_->eng->assign(partition, leader, epoch, std::move(isr),
                     std::move(replicas));
  });
}

void replicator::on_records(
  const std::vector<std::pair<uint32_t, uint64_t>>& written) {
  post(
    [this, written, at = clock::now()] { st_->eng->on_records(written, at); });
}

void replicator::on_message(const std::string& from, std::string bytes) {
  post([this, from, bytes = std::move(bytes)] {
    st_->eng->on_message(from, bytes);
  });
}

writability replicator::writable(uint32_t partition) const {
  std::lock_guard lock{mu_};
  auto i = st_->writable.find(partition);
  if (i == st_->writable.end())
    return {false, "partition " + std::to_string(partition)
                     + " is not assigned to this member"};
  return i->second;
}

std::vector<partition_metrics> replicator::metrics() const {
  std::lock_guard lock{mu_};
  std::vector<partition_metrics> out;
  for (const auto& [p, v] : st_->views)
    out.push_back(v);
  return out;
}

std::optional<partition_metrics> replicator::metrics(uint32_t partition) const {
  std::lock_guard lock{mu_};
  auto i = st_->views.find(partition);
  if (i == st_->views.end())
    return std::nullopt;
  return i->second;
}

replicator_counters replicator::counters() const {
  std::lock_guard lock{mu_};
  return st_->published_counters;
}

bool replicator::drain(std::chrono::milliseconds timeout) {
  auto done = std::make_shared<std::promise<void>>();
  auto f = done->get_future();
  // Twice: the first round's messages are flushed and published when the
  // second runs.
  post([this, done] { post([done] { done->set_value(); }); });
  return f.wait_for(timeout) == std::future_status::ready;
}

// -- records_hook -------------------------------------------------------------

records_hook::records_hook() : slot_(std::make_shared<slot>()) {}

std::function<void(const std::vector<std::pair<uint32_t, uint64_t>>&)>
records_hook::callback() const {
  return [s = slot_](const std::vector<std::pair<uint32_t, uint64_t>>& w) {
    std::lock_guard lock{s->mu};
    if (s->target)
      s->target->on_records(w);
  };
}

void records_hook::attach(replicator* r) {
  std::lock_guard lock{slot_->mu};
  slot_->target = r;
}

// -- memory_network -----------------------------------------------------------

struct memory_network::impl {
  struct delayed {
    clock::time_point at;
    std::string from, to, bytes;
  };

  class endpoint_transport : public transport {
   public:
    endpoint_transport(impl& net, std::string member)
        : net_(net), member_(std::move(member)) {}
    void send(const std::string& member, std::string bytes) override {
      net_.deliver(member_, member, std::move(bytes));
    }

   private:
    impl& net_;
    std::string member_;
  };

  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, replicator*> members;
  std::map<std::string, std::unique_ptr<endpoint_transport>> endpoints;
  std::set<std::pair<std::string, std::string>> cuts;
  std::set<std::string> isolated;
  std::map<std::pair<std::string, std::string>, std::chrono::milliseconds>
    delays;
  std::deque<delayed> late;
  uint64_t dropped = 0;
  bool stopping = false;
  std::thread timer;

  void deliver(const std::string& from, const std::string& to,
               std::string bytes) {
    std::unique_lock lock{mu};
    if (cuts.contains({from, to}) || isolated.contains(from)
        || isolated.contains(to)) {
      ++dropped;
      return;
    }
    auto d = delays.find({from, to});
    if (d != delays.end() && d->second.count() > 0) {
      late.push_back({clock::now() + d->second, from, to, std::move(bytes)});
      cv.notify_all();
      return;
    }
    auto m = members.find(to);
    if (m == members.end() || !m->second) {
      ++dropped;
      return;
    }
    // Under the lock: leave() waits for a delivery in progress.
    m->second->on_message(from, std::move(bytes));
  }

  void run_timer() {
    std::unique_lock lock{mu};
    while (!stopping) {
      if (late.empty()) {
        cv.wait(lock);
        continue;
      }
      auto at = late.front().at;
      if (clock::now() < at) {
        cv.wait_until(lock, at);
        continue;
      }
      auto d = std::move(late.front());
      late.pop_front();
      auto m = members.find(d.to);
      if (m == members.end() || !m->second || isolated.contains(d.to)
          || isolated.contains(d.from) || cuts.contains({d.from, d.to}))
        ++dropped;
      else
        m->second->on_message(d.from, std::move(d.bytes));
    }
  }
};

memory_network::memory_network() : impl_(std::make_shared<impl>()) {
  impl_->timer = std::thread([i = impl_.get()] { i->run_timer(); });
}

memory_network::~memory_network() {
  {
    std::lock_guard lock{impl_->mu};
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->timer.join();
}

void memory_network::join(const std::string& member, replicator* r) {
  std::lock_guard lock{impl_->mu};
  impl_->members[member] = r;
}

void memory_network::leave(const std::string& member) {
  std::lock_guard lock{impl_->mu};
  impl_->members.erase(member);
}

transport& memory_network::endpoint(const std::string& member) {
  std::lock_guard lock{impl_->mu};
  auto& e = impl_->endpoints[member];
  if (!e)
    e = std::make_unique<impl::endpoint_transport>(*impl_, member);
  return *e;
}

void memory_network::cut(const std::string& from, const std::string& to,
                         bool cut) {
  std::lock_guard lock{impl_->mu};
  if (cut)
    impl_->cuts.emplace(from, to);
  else
    impl_->cuts.erase({from, to});
}

void memory_network::isolate(const std::string& member, bool isolated) {
  std::lock_guard lock{impl_->mu};
  if (isolated)
    impl_->isolated.insert(member);
  else
    impl_->isolated.erase(member);
}

void memory_network::delay(const std::string& from, const std::string& to,
                           std::chrono::milliseconds delay) {
  std::lock_guard lock{impl_->mu};
  impl_->delays[{from, to}] = delay;
}

uint64_t memory_network::dropped() const {
  std::lock_guard lock{impl_->mu};
  return impl_->dropped;
}

} // namespace troupe::cluster::replication
