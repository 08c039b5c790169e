// The `troupe` command: one executable, one subcommand per job.

#include "config/suggest.hpp"
#include "tools/commands.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

using namespace troupe::tools;

namespace {

/// Returns a message naming a mistyped command, which CLI11 reports only as
/// "A subcommand is required", or an empty string.
std::string find_unknown_command(CLI::App& app, int argc, char** argv) {
  CLI::App* current = &app;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.starts_with("-")) {
      // Skip the value of options that take one.
      if ((arg == "--config" || arg == "--set") && i + 1 < argc)
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

  std::string history_run, history_dir;
  auto* history = app.add_subcommand("history", "Print a run's journal");
  history->add_option("run", history_run, "Run id")->required();
  history->add_option("--data-dir", history_dir,
                      "Where runs are journaled (node.data_dir)");

  std::string breakers_dir;
  auto* breakers = app.add_subcommand(
    "breakers", "Show the last known state of each circuit breaker");
  breakers->add_option("--data-dir", breakers_dir,
                       "Where runs are journaled (node.data_dir)");

  std::string cancel_run, cancel_dir;
  auto* cancel
    = app.add_subcommand("cancel", "Cancel a run (needs a running node)");
  cancel->add_option("run", cancel_run, "Run id")->required();
  cancel->add_option("--data-dir", cancel_dir,
                     "Where runs are journaled (node.data_dir)");

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

  try {
    app.parse(argc, argv);
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
    if (*history)
      return run_history(g, history_run, history_dir);
    if (*breakers)
      return run_breakers(g, breakers_dir);
    if (*cancel)
      return run_cancel(g, cancel_run, cancel_dir);
    if (*validate)
      return run_validate(g, files);
    if (*config_show)
      return run_config_show(g);
    if (*config_keys)
      return run_config_keys(g);
    if (*kinds)
      return run_kinds(g);
    if (*token_issue)
      return run_token_issue(g, token_role, token_subject, token_ttl);
  } catch (const std::exception& e) {
    std::cerr << "troupe: internal error: " << e.what() << "\n";
    return exit_failed;
  }
  return exit_bad_input;
}
