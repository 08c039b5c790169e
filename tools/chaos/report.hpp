#pragma once

// What a chaos run found: the ledger the members wrote, the workload's
// submissions, the faults as injected, and the invariants checked over
// them; and the report made of it, as text and as JSON. Everything here is
// computed from data the runner gathered, so each check can be tested
// without a cluster.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::chaos {

/// One line of a member's ledger (TROUPE_CHAOS_LEDGER):
/// `<ns> <member> <event> <run> <node> <attempt> <partition> <epoch>`, `-`
/// where a field does not apply (read as "" or -1).
struct ledger_line {
  /// CLOCK_MONOTONIC nanoseconds.
  int64_t ns = 0;
  std::string member;
  /// start (an attempt begins), done (a node's completion is journaled),
  /// lead (the member leads `partition` with `epoch`), resign (it stopped).
  std::string event;
  std::string run;
  std::string node;
  int64_t attempt = -1;
  int64_t partition = -1;
  int64_t epoch = -1;
};

/// Parses a ledger's text. A line that does not parse (cut by a kill in the
/// middle of a write, at the end) is skipped and counted in `bad`.
std::vector<ledger_line> parse_ledger(std::string_view text,
                                      size_t* bad = nullptr);

/// One run the workload submitted (or tried to).
struct submission {
  /// 1-based, in submission order.
  int64_t index = 0;
  std::string key;
  std::string workflow;
  /// The run that answered; empty when none did.
  std::string run_id;
  /// Every run id an answer for this key named (one, when all is well).
  std::set<std::string> ids_seen;
  /// When an answer first named the run (steady ns), 0 if none did.
  int64_t accepted_ns = 0;
  /// Submissions sent for the key.
  int tries = 0;
  /// The last refusal's code, when no answer named a run.
  std::string refused;
  /// Whether a refusal may have been acted on (a timeout, a lost
  /// connection): the runner then sends the key again once the faults end.
  bool ambiguous = false;
  /// The run's state at the end (status), "" when never asked, "unknown"
  /// when no member knew it.
  std::string final_state;
  /// When the runner first saw it final (steady ns), 0 if never.
  int64_t ended_ns = 0;
};

/// One fault as the runner injected it.
struct fault_record {
  /// From the scenario's start.
  int64_t at_ms = 0;
  std::string action;
  /// The target as written (`leader_of: 0`) and as resolved (`m2`).
  std::string target;
  std::string resolved;
  std::string params;
  /// "injected", or why not ("skipped: ...").
  std::string outcome;
  /// Steady ns of the injection; detection and resumption, when seen.
  int64_t injected_ns = 0;
  std::optional<int64_t> detected_ns;
  std::optional<int64_t> resumed_ns;
  /// What ended it (a restart, SIGCONT, a heal), and when.
  std::string ended;
  std::optional<int64_t> ended_ns;
  /// Partitions the target led when the fault fired.
  std::vector<int64_t> partitions;
  /// Runs in flight in those partitions (all runs in flight for faults
  /// without a member) when the fault fired.
  std::vector<std::string> affected;
  /// Attempts beyond the first of a node, among the affected runs, that
  /// started after the fault.
  int64_t retries = 0;
};

/// The verdict of one invariant.
struct invariant_result {
  std::string name;
  /// What holds when it passes.
  std::string claim;
  enum class verdict { pass, fail, not_checked } outcome = verdict::pass;
  /// The runs (or partitions) that break it, each with what was seen.
  std::vector<std::pair<std::string, std::string>> offenders;
  /// How much was checked, or why it was not.
  std::string detail;
};

std::string_view to_string(invariant_result::verdict v);

/// Every accepted run reached a final state by the deadline.
invariant_result check_final(const std::vector<submission>& subs);

/// No accepted run was lost: every member asked knew it.
invariant_result check_not_lost(const std::vector<submission>& subs);

/// No completed node was executed again: no `start` of a node of an
/// accepted run after that node's `done`, and no node `done` twice.
/// What the journals say of a run's node: the attempt that completed it,
/// and how many `node_completed` events it has.
struct journal_completion {
  int64_t attempt = 0;
  int count = 0;
};

/// (run, node) to what its run's journal says of its completion.
using journal_completions
  = std::map<std::pair<std::string, std::string>, journal_completion>;

/// `journals`, when given, also checks, whatever the ledger's `done` lines
/// (a member killed between a completion's ack and its `done` line, or a
/// completion committed while its leader was cut off, leaves none): no
/// `start` of a node with an attempt above the one its journal completed
/// it with, and no node completed twice in its journal.
invariant_result check_no_rerun(const std::vector<ledger_line>& ledger,
                                const std::vector<submission>& subs,
                                const journal_completions* journals = nullptr);

/// Each idempotency key made one run: every answer for a key named the
/// same run, sending each key again at the end named it too (`again`: key
/// to the run it named, "" when it failed), and the cluster lists no run
/// that no key accounts for (`listed`: every run id the cluster lists, or
/// nothing when the list could not be had whole).
invariant_result
check_one_run_per_key(const std::vector<submission>& subs,
                      const std::map<std::string, std::string>& again,
                      const std::optional<std::set<std::string>>& listed);

/// The replicas' copies of each partition are identical: `digests` is, per
/// partition, each replica's digest of what it applied. Partitions whose
/// replicas did not all answer are in `unreachable`.
invariant_result check_copies(
  const std::map<int64_t, std::map<std::string, nlohmann::json>>& digests,
  const std::set<int64_t>& unreachable, bool settled);

/// No attempt ran on a member that was fenced at that moment: no `start` by
/// a member under an epoch of a partition after another member logged
/// `lead` of that partition with a newer epoch. Attempts run for another
/// member (remote steps) are not the executing member's to fence.
invariant_result check_fencing(const std::vector<ledger_line>& ledger);

/// The whole report.
struct report {
  std::string scenario;
  std::string file;
  uint64_t seed = 0;
  int members = 0;
  int etcd_members = 0;
  bool namespaces = false;
  std::string target;
  int64_t runs_planned = 0;
  int64_t workload_ms = 0;
  int64_t deadline_ms = 0;
  int64_t elapsed_ms = 0;
  std::vector<fault_record> faults;
  std::vector<submission> runs;
  /// Attempts beyond the first of a node, over every run.
  int64_t retries = 0;
  size_t ledger_lines = 0;
  size_t ledger_bad_lines = 0;
  std::vector<invariant_result> invariants;
  /// Where the members' logs were kept, when they were.
  std::string kept;

  /// Whether no invariant failed.
  bool passed() const;
};

/// Attempts beyond the first of each node of `runs` (all when empty) that
/// started at or after `from_ns`.
int64_t count_retries(const std::vector<ledger_line>& ledger,
                      const std::set<std::string>& runs, int64_t from_ns = 0);

nlohmann::json to_json(const report& r, int64_t t0_ns);
std::string to_text(const report& r, int64_t t0_ns);

} // namespace troupe::chaos
