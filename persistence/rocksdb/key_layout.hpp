#pragma once

// Key layout of the journal store's RocksDB database.
//
// Column families:
//
//   default   "format"  -> the store's layout version as decimal text (see
//                          store_format_version). A build refuses to open a
//                          store whose version is newer than its own.
//             "idem/" key -> run id: the run holding idempotency key `key`.
//             "idemrun/" run_id 0x00 key -> "": the same, reversed, so that
//                          deleting a run finds its keys (format 2).
//             "note/" name -> a node note (e.g. a breaker's last state).
//             "gone/" run_id -> tombstone of a run deleted after retention:
//                          be64(deleted_at_ns) then encode(run_index_entry)
//                          of its last entry, reason dropped (format 2).
//             "goneat/" be64(deleted_at_ns) run_id -> "": the tombstones in
//                          deletion order, so that expiring them reads only
//                          the expired ones (format 2).
//             "plogmeta/" be32(p) -> the meta of partition p's log (format
//                          3; see partition_log.hpp).
//             "plogsnap/" be32(p) -> "": partition p's snapshot install was
//                          begun and not finished; the next open deletes
//                          what it wrote (format 3).
//   journal   run_id 0x00 seq -> encode(event_record)
//                          seq is a big-endian uint32, 1 for a run's first
//                          event, contiguous. Run ids are [0-9a-z-] and never
//                          hold NUL, so the prefix `run_id 0x00` selects
//                          exactly one run's records, and byte order is
//                          (run id, sequence) order.
//   runs      run_id    -> encode(run_index_entry)
//   unfinished run_id   -> "": every run whose index entry is running or
//                          paused (format 2). Written in the same WriteBatch
//                          as the index entry, so recovery reads only these.
//                          Put once, by the append that creates the run, and
//                          removed by SingleDelete when it finishes: never
//                          put twice, never Delete'd.
//   finished  be64(finished_at_ns) run_id -> "": runs whose index entry went
//                          terminal, by the time it did (format 2); retention
//                          reads only the expired front. A run finishing twice
//                          leaves a stale key, which retention drops.
//   plog      be32(p) be64(offset) -> a record of partition p's log: the
//                          effects of appends not yet applied, or applied and
//                          not yet trimmed (partition_log.hpp). Created in
//                          every store; written only with replicated
//                          partitions.
//
// Every value written by the codec carries its version byte, so records can
// be decoded (and migrated) one by one. be64 is a big-endian uint64.
//
// Format history:
//   1  default, journal, runs.
//   2  adds unfinished, finished, idemrun/, gone/ and goneat/. A version-1
//      store is migrated when opened: the new indexes are built from the run
//      index and the idempotency keys, then "format" becomes "2".
//   3  a store opened with replicated partitions: its state is the applied
//      prefix of the partition logs (plog, plogmeta/), which a build that
//      reads only format 2 would ignore. Stores without them stay at 2.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::persistence::key_layout {

/// Name of the column family holding the journals.
inline constexpr std::string_view journal_cf = "journal";

/// Name of the column family holding the run index.
inline constexpr std::string_view runs_cf = "runs";

/// Name of the column family holding the ids of unfinished runs.
inline constexpr std::string_view unfinished_cf = "unfinished";

/// Name of the column family holding finished runs by finishing time.
inline constexpr std::string_view finished_cf = "finished";

/// The store layout this build writes into a new store. Independent of
/// codec's format_version, which versions each record's encoding. A store
/// with replicated partitions is marked 3 (partition_log.hpp), the newest
/// this build opens.
inline constexpr int store_format_version = 2;

/// Key of the format version, in the default column family.
inline constexpr std::string_view format_key = "format";

/// Returns `head` followed by `tail`: the keys below are a prefix and a
/// name.
inline std::string joined(std::string_view head, std::string_view tail) {
  std::string out;
  out.reserve(head.size() + tail.size());
  out.append(head).append(tail);
  return out;
}

/// Key, in the default column family, of the run holding idempotency key
/// `key`: "idem/" + key -> run id.
inline std::string idempotency_key(std::string_view key) {
  return joined("idem/", key);
}

/// Prefix of the reverse idempotency keys in the default column family.
inline constexpr std::string_view idempotency_reverse_prefix = "idemrun/";

/// Returns the prefix of every reverse idempotency key of `run_id`.
inline std::string idempotency_reverse_prefix_of(std::string_view run_id) {
  auto out = joined(idempotency_reverse_prefix, run_id);
  out.push_back('\0');
  return out;
}

/// Key, in the default column family, recording that `run_id` holds
/// idempotency key `key`: "idemrun/" run_id 0x00 key -> "".
inline std::string idempotency_reverse_key(std::string_view run_id,
                                           std::string_view key) {
  return joined(idempotency_reverse_prefix_of(run_id), key);
}

/// Appends `v` to `out` as 8 big-endian bytes.
inline void append_be64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((v >> shift) & 0xff));
}

/// Reads 8 big-endian bytes at the start of `in` (which must hold them).
inline uint64_t read_be64(std::string_view in) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i)
    v = (v << 8) | static_cast<unsigned char>(in[i]);
  return v;
}

/// Returns a time as a key part that sorts in time order: be64, with times
/// before the epoch as 0.
inline uint64_t time_part(int64_t ns) {
  return ns < 0 ? 0 : static_cast<uint64_t>(ns);
}

/// Returns `head` followed by be64(time_part(at_ns)) and `run_id`: a key
/// that sorts runs by that time.
inline std::string time_ordered(std::string_view head, int64_t at_ns,
                                std::string_view run_id) {
  std::string out;
  out.reserve(head.size() + 8 + run_id.size());
  out.append(head);
  append_be64(out, time_part(at_ns));
  out.append(run_id);
  return out;
}

/// Key, in the finished column family, of `run_id` finished at `at_ns`.
inline std::string finished_key(int64_t at_ns, std::string_view run_id) {
  return time_ordered({}, at_ns, run_id);
}

/// Prefix of the tombstones in the default column family.
inline constexpr std::string_view tombstone_prefix = "gone/";

/// Key, in the default column family, of the tombstone of `run_id`.
inline std::string tombstone_key(std::string_view run_id) {
  return joined(tombstone_prefix, run_id);
}

/// Prefix of the tombstones by deletion time in the default column family.
inline constexpr std::string_view tombstone_time_prefix = "goneat/";

/// Key, in the default column family, of the tombstone of `run_id` deleted
/// at `at_ns`, in deletion order.
inline std::string tombstone_time_key(int64_t at_ns, std::string_view run_id) {
  return time_ordered(tombstone_time_prefix, at_ns, run_id);
}

/// Key, in the default column family, of the node note `name`.
inline std::string note_key(std::string_view name) {
  return joined("note/", name);
}

/// Size of the sequence number suffix of a journal key.
inline constexpr size_t seq_size = 4;

/// Returns the prefix shared by every journal key of `run_id`.
inline std::string journal_prefix(std::string_view run_id) {
  std::string key{run_id};
  key.push_back('\0');
  return key;
}

/// Returns the first key after every journal key of `run_id`.
inline std::string journal_upper_bound(std::string_view run_id) {
  std::string key{run_id};
  key.push_back('\x01');
  return key;
}

/// Returns the journal key of record `seq` of `run_id`.
inline std::string journal_key(std::string_view run_id, uint32_t seq) {
  std::string key = journal_prefix(run_id);
  key.push_back(static_cast<char>((seq >> 24) & 0xff));
  key.push_back(static_cast<char>((seq >> 16) & 0xff));
  key.push_back(static_cast<char>((seq >> 8) & 0xff));
  key.push_back(static_cast<char>(seq & 0xff));
  return key;
}

/// Returns the sequence number of `key` if it is a journal key of the run
/// whose prefix is `prefix`.
inline std::optional<uint32_t> journal_seq(std::string_view key,
                                           std::string_view prefix) {
  if (key.size() != prefix.size() + seq_size || !key.starts_with(prefix))
    return std::nullopt;
  auto b = [&](size_t i) {
    return static_cast<uint32_t>(static_cast<unsigned char>(key[i]));
  };
  size_t p = prefix.size();
  return (b(p) << 24) | (b(p + 1) << 16) | (b(p + 2) << 8) | b(p + 3);
}

} // namespace troupe::persistence::key_layout
