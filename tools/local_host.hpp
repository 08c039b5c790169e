// What the commands that start local processes (cluster start-local, the
// cluster benchmarks) ask of this machine: programs on PATH, loopback
// ports, random secrets.

#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace troupe::tools {

/// The first `program` on PATH that is a file this process may run, or "".
std::string find_on_path(const std::string& program);

/// A port of 127.0.0.1 the system gave a moment ago (free then, though
/// another process may take it before it is used); 0 if none could be had.
uint16_t free_loopback_port();

/// `bytes` random bytes (getrandom) as hex digits; throws when the system
/// gives none.
std::string random_hex(size_t bytes);

} // namespace troupe::tools
