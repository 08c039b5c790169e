// How long the run engine takes to decide: one scheduling step of a run, and
// rebuilding a run from its journal as recovery does.

#include "bench/bench_workloads.hpp"
#include "runtime/engine/run_engine.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace troupe::runtime;
using json = nlohmann::json;

constexpr int nodes = 10;
constexpr int64_t t0 = 1'700'000'000'000'000'000;

using troupe::bench::chain_workflow;

/// The parsed chain and the run_submitted event that starts a run of it.
struct chain {
  std::string source = chain_workflow(nodes);
  std::shared_ptr<const workflow_spec> spec;
  event_record submitted;

  chain() {
    auto outcome = parse_workflow(source);
    if (outcome.ok())
      spec
        = std::make_shared<const workflow_spec>(std::move(*outcome.workflow));
    submitted = {
      event_type::run_submitted, t0, "", 0, 0, "", "", source, R"({"x":"a"})"};
  }
};

/// Runs one whole run of the chain as the run actor drives it: decide()
/// starts n0, then each step resolves the started node's parameters (as
/// launching its attempt does) and reports its success with them as output
/// (what a noop does); the engine completes the node and, in the same call,
/// decides and starts the next. The engine applies the events it returns
/// itself. Appends every event to `journal` when given. Returns the steps
/// taken, or -1 on an unexpected turn.
int run_chain(const chain& c, std::vector<event_record>* journal) {
  run_engine e{"run-1", c.spec, json::parse(c.submitted.data2)};
  e.apply(c.submitted);
  if (journal)
    journal->push_back(c.submitted);
  auto now = t0;
  auto events = e.decide(++now);
  int steps = 0;
  while (!e.is_finished()) {
    if (events.empty() || events.back().type != event_type::attempt_started)
      return -1;
    auto node = events.back().node;
    auto attempt = events.back().attempt;
    if (journal)
      journal->insert(journal->end(), events.begin(), events.end());
    std::string error;
    auto params = e.resolve_params_for(node, error);
    if (!params)
      return -1;
    events = e.on_attempt_succeeded(node, attempt, *params, ++now);
    ++steps;
  }
  if (journal)
    journal->insert(journal->end(), events.begin(), events.end());
  return e.state() == run_state::completed ? steps : -1;
}

/// One scheduling step (resolve, succeed, decide the next start) of a
/// 10-node sequential noop run; each iteration runs a whole run, engine
/// construction and its first decide() included. Items: steps.
void engine_step(benchmark::State& state) {
  chain c;
  if (!c.spec) {
    state.SkipWithError("workflow did not validate");
    return;
  }
  for (auto _ : state) {
    auto steps = run_chain(c, nullptr);
    if (steps != nodes) {
      state.SkipWithError("the run did not complete in one step per node");
      break;
    }
    benchmark::DoNotOptimize(steps);
  }
  state.SetItemsProcessed(state.iterations() * nodes);
}

/// Rebuilds an engine from the journal of the 10-node run (its first 21
/// events: submitted, then each node started and completed; the run not yet
/// marked completed), as recovery does per unfinished run: parse the inputs,
/// construct, apply every event. Items: events applied.
void engine_rebuild(benchmark::State& state) {
  chain c;
  std::vector<event_record> journal;
  if (!c.spec || run_chain(c, &journal) != nodes) {
    state.SkipWithError("the run did not complete");
    return;
  }
  journal.resize(2 * nodes + 1);
  for (auto _ : state) {
    const auto& submitted = journal.front();
    auto inputs = json::parse(submitted.data2, nullptr, false);
    run_engine e{"run-1", c.spec, std::move(inputs)};
    for (const auto& ev : journal)
      e.apply(ev);
    benchmark::DoNotOptimize(e.running());
  }
  state.SetItemsProcessed(state.iterations()
                          * static_cast<int64_t>(journal.size()));
  state.counters["events"] = static_cast<double>(journal.size());
}

} // namespace

BENCHMARK(engine_step)->Unit(benchmark::kMicrosecond);
BENCHMARK(engine_rebuild)->Unit(benchmark::kMicrosecond);
