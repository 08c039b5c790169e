#pragma once

// The control protocol's frames: a 4-byte big-endian length, then that many
// bytes holding one MessagePack map. docs/protocol.md describes the messages
// they carry. Decoding is strict and bounded: any byte string either becomes
// a JSON object or an error naming what is wrong, never a crash, and never
// an allocation larger than a small multiple of the frame.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::runtime::control {

/// The newest protocol version this build speaks, exchanged in
/// hello/welcome. Version 2 adds keepalives, version 3 the draining notice
/// (docs/protocol.md).
inline constexpr int64_t protocol_version = 3;

/// The oldest version a node still serves.
inline constexpr int64_t min_protocol_version = 1;

/// Bytes of the length prefix.
inline constexpr size_t header_size = 4;

/// Deepest nesting of arrays and maps a frame may hold.
inline constexpr size_t max_depth = 32;

/// Default and hard cap on a frame's body (control.max_frame_bytes).
inline constexpr size_t default_max_frame = 4u << 20;

/// Why a request failed: the `code` of an error frame. Clients branch on it;
/// the numbering is not on the wire, the names are.
enum class error_code {
  bad_frame,           ///< Bytes that are not one MessagePack map.
  frame_too_large,     ///< A length above the node's maximum.
  unknown_type,        ///< A message type the node does not know.
  bad_request,         ///< A missing or mistyped field.
  unsupported_version, ///< A hello with a version the node does not speak.
  hello_required,      ///< A request before the hello.
  unauthenticated,     ///< No token where one is needed.
  token_expired,       ///< A token past its expiry.
  token_invalid,       ///< A malformed or badly signed token.
  forbidden,           ///< A valid token whose role may not do this.
  rate_limited,        ///< Too many submissions; retry_after_ms says when.
  not_found,           ///< No such run.
  conflict,            ///< Not possible in the run's state.
  invalid_workflow,    ///< The workflow or its inputs failed validation.
  draining,            ///< The node is shutting down.
  not_ready,         ///< Not ready yet (recovering); retry_after_ms says when.
  too_many_requests, ///< Too many requests of the connection await answers.
  disk_low,          ///< The data dir is low on space; free_bytes and
                     ///< min_free_bytes say how low.
  owner_unavailable, ///< The run's owner (another member) is down, not
                     ///< linked or did not answer; `owner` and
                     ///< `owner_state` say which and how.
  hooks_off,         ///< A fault request to a node whose fault hooks are
                     ///< off (not started with TROUPE_CHAOS_HOOKS=1).
  internal,          ///< The node failed; its log says more.
};

/// Returns the wire name of `code`, e.g. "bad_frame".
std::string_view to_string(error_code code);

/// Returns the code named `name`, or nothing.
std::optional<error_code> parse_error_code(std::string_view name);

/// Reads the body length from a frame's 4 header bytes.
uint32_t read_length(const unsigned char* header);

/// Encodes `message` (a JSON object) as one whole frame, header included.
std::string encode_frame(const nlohmann::json& message);

/// Decodes a frame body. Returns a JSON object, or nothing with `error`
/// naming the problem (e.g. "not a map", "invalid UTF-8 in a string",
/// "nesting deeper than 32", "4 bytes after the map").
std::optional<nlohmann::json> decode_body(std::string_view body,
                                          std::string& error);

/// Builds an error frame's message.
nlohmann::json make_error(uint64_t id, error_code code,
                          const std::string& message);

// -- reading requests
// ----------------------------------------------------------

/// Reads typed fields of a request, collecting the first problem as a
/// message naming the field ("field 'run_id' must be a string").
class fields {
 public:
  explicit fields(const nlohmann::json& message) : msg_(message) {}

  /// A required or optional string (optional: empty when absent).
  std::string text(const char* name, bool required = true,
                   size_t max_size = 1 << 20);

  /// An optional unsigned integer within [0, max]; `fallback` when absent.
  uint64_t count(const char* name, uint64_t fallback, uint64_t max);

  /// An optional boolean.
  bool flag(const char* name, bool fallback = false);

  /// An optional JSON object; an empty object when absent.
  nlohmann::json object(const char* name);

  /// The first problem, or an empty string.
  const std::string& error() const noexcept { return error_; }

  bool ok() const noexcept { return error_.empty(); }

 private:
  void fail(std::string message);

  const nlohmann::json& msg_;
  std::string error_;
};

} // namespace troupe::runtime::control
