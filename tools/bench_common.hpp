#pragma once

// What `troupe bench`'s two halves share: the embedded and remote workloads
// (cmd_bench.cpp) and the cluster benchmark (cmd_bench_detect.cpp). The
// workflows a workload runs, the closed loop of runs over one control
// connection, the figures kept of it, and the echo service that http10's
// steps call.

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace troupe::tools {

class control_client;

namespace bench {

/// What a closed loop of runs measured.
struct load_result {
  size_t ok = 0;
  size_t failed = 0;
  std::string first_error;
  double wall_s = 0;
  /// End-to-end run latencies (submission to finish), sorted, in ms.
  std::vector<double> latencies_ms;

  /// Adds `other`'s figures (its latencies unsorted after this one's:
  /// sort() once all are in); the wall time is not added.
  void merge(const load_result& other);
  /// Sorts the latencies.
  void sort();
};

/// The value below which `q` (0 to 1) of `sorted` lie; 0 when empty.
double percentile(const std::vector<double>& sorted, double q);

/// `v` with `digits` digits after the point.
std::string fixed(double v, int digits);

/// The workflow source of workload `name` (seq10, seq10c1, fan10, exec10,
/// fanexec10, http10, sleepers, timeouts, recover, history); http10's
/// steps each GET `echo_url` with ?i=1..10 (as the Restate peer's http10
/// fetches its echo service).
std::string workflow_source(const std::string& name,
                            const std::string& echo_url = {});

/// The control protocol's submission of `source` (as file bench-NAME.yaml).
nlohmann::json submit_request(const std::string& name,
                              const std::string& source);

/// Keeps `concurrency` runs going over `client` until `count` have ended:
/// each one submitted (`submit`) and then watched to its end, a new one
/// submitted as soon as one ends; each run timed from its submission to its
/// end. `who` names the node in errors. Throws client_error (exit code 3)
/// when the node is silent for 120 s.
load_result closed_loop(control_client& client, const nlohmann::json& submit,
                        size_t count, size_t concurrency,
                        const std::string& who);

/// Whether `url` can be http10's echo service: an http:// URL with a host,
/// and no query string (the steps add theirs). "" or why not.
std::string check_echo_url(const std::string& url);

/// An HTTP/1.1 service on 127.0.0.1 (an ephemeral port, a thread of its
/// own) that answers as the peers' echo service (shared/peers/echo/
/// server.mjs) does: every request, whatever its method and path, gets 200
/// with the JSON body {"ok":true,"n":<requests so far>,"path":"<target>"};
/// keep-alive unless the request asks to close. For http10 where no
/// --echo-url is given. Stops (connections closed) when destroyed.
class echo_service {
 public:
  echo_service();
  ~echo_service();

  echo_service(const echo_service&) = delete;
  echo_service& operator=(const echo_service&) = delete;

  /// http://127.0.0.1:PORT/step
  std::string url() const;
  /// Requests answered so far.
  uint64_t requests() const;

  struct impl;

 private:
  std::unique_ptr<impl> impl_;
};

} // namespace bench

} // namespace troupe::tools
