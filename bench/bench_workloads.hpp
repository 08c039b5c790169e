#pragma once
// Inputs the micro-benchmarks share.

#include "persistence/records.hpp"

#include <string>

namespace troupe::bench {

/// A chain of `n` noop nodes, each reading its predecessor's output.
inline std::string chain_workflow(int n) {
  std::string s = "name: chain\ninputs:\n  x: {type: string, default: a}\n"
                  "nodes:\n  n0:\n    kind: noop\n    v: \"{{ inputs.x }}\"\n";
  for (int i = 1; i < n; ++i) {
    auto id = "n" + std::to_string(i);
    auto prev = "n" + std::to_string(i - 1);
    s += "  " + id + ":\n    kind: noop\n    after: [" + prev
         + "]\n    v: \"{{ nodes." + prev + ".output.v }}\"\n";
  }
  return s;
}

/// An attempt_started event, the most frequent one: type, time, node,
/// attempt and its deadline.
inline persistence::event_record attempt_started_event() {
  persistence::event_record e;
  e.type = persistence::event_type::attempt_started;
  e.at_ns = 1'700'000'000'123'456'789;
  e.node = "charge_card";
  e.attempt = 1;
  e.deadline_ns = e.at_ns + 30'000'000'000;
  return e;
}

} // namespace troupe::bench
