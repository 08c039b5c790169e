#pragma once

// Partition logs of a store with replicated partitions: their keys, the
// encoding of a record and of a partition's meta. See key_layout.hpp for
// where they sit and journal_store.hpp ("partition logs") for what they are.
//
//   plog      be32(p) be64(offset) -> record
//   default   "plogmeta/" be32(p)  -> meta
//
// A record (format 1):
//   byte 0      1
//   bytes 1..8  be64 epoch of the leader that wrote it
//   then its mutations, to the end: each
//     u8 family   0 default, 1 journal, 2 runs, 3 unfinished, 4 finished
//     u8 kind     1 put, 2 delete, 3 single delete
//     be32 key size, key
//     for a put: be32 value size, value
//
// A record holds the effects of the appends of one partition in one group
// commit, resolved by the leader (journal keys numbered, index entries and
// side indexes as written): applying it is writing exactly these mutations,
// so every replica that applies the same records holds the same bytes.
//
// A meta (format 1):
//   byte 0  1
//   be64 log_start, be64 log_end, be64 epoch, be64 committed, be64 applied
//   be32 count, then count × (be64 epoch, be64 first offset)

#include "persistence/journal_store.hpp"
#include "persistence/rocksdb/key_layout.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::persistence::plog {

namespace kl = key_layout;

/// Name of the column family holding the partition logs.
inline constexpr std::string_view plog_cf = "plog";

/// Prefix of the partition metas in the default column family.
inline constexpr std::string_view meta_prefix = "plogmeta/";

/// The store layout of a store that holds partition logs: a build that
/// does not know them must not open it (it would not apply what they hold).
inline constexpr int replicated_format_version = 3;

/// The column families a record's mutations write to, by their stable code.
enum class family : uint8_t {
  default_ = 0,
  journal = 1,
  runs = 2,
  unfinished = 3,
  finished = 4,
};
inline constexpr uint8_t last_family = 4;

enum class kind : uint8_t { put = 1, remove = 2, single_remove = 3 };

/// One write of a record.
struct mutation {
  family cf = family::default_;
  kind op = kind::put;
  std::string key;
  std::string value;

  bool operator==(const mutation&) const = default;
};

/// Appends `v` as 4 big-endian bytes.
inline void append_be32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

inline uint32_t read_be32(std::string_view in) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i)
    v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

/// Key of record `offset` of partition `p`: sorts by partition, then
/// offset.
inline std::string record_key(uint32_t p, uint64_t offset) {
  std::string out;
  out.reserve(12);
  append_be32(out, p);
  kl::append_be64(out, offset);
  return out;
}

/// Returns the offset of `key` if it is a record key of partition `p`.
inline std::optional<uint64_t> record_offset(std::string_view key, uint32_t p) {
  if (key.size() != 12 || read_be32(key) != p)
    return std::nullopt;
  return kl::read_be64(key.substr(4));
}

/// Key, in the default column family, of the meta of partition `p`.
inline std::string meta_key(uint32_t p) {
  std::string out{meta_prefix};
  append_be32(out, p);
  return out;
}

/// Prefix of the marks of snapshot installs begun and not finished, in the
/// default column family: "plogsnap/" be32(p) -> "".
inline constexpr std::string_view install_prefix = "plogsnap/";

/// Key, in the default column family, of the mark that partition `p`'s
/// snapshot install is incomplete.
inline std::string install_key(uint32_t p) {
  std::string out{install_prefix};
  append_be32(out, p);
  return out;
}

/// The run whose state `key` (of family `cf`, with `value`) is part of, for
/// the keys of a partition's snapshot: a run's index entry, unfinished
/// entry, journal records, finished entries, idempotency keys (both ways)
/// and tombstones. Nothing for any other key.
inline std::optional<std::string_view>
snapshot_key_run(family cf, std::string_view key, std::string_view value) {
  switch (cf) {
  case family::runs:
  case family::unfinished:
    if (key.empty())
      return std::nullopt;
    return key;
  case family::journal:
    if (key.size() <= kl::seq_size + 1
        || key[key.size() - kl::seq_size - 1] != '\0')
      return std::nullopt;
    return key.substr(0, key.size() - kl::seq_size - 1);
  case family::finished:
    if (key.size() <= 8)
      return std::nullopt;
    return key.substr(8);
  case family::default_: {
    if (key.starts_with("idem/"))
      return value.empty() ? std::nullopt : std::optional{value};
    if (key.starts_with(kl::idempotency_reverse_prefix)) {
      auto rest = key.substr(kl::idempotency_reverse_prefix.size());
      auto nul = rest.find('\0');
      if (nul == std::string_view::npos || nul == 0)
        return std::nullopt;
      return rest.substr(0, nul);
    }
    if (key.starts_with(kl::tombstone_prefix)
        && key.size() > kl::tombstone_prefix.size())
      return key.substr(kl::tombstone_prefix.size());
    if (key.starts_with(kl::tombstone_time_prefix)
        && key.size() > kl::tombstone_time_prefix.size() + 8)
      return key.substr(kl::tombstone_time_prefix.size() + 8);
    return std::nullopt;
  }
  }
  return std::nullopt;
}

/// Starts a record of `epoch`; mutations are appended with add().
inline std::string begin_record(uint64_t epoch) {
  std::string out;
  out.push_back('\x01');
  kl::append_be64(out, epoch);
  return out;
}

/// Appends one mutation to a record begun with begin_record.
inline void add(std::string& record, family cf, kind op, std::string_view key,
                std::string_view value = {}) {
  record.push_back(static_cast<char>(cf));
  record.push_back(static_cast<char>(op));
  append_be32(record, static_cast<uint32_t>(key.size()));
  record.append(key);
  if (op == kind::put) {
    append_be32(record, static_cast<uint32_t>(value.size()));
    record.append(value);
  }
}

/// Returns the epoch of a record, or nothing when it is too short or of an
/// unknown format.
inline std::optional<uint64_t> record_epoch(std::string_view record) {
  if (record.size() < 9 || record[0] != '\x01')
    return std::nullopt;
  return kl::read_be64(record.substr(1));
}

/// Calls `f(const mutation_view&)` for each mutation of `record`; returns
/// false with `error` set when the record is malformed (then nothing must
/// be applied: decode it whole first with f doing nothing, or collect).
struct mutation_view {
  family cf;
  kind op;
  std::string_view key;
  std::string_view value;
};

template<class F>
bool for_each_mutation(std::string_view record, F&& f, std::string& error) {
  if (!record_epoch(record)) {
    error = record.empty()
              ? "empty record"
              : "not a record of a known format (first byte "
                  + std::to_string(static_cast<unsigned char>(record[0])) + ", "
                  + std::to_string(record.size()) + " bytes)";
    return false;
  }
  size_t at = 9;
  auto take = [&](size_t n, std::string_view& out) {
    if (record.size() - at < n)
      return false;
    out = record.substr(at, n);
    at += n;
    return true;
  };
  while (at < record.size()) {
    std::string_view head, len, key, value;
    if (!take(2, head) || !take(4, len)) {
      error = "truncated mutation at byte " + std::to_string(at);
      return false;
    }
    auto cf = static_cast<uint8_t>(head[0]);
    auto op = static_cast<uint8_t>(head[1]);
    if (cf > last_family || op < 1 || op > 3) {
      error = "unknown mutation (family " + std::to_string(cf) + ", kind "
              + std::to_string(op) + ") at byte " + std::to_string(at - 6);
      return false;
    }
    if (!take(read_be32(len), key)) {
      error = "truncated key at byte " + std::to_string(at);
      return false;
    }
    if (static_cast<kind>(op) == kind::put) {
      if (!take(4, len) || !take(read_be32(len), value)) {
        error = "truncated value at byte " + std::to_string(at);
        return false;
      }
    }
    f(mutation_view{static_cast<family>(cf), static_cast<kind>(op), key,
                    value});
  }
  return true;
}

/// Encodes a partition's meta.
inline std::string encode_meta(const partition_log_state& m) {
  std::string out;
  out.reserve(1 + 5 * 8 + 4 + m.epochs.size() * 16);
  out.push_back('\x01');
  for (uint64_t v : {m.log_start, m.log_end, m.epoch, m.committed, m.applied})
    kl::append_be64(out, v);
  append_be32(out, static_cast<uint32_t>(m.epochs.size()));
  for (auto [epoch, start] : m.epochs) {
    kl::append_be64(out, epoch);
    kl::append_be64(out, start);
  }
  return out;
}

/// Decodes a partition's meta, or returns nothing with `error` set.
inline std::optional<partition_log_state> decode_meta(std::string_view in,
                                                      std::string& error) {
  if (in.size() < 45 || in[0] != '\x01') {
    error = "unreadable partition log meta (" + std::to_string(in.size())
            + " bytes)";
    return std::nullopt;
  }
  partition_log_state m;
  m.log_start = kl::read_be64(in.substr(1));
  m.log_end = kl::read_be64(in.substr(9));
  m.epoch = kl::read_be64(in.substr(17));
  m.committed = kl::read_be64(in.substr(25));
  m.applied = kl::read_be64(in.substr(33));
  uint32_t n = read_be32(in.substr(41));
  if (in.size() != 45 + uint64_t{n} * 16) {
    error = "partition log meta of " + std::to_string(in.size()) + " bytes for "
            + std::to_string(n) + " epochs";
    return std::nullopt;
  }
  for (uint32_t i = 0; i < n; ++i)
    m.epochs.emplace_back(kl::read_be64(in.substr(45 + i * 16)),
                          kl::read_be64(in.substr(53 + i * 16)));
  if (m.applied > m.committed || m.committed > m.log_end
      || m.log_start > m.log_end + 1) {
    error = "inconsistent partition log meta (start "
            + std::to_string(m.log_start) + ", end " + std::to_string(m.log_end)
            + ", committed " + std::to_string(m.committed) + ", applied "
            + std::to_string(m.applied) + ")";
    return std::nullopt;
  }
  return m;
}

} // namespace troupe::persistence::plog
