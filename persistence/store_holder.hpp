#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace troupe::persistence {

/// The process that holds a store open, as it described itself in the file
/// `HOLDER` beside RocksDB's `LOCK`. A process refused the lock reads it to
/// say who holds the store and what to do instead (ask that node, wait for
/// that run). RocksDB's lock decides who holds the store; this file only
/// describes the holder, and a stale one is recognised and ignored.
struct store_holder {
  /// Its process id; 0 when unknown.
  int64_t pid = 0;
  /// What it runs, a troupe command such as "node start" or "run"; may be
  /// empty.
  std::string command;
  /// Where it takes requests (a node's control address), or empty.
  std::string address;
};

/// Writes `h`, with this process's id and start time (whatever `h.pid`
/// says), as the holder of the store in folder `dir`. Call it only while
/// holding the store's lock. Returns why it failed, or empty.
std::string write_store_holder(const std::string& dir, const store_holder& h);

/// Returns the holder described in folder `dir`; nothing when there is no
/// description, it cannot be read, or it is stale: its process is gone, or
/// its pid now names a process that started later.
std::optional<store_holder> read_store_holder(const std::string& dir);

/// Removes the description in folder `dir` if it names this process. Call
/// it before letting go of the lock.
void remove_store_holder(const std::string& dir);

} // namespace troupe::persistence
