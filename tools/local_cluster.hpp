// A cluster started on this machine by a command: its own etcd (one member
// or several) and `troupe node start` members, each a child process with its
// output in a file of a scratch folder. The cluster benchmarks and `troupe
// chaos` run on it. Children die with the command (PR_SET_PDEATHSIG), so a
// command killed with SIGKILL leaves no etcd or member behind.

#pragma once

#include "tools/control_client.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace troupe::tools {

/// Calls `pred` every `step` until it returns true or `limit` passes; gives
/// its last answer.
template<class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds limit,
              std::chrono::milliseconds step = std::chrono::milliseconds{2}) {
  auto until = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (pred())
      return true;
    if (std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(step);
  }
}

/// Returns the text of file `p`, or "" when it cannot be read.
std::string read_text_file(const std::filesystem::path& p);

/// A child process with its output in a file; ended by its PID, and by the
/// kernel when the thread that started it ends. Start children from the
/// command's main thread only.
struct child {
  pid_t pid = -1;
  std::filesystem::path log;

  /// Forks and runs `argv` with `env` added to this environment. `enter`,
  /// when given, runs in the child before exec (e.g. to join a network
  /// namespace); the child exits 126 when it returns false.
  static child spawn(const std::vector<std::string>& argv,
                     const std::map<std::string, std::string>& env,
                     const std::filesystem::path& log,
                     const std::function<bool()>& enter = {});

  /// Whether it still runs (it is reaped when it ended).
  bool alive();

  /// Sends `sig` (no-op once it ended).
  void signal(int sig) const;

  /// SIGKILL, and reaps it.
  void kill();

  /// SIGCONT and SIGTERM, then SIGKILL after `grace`; reaps it.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds{5});
};

/// What a member or etcd member runs as, besides its name.
struct local_host {
  /// The address it listens on: 127.0.0.1, or its network namespace's.
  std::string address = "127.0.0.1";
  /// Joins its network namespace in a forked child; empty on loopback.
  std::function<bool()> enter;
};

class local_cluster {
 public:
  local_cluster() = default;
  local_cluster(const local_cluster&) = delete;
  local_cluster& operator=(const local_cluster&) = delete;

  /// Stops every member and etcd member; deletes `dir` unless `keep`.
  ~local_cluster();

  /// Scratch folder: data dirs, logs.
  std::filesystem::path dir;
  /// This program, run as each member.
  std::string self_exe;
  /// Added to each member's environment (secrets).
  std::map<std::string, std::string> env;
  /// Added to one member's environment, over `env`.
  std::map<std::string, std::map<std::string, std::string>> member_env;
  /// A token the control clients present.
  std::string token;
  /// The cluster's name.
  std::string name = "bench";
  /// Added to every member's command line.
  std::vector<std::string> member_args;
  /// Set on a failure: the logs stay, and their folder is named.
  bool keep = false;
  /// Where members and etcd members run; loopback when absent.
  std::map<std::string, local_host> hosts;

  struct etcd_member {
    child proc;
    std::string client_url;
    std::string peer_url;
  };
  /// The etcd members by name.
  std::map<std::string, etcd_member> etcd;
  /// Every etcd member's client URL, comma-separated (--etcd).
  std::string etcd_urls;

  /// The members by name, their control ports and clients.
  std::map<std::string, child> members;
  std::map<std::string, uint16_t> ports;
  std::map<std::string, std::unique_ptr<control_client>> clients;
  /// Member starts so far (numbers their logs).
  int restarts = 0;

  /// Starts etcd members `names` (one cluster of them) with `binary`.
  void start_etcd(const std::string& binary,
                  const std::vector<std::string>& names = {"bench"});

  /// Starts etcd member `name` again on its data dir.
  void restart_etcd(const std::string& name);

  /// Starts member `name` without waiting for it. With `alone`, a node of
  /// its own (no cluster, no etcd) started with `alone`'s arguments instead
  /// of member_args.
  void spawn_member(const std::string& name,
                    const std::vector<std::string>* alone = nullptr);

  /// Whether member `name`, spawned, is ready (its port is then known); ""
  /// while it starts, else why it will not be (it ended).
  bool member_ready(const std::string& name, std::string& why);

  /// Starts member `name` and waits until it is ready; "" or why not.
  std::string start_member(const std::string& name,
                           const std::vector<std::string>* alone = nullptr);

  /// `name`'s control address, HOST:PORT.
  std::string address(const std::string& name) const;

  /// Sends `request` to member `name`; its answer's body, or null when it
  /// does not answer in `timeout` or answers with an error.
  nlohmann::json call(const std::string& name, const nlohmann::json& request,
                      std::chrono::milliseconds timeout
                      = std::chrono::seconds{5});

  /// `viewer`'s members list, or null when it does not answer.
  nlohmann::json view(const std::string& viewer);

  /// What `viewer` lists about `about`, or null.
  nlohmann::json entry(const std::string& viewer, const std::string& about);

  /// Whether every member lists every other as up and linked.
  bool all_linked();

 private:
  std::vector<std::string> etcd_args(const std::string& name) const;
  std::string etcd_binary_;
  std::string initial_cluster_;
  std::map<std::string, std::filesystem::path> member_logs_;
};

} // namespace troupe::tools
