#pragma once

#include "config/loader.hpp"

#include <string>
#include <vector>

namespace troupe::tools {

/// Exit codes shared by every command.
enum exit_code : int {
  exit_ok = 0,
  exit_failed = 1,      ///< The command ran and its subject failed.
  exit_bad_input = 2,   ///< Bad flags, config or workflow files.
  exit_unreachable = 3, ///< No node to carry out the command.
};

/// Options every command accepts.
struct global_options {
  std::string config_file;
  /// `--set section.key=value` in order.
  std::vector<std::string> sets;
  bool json = false;
};

/// Loads configuration for `g`; prints every problem and returns false when
/// there is one.
bool load_config(const global_options& g,
                 std::vector<config::flag_override> extra,
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

/// `troupe history RUN`
int run_history(const global_options& g, const std::string& run_id,
                const std::string& data_dir);

/// `troupe validate FILE...`
int run_validate(const global_options& g,
                 const std::vector<std::string>& files);

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
