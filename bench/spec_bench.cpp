// How long reading and validating a workflow takes, by size.

#include "bench/bench_workloads.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <benchmark/benchmark.h>

#include <string>

namespace {

using troupe::bench::chain_workflow;

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
