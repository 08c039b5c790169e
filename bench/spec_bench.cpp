// How long reading and validating a workflow takes, by size.

#include "runtime/spec/workflow_loader.hpp"

#include <benchmark/benchmark.h>

#include <string>

namespace {

/// A chain of `n` nodes, each reading its predecessor's output.
std::string chain_workflow(int n) {
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

void parse_chain(benchmark::State& state) {
  auto text = chain_workflow(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto outcome = troupe::runtime::parse_workflow(text);
    if (!outcome.ok())
      state.SkipWithError("workflow did not validate");
    benchmark::DoNotOptimize(outcome);
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(state.iterations()
                          * static_cast<int64_t>(text.size()));
}

} // namespace

BENCHMARK(parse_chain)
  ->Arg(10)
  ->Arg(100)
  ->Arg(1000)
  ->Unit(benchmark::kMicrosecond);
