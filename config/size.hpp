#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace troupe::config {

/// Parses a size in bytes such as `512MiB`, `1GiB`, `1.5GB` or `4096`.
/// Units: B, KiB, MiB, GiB, TiB (powers of 1024) and kB, MB, GB, TB (powers
/// of 1000); a bare number is bytes. Returns nothing and sets `error` (when
/// not null) to a one-line reason on malformed, negative or overflowing
/// input.
std::optional<uint64_t> parse_size(std::string_view text,
                                   std::string* error = nullptr);

/// Returns `bytes` for people, e.g. `1 GiB`, `812.4 MiB`, `512 B`.
std::string format_size(uint64_t bytes);

/// How much free space a filesystem must keep (storage.min_free): a size, a
/// share of the filesystem, or both, of which the smaller applies.
struct free_space_floor {
  /// A size in bytes; nothing when not given.
  std::optional<uint64_t> bytes;
  /// A share of the filesystem's size, in percent (0 to 50); nothing when
  /// not given.
  std::optional<double> percent;

  /// Returns the floor in bytes on a filesystem of `total` bytes: the
  /// smaller of those given, 0 when neither is.
  uint64_t resolve(uint64_t total) const;

  bool operator==(const free_space_floor&) const = default;
};

/// Parses a floor such as `1GiB`, `512MiB`, `5%` or `5%,1GiB` (the smaller
/// of both); `0` keeps no floor. Returns nothing and sets `error` (when not
/// null) to a one-line reason naming what is wrong.
std::optional<free_space_floor>
parse_free_space_floor(std::string_view text, std::string* error = nullptr);

} // namespace troupe::config
