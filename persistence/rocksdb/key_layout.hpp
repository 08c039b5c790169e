#pragma once

// Key layout of the journal store's RocksDB database.
//
// Column families:
//
//   default   "format"  -> the store's format version as decimal text ("1").
//                          A build refuses to open a store whose version is
//                          newer than codec's format_version.
//   journal   run_id 0x00 seq -> encode(event_record)
//                          seq is a big-endian uint32, 1 for a run's first
//                          event, contiguous. Run ids are [0-9a-z-] and never
//                          hold NUL, so the prefix `run_id 0x00` selects
//                          exactly one run's records, and byte order is
//                          (run id, sequence) order.
//   runs      run_id    -> encode(run_index_entry)
//
// Every value carries codec's version byte, so records can be decoded (and
// migrated) one by one.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::persistence::key_layout {

/// Name of the column family holding the journals.
inline constexpr std::string_view journal_cf = "journal";

/// Name of the column family holding the run index.
inline constexpr std::string_view runs_cf = "runs";

/// Key of the format version, in the default column family.
inline constexpr std::string_view format_key = "format";

/// Key, in the default column family, of the run holding idempotency key
/// `key`: "idem/" + key -> run id.
inline std::string idempotency_key(std::string_view key) {
  std::string out{"idem/"};
  out.append(key);
  return out;
}

/// Key, in the default column family, of the node note `name`.
inline std::string note_key(std::string_view name) {
  std::string out{"note/"};
  out.append(name);
  return out;
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
