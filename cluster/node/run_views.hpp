#pragma once

// What the control protocol answers about runs, computed from the store:
// shared by the node (on its worker threads) and by the command line in
// embedded mode (against a data dir), so both print the same things.

#include "actors/services.hpp"
#include "persistence/journal_store.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>

namespace troupe::cluster {

/// Parses a run state name ("running", "paused", ...).
std::optional<persistence::run_state> parse_run_state(const std::string& s);

/// A run index entry as JSON: run_id, workflow, state, created_at_ns,
/// updated_at_ns, reason.
nlohmann::json entry_json(const persistence::run_index_entry& e);

/// A journal event as JSON, with its position `seq` (1-based); `data` and
/// `data2` longer than `cap` bytes are cut and flagged `*_truncated`.
nlohmann::json event_json(const persistence::event_record& e, int64_t seq,
                          size_t cap = 64 << 10);

/// Journal text (outputs, logs) as JSON; text that is not JSON stays text.
nlohmann::json parse_or_text(const std::string& text);

/// The run's index entry plus each node's state, attempt, next retry and
/// last error, rebuilt by replaying its journal. Nothing for unknown runs.
std::optional<nlohmann::json> status_view(persistence::journal_store& store,
                                          actors::spec_cache& specs,
                                          const std::string& run_id);

/// Why `run_id` is not found: "run X: not found (deleted after retention)"
/// when a tombstone says it was deleted, else plainly "no run 'X'". For a
/// deleted run, fills `detail` (when given) with {deleted: true,
/// deleted_at_ns, workflow, state}.
std::string missing_run(persistence::journal_store& store,
                        const std::string& run_id,
                        nlohmann::json* detail = nullptr);

/// Filters for `list_view`.
struct list_filter {
  std::optional<persistence::run_state> state;
  std::string workflow;
  /// Start after this run id (a cursor from a previous page).
  std::string after;
  size_t limit = 50;
  /// Most entries scanned; a page may end early, with a cursor.
  size_t max_scan = 100'000;
  /// Which runs of the store are listed; null: all. A cluster member lists
  /// only the runs of partitions it is a replica of: a copy it no longer
  /// keeps (its partition moved away) is not shown.
  std::function<bool(std::string_view run_id)> keep;
};

/// Why `after` is no cursor `list_view` can continue after: empty when it is
/// one (a run in the index, or one deleted after retention whose tombstone
/// is kept), else a reason naming it. A cursor is the `next` of an earlier
/// page: anything else would list from wherever it happens to sort.
std::string bad_list_cursor(persistence::journal_store& store,
                            const std::string& after);

/// One page of runs, oldest first: {runs, next (a cursor or ""), scanned}.
nlohmann::json list_view(persistence::journal_store& store,
                         const list_filter& filter);

/// The journal from event `after` + 1, at most `limit` events and roughly
/// `max_bytes`: the index entry plus {events, next (0 at the end)}.
std::optional<nlohmann::json> history_view(persistence::journal_store& store,
                                           const std::string& run_id,
                                           uint64_t after, uint64_t limit,
                                           size_t max_bytes);

/// Each ended attempt (of `node` and its map items, or all) with its
/// outcome and captured stdout/stderr tails. Nothing for unknown runs; an
/// error message in `error` for a node without attempts.
std::optional<nlohmann::json> logs_view(persistence::journal_store& store,
                                        const std::string& run_id,
                                        const std::string& node,
                                        size_t max_bytes, std::string& error);

} // namespace troupe::cluster
