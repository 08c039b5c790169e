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

#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
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
    return scheme() + "127.0.0.1:" + std::to_string(client_port_);
  }

  /// Runs `etcdctl ARGS...` (API 3) against this etcd, with the TLS files
  /// of etcd_options.
  process_result etcdctl(const std::vector<std::string>& args) const {
    std::vector<std::string> argv
      = {find_program("etcdctl"), "--endpoints", url(), "--dial-timeout", "2s",
         "--command-timeout",     "5s"};
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
    auto client = scheme() + "127.0.0.1:" + std::to_string(client_port_);
    auto peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::vector<std::string> argv
      = {binary,         "--name",
         "test",         "--data-dir",
         data_.string(), "--listen-client-urls",
         client,         "--advertise-client-urls",
         client,         "--listen-peer-urls",
         peer,           "--initial-advertise-peer-urls",
         peer,           "--initial-cluster",
         "test=" + peer, "--heartbeat-interval",
         "50",           "--election-timeout",
         "500",          "--log-level",
         "warn"};
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
        if (!o_.cert_file.empty())
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

} // namespace troupe::test
