#pragma once

#include "runtime/metrics/registry.hpp"

#include <mutex>
#include <string>
#include <unordered_map>

namespace troupe::actors {

/// The metrics the actors of a node keep, registered once per node.
struct node_metrics {
  explicit node_metrics(runtime::metrics::registry& r);

  runtime::metrics::registry& registry;
  /// troupe_attempts_total{kind, outcome}: ended attempts by node kind.
  runtime::metrics::family<runtime::metrics::counter>& attempts;
  /// troupe_retries_total{kind}: attempts after the first.
  runtime::metrics::family<runtime::metrics::counter>& retries;
  /// troupe_attempt_duration_seconds{kind}: start to result.
  runtime::metrics::family<runtime::metrics::histogram>& attempt_seconds;
  /// troupe_circuit_breaker_state{key}: 0 closed, 1 half-open, 2 open.
  runtime::metrics::family<runtime::metrics::gauge>& breaker_state;
  /// troupe_run_mailbox_depth: a run actor's mailbox when it takes a result.
  runtime::metrics::histogram& mailbox_depth;
  /// troupe_journal_commit_seconds and troupe_journal_commit_appends: each
  /// group commit's write (with its fsync under durability = machine) and
  /// size.
  runtime::metrics::histogram& commit_seconds;
  /// troupe_journal_append_seconds: from a run's append until it is durable
  /// (queueing for the group commit included).
  runtime::metrics::histogram& append_seconds;
  runtime::metrics::histogram& commit_appends;
  /// troupe_fenced_waits_total: attempts that had to wait because this
  /// cluster member was fenced (not joined to its cluster).
  runtime::metrics::counter& fenced_waits;

  /// The series of one node kind, looked up once: a run actor updates them
  /// on every attempt, and finding a series by its labels takes a sorted
  /// label set and a map lookup.
  struct kind_series {
    runtime::metrics::counter* ok;
    runtime::metrics::counter* failed;
    runtime::metrics::counter* retries;
    runtime::metrics::histogram* seconds;
  };
  const kind_series& of_kind(const std::string& kind);

 private:
  std::mutex kinds_mtx_;
  std::unordered_map<std::string, kind_series> kinds_;
};

} // namespace troupe::actors
