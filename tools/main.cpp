// The `troupe` command: one executable, one subcommand per job.

#include "config/duration.hpp"
#include "config/suggest.hpp"
#include "tools/commands.hpp"

#include <CLI/CLI.hpp>

#include <iostream>
#include <map>

using namespace troupe::tools;

// jemalloc's settings (the troupe binary links it; other allocators ignore
// this): give freed memory back to the system from a background thread, so
// that an idle node shrinks.
extern "C" {
const char* malloc_conf = "background_thread:true";
}

namespace {

/// Returns a message naming a mistyped command, which CLI11 reports only as
/// "A subcommand is required", or an empty string.
std::string find_unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with("-")) {
      // Skip the value of options that take one.
      if ((arg == "--config" || arg == "--set" || arg == "--node"
           || arg == "--token" || arg == "--ca" || arg == "--wait-ready")
          && i + 1 < argc)
        ++i;
      continue;
    }
    std::vector<std::string> names;
    for (auto* sub : current->get_subcommands({}))
      names.push_back(sub->get_name());
    if (names.empty())
      return {};
    if (std::find(names.begin(), names.end(), arg) != names.end()) {
      current = current->get_subcommand(arg);
      continue;
    }
    auto parent = current == &app ? std::string{} : " " + current->get_name();
    return "unknown command 'troupe" + parent + " " + arg
           + "'; commands: " + troupe::config::join(names)
           + troupe::config::did_you_mean(arg, names);
  }
  return {};
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"Troupe: durable workflows on supervised actors", "troupe"};
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", std::string{"troupe 0.1.0"});

  global_options g;
  app.add_option("--config", g.config_file,
                 "Configuration file layered over config/<env>.toml");
  app.add_option("--set", g.sets,
                 "Override one setting: --set section.key=value (repeatable)");
  app.add_flag("--json", g.json, "Machine-readable output");

  std::vector<std::string> files;
  auto* validate = app.add_subcommand(
    "validate", "Check workflow files without running them");
  validate->add_option("files", files, "Workflow files (YAML or JSON)")
    ->required();

  chaos_options chaos;
  auto* chaos_cmd = app.add_subcommand(
    "chaos", "Run a failover scenario on a local cluster and check that no "
             "run was lost or ran a completed step again");
  chaos_cmd->add_option("scenario", chaos.scenario, "Scenario file (YAML)")
    ->required();
  chaos_cmd
    ->add_option("--seed", chaos.seed, "Seed of the schedule's random choices")
    ->check(CLI::Validator(
      [](std::string& v) {
        return !v.empty()
                   && v.find_first_not_of("0123456789") == std::string::npos
                 ? std::string{}
                 : "--seed must be a whole number from 0, not '" + v + "'";
      },
      "UINT"));
  chaos_cmd->add_flag("--dry-run", chaos.dry_run,
                      "Validate and print the schedule without running");
  chaos_cmd->add_option("--report", chaos.report,
                        "Write the report (JSON) to this file too");
  chaos_cmd
    ->add_option("--break", chaos.break_hook,
                 "Arm a fault hook that breaks a promise on every member, to "
                 "see its invariant fail: rerun_completed")
    ->check(CLI::IsMember({"rerun_completed"}));
  chaos_cmd->add_flag("--loopback", chaos.loopback,
                      "Run the members on 127.0.0.1 even as root, without "
                      "network namespaces (no partition faults)");
  chaos_cmd->add_option("--target", chaos.target,
                        "A running cluster to use (a member's HOST:PORT, "
                        "with --token) instead of starting one");
  chaos_cmd->add_option("--ledger-dir", chaos.ledger_dir,
                        "With --target: the folder where its members write "
                        "their ledgers (TROUPE_CHAOS_LEDGER)");

  auto* config = app.add_subcommand("config", "Inspect configuration");
  config->require_subcommand(1);
  auto* config_show = config->add_subcommand(
    "show", "Print the effective configuration and where each value came from");
  auto* config_keys = config->add_subcommand(
    "keys", "List every configuration key with its type, default and limits");

  run_options run;
  auto* run_cmd = app.add_subcommand(
    "run", "Run a workflow on an embedded node and print its outputs");
  run_cmd->add_option("file", run.file, "Workflow file (YAML or JSON)");
  run_cmd->add_option("--input", run.inputs,
                      "An input: --input name=value (repeatable)");
  run_cmd->add_option("--inputs-file", run.inputs_file,
                      "Inputs as a JSON or YAML mapping");
  run_cmd->add_option("--data-dir", run.data_dir,
                      "Where runs are journaled (node.data_dir)");
  run_cmd->add_option("--durability", run.durability,
                      "process or machine (storage.durability)");
  run_cmd->add_flag("--resume", run.resume,
                    "Only finish the unfinished runs of the data dir");
  run_cmd->add_option("--idempotency-key", run.idempotency_key,
                      "Submit at most once per key: a key already used "
                      "gives that run's result instead of a new run");

  std::string breakers_dir;
  auto* breakers = app.add_subcommand(
    "breakers", "Show the last known state of each circuit breaker");
  breakers->add_option("--data-dir", breakers_dir,
                       "Where runs are journaled (node.data_dir)");

  // -- a node and the commands that drive it ---------------------------------
  app.add_option("--node", g.node,
                 "HOST:PORT (or tls://HOST:PORT) of the node to talk to "
                 "(TROUPE_NODE; default control.listen)");
  app.add_option("--token", g.token, "Bearer token (TROUPE_TOKEN)");
  app.add_option("--ca", g.ca_file, "CA certificate of a TLS node (PEM)");
  app
    .add_option("--wait-ready", g.wait_ready,
                "How long to retry while the node recovers, e.g. 10s "
                "(default 30s; then exit 3)")
    ->check(CLI::Validator(
      [](std::string& v) {
        std::string error;
        return troupe::config::parse_duration(v, &error) ? std::string{}
                                                         : error;
      },
      "DURATION"));

  node_start_options node_start;
  auto* node = app.add_subcommand("node", "Run a node");
  node->require_subcommand(1);
  auto* node_start_cmd = node->add_subcommand(
    "start", "Run a node in the foreground until SIGTERM or SIGINT");
  node_start_cmd->add_option("--data-dir", node_start.data_dir,
                             "Where runs are journaled (node.data_dir)");
  node_start_cmd->add_option("--listen", node_start.listen,
                             "HOST:PORT of the control protocol "
                             "(control.listen)");
  node_start_cmd->add_option("--http", node_start.http,
                             "HOST:PORT of health and metrics (http.listen)");
  node_start_cmd->add_option("--name", node_start.name,
                             "The node's name (node.name)");
  node_start_cmd->add_option("--cluster", node_start.cluster,
                             "Join this cluster through etcd (cluster.name)");
  node_start_cmd->add_option("--etcd", node_start.etcd,
                             "etcd URLs, comma-separated: "
                             "http://HOST:PORT[,...] or https:// "
                             "(cluster.etcd)");
  node_start_cmd->add_option("--member", node_start.member,
                             "This member's name in the cluster "
                             "(cluster.member; default HOSTNAME-PORT)");

  auto* members_cmd
    = app.add_subcommand("members", "List the members of the node's cluster");
  leave_options drain;
  auto* drain_cmd = app.add_subcommand(
    "drain", "Make a member of the node's cluster hand its partitions over, "
             "finish its attempts and leave");
  drain_cmd->add_option("member", drain.member, "The member's name")
    ->required();
  drain_cmd->add_option("--wait", drain.wait,
                        "How long to wait until it has left (default 60s; 0s: "
                        "do not wait)");
  leave_options leave;
  auto* leave_cmd = app.add_subcommand(
    "leave", "Make the member the CLI talks to hand its partitions over, "
             "finish its attempts and leave the cluster");
  leave_cmd->add_option("--wait", leave.wait,
                        "How long to wait until it has left (default 60s; 0s: "
                        "do not wait)");
  partitions_options partitions;
  auto* partitions_cmd = app.add_subcommand(
    "partitions",
    "List the partitions of the node's cluster: leader, epoch, in-sync "
    "replicas, lag");
  partitions_cmd->add_option("partition", partitions.partition,
                             "Only this partition (a number)");
  partitions_cmd->add_flag("--digest", partitions.digest,
                           "Also a digest of what the member applied of each "
                           "partition it replicates: replicas that agree "
                           "show the same digest at the same offset");

  cluster_local_options cluster_local;
  auto* cluster_cmd = app.add_subcommand("cluster", "Run a cluster");
  cluster_cmd->require_subcommand(1);
  auto* start_local_cmd = cluster_cmd->add_subcommand(
    "start-local", "Run etcd and N members on 127.0.0.1 in the foreground "
                   "until SIGINT or SIGTERM");
  start_local_cmd->add_option("--nodes", cluster_local.nodes,
                              "How many members, 1 to 9 (default 3)");
  start_local_cmd->add_option(
    "--dir", cluster_local.dir,
    "Where data dirs, logs, pid files and env go (default ./troupe-cluster); "
    "kept for the next start");
  auto* base_port_opt = start_local_cmd->add_option(
    "--base-port", cluster_local.base_port,
    "etcd on P and P+1, member mK on P+10K to P+10K+2 (default: free ports)");
  start_local_cmd->add_option("--name", cluster_local.name,
                              "The cluster's name (default local)");

  remote_options ro;
  std::map<std::string, CLI::App*> remote_cmds;
  auto add_remote = [&](const char* name, const char* help) {
    auto* c = app.add_subcommand(name, help);
    remote_cmds[name] = c;
    return c;
  };
  auto run_arg = [&](CLI::App* c, bool required = true) {
    auto* opt = c->add_option("run", ro.run_id, "Run id");
    if (required)
      opt->required();
  };
  auto data_dir_arg = [&](CLI::App* c) {
    c->add_option("--data-dir", ro.data_dir,
                  "Read this data dir instead of asking a node");
  };
  auto* submit = add_remote("submit", "Submit a workflow run to a node");
  submit->add_option("file", ro.file, "Workflow file (YAML or JSON)")
    ->required();
  submit->add_option("--input", ro.inputs,
                     "An input: --input name=value (repeatable)");
  submit->add_option("--inputs-file", ro.inputs_file,
                     "Inputs as a JSON or YAML mapping");
  submit->add_option("--idempotency-key", ro.idempotency_key,
                     "Submit at most once per key");
  submit->add_flag("--wait", ro.wait, "Follow the run and print its outputs");
  auto* status = add_remote("status", "Show a run and its nodes");
  run_arg(status);
  data_dir_arg(status);
  auto* list = add_remote("list", "List runs, oldest first, a page at a time");
  list->add_option("--state", ro.state,
                   "running, paused, completed, failed or cancelled");
  list->add_option("--workflow", ro.workflow, "Only runs of this workflow");
  list->add_option("--limit", ro.limit, "Runs per page (1 to 1000)");
  list->add_option("--after", ro.after, "Continue after this run id");
  data_dir_arg(list);
  run_arg(add_remote("watch", "Follow a run until it ends"));
  run_arg(add_remote("result", "Print a finished run's outputs"));
  auto* history = add_remote("history", "Print a run's journal as a timeline");
  run_arg(history);
  data_dir_arg(history);
  auto* cancel = add_remote(
    "cancel", "Cancel a run, or in bulk with --state (and --workflow)");
  run_arg(cancel, false);
  cancel->add_option("--workflow", ro.workflow, "Cancel this workflow's runs");
  cancel->add_option("--state", ro.state, "running or paused");
  cancel->add_flag("--yes", ro.yes, "Cancel in bulk without asking");
  cancel->add_option("--reason", ro.reason, "Recorded with the cancellation");
  cancel->add_option("--data-dir", ro.data_dir,
                     "Where runs are journaled (node.data_dir)");
  auto* pause
    = add_remote("pause", "Start no new attempts of a run until resumed");
  run_arg(pause);
  pause->add_option("--reason", ro.reason, "Recorded with the pause");
  run_arg(add_remote("resume", "Resume a paused run"));
  auto* logs
    = add_remote("logs", "Show the captured output of a run's attempts");
  run_arg(logs);
  logs->add_option("--node", ro.node_id, "Only this node's attempts");
  data_dir_arg(logs);

  gc_command_options gc_opts;
  auto* gc_cmd = app.add_subcommand(
    "gc", "Delete finished runs past their retention now and print what was "
          "removed");
  auto* gc_older = gc_cmd->add_option(
    "--older-than", gc_opts.older_than,
    "Delete runs that finished more than this long ago, e.g. 30d "
    "(default storage.retention)");
  gc_cmd->add_option("--data-dir", gc_opts.data_dir,
                     "Collect this data dir directly (no node may run on "
                     "it); without it, ask the node");

  std::string shell_commands;
  auto* shell_cmd = app.add_subcommand(
    "shell", "Inspect a running node's actors, runs and breakers");
  shell_cmd->add_option("-c,--command", shell_commands,
                        "Run these commands (separated by ';') and exit");

  auto* kinds
    = app.add_subcommand("kinds", "List the node kinds and their parameters");

  std::string token_role, token_subject, token_ttl;
  auto* token = app.add_subcommand("token", "Mint bearer tokens");
  token->require_subcommand(1);
  auto* token_issue = token->add_subcommand(
    "issue", "Print a token signed with auth.secret (TROUPE_AUTH_SECRET)");
  token_issue->add_option("--role", token_role, "viewer, operator or admin")
    ->required();
  token_issue
    ->add_option("--subject", token_subject,
                 "Who holds the token, e.g. ci@example.org")
    ->required();
  token_issue->add_option("--ttl", token_ttl,
                          "Lifetime such as 1h or 30d (auth.token_ttl)");

  bench_options bench;
  auto* bench_cmd = app.add_subcommand(
    "bench", "Run benchmark workloads against an embedded node and print "
             "throughput, latency, memory and CPU");
  bench_cmd->add_option(
    "workloads", bench.workloads,
    "seq10 seq10c1 http10 fan10 exec10 fanexec10 sleepers recover idle "
    "history timeouts chain (default: all); viewers (alone, against "
    "--node); cluster-detect and cluster-fan (alone: etcd from PATH and 3 "
    "members)");
  bench_cmd
    ->add_option("--durability", bench.durability,
                 "machine (fsync each group commit), process or both")
    ->capture_default_str();
  auto* bench_n = bench_cmd->add_option("--n", bench.n,
                                        "Runs per workload, nodes for "
                                        "chain (default: the workload's "
                                        "own)");
  auto* bench_c = bench_cmd->add_option("--concurrency", bench.concurrency,
                                        "Runs in flight at once");
  bench_cmd->add_flag("--quick", bench.quick,
                      "Small sizes, for a smoke run of a few seconds");
  bench_cmd->add_option("--data-dir", bench.data_dir,
                        "Where scratch data dirs are made (default: the "
                        "temp folder); removed after each workload");
  auto* bench_cluster = bench_cmd->add_option(
    "--cluster", bench.cluster,
    "Start etcd (from PATH) and N members (2 to 9), and print fanexec10 "
    "with spread beside embedded, replicated seq10 and http10, failover, "
    "and kill -9 and SIGSTOP detection times (parts: fanexec10 seq10 "
    "http10 failover detect; default: all)");
  bench_cmd->add_option("--echo-url", bench.echo_url,
                        "The service http10's steps GET (with ?i=1..10); "
                        "default: one the bench starts on 127.0.0.1");
  bench_cmd->add_option("--one", bench.one)->group("");

  try {
    app.parse(argc, argv);
    bench.n_set = bench_n->count() > 0;
    bench.concurrency_set = bench_c->count() > 0;
    bench.cluster_set = bench_cluster->count() > 0;
    gc_opts.older_than_given = gc_older->count() > 0;
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    auto unknown = find_unknown_command(app, argc, argv);
    std::cerr << "troupe: " << (unknown.empty() ? e.what() : unknown) << "\n"
              << "Run 'troupe --help' for usage.\n";
    return exit_bad_input;
  }

  try {
    if (*run_cmd)
      return run_run(g, run);
    if (*breakers)
      return run_breakers(g, breakers_dir);
    if (*node_start_cmd) {
      node_start.http_given = node_start_cmd->count("--http") > 0;
      return run_node_start(g, node_start);
    }
    if (*shell_cmd)
      return run_shell(g, shell_commands);
    if (*members_cmd)
      return run_members(g);
    if (*partitions_cmd)
      return run_partitions(g, partitions);
    if (*drain_cmd)
      return run_leave(g, drain);
    if (*leave_cmd)
      return run_leave(g, leave);
    if (*start_local_cmd) {
      cluster_local.base_port_given = base_port_opt->count() > 0;
      return run_cluster_start_local(g, cluster_local);
    }
    if (*gc_cmd)
      return run_gc(g, gc_opts);
    for (auto& [name, cmd] : remote_cmds)
      if (*cmd)
        return run_remote(g, name, ro);
    if (*validate)
      return run_validate(g, files);
    if (*chaos_cmd)
      return run_chaos(g, chaos);
    if (*config_show)
      return run_config_show(g);
    if (*config_keys)
      return run_config_keys(g);
    if (*kinds)
      return run_kinds(g);
    if (*bench_cmd)
      return run_bench(g, bench);
    if (*token_issue)
      return run_token_issue(g, token_role, token_subject, token_ttl);
  } catch (const std::exception& e) {
    std::cerr << "troupe: internal error: " << e.what() << "\n";
    return exit_failed;
  }
  return exit_bad_input;
}
