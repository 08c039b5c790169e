#pragma once

#include <string>
#include <vector>

namespace troupe::runtime {

/// One problem found in a workflow file, located by its path in the document
/// (`nodes.charge.retry.max_backoff`) and, where known, its line and column.
struct diagnostic {
  /// Dotted path to the offending value; empty for the whole file.
  std::string path;
  /// 1-based line and column; 0 when unknown.
  int line = 0;
  int column = 0;
  /// A stable machine-readable class, e.g. "unknown_field" or "cycle".
  std::string code;
  std::string message;

  /// Returns "FILE:LINE:COL: PATH: MESSAGE" (unknown parts left out).
  std::string to_string(const std::string& file) const;
};

using diagnostics = std::vector<diagnostic>;

} // namespace troupe::runtime
