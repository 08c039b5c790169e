#pragma once

#include "persistence/records.hpp"

#include <optional>
#include <string>
#include <string_view>

namespace troupe::persistence {

/// The encoding version written today. Readers accept versions up to it.
inline constexpr uint8_t format_version = 1;

/// Encodes `e` as msgpack, prefixed by the format version.
std::string encode(const event_record& e);

/// Decodes an event; on corrupt bytes or an unknown version returns nothing
/// and sets `error` to a one-line reason. Never throws.
std::optional<event_record> decode_event(std::string_view bytes,
                                         std::string& error);

/// Encodes a run index entry as msgpack, prefixed by the format version.
std::string encode(const run_index_entry& e);

/// Decodes a run index entry, like decode_event.
std::optional<run_index_entry> decode_index(std::string_view bytes,
                                            std::string& error);

} // namespace troupe::persistence
