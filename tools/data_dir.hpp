#pragma once

// Opening a data dir's store from the command line, and saying why it could
// not be opened: one place, so that every command gives the same answer and
// the same exit code for the same cause.

#include "persistence/journal_store.hpp"

#include <memory>
#include <string>

namespace troupe::tools {

/// Opens the store in the data dir `so.path` for `command` ("status",
/// "list", "history", "logs", "breakers", "cancel", "gc"), a command that
/// works on what the data dir holds: a folder that does not exist, or holds
/// no store, is refused (exit 2), never created. On failure prints why on
/// standard error, naming the path, with what to do instead, sets `rc` to
/// the exit code and returns null.
std::unique_ptr<persistence::journal_store>
open_data_dir(const std::string& command,
              persistence::journal_store::options so, int& rc);

/// Prints why the store of data dir `dir` could not be opened for `command`
/// (`error`, from journal_store::open) with what to do about it; returns the
/// exit code.
int report_open_failure(const std::string& command, const std::string& dir,
                        const std::string& error);

} // namespace troupe::tools
