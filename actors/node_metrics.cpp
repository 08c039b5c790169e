#include "actors/node_metrics.hpp"

#include "runtime/metrics/buckets.hpp"

namespace troupe::actors {

namespace m = runtime::metrics;

node_metrics::node_metrics(m::registry& r)
    : registry(r),
      attempts(r.add_counter("troupe_attempts_total",
                             "Attempts that ended, by node kind and outcome.")),
      retries(r.add_counter("troupe_retries_total",
                            "Attempts after a node's first, by node kind.")),
      attempt_seconds(
        r.add_histogram("troupe_attempt_duration_seconds",
                        "Time from an attempt's start to its result.")),
      breaker_state(r.add_gauge("troupe_circuit_breaker_state",
                                "Circuit breaker state by key: 0 closed, 1 "
                                "half-open, 2 open.")),
      mailbox_depth(
        r.add_histogram("troupe_run_mailbox_depth",
                        "Messages waiting in a run actor's mailbox when it "
                        "takes an attempt's result.",
                        m::exponential_buckets(1, 4, 8))
          .with({})),
      commit_seconds(r.add_histogram("troupe_journal_commit_seconds",
                                     "Duration of one group commit's write, "
                                     "its fsync included under durability "
                                     "machine.")
                       .with({})),
      append_seconds(r.add_histogram("troupe_journal_append_seconds",
                                     "Time from a run's journal append until "
                                     "it is durable, queueing included.")
                       .with({})),
      commit_appends(r.add_histogram("troupe_journal_commit_appends",
                                     "Appends written by one group commit.",
                                     m::exponential_buckets(1, 2, 11))
                       .with({})),
      fenced_waits(r.add_counter("troupe_fenced_waits_total",
                                 "Attempts that waited to start because this "
                                 "cluster member was fenced (not joined).")
                     .with({})) {}

const node_metrics::kind_series&
node_metrics::of_kind(const std::string& kind) {
  std::lock_guard guard{kinds_mtx_};
  auto i = kinds_.find(kind);
  if (i == kinds_.end())
    i = kinds_
          .emplace(
            kind,
            kind_series{&attempts.with({{"kind", kind}, {"outcome", "ok"}}),
                        &attempts.with({{"kind", kind}, {"outcome", "failed"}}),
                        &retries.with({{"kind", kind}}),
                        &attempt_seconds.with({{"kind", kind}})})
          .first;
  return i->second;
}

} // namespace troupe::actors
