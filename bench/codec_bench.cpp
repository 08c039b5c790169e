// How long encoding and decoding journal records takes: every append encodes
// its events, and every recovery or `troupe logs` decodes them.

#include "bench/bench_workloads.hpp"
#include "persistence/codec/codec.hpp"
#include "persistence/records.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>

namespace {

using namespace troupe::persistence;

/// The most frequent event.
using troupe::bench::attempt_started_event;

/// A run_submitted event carrying about 1 KiB of workflow source and its
/// inputs.
event_record large_event() {
  event_record e;
  e.type = event_type::run_submitted;
  e.at_ns = 1'700'000'000'123'456'789;
  std::string source = "name: order\ninputs:\n  id: {type: string}\nnodes:\n";
  for (int i = 0; source.size() < 1024; ++i) {
    auto id = "step" + std::to_string(i);
    source += "  " + id + ":\n    kind: noop\n    v: \"{{ inputs.id }}\"\n";
  }
  e.data = source;
  e.data2 = R"({"id":"order-1234"})";
  return e;
}

/// A run index entry, rewritten when a run finishes or pauses.
run_index_entry index_entry() {
  return {"run-01HZX3K4Q8W9V2B7",    "order",
          run_state::completed,      1'700'000'000'123'456'789,
          1'700'000'004'987'654'321, ""};
}

/// Encodes `e` once per iteration.
void encode_event(benchmark::State& state, const event_record& e) {
  size_t bytes = 0;
  for (auto _ : state) {
    auto out = encode(e);
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
  state.counters["encoded_bytes"] = static_cast<double>(bytes);
}

/// Decodes the encoding of `e` once per iteration.
void decode_event_of(benchmark::State& state, const event_record& e) {
  auto bytes = encode(e);
  std::string error;
  for (auto _ : state) {
    auto out = decode_event(bytes, error);
    if (!out) {
      state.SkipWithError("event did not decode");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations()
                          * static_cast<int64_t>(bytes.size()));
  state.counters["encoded_bytes"] = static_cast<double>(bytes.size());
}

void encode_small_event(benchmark::State& state) {
  encode_event(state, attempt_started_event());
}

void decode_small_event(benchmark::State& state) {
  decode_event_of(state, attempt_started_event());
}

void encode_large_event(benchmark::State& state) {
  encode_event(state, large_event());
}

void decode_large_event(benchmark::State& state) {
  decode_event_of(state, large_event());
}

void encode_index_entry(benchmark::State& state) {
  auto entry = index_entry();
  size_t bytes = 0;
  for (auto _ : state) {
    auto out = encode(entry);
    bytes = out.size();
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes));
  state.counters["encoded_bytes"] = static_cast<double>(bytes);
}

void decode_index_entry(benchmark::State& state) {
  auto bytes = encode(index_entry());
  std::string error;
  for (auto _ : state) {
    auto out = decode_index(bytes, error);
    if (!out) {
      state.SkipWithError("index entry did not decode");
      break;
    }
    benchmark::DoNotOptimize(out);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations()
                          * static_cast<int64_t>(bytes.size()));
  state.counters["encoded_bytes"] = static_cast<double>(bytes.size());
}

} // namespace

BENCHMARK(encode_small_event);
BENCHMARK(decode_small_event);
BENCHMARK(encode_large_event);
BENCHMARK(decode_large_event);
BENCHMARK(encode_index_entry);
BENCHMARK(decode_index_entry);
