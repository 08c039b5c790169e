// Writes the text of a registry like a node's (every type, labels, escaping,
// invalid UTF-8, collectors) to the file named by the first argument, for
// `promtool check metrics`.
#include "runtime/metrics/registry.hpp"

#include <fstream>
#include <iostream>

using namespace troupe::runtime::metrics;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUTPUT_FILE\n";
    return 2;
  }
  registry reg;
  auto& runs = reg.add_counter("troupe_runs_started_total",
                               "Runs started, by workflow.");
  runs.with({{"workflow", "orders"}}).inc(12);
  runs.with({{"workflow", "say \"hi\"\\back\nslash"}}).inc();
  runs.with({{"workflow", "caf\xc3\xa9 \xff bad"}}).inc(3);
  auto& steps = reg.add_counter("troupe_steps_finished_total",
                                "Steps finished.\nBy kind and outcome \\ "
                                "\"state\".");
  steps.with({{"kind", "exec"}, {"outcome", "ok"}}).inc(40);
  steps.with({{"outcome", "failed"}, {"kind", "http"}}).inc(2);
  reg.add_counter("troupe_retries_total", "Retries (none yet).");
  auto& breakers = reg.add_gauge("troupe_breaker_state",
                                 "1 for the state each breaker is in.");
  breakers.with({{"breaker", "payments"}, {"state", "open"}}).set(1);
  breakers.with({{"breaker", "payments"}, {"state", "closed"}}).set(0);
  reg.add_gauge("troupe_store_free_ratio", "Free space.").with({}).set(0.25);
  auto& latency = reg.add_histogram("troupe_step_duration_seconds",
                                    "Step latency, by kind.");
  for (double v : {0.00004, 0.0003, 0.002, 0.02, 0.3, 1.7, 45.0, 90.0})
    latency.with({{"kind", "exec"}}).observe(v);
  latency.with({{"kind", "http"}}).observe(0.2);
  auto& sizes
    = reg.add_histogram("troupe_journal_record_bytes", "Journal record sizes.",
                        default_size_buckets());
  sizes.with({}).observe(100);
  sizes.with({}).observe(1 << 20);
  reg.add_gauge_callback("troupe_live_actors", "Actors alive.",
                         [] { return 17.0; });
  reg.add_collector(metric_type::gauge, "troupe_mailbox_messages",
                    "Messages waiting, by actor.", [](sample_sink& sink) {
                      sink.add({{"actor", "troupe.run/1"}}, 3);
                      sink.add({{"actor", "troupe.timer"}}, 0);
                    });
  reg.add_gauge("troupe_clock_skew_seconds", "Odd values.")
    .with({{"peer", "a"}})
    .set(-1e-9);
  std::ofstream out{argv[1], std::ios::binary};
  out << reg.render();
  out.close();
  if (!out) {
    std::cerr << "cannot write " << argv[1] << "\n";
    return 1;
  }
  return 0;
}
