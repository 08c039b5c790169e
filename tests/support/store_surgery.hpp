#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace troupe::test {

/// Overwrites journal record `seq` of the `nth` run (in run-id order) of the
/// closed store at `path` with bytes that do not decode, the way a bad disk
/// would. Returns every run id in the store, in order.
std::vector<std::string> corrupt_journal_record(const std::string& path,
                                                size_t nth, uint32_t seq);

/// Turns the closed store at `path` into one as format version 1 wrote it:
/// drops what format 2 added (the unfinished and finished column families,
/// the reverse idempotency keys) and sets the format to "1".
void downgrade_to_format_one(const std::string& path);

/// Returns the format version recorded in the closed store at `path`.
std::string store_format(const std::string& path);

} // namespace troupe::test
