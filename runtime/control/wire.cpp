#include "runtime/control/wire.hpp"

#include <msgpack.hpp>

#include <array>
#include <cmath>
#include <new>

namespace troupe::runtime::control {

using json = nlohmann::json;

namespace {

constexpr std::array error_names{
  "bad_frame",         "frame_too_large",     "unknown_type",
  "bad_request",       "unsupported_version", "hello_required",
  "unauthenticated",   "token_expired",       "token_invalid",
  "forbidden",         "rate_limited",        "not_found",
  "conflict",          "invalid_workflow",    "draining",
  "not_ready",         "too_many_requests",   "disk_low",
  "owner_unavailable", "hooks_off",           "internal",
};
static_assert(error_names.size()
              == static_cast<size_t>(error_code::internal) + 1);

/// Returns whether `s` is well-formed UTF-8 (no overlong forms, no
/// surrogates, nothing above U+10FFFF).
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0)
      n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
      n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
      n = 3, cp = c & 0x07;
    else
      return false;
    if (i + n >= s.size())
      return false;
    for (size_t k = 1; k <= n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t least[] = {0, 0x80, 0x800, 0x10000};
    if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

/// Converts a decoded MessagePack value; depth is bounded by the unpacker's
/// limit, so the recursion is too.
bool to_json(const msgpack::object& o, json& out, std::string& error) {
  switch (o.type) {
  case msgpack::type::NIL: out = nullptr; return true;
  case msgpack::type::BOOLEAN: out = o.via.boolean; return true;
  case msgpack::type::POSITIVE_INTEGER: out = o.via.u64; return true;
  case msgpack::type::NEGATIVE_INTEGER: out = o.via.i64; return true;
  case msgpack::type::FLOAT32:
  case msgpack::type::FLOAT64:
    if (!std::isfinite(o.via.f64)) {
      error = "a number that is not finite";
      return false;
    }
    out = o.via.f64;
    return true;
  case msgpack::type::STR: {
    std::string_view s{o.via.str.ptr, o.via.str.size};
    if (!valid_utf8(s)) {
      error = "invalid UTF-8 in a string";
      return false;
    }
    out = std::string{s};
    return true;
  }
  case msgpack::type::ARRAY: {
    out = json::array();
    auto& arr = out.get_ref<json::array_t&>();
    arr.reserve(o.via.array.size);
    for (uint32_t i = 0; i < o.via.array.size; ++i) {
      json v;
      if (!to_json(o.via.array.ptr[i], v, error))
        return false;
      arr.push_back(std::move(v));
    }
    return true;
  }
  case msgpack::type::MAP: {
    out = json::object();
    for (uint32_t i = 0; i < o.via.map.size; ++i) {
      auto& kv = o.via.map.ptr[i];
      if (kv.key.type != msgpack::type::STR) {
        error = "a map key that is not a string";
        return false;
      }
      std::string_view key{kv.key.via.str.ptr, kv.key.via.str.size};
      if (!valid_utf8(key)) {
        error = "invalid UTF-8 in a map key";
        return false;
      }
      std::string k{key};
      if (out.contains(k)) {
        error = "duplicate map key '" + k.substr(0, 64) + "'";
        return false;
      }
      json v;
      if (!to_json(kv.val, v, error))
        return false;
      out[std::move(k)] = std::move(v);
    }
    return true;
  }
  case msgpack::type::BIN:
    error = "a binary value (the protocol uses strings)";
    return false;
  case msgpack::type::EXT:
    error = "an extension value (the protocol uses none)";
    return false;
  }
  error = "an unknown MessagePack type";
  return false;
}

} // namespace

std::string_view to_string(error_code code) {
  return error_names[static_cast<size_t>(code)];
}

std::optional<error_code> parse_error_code(std::string_view name) {
  for (size_t i = 0; i < error_names.size(); ++i)
    if (name == error_names[i])
      return static_cast<error_code>(i);
  return std::nullopt;
}

uint32_t read_length(const unsigned char* h) {
  return (uint32_t{h[0]} << 24) | (uint32_t{h[1]} << 16) | (uint32_t{h[2]} << 8)
         | uint32_t{h[3]};
}

std::string encode_frame(const json& message) {
  std::string frame(header_size, '\0');
  json::to_msgpack(message, frame);
  auto n = static_cast<uint32_t>(frame.size() - header_size);
  frame[0] = static_cast<char>(n >> 24);
  frame[1] = static_cast<char>(n >> 16);
  frame[2] = static_cast<char>(n >> 8);
  frame[3] = static_cast<char>(n);
  return frame;
}

std::optional<json> decode_body(std::string_view body, std::string& error) {
  if (body.empty()) {
    error = "an empty frame";
    return std::nullopt;
  }
  // Every element takes at least one byte, so no container can claim more
  // elements than the frame has bytes: the unpacker's up-front allocation
  // for a container stays within a small multiple of the frame's size.
  auto n = body.size();
  msgpack::unpack_limit limit{n, n / 2 + 1, n, n, n, max_depth};
  size_t offset = 0;
  msgpack::object_handle handle;
  try {
    handle = msgpack::unpack(body.data(), body.size(), offset, nullptr, nullptr,
                             limit);
  } catch (const msgpack::depth_size_overflow&) {
    error = "nesting deeper than " + std::to_string(max_depth);
    return std::nullopt;
  } catch (const msgpack::size_overflow&) {
    error = "a container or string longer than the frame";
    return std::nullopt;
  } catch (const msgpack::insufficient_bytes&) {
    error = "a truncated MessagePack value";
    return std::nullopt;
  } catch (const std::bad_alloc&) {
    error = "a value too large to decode";
    return std::nullopt;
  } catch (const std::exception& e) {
    error = std::string{"not MessagePack ("} + e.what() + ")";
    return std::nullopt;
  }
  if (offset != body.size()) {
    error = std::to_string(body.size() - offset) + " bytes after the message";
    return std::nullopt;
  }
  if (handle.get().type != msgpack::type::MAP) {
    error = "the message is not a map";
    return std::nullopt;
  }
  json out;
  if (!to_json(handle.get(), out, error))
    return std::nullopt;
  return out;
}

json make_error(uint64_t id, error_code code, const std::string& message) {
  return json{{"t", "error"},
              {"id", id},
              {"code", std::string{to_string(code)}},
              {"message", message}};
}

// -- fields -------------------------------------------------------------------

void fields::fail(std::string message) {
  if (error_.empty())
    error_ = std::move(message);
}

std::string fields::text(const char* name, bool required, size_t max_size) {
  auto i = msg_.find(name);
  if (i == msg_.end() || i->is_null()) {
    if (required)
      fail(std::string{"missing field '"} + name + "'");
    return {};
  }
  if (!i->is_string()) {
    fail(std::string{"field '"} + name + "' must be a string");
    return {};
  }
  auto& s = i->get_ref<const std::string&>();
  if (s.size() > max_size) {
    fail(std::string{"field '"} + name + "' is longer than "
         + std::to_string(max_size) + " bytes");
    return {};
  }
  if (required && s.empty())
    fail(std::string{"field '"} + name + "' is empty");
  return s;
}

uint64_t fields::count(const char* name, uint64_t fallback, uint64_t max) {
  auto i = msg_.find(name);
  if (i == msg_.end() || i->is_null())
    return fallback;
  bool whole = i->is_number_unsigned()
               || (i->is_number_integer() && i->get<int64_t>() >= 0);
  if (!whole || i->get<uint64_t>() > max) {
    fail(std::string{"field '"} + name + "' must be a whole number from 0 to "
         + std::to_string(max));
    return fallback;
  }
  return i->get<uint64_t>();
}

bool fields::flag(const char* name, bool fallback) {
  auto i = msg_.find(name);
  if (i == msg_.end() || i->is_null())
    return fallback;
  if (!i->is_boolean()) {
    fail(std::string{"field '"} + name + "' must be true or false");
    return fallback;
  }
  return i->get<bool>();
}

json fields::object(const char* name) {
  auto i = msg_.find(name);
  if (i == msg_.end() || i->is_null())
    return json::object();
  if (!i->is_object()) {
    fail(std::string{"field '"} + name + "' must be a map");
    return json::object();
  }
  return *i;
}

} // namespace troupe::runtime::control
