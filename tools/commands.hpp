#pragma once

#include "config/loader.hpp"
#include "persistence/records.hpp"
#include "runtime/spec/diagnostic.hpp"

#include <nlohmann/json.hpp>

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace troupe::tools {

/// Exit codes shared by every command, one per cause (the README's table
/// lists them).
enum exit_code : int {
  exit_ok = 0,
  /// The command ran and its subject failed (or was not found).
  exit_failed = 1,
  /// Bad flags, config, workflow or inputs, or a data dir that does not
  /// exist or cannot be opened: the command must change.
  exit_bad_input = 2,
  /// The command cannot be carried out now, as given: no node answers, the
  /// node refuses for now (recovering, draining, low on disk, rate limits),
  /// or the data dir or port it needs is held by another process. Later, or
  /// through that process, it may succeed.
  exit_unreachable = 3,
  /// The node refused the token.
  exit_auth = 4,
};

/// Options every command accepts.
struct global_options {
  std::string config_file;
  /// `--set section.key=value` in order.
  std::vector<std::string> sets;
  bool json = false;
  /// The node to talk to (`--node`, else TROUPE_NODE, else control.listen).
  std::string node;
  /// `--token`, else TROUPE_TOKEN.
  std::string token;
  /// `--ca`: the CA of a TLS node's certificate.
  std::string ca_file;
  /// `--wait-ready`: how long to retry requests while the node recovers (a
  /// duration; empty: 30s).
  std::string wait_ready;
};

/// Loads configuration for `g`; prints every problem and returns false when
/// there is one.
bool load_config(const global_options& g,
                 std::vector<config::flag_override> extra,
                 config::settings& out);

/// Like load_config, with `--data-dir` (when not empty) on top, as
/// node.data_dir.
bool load_data_dir_config(const global_options& g, const std::string& data_dir,
                          config::settings& out);

/// Options of `troupe run`.
struct run_options {
  std::string file;
  std::vector<std::string> inputs;
  std::string inputs_file;
  std::string data_dir;
  std::string durability;
  std::string idempotency_key;
  bool resume = false;
};

/// `troupe run FILE` / `troupe run --resume`
int run_run(const global_options& g, const run_options& r);

/// `troupe breakers`: the last known state of each circuit breaker.
int run_breakers(const global_options& g, const std::string& data_dir);

/// `troupe cancel RUN`: needs a running node; embedded nodes take no
/// commands, so for now it says why it cannot.
int run_cancel(const global_options& g, const std::string& run_id,
               const std::string& data_dir);

/// `troupe history RUN --data-dir D`: read from the store.
int run_history(const global_options& g, const std::string& run_id,
                const std::string& data_dir);

/// Options of `troupe gc`.
struct gc_command_options {
  /// `--older-than`: a duration (default: storage.retention).
  std::string older_than;
  bool older_than_given = false;
  /// Collect this data dir directly; empty: ask the node.
  std::string data_dir;
};

/// `troupe gc [--older-than D] [--data-dir DIR]`: deletes finished runs
/// older than D (default storage.retention) now and prints what it removed.
/// With --data-dir it opens the store itself, and exits 3 when another
/// process holds it; without, it asks the node (admin role).
int run_gc(const global_options& g, const gc_command_options& o);

/// Options of `troupe node start`.
struct node_start_options {
  std::string data_dir;
  std::string listen;
  std::string http;
  /// Whether --http was given: `--http ""` turns the endpoint off.
  bool http_given = false;
  std::string name;
  /// --cluster, --etcd (comma-separated URLs), --member.
  std::string cluster;
  std::string etcd;
  std::string member;
};

/// `troupe node start`: a node in the foreground until SIGTERM or SIGINT.
int run_node_start(const global_options& g, const node_start_options& o);

/// Options of the commands that talk to a node.
struct remote_options {
  std::string run_id;
  /// submit
  std::string file;
  std::vector<std::string> inputs;
  std::string inputs_file;
  std::string idempotency_key;
  bool wait = false;
  /// list, cancel --workflow
  std::string state;
  std::string workflow;
  size_t limit = 50;
  std::string after;
  /// logs
  std::string node_id;
  /// cancel in bulk: skip the confirmation
  bool yes = false;
  std::string reason;
  /// status, list, history: read this data dir instead of asking a node.
  std::string data_dir;
};

/// `troupe submit|status|list|watch|result|history|cancel|pause|resume|logs`
/// against a node; `command` names which.
int run_remote(const global_options& g, const std::string& command,
               const remote_options& o);

/// Returns `ns` since the epoch as local "HH:MM:SS.mmm".
std::string clock_time(int64_t ns);

/// One readable line for a journal event of a run that began at `start_ns`.
std::string describe_event(const persistence::event_record& e,
                           int64_t start_ns);

/// A journal event as `troupe history --json` prints it, and back.
nlohmann::json event_to_json(const persistence::event_record& e);
persistence::event_record event_from_json(const nlohmann::json& j);

/// `troupe members [--json]`: the members of the node's cluster as the node
/// knows them.
int run_members(const global_options& g);

/// Prints `rows` (the first one the header) in columns two spaces apart,
/// each as wide as its widest cell; the last column is not padded.
void print_columns(std::ostream& out,
                   const std::vector<std::vector<std::string>>& rows);

/// Options of `troupe drain` and `troupe leave`.
struct leave_options {
  /// The member to drain; empty (`troupe leave`): the node talked to.
  std::string member;
  /// How long to wait until it is gone (a duration; "0s": do not wait).
  std::string wait = "60s";
};

/// `troupe drain MEMBER` / `troupe leave`: the member hands its partitions
/// over, lets its attempts finish and leaves the cluster; waits (bounded)
/// until it is gone.
int run_leave(const global_options& g, const leave_options& o);

/// Options of `troupe partitions`.
struct partitions_options {
  /// One partition's number; empty: all.
  std::string partition;
  /// Also what the member asked applied of each partition it replicates
  /// (to compare replicas).
  bool digest = false;
};

/// `troupe partitions [--json] [PARTITION]`: the partitions of the node's
/// cluster, with leader, epoch, in-sync replicas and lag.
int run_partitions(const global_options& g, const partitions_options& o);

/// Options of `troupe cluster start-local`.
struct cluster_local_options {
  /// Members to start, 1 to 9.
  int nodes = 3;
  /// Where etcd's and the members' data dirs, logs and pid files go.
  std::string dir = "troupe-cluster";
  /// P: etcd on P and P+1, member mK on P+10K to P+10K+2; without it, free
  /// ports.
  int base_port = 0;
  bool base_port_given = false;
  /// The cluster's name (default "local", or the one D holds).
  std::string name;
};

/// `troupe cluster start-local`: an etcd and N members on 127.0.0.1 in the
/// foreground until SIGINT or SIGTERM, everything kept in one folder.
int run_cluster_start_local(const global_options& g,
                            const cluster_local_options& o);

/// `troupe shell`: interactive, or the `;`-separated commands of
/// `commands_text`, or a script on standard input.
int run_shell(const global_options& g, const std::string& commands_text);

/// Options of `troupe bench`.
struct bench_options {
  std::vector<std::string> workloads;
  std::string durability = "machine";
  size_t n = 0;
  bool n_set = false;
  size_t concurrency = 0;
  bool concurrency_set = false;
  bool quick = false;
  /// Where scratch data dirs go (default: the temp folder); for a child
  /// measurement (`one`), its data dir.
  std::string data_dir;
  /// Internal: measure this one workload here and print one JSON line.
  std::string one;
  /// `--cluster N`: the members of the cluster benchmark (checked by it).
  std::string cluster;
  bool cluster_set = false;
  /// `--echo-url URL`: the service http10's steps call; empty: the bench
  /// starts one of its own on 127.0.0.1.
  std::string echo_url;
};

/// `troupe bench [WORKLOAD...]`: runs workloads against an embedded node and
/// prints runs/s, steps/s, latency percentiles, memory and CPU.
int run_bench(const global_options& g, const bench_options& b);

/// `troupe bench cluster-detect`: starts etcd (from PATH) and three members
/// on loopback, and prints how long kill -9 and SIGSTOP of a member take to
/// be seen as down by every other member (median and max of --n, default 5).
int run_bench_cluster_detect(const global_options& g, const bench_options& b);

/// `troupe bench cluster-fan`: starts etcd (from PATH) and three members and
/// measures fanexec10 (exec steps placed with `spread`) submitted to one of
/// them, beside the same workload on an embedded node in the same run.
int run_bench_cluster_fan(const global_options& g, const bench_options& b);

/// `troupe bench --cluster N`: starts etcd (from PATH) and N members, and
/// prints in one report what cluster-fan and cluster-detect measure, on
/// that one cluster (5 trials of each kind of failure).
int run_bench_cluster(const global_options& g, const bench_options& b);

/// `errors` as a JSON array of {path, line, column, code, message}: how
/// `validate --json` and `chaos --json` give the problems of a file.
nlohmann::json diagnostics_json(const runtime::diagnostics& errors);

/// `troupe validate FILE...`
int run_validate(const global_options& g,
                 const std::vector<std::string>& files);

/// Options of `troupe chaos`.
struct chaos_options {
  std::string scenario;
  /// `--seed`; the default seed when not given.
  std::optional<uint64_t> seed;
  bool dry_run = false;
  /// `--report FILE`: the report as JSON, written there too.
  std::string report;
  /// `--break HOOK`: a fault hook that breaks a promise, armed on every
  /// member at the start, to see the invariant it breaks fail (a check of
  /// the checks): `rerun_completed`.
  std::string break_hook;
  /// `--loopback`: members on 127.0.0.1 even as root (no network
  /// namespaces; no partition faults).
  bool loopback = false;
  /// `--target ADDR`: a running cluster (a member's control address)
  /// instead of a local one; `--ledger-dir`: the folder its members write
  /// their ledgers in (TROUPE_CHAOS_LEDGER), when they do.
  std::string target;
  std::string ledger_dir;
};

/// `troupe chaos SCENARIO`: validates a scenario, then prints its schedule
/// (`--dry-run`) or runs it and reports (exit 0 when every invariant holds,
/// 1 when one is violated).
int run_chaos(const global_options& g, const chaos_options& c);

/// `troupe config show`
int run_config_show(const global_options& g);

/// `troupe config keys`
int run_config_keys(const global_options& g);

/// `troupe kinds`
int run_kinds(const global_options& g);

/// `troupe token issue --role R --subject S [--ttl D]`: prints a signed
/// bearer token (with --json, also its subject, role and expiry). The secret
/// is auth.secret; an empty `ttl` means auth.token_ttl.
int run_token_issue(const global_options& g, const std::string& role,
                    const std::string& subject, const std::string& ttl);

} // namespace troupe::tools
