#pragma once

#include "persistence/records.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace troupe::persistence {

/// The encoding version written today. Readers accept versions up to it.
inline constexpr uint8_t format_version = 1;

/// What a record may hold. msgpack writes a string's length in 32 bits, and
/// RocksDB a value's: a longer field, or a longer record, cannot be stored.
struct encode_limits {
  /// Longest string field, in bytes. Default: 2^32 - 1.
  uint64_t field_bytes = 0xffff'ffff;
  /// Longest record (an upper bound of its encoded size), in bytes.
  /// Default: 2^32 - 1.
  uint64_t record_bytes = 0xffff'ffff;
};

/// Encodes `e` as msgpack, prefixed by the format version. When a field or
/// the whole record is longer than `limits` allow, returns nothing and sets
/// `error` naming the field and its size (e.g. "field 'data' of a
/// node_completed event of node 'big' is 4294967296 bytes; a record field
/// holds at most 4294967295"). Never throws but for lack of memory.
std::optional<std::string> encode(const event_record& e, std::string& error,
                                  const encode_limits& limits = {});

/// Encodes a run index entry, like the event overload above.
std::optional<std::string> encode(const run_index_entry& e, std::string& error,
                                  const encode_limits& limits = {});

/// Encodes `e` as msgpack, prefixed by the format version. Throws
/// std::length_error with the reason where the checked overload fails.
std::string encode(const event_record& e);

/// Decodes an event; on corrupt bytes or an unknown version returns nothing
/// and sets `error` to a one-line reason. Never throws.
std::optional<event_record> decode_event(std::string_view bytes,
                                         std::string& error);

/// Encodes a run index entry as msgpack, prefixed by the format version.
/// Throws std::length_error where the checked overload fails.
std::string encode(const run_index_entry& e);

/// Decodes a run index entry, like decode_event.
std::optional<run_index_entry> decode_index(std::string_view bytes,
                                            std::string& error);

} // namespace troupe::persistence
