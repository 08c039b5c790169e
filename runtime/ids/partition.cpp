#include "runtime/ids/partition.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>

namespace troupe::runtime {

namespace {

/// FNV-1a, 64 bits: stable across builds and machines (std::hash is not).
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

bool is_hex(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return true;
}

/// The counter of new_run_id: random at first, so that a restarted process
/// does not repeat its predecessor's ids within the same millisecond.
std::atomic<uint32_t>& id_counter() {
  static std::atomic<uint32_t> counter{
    static_cast<uint32_t>(std::random_device{}())};
  return counter;
}

uint32_t random_u32() {
  static std::mt19937_64 rng{std::random_device{}()};
  static std::mutex mtx;
  std::lock_guard guard{mtx};
  return static_cast<uint32_t>(rng());
}

} // namespace

uint32_t partition_of_run(std::string_view id, uint32_t count) {
  count = std::clamp(count, 1u, max_partitions);
  // "<12 hex>-<2 hex><6 hex>": the partition is the first two after '-'.
  if (id.size() == 21 && id[12] == '-' && is_hex(id.substr(0, 12))
      && is_hex(id.substr(13, 8)))
    return static_cast<uint32_t>(
             std::stoul(std::string{id.substr(13, 2)}, nullptr, 16))
           % count;
  return static_cast<uint32_t>(fnv1a(id) % count);
}

uint32_t partition_of_key(std::string_view key, uint32_t count) {
  return static_cast<uint32_t>(fnv1a(key)
                               % std::clamp(count, 1u, max_partitions));
}

std::string new_run_id(uint32_t partition) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
  auto n = id_counter().fetch_add(1, std::memory_order_relaxed);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%012llx-%02x%06x",
                static_cast<unsigned long long>(ms) & 0xffffffffffffull,
                static_cast<unsigned>(partition % max_partitions),
                static_cast<unsigned>(n & 0xffffff));
  return buf;
}

uint32_t random_partition() {
  return random_u32() % max_partitions;
}

} // namespace troupe::runtime
