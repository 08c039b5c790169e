#include "persistence/codec/codec.hpp"

#include <msgpack.hpp>

#include <cstdint>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>

// On-disk layout of every record (events and run index entries alike):
//
//   byte 0     format_version (today 1)
//   bytes 1..  one msgpack array holding the record's fields in declaration
//              order: enums as unsigned integers, integers in msgpack's
//              compact form, strings as msgpack str (raw bytes, no UTF-8
//              check; bin is accepted on read).
//
// Readers reject a version they do not know, a wrong field count or field
// type, unknown enum values and bytes after the array.

namespace troupe::persistence {

namespace {

// -- encoding -----------------------------------------------------------------

/// A msgpack output stream appending to a std::string.
struct string_writer {
  std::string& out;
  void write(const char* data, size_t size) { out.append(data, size); }
};

using packer = msgpack::packer<string_writer>;

/// Packs `s`, whose size check_fields has already bounded to 32 bits.
void pack_string(packer& pk, const std::string& s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

/// One string field of a record, named for error messages.
struct named_field {
  std::string_view name;
  const std::string& value;
};

/// Bytes a record needs besides its strings' bytes, at most: the version, the
/// array header, and per field its header (integers included).
constexpr uint64_t record_overhead = 1 + 5 + 9 * 9;

/// Checks that every field of a record, and the record as a whole, fit
/// `limits`. Returns an empty string, or why not, naming the field and its
/// size; `what` names the record ("a node_completed event of node 'n'").
std::string check_fields(std::initializer_list<named_field> fields,
                         const std::string& what, const encode_limits& limits) {
  uint64_t total = record_overhead;
  for (const auto& f : fields) {
    uint64_t size = f.value.size();
    if (size > limits.field_bytes)
      return "field '" + std::string{f.name} + "' of " + what + " is "
             + std::to_string(size) + " bytes; a record field holds at most "
             + std::to_string(limits.field_bytes);
    total += size;
  }
  if (total > limits.record_bytes)
    return what + " needs up to " + std::to_string(total)
           + " bytes; a record holds at most "
           + std::to_string(limits.record_bytes);
  return {};
}

/// Names an event for error messages, with a bounded excerpt of its node.
std::string describe(const event_record& e) {
  std::string out = "a " + std::string{to_string(e.type)} + " event";
  if (!e.node.empty())
    out += " of node '" + e.node.substr(0, 200) + "'";
  return out;
}

constexpr uint32_t event_fields = 9;
constexpr uint32_t index_fields = 6;

// -- decoding -----------------------------------------------------------------

std::string_view type_name(msgpack::type::object_type t) {
  switch (t) {
  case msgpack::type::NIL: return "nil";
  case msgpack::type::BOOLEAN: return "boolean";
  case msgpack::type::POSITIVE_INTEGER: return "unsigned integer";
  case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
  case msgpack::type::FLOAT32: return "float";
  case msgpack::type::FLOAT64: return "float";
  case msgpack::type::STR: return "string";
  case msgpack::type::BIN: return "binary";
  case msgpack::type::ARRAY: return "array";
  case msgpack::type::MAP: return "map";
  case msgpack::type::EXT: return "extension";
  }
  return "unknown";
}

/// Reads the fields of one record, remembering the first problem.
class field_reader {
 public:
  field_reader(const msgpack::object* fields, std::string& error)
      : fields_(fields), error_(error) {}

  bool ok() const { return ok_; }

  void str(uint32_t i, std::string_view name, std::string& out) {
    if (!ok_)
      return;
    const auto& o = fields_[i];
    if (o.type == msgpack::type::STR)
      out.assign(o.via.str.ptr, o.via.str.size);
    else if (o.type == msgpack::type::BIN)
      out.assign(o.via.bin.ptr, o.via.bin.size);
    else
      fail(i, name, "a string", o);
  }

  void i64(uint32_t i, std::string_view name, int64_t& out) {
    int64_t lo = std::numeric_limits<int64_t>::min();
    int64_t hi = std::numeric_limits<int64_t>::max();
    integer(i, name, lo, hi, out);
  }

  void i32(uint32_t i, std::string_view name, int32_t& out) {
    int64_t v = 0;
    integer(i, name, std::numeric_limits<int32_t>::min(),
            std::numeric_limits<int32_t>::max(), v);
    if (ok_)
      out = static_cast<int32_t>(v);
  }

  /// An enum stored as an unsigned integer in [lo, hi].
  void u8(uint32_t i, std::string_view name, uint8_t lo, uint8_t hi,
          std::string_view what, uint8_t& out) {
    if (!ok_)
      return;
    const auto& o = fields_[i];
    if (o.type != msgpack::type::POSITIVE_INTEGER) {
      fail(i, name, "an unsigned integer", o);
      return;
    }
    if (o.via.u64 < lo || o.via.u64 > hi) {
      ok_ = false;
      error_ = "unknown " + std::string{what} + " " + std::to_string(o.via.u64);
      return;
    }
    out = static_cast<uint8_t>(o.via.u64);
  }

 private:
  void integer(uint32_t i, std::string_view name, int64_t lo, int64_t hi,
               int64_t& out) {
    if (!ok_)
      return;
    const auto& o = fields_[i];
    bool in_range = false;
    if (o.type == msgpack::type::POSITIVE_INTEGER) {
      in_range = o.via.u64 <= static_cast<uint64_t>(hi);
      if (in_range)
        out = static_cast<int64_t>(o.via.u64);
    } else if (o.type == msgpack::type::NEGATIVE_INTEGER) {
      in_range = o.via.i64 >= lo;
      if (in_range)
        out = o.via.i64;
    } else {
      fail(i, name, "an integer", o);
      return;
    }
    if (!in_range) {
      ok_ = false;
      error_ = "field " + std::to_string(i) + " (" + std::string{name}
               + "): integer out of range";
    }
  }

  void fail(uint32_t i, std::string_view name, std::string_view expected,
            const msgpack::object& got) {
    ok_ = false;
    error_ = "field " + std::to_string(i) + " (" + std::string{name}
             + "): expected " + std::string{expected} + ", got "
             + std::string{type_name(got.type)};
  }

  const msgpack::object* fields_;
  std::string& error_;
  bool ok_ = true;
};

/// Checks the version byte and unpacks the msgpack array after it, which must
/// hold exactly `field_count` elements and be followed by nothing. On success
/// returns the handle owning the objects; otherwise sets `error`.
std::optional<msgpack::object_handle> unpack_record(std::string_view bytes,
                                                    uint32_t field_count,
                                                    std::string& error,
                                                    uint32_t max_fields = 0) {
  if (max_fields < field_count)
    max_fields = field_count;
  if (bytes.empty()) {
    error = "empty record";
    return std::nullopt;
  }
  auto version = static_cast<uint8_t>(bytes[0]);
  if (version == 0 || version > format_version) {
    error = "unsupported format version " + std::to_string(version)
            + " (this build reads up to " + std::to_string(format_version)
            + ")";
    return std::nullopt;
  }
  if (bytes.size() == 1) {
    error = "truncated record: no fields after the version byte";
    return std::nullopt;
  }
  const char* data = bytes.data() + 1;
  size_t size = bytes.size() - 1;
  // Limits keep hostile lengths from allocating: one flat array of at most
  // 64 elements, no maps or extensions, strings no longer than the input.
  msgpack::unpack_limit limit{/*array=*/64, /*map=*/0, /*str=*/size,
                              /*bin=*/size, /*ext=*/0, /*depth=*/1};
  size_t off = 0;
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(data, size, off, nullptr, nullptr, limit);
  } catch (const msgpack::insufficient_bytes&) {
    error = "truncated record";
    return std::nullopt;
  } catch (const msgpack::size_overflow&) {
    error = "malformed record: a declared length or nesting exceeds the "
            "record's limits";
    return std::nullopt;
  } catch (const msgpack::parse_error&) {
    error = "malformed record: not valid msgpack";
    return std::nullopt;
  } catch (const std::bad_alloc&) {
    error = "malformed record: out of memory while decoding";
    return std::nullopt;
  } catch (const std::exception& e) {
    error = std::string{"malformed record: "} + e.what();
    return std::nullopt;
  } catch (...) {
    error = "malformed record";
    return std::nullopt;
  }
  if (off != size) {
    error = "malformed record: " + std::to_string(size - off)
            + " trailing byte(s) after the fields";
    return std::nullopt;
  }
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::ARRAY) {
    error = "malformed record: expected an array of fields, got "
            + std::string{type_name(root.type)};
    return std::nullopt;
  }
  if (root.via.array.size < field_count || root.via.array.size > max_fields) {
    error = "malformed record: expected " + std::to_string(field_count)
            + (max_fields > field_count ? " to " + std::to_string(max_fields)
                                        : std::string{})
            + " fields, got " + std::to_string(root.via.array.size);
    return std::nullopt;
  }
  return handle;
}

} // namespace

std::optional<std::string> encode(const event_record& e, std::string& error,
                                  const encode_limits& limits) {
  error = check_fields({{"node", e.node},
                        {"error_kind", e.error_kind},
                        {"message", e.message},
                        {"data", e.data},
                        {"data2", e.data2},
                        {"member", e.member}},
                       describe(e), limits);
  if (!error.empty())
    return std::nullopt;
  std::string out;
  out.reserve(32 + e.node.size() + e.error_kind.size() + e.message.size()
              + e.data.size() + e.data2.size());
  out.push_back(static_cast<char>(format_version));
  string_writer w{out};
  packer pk{w};
  // The member, when there is one, as a tenth field: records without it
  // are as they always were.
  pk.pack_array(e.member.empty() ? event_fields : event_fields + 1);
  pk.pack_uint8(static_cast<uint8_t>(e.type));
  pk.pack_int64(e.at_ns);
  pack_string(pk, e.node);
  pk.pack_int32(e.attempt);
  pk.pack_int64(e.deadline_ns);
  pack_string(pk, e.error_kind);
  pack_string(pk, e.message);
  pack_string(pk, e.data);
  pack_string(pk, e.data2);
  if (!e.member.empty())
    pack_string(pk, e.member);
  return out;
}

std::optional<event_record> decode_event(std::string_view bytes,
                                         std::string& error) {
  try {
    auto handle = unpack_record(bytes, event_fields, error, event_fields + 1);
    if (!handle)
      return std::nullopt;
    field_reader r{handle->get().via.array.ptr, error};
    event_record e;
    uint8_t type = 0;
    r.u8(0, "type", 1, static_cast<uint8_t>(last_event_type), "event type",
         type);
    r.i64(1, "at_ns", e.at_ns);
    r.str(2, "node", e.node);
    r.i32(3, "attempt", e.attempt);
    r.i64(4, "deadline_ns", e.deadline_ns);
    r.str(5, "error_kind", e.error_kind);
    r.str(6, "message", e.message);
    r.str(7, "data", e.data);
    r.str(8, "data2", e.data2);
    if (handle->get().via.array.size > event_fields)
      r.str(9, "member", e.member);
    if (!r.ok())
      return std::nullopt;
    e.type = static_cast<event_type>(type);
    return e;
  } catch (...) {
    // Only allocation can throw here.
    error = "cannot decode record: out of memory";
    return std::nullopt;
  }
}

std::optional<std::string> encode(const run_index_entry& e, std::string& error,
                                  const encode_limits& limits) {
  error = check_fields(
    {{"run_id", e.run_id}, {"workflow", e.workflow}, {"reason", e.reason}},
    "the index entry of run '" + e.run_id.substr(0, 200) + "'", limits);
  if (!error.empty())
    return std::nullopt;
  std::string out;
  out.reserve(32 + e.run_id.size() + e.workflow.size() + e.reason.size());
  out.push_back(static_cast<char>(format_version));
  string_writer w{out};
  packer pk{w};
  pk.pack_array(index_fields);
  pack_string(pk, e.run_id);
  pack_string(pk, e.workflow);
  pk.pack_uint8(static_cast<uint8_t>(e.state));
  pk.pack_int64(e.created_at_ns);
  pk.pack_int64(e.updated_at_ns);
  pack_string(pk, e.reason);
  return out;
}

std::optional<run_index_entry> decode_index(std::string_view bytes,
                                            std::string& error) {
  try {
    auto handle = unpack_record(bytes, index_fields, error);
    if (!handle)
      return std::nullopt;
    field_reader r{handle->get().via.array.ptr, error};
    run_index_entry e;
    uint8_t state = 0;
    r.str(0, "run_id", e.run_id);
    r.str(1, "workflow", e.workflow);
    r.u8(2, "state", 1, static_cast<uint8_t>(run_state::paused), "run state",
         state);
    r.i64(3, "created_at_ns", e.created_at_ns);
    r.i64(4, "updated_at_ns", e.updated_at_ns);
    r.str(5, "reason", e.reason);
    if (!r.ok())
      return std::nullopt;
    e.state = static_cast<run_state>(state);
    return e;
  } catch (...) {
    error = "cannot decode record: out of memory";
    return std::nullopt;
  }
}

std::string encode(const event_record& e) {
  std::string error;
  auto out = encode(e, error);
  if (!out)
    throw std::length_error(error);
  return std::move(*out);
}

std::string encode(const run_index_entry& e) {
  std::string error;
  auto out = encode(e, error);
  if (!out)
    throw std::length_error(error);
  return std::move(*out);
}

} // namespace troupe::persistence
