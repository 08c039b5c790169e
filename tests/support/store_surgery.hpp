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

} // namespace troupe::test
