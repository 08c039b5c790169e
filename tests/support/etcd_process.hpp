#pragma once

// A real single-member etcd for tests: started on free 127.0.0.1 ports with
// a data dir in a temp folder and tuned timings (heartbeat 50 ms, election
// 500 ms, so a 1 s lease TTL is granted), ready once its /health says so,
// killed by PID when the object goes away. A missing `etcd` binary is a
// failure that names the way out (tools/bootstrap.sh installs it), never a
// skipped test. With etcd_options it serves its clients over TLS
// (--cert-file, --key-file), optionally checking their certificates
// (--trusted-ca-file, --client-cert-auth); etcdctl() runs etcdctl against
// it (to add users and enable auth, say).

#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <unistd.h>
#include <vector>

namespace troupe::test {

/// How an etcd_process serves its clients; the default is plain HTTP.
struct etcd_options {
  /// Server certificate and key: clients use https://.
  std::string cert_file;
  std::string key_file;
  /// CA of client certificates (--trusted-ca-file); with client_cert_auth,
  /// a client must show a certificate it signed.
  std::string trusted_ca_file;
  bool client_cert_auth = false;
  /// What etcdctl (the readiness check, etcdctl()) uses: the CA of the
  /// server's certificate and a client certificate.
  std::string client_ca;
  std::string client_cert;
  std::string client_key;
  /// --auth-token-ttl in seconds (simple tokens); 0: etcd's default.
  int auth_token_ttl = 0;
  /// The address etcd listens on and advertises.
  std::string host = "127.0.0.1";
  /// What etcd and etcdctl run under, before their argv (`ip netns exec
  /// NS`, say); with one, readiness is asked through etcdctl.
  std::vector<std::string> prefix;

  /// An etcd over https:// whose clients must show a certificate `ca`
  /// signed: its own `cert` and `key` (signed by `ca` too), and etcdctl's
  /// `client_cert` and `client_key`.
  static etcd_options mutual_tls(const std::string& ca, const std::string& cert,
                                 const std::string& key,
                                 const std::string& client_cert,
                                 const std::string& client_key) {
    etcd_options o;
    o.cert_file = cert;
    o.key_file = key;
    o.trusted_ca_file = ca;
    o.client_cert_auth = true;
    o.client_ca = ca;
    o.client_cert = client_cert;
    o.client_key = client_key;
    return o;
  }
};

class etcd_process {
 public:
  /// Starts etcd; check ok() (and error()) before using it.
  explicit etcd_process(std::chrono::milliseconds ready_limit
                        = std::chrono::seconds{20})
      : etcd_process(etcd_options{}, ready_limit) {}

  /// Starts etcd as `o` says.
  explicit etcd_process(etcd_options o, std::chrono::milliseconds ready_limit
                                        = std::chrono::seconds{20})
      : o_(std::move(o)) {
    auto binary = find_etcd();
    if (binary.empty()) {
      error_ = "etcd is not installed: run tools/bootstrap.sh (it installs "
               "Debian's etcd-server and etcd-client)";
      return;
    }
    // A port taken between free_port() and etcd's bind makes etcd exit:
    // try again with other ports, a bounded number of times.
    for (int attempt = 0; attempt < 3 && !ok_; ++attempt) {
      client_port_ = free_port();
      peer_port_ = free_port();
      data_ = dir_.path() / ("etcd-" + std::to_string(attempt));
      launch(binary, ready_limit);
    }
  }

  ~etcd_process() { stop(); }

  etcd_process(const etcd_process&) = delete;
  etcd_process& operator=(const etcd_process&) = delete;

  bool ok() const noexcept { return ok_; }
  const std::string& error() const noexcept { return error_; }

  /// The client URL, e.g. "http://127.0.0.1:23791" (https:// with TLS).
  std::string url() const {
    return scheme() + o_.host + ":" + std::to_string(client_port_);
  }

  /// Runs `etcdctl ARGS...` (API 3) against this etcd, with the TLS files
  /// of etcd_options.
  process_result etcdctl(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = o_.prefix;
    argv.insert(argv.end(),
                {find_program("etcdctl"), "--endpoints", url(),
                 "--dial-timeout", "2s", "--command-timeout", "5s"});
    if (!o_.client_ca.empty())
      argv.insert(argv.end(), {"--cacert", o_.client_ca});
    if (!o_.client_cert.empty())
      argv.insert(argv.end(),
                  {"--cert", o_.client_cert, "--key", o_.client_key});
    argv.insert(argv.end(), args.begin(), args.end());
    process_options po;
    po.env["ETCDCTL_API"] = std::string{"3"};
    po.time_limit = std::chrono::seconds{15};
    return run_process(argv, po);
  }
  uint16_t client_port() const noexcept { return client_port_; }
  int pid() const { return proc_ ? proc_->pid() : -1; }

  /// Kills etcd (SIGKILL, by its PID) and waits for it.
  void stop() {
    if (proc_) {
      proc_->signal(SIGKILL);
      proc_->wait(std::chrono::seconds{10});
      proc_.reset();
    }
  }

  /// Starts etcd again after stop(), on the same ports with the same data
  /// dir (its keys and leases kept); returns whether it is ready.
  bool restart(std::chrono::milliseconds ready_limit
               = std::chrono::seconds{20}) {
    stop();
    ok_ = false;
    launch(find_etcd(), ready_limit);
    return ok_;
  }

  /// What etcd wrote to stderr so far.
  std::string log() const { return proc_ ? proc_->err() : std::string{}; }

 private:
  static std::string find_program(const char* name) {
    for (auto dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
      auto p = std::filesystem::path{dir} / name;
      std::error_code ec;
      if (std::filesystem::exists(p, ec))
        return p.string();
    }
    return name;
  }

  static std::string find_etcd() {
    auto p = find_program("etcd");
    return p.starts_with("/") ? p : std::string{};
  }

  std::string scheme() const {
    return o_.cert_file.empty() ? "http://" : "https://";
  }

  void launch(const std::string& binary,
              std::chrono::milliseconds ready_limit) {
    auto client = url();
    auto peer = "http://" + o_.host + ":" + std::to_string(peer_port_);
    std::vector<std::string> argv = o_.prefix;
    argv.insert(argv.end(), {binary,         "--name",
                             "test",         "--data-dir",
                             data_.string(), "--listen-client-urls",
                             client,         "--advertise-client-urls",
                             client,         "--listen-peer-urls",
                             peer,           "--initial-advertise-peer-urls",
                             peer,           "--initial-cluster",
                             "test=" + peer, "--heartbeat-interval",
                             "50",           "--election-timeout",
                             "500",          "--log-level",
                             "warn"});
    if (!o_.cert_file.empty())
      argv.insert(argv.end(),
                  {"--cert-file", o_.cert_file, "--key-file", o_.key_file});
    if (!o_.trusted_ca_file.empty())
      argv.insert(argv.end(), {"--trusted-ca-file", o_.trusted_ca_file});
    if (o_.client_cert_auth)
      argv.push_back("--client-cert-auth");
    if (o_.auth_token_ttl > 0)
      argv.insert(argv.end(),
                  {"--auth-token-ttl", std::to_string(o_.auth_token_ttl)});
    process_options o;
    o.env["ETCDCTL_API"] = std::nullopt;
    auto n = std::to_string(launches_++);
    proc_ = std::make_unique<background_process>(
      argv, o, (dir_.path() / ("etcd-out" + n)).string(),
      (dir_.path() / ("etcd-err" + n)).string());
    bool ready = wait_until(
      [&] {
        if (proc_->wait(std::chrono::milliseconds{0}))
          return true;
        if (!o_.cert_file.empty() || !o_.prefix.empty())
          return etcdctl({"endpoint", "health"}).exit_code == 0;
        auto [status, body] = http_get(client_port_, "/health");
        return body.find("\"true\"") != std::string::npos;
      },
      ready_limit);
    if (ready && !proc_->wait(std::chrono::milliseconds{0})) {
      ok_ = true;
      return;
    }
    error_ = "etcd did not become ready on " + client + ": " + proc_->err();
    stop();
  }

  etcd_options o_;
  temp_dir dir_;
  std::unique_ptr<background_process> proc_;
  uint16_t client_port_ = 0;
  uint16_t peer_port_ = 0;
  std::filesystem::path data_;
  int launches_ = 0;
  bool ok_ = false;
  std::string error_;
};

/// A real 3-member etcd for tests of quorum loss: members "e0", "e1" and
/// "e2" on free 127.0.0.1 ports (a client and a peer port each), one temp
/// data dir each, the same tuned timings as etcd_process, started together
/// with --initial-cluster and ready once every member's /health says so
/// (which needs an elected leader). Each member is killed by its PID when
/// the object goes away; a member stopped with SIGSTOP is sent SIGCONT
/// first.
class etcd_cluster {
 public:
  static constexpr size_t size = 3;

  explicit etcd_cluster(std::chrono::milliseconds ready_limit
                        = std::chrono::seconds{30}) {
    std::string binary;
    for (auto dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
      auto p = std::filesystem::path{dir} / "etcd";
      std::error_code ec;
      if (std::filesystem::exists(p, ec)) {
        binary = p.string();
        break;
      }
    }
    if (binary.empty()) {
      error_ = "etcd is not installed: run tools/bootstrap.sh (it installs "
               "Debian's etcd-server and etcd-client)";
      return;
    }
    // A port taken between free_port() and etcd's bind makes that member
    // exit: start all three again on other ports, a bounded number of times.
    for (int attempt = 0; attempt < 3 && !ok_; ++attempt)
      launch(binary, attempt, ready_limit);
  }

  ~etcd_cluster() { stop_all(); }

  etcd_cluster(const etcd_cluster&) = delete;
  etcd_cluster& operator=(const etcd_cluster&) = delete;

  bool ok() const noexcept { return ok_; }
  const std::string& error() const noexcept { return error_; }

  /// Member `i`'s client URL.
  std::string url(size_t i) const {
    return "http://127.0.0.1:" + std::to_string(client_ports_[i]);
  }

  /// Every client URL, comma-separated, as --etcd takes them.
  std::string urls() const {
    std::string out;
    for (size_t i = 0; i < size; ++i)
      out += (i ? "," : "") + url(i);
    return out;
  }

  int pid(size_t i) const { return procs_[i] ? procs_[i]->pid() : -1; }

  /// Sends `sig` to member `i` (by its PID).
  void signal(size_t i, int sig) {
    if (procs_[i]) {
      procs_[i]->signal(sig);
      stopped_[i] = sig == SIGSTOP   ? true
                    : sig == SIGCONT ? false
                                     : stopped_[i];
    }
  }

  /// The index of the member every running member names as its leader, or
  /// nothing when they do not agree (an election in progress) or one does
  /// not answer within `limit` (ask only while none is stopped, or expect
  /// nothing).
  std::optional<size_t> leader(std::chrono::milliseconds limit
                               = std::chrono::seconds{2}) const {
    std::vector<std::string> ids(size);
    std::optional<std::string> named;
    for (size_t i = 0; i < size; ++i) {
      auto body
        = http_post(client_ports_[i], "/v3/maintenance/status", "{}", limit)
            .second;
      std::smatch m;
      if (!std::regex_search(body, m, std::regex{"\"member_id\":\"(\\d+)\""}))
        return std::nullopt;
      ids[i] = m[1];
      if (!std::regex_search(body, m, std::regex{"\"leader\":\"(\\d+)\""}))
        return std::nullopt;
      if (named && *named != m[1].str())
        return std::nullopt;
      named = m[1];
    }
    for (size_t i = 0; i < size; ++i)
      if (ids[i] == named)
        return i;
    return std::nullopt;
  }

  /// Whether member `i` answers /health with a leader known.
  bool healthy(size_t i) const {
    auto [status, body] = http_get(client_ports_[i], "/health");
    return body.find("\"true\"") != std::string::npos;
  }

  /// What member `i` wrote to stderr so far.
  std::string log(size_t i) const {
    return procs_[i] ? procs_[i]->err() : std::string{};
  }

  /// etcd's version as member 0 reports it, e.g. {3, 4, 23}; empty when
  /// it does not say.
  std::vector<int> version() const {
    auto [status, body] = http_get(client_ports_[0], "/version");
    std::smatch m;
    if (!std::regex_search(
          body, m, std::regex{"\"etcdserver\":\"(\\d+)\\.(\\d+)\\.(\\d+)"}))
      return {};
    return {std::stoi(m[1]), std::stoi(m[2]), std::stoi(m[3])};
  }

  /// Whether this etcd lets a leader that was paused revoke, once it runs
  /// again, the leases it saw expire while paused, although the new leader
  /// renewed them (etcd-io/etcd#15247, fixed in 3.4.31 and 3.5.13).
  bool paused_leader_revokes_leases() const {
    auto v = version();
    if (v.size() != 3)
      return true;
    if (v[0] != 3)
      return v[0] < 3;
    if (v[1] == 4)
      return v[2] < 31;
    if (v[1] == 5)
      return v[2] < 13;
    return v[1] < 4;
  }

 private:
  void stop_all() {
    for (size_t i = 0; i < size; ++i)
      if (procs_[i]) {
        if (stopped_[i])
          procs_[i]->signal(SIGCONT);
        procs_[i]->signal(SIGKILL);
        procs_[i]->wait(std::chrono::seconds{10});
        procs_[i].reset();
        stopped_[i] = false;
      }
  }

  void launch(const std::string& binary, int attempt,
              std::chrono::milliseconds ready_limit) {
    stop_all();
    std::string initial;
    // Six ports, all different (free_port may hand out one twice).
    std::vector<uint16_t> ports;
    for (int tries = 0; tries < 100 && ports.size() < 2 * size; ++tries)
      if (auto p = free_port();
          p != 0 && std::find(ports.begin(), ports.end(), p) == ports.end())
        ports.push_back(p);
    ports.resize(2 * size);
    for (size_t i = 0; i < size; ++i) {
      client_ports_[i] = ports[2 * i];
      peer_ports_[i] = ports[2 * i + 1];
      initial += std::string{i ? "," : ""} + "e" + std::to_string(i)
                 + "=http://127.0.0.1:" + std::to_string(peer_ports_[i]);
    }
    auto token = "troupe-test-" + std::to_string(attempt);
    for (size_t i = 0; i < size; ++i) {
      auto name = "e" + std::to_string(i);
      auto client = url(i);
      auto peer = "http://127.0.0.1:" + std::to_string(peer_ports_[i]);
      auto data = dir_.path() / (name + "-" + std::to_string(attempt));
      std::vector<std::string> argv
        = {binary,        "--name",
           name,          "--data-dir",
           data.string(), "--listen-client-urls",
           client,        "--advertise-client-urls",
           client,        "--listen-peer-urls",
           peer,          "--initial-advertise-peer-urls",
           peer,          "--initial-cluster",
           initial,       "--initial-cluster-token",
           token,         "--initial-cluster-state",
           "new",         "--heartbeat-interval",
           "50",          "--election-timeout",
           "500",         "--log-level",
           "warn"};
      process_options o;
      o.env["ETCDCTL_API"] = std::nullopt;
      auto n = name + "-" + std::to_string(attempt);
      procs_[i] = std::make_unique<background_process>(
        argv, o, (dir_.path() / (n + ".out")).string(),
        (dir_.path() / (n + ".err")).string());
    }
    bool ready = wait_until(
      [&] {
        for (size_t i = 0; i < size; ++i)
          if (procs_[i]->wait(std::chrono::milliseconds{0}) || !healthy(i))
            return false;
        return true;
      },
      ready_limit);
    if (ready) {
      ok_ = true;
      return;
    }
    error_ = "a 3-member etcd did not become ready on " + urls() + ":";
    for (size_t i = 0; i < size; ++i)
      error_ += "\n== e" + std::to_string(i) + "\n" + procs_[i]->err();
    stop_all();
  }

  temp_dir dir_;
  std::unique_ptr<background_process> procs_[size];
  bool stopped_[size] = {};
  uint16_t client_ports_[size] = {};
  uint16_t peer_ports_[size] = {};
  bool ok_ = false;
  std::string error_;
};

} // namespace troupe::test
