#pragma once

// A real single-member etcd for tests: started on free 127.0.0.1 ports with
// a data dir in a temp folder and tuned timings (heartbeat 50 ms, election
// 500 ms, so a 1 s lease TTL is granted), ready once its /health says so,
// killed by PID when the object goes away. A missing `etcd` binary is a
// failure that names the way out (tools/bootstrap.sh installs it), never a
// skipped test.

#include "tests/support/net.hpp"
#include "tests/support/process.hpp"
#include "tests/support/temp_dir.hpp"

#include <csignal>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace troupe::test {

class etcd_process {
 public:
  /// Starts etcd; check ok() (and error()) before using it.
  explicit etcd_process(std::chrono::milliseconds ready_limit
                        = std::chrono::seconds{20}) {
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

  /// The client URL, e.g. "http://127.0.0.1:23791".
  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(client_port_);
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
  static std::string find_etcd() {
    for (auto dir : {"/usr/bin", "/usr/local/bin", "/usr/sbin"}) {
      auto p = std::filesystem::path{dir} / "etcd";
      std::error_code ec;
      if (std::filesystem::exists(p, ec))
        return p.string();
    }
    return {};
  }

  void launch(const std::string& binary,
              std::chrono::milliseconds ready_limit) {
    auto client = "http://127.0.0.1:" + std::to_string(client_port_);
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
