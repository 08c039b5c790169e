// `troupe bench`: a load generator that runs fixed workloads against an
// embedded node and prints what they cost. Every workload runs in a fresh
// child process (this same executable), so peak memory is its own.

#include "actors/node/embedded_node.hpp"
#include "runtime/ids/partition.hpp"
#include "runtime/metrics/registry.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tools/bench_common.hpp"
#include "tools/commands.hpp"
#include "tools/control_client.hpp"
#include "tools/node_setup.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iomanip>
#include <iostream>
#include <map>
#include <mutex>
#include <poll.h>
#include <sstream>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

namespace troupe::tools {

using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
using bench::fixed;
using bench::load_result;
using bench::percentile;
using bench::workflow_source;

// jemalloc's control interface; null when another allocator is in use.
extern "C" int mallctl(const char*, void*, size_t*, void*, size_t)
  __attribute__((weak));

namespace {

/// A workload: the workflow every run follows and its default size.
struct workload {
  std::string name;
  std::string description;
  size_t n;
  size_t quick_n;
  size_t concurrency;
  /// Nodes each run executes (its steps).
  size_t steps;
};

const std::vector<workload>& workloads() {
  static const std::vector<workload> all = {
    {"seq10", "10 sequential noop nodes", 20'000, 1'000, 50, 10},
    {"seq10c1", "10 sequential noop nodes, one run at a time", 2'000, 100, 1,
     10},
    {"http10",
     "10 sequential http nodes, each a GET of an echo service (--echo-url, "
     "else one of the bench's own on 127.0.0.1)",
     2'000, 300, 50, 10},
    {"fan10", "10 parallel noop nodes joined by one", 20'000, 1'000, 50, 11},
    {"exec10", "10 sequential exec nodes running /bin/true", 500, 30, 10, 10},
    {"fanexec10",
     "10 parallel exec nodes running /bin/true (placement: spread) joined by "
     "a noop",
     500, 50, 10, 11},
    {"sleepers", "runs parked in a 1 h sleep: memory per parked run", 100'000,
     2'000, 1'000, 1},
    {"recover", "runs parked mid-way, kill -9, restart: time to resume",
     100'000, 2'000, 1'000, 3},
    {"idle", "a node with nothing to do: its memory", 0, 0, 0, 0},
    {"history",
     "N finished runs and 10 parked, restarted: time to resume, against 10 "
     "parked alone",
     1'000'000, 20'000, 10, 3},
    {"timeouts",
     "short runs with 1 h timeouts: memory after they end against idle",
     100'000, 2'000, 1'000, 2},
    // --n is the chain's length here, not a number of runs.
    {"chain",
     "chains of N/10, N/4, N/2 and N nodes, and ten of N/10 against the one "
     "of N: cost per step as a workflow grows",
     10'000, 2'500, 1, 0},
  };
  return all;
}

const workload* find_workload(const std::string& name) {
  for (auto& w : workloads())
    if (w.name == name)
      return &w;
  return nullptr;
}

/// A chain of `nodes` noop nodes, each after the one before and passing its
/// value on (so each step resolves a template against the outputs so far).
std::string chain_source(size_t nodes) {
  std::ostringstream s;
  s << "name: bench-chain-" << nodes << "\nnodes:\n  n0:\n    kind: noop\n"
    << "    v: 1\n";
  for (size_t i = 1; i < nodes; ++i)
    s << "  n" << i << ":\n    kind: noop\n    after: [n" << i - 1
      << "]\n    v: \"{{ nodes.n" << i - 1 << ".output.v }}\"\n";
  return s.str();
}

/// Bytes of memory of this process: resident now ("VmRSS") or at its peak
/// ("VmHWM").
double memory_mib(const char* field) {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  auto key = std::string{field} + ":";
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0)
      return std::strtod(line.c_str() + key.size(), nullptr) / 1024.0;
  return 0;
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}

/// Keeps `concurrency` runs of one workflow going until `n` have finished
/// (or, with `park_node`, until `n` have started that node), submitting a
/// new run as soon as one ends; measures each run from its submission to
/// its end. Runs on the node's actor system; blocks the calling thread.
load_result run_load(actors::embedded_node& node, const std::string& source,
                     const runtime::workflow_spec& spec, size_t n,
                     size_t concurrency, const std::string& park_node = {}) {
  struct driver_state {
    size_t submitted = 0;
    size_t ended = 0;
    std::unordered_map<std::string, clock_type::time_point> started;
    load_result result;
  };
  std::promise<load_result> done;
  auto finished = done.get_future();
  auto inputs = json::object();
  auto began = clock_type::now();
  node.system().spawn([&](caf::event_based_actor* self) -> caf::behavior {
    auto st = std::make_shared<driver_state>();
    auto submit_next = [self, st, &node, &source, &spec, &inputs, n,
                        progress = !park_node.empty()] {
      if (st->submitted >= n)
        return;
      ++st->submitted;
      auto t = clock_type::now();
      auto me = caf::actor{self};
      auto id = node.submit_async(
        source, spec, inputs, me,
        [me](const std::string&, const std::string& error) {
          if (!error.empty())
            caf::anon_send(
              me, runtime::run_finished{"", "", persistence::run_state::failed,
                                        "", error, ""});
        },
        progress);
      st->started.emplace(std::move(id), t);
    };
    auto end_one
      = [self, st, &done, n, began, submit_next, park_node](
          const std::string& run_id, bool ok, const std::string& error) {
          auto i = st->started.find(run_id);
          if (i != st->started.end() && park_node.empty()) {
            st->result.latencies_ms.push_back(
              std::chrono::duration<double, std::milli>(clock_type::now()
                                                        - i->second)
                .count());
          }
          if (i != st->started.end())
            st->started.erase(i);
          ++st->ended;
          if (ok) {
            ++st->result.ok;
          } else {
            ++st->result.failed;
            if (st->result.first_error.empty())
              st->result.first_error = error;
          }
          if (st->ended == n) {
            st->result.wall_s = seconds_since(began);
            std::sort(st->result.latencies_ms.begin(),
                      st->result.latencies_ms.end());
            done.set_value(std::move(st->result));
            self->quit();
            return;
          }
          submit_next();
        };
    for (size_t i = 0; i < concurrency; ++i)
      submit_next();
    return {
      [end_one, park_node](runtime::run_progress& p) {
        if (!park_node.empty() && p.node == park_node
            && p.event == "attempt_started")
          end_one(p.run_id, true, "");
      },
      [end_one, park_node](runtime::run_finished& f) {
        // A parked run that ends is a failure of the workload.
        auto ok
          = f.state == persistence::run_state::completed && park_node.empty();
        end_one(f.run_id, ok,
                f.reason.empty() ? "run ended while parked" : f.reason);
      },
    };
  });
  // Bounded: no workload here takes anywhere near an hour.
  if (finished.wait_for(std::chrono::hours{1}) != std::future_status::ready) {
    std::cerr << "troupe: bench: the workload did not end within an hour\n";
    std::_Exit(exit_failed);
  }
  return finished.get();
}

/// Options of one measurement (a child process).
struct one_options {
  std::string workload;
  std::string durability;
  size_t n = 0;
  size_t concurrency = 0;
  std::string data_dir;
  /// http10's echo service.
  std::string echo_url;
};

/// Group commits of the store: how many, of how many appends, how long.
struct commit_stats {
  std::atomic<uint64_t> commits{0};
  std::atomic<uint64_t> appends{0};
  std::atomic<uint64_t> nanos{0};

  void reset() {
    commits = 0;
    appends = 0;
    nanos = 0;
  }

  void add_to(json& out) const {
    auto n = static_cast<double>(std::max<uint64_t>(1, commits.load()));
    out["commits"] = commits.load();
    out["appends_per_commit"] = static_cast<double>(appends.load()) / n;
    out["commit_ms"] = static_cast<double>(nanos.load()) / n / 1e6;
  }
};

commit_stats stats;

std::unique_ptr<actors::embedded_node> open_node(const global_options& g,
                                                 const one_options& o) {
  std::vector<config::flag_override> flags{
    {"--data-dir", "node.data_dir", o.data_dir},
    {"--durability", "storage.durability", o.durability}};
  config::settings settings;
  if (!load_config(g, flags, settings))
    std::exit(exit_bad_input);
  std::string error;
  auto opts = node_options(settings);
  // Metrics kept as `troupe node` keeps them (the node's actors update them
  // as they go), though nobody scrapes them here.
  static runtime::metrics::registry metrics;
  opts.metrics = &metrics;
  opts.on_commit = [](size_t appends, std::chrono::nanoseconds took) {
    stats.commits.fetch_add(1, std::memory_order_relaxed);
    stats.appends.fetch_add(appends, std::memory_order_relaxed);
    stats.nanos.fetch_add(static_cast<uint64_t>(took.count()),
                          std::memory_order_relaxed);
  };
  auto node = actors::embedded_node::open(opts, error);
  if (!node) {
    std::cerr << "troupe: bench: " << error << "\n";
    std::exit(exit_failed);
  }
  return node;
}

runtime::workflow_spec parse_or_die(const std::string& source) {
  auto outcome = runtime::parse_workflow(source);
  if (!outcome.ok()) {
    for (auto& d : outcome.errors)
      std::cerr << d.to_string("bench workflow") << "\n";
    std::exit(exit_failed);
  }
  return std::move(*outcome.workflow);
}

void emit(const json& j) {
  std::cout << j.dump() << std::endl;
}

/// The warm-up before a measurement: a tenth of the runs, at most 200.
size_t warm_up_runs(size_t n) {
  return std::min<size_t>(200, std::max<size_t>(1, n / 10));
}

/// What a throughput workload measured, as one JSON object; `where` names
/// the node ({"durability": ...} embedded, {"node": ...} remote).
json throughput_json(const workload& w, json where, size_t n,
                     size_t concurrency, const load_result& r) {
  auto p50 = percentile(r.latencies_ms, 0.50);
  json out = std::move(where);
  out.update({
    {"workload", w.name},
    {"n", n},
    {"concurrency", concurrency},
    {"ok", r.ok},
    {"failed", r.failed},
    {"wall_s", r.wall_s},
    {"runs_per_s", static_cast<double>(r.ok) / r.wall_s},
    {"steps_per_run", w.steps},
    {"steps_per_s", static_cast<double>(r.ok * w.steps) / r.wall_s},
    {"p50_ms", p50},
    {"p95_ms", percentile(r.latencies_ms, 0.95)},
    {"p99_ms", percentile(r.latencies_ms, 0.99)},
    {"step_p50_ms", p50 / static_cast<double>(w.steps)},
  });
  if (!r.first_error.empty())
    out["first_error"] = r.first_error;
  return out;
}

/// A throughput workload: a warm-up, then `n` runs at `concurrency`.
int measure_throughput(const global_options& g, const one_options& o,
                       const workload& w) {
  auto source = workflow_source(w.name, o.echo_url);
  auto spec = parse_or_die(source);
  auto node = open_node(g, o);
  run_load(*node, source, spec, warm_up_runs(o.n), o.concurrency);
  auto cpu0 = cpu_seconds();
  stats.reset();
  auto r = run_load(*node, source, spec, o.n, o.concurrency);
  auto cpu = cpu_seconds() - cpu0;
  auto steps = static_cast<double>(r.ok * w.steps);
  auto out
    = throughput_json(w, {{"durability", o.durability}}, o.n, o.concurrency, r);
  // Only an embedded node's own process is measured.
  out["peak_rss_mib"] = memory_mib("VmHWM");
  out["cpu_s_per_1000_steps"] = steps > 0 ? cpu / steps * 1000 : 0.0;
  stats.add_to(out);
  emit(out);
  return r.failed == 0 ? exit_ok : exit_failed;
}

/// Lets the allocator and the node settle before reading memory.
void settle() {
  std::this_thread::sleep_for(std::chrono::milliseconds{500});
}

int measure_idle(const global_options& g, const one_options& o) {
  auto node = open_node(g, o);
  settle();
  emit({{"workload", "idle"},
        {"durability", o.durability},
        {"rss_mib", memory_mib("VmRSS")}});
  return exit_ok;
}

int measure_sleepers(const global_options& g, const one_options& o) {
  auto source = workflow_source("sleepers");
  auto spec = parse_or_die(source);
  auto node = open_node(g, o);
  settle();
  auto idle = memory_mib("VmRSS");
  auto r = run_load(*node, source, spec, o.n, o.concurrency, "nap");
  settle();
  auto rss = memory_mib("VmRSS");
  emit({{"workload", "sleepers"},
        {"durability", o.durability},
        {"n", o.n},
        {"parked", r.ok},
        {"idle_rss_mib", idle},
        {"rss_mib", rss},
        {"bytes_per_run", (rss - idle) * 1024 * 1024
                            / static_cast<double>(std::max<size_t>(1, r.ok))},
        {"park_s", r.wall_s}});
  return r.failed == 0 ? exit_ok : exit_failed;
}

/// Asks jemalloc (when it is the allocator) to hand freed pages back to the
/// system now rather than over the next seconds; returns whether it did.
bool purge_allocator() {
  if (!mallctl)
    return false;
  // MALLCTL_ARENAS_ALL is 4096.
  return mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0) == 0;
}

/// `timeouts`: what finished runs leave behind. Each run arms an hour's
/// timers (its run timeout, its node's timeout) and ends at once; the
/// node's memory once they all ended is compared with its memory idle.
int measure_timeouts(const global_options& g, const one_options& o) {
  auto source = workflow_source("timeouts");
  auto spec = parse_or_die(source);
  auto node = open_node(g, o);
  settle();
  auto purged = purge_allocator();
  auto idle = memory_mib("VmRSS");
  auto r = run_load(*node, source, spec, o.n, o.concurrency);
  node->store().flush();
  settle();
  purge_allocator();
  auto rss = memory_mib("VmRSS");
  emit({{"workload", "timeouts"},
        {"durability", o.durability},
        {"n", o.n},
        {"ok", r.ok},
        {"failed", r.failed},
        {"wall_s", r.wall_s},
        {"idle_rss_mib", idle},
        {"rss_mib", rss},
        {"rss_ratio", rss / idle},
        {"purged", purged}});
  return r.failed == 0 ? exit_ok : exit_failed;
}

/// `chain`: single runs of chains of N/10, N/4, N/2 and N nodes, and ten
/// runs, one after another, of N/10-node chains: the same number of steps
/// as the N-node chain, so a cost per step that does not grow with the
/// workflow gives a ratio near 1. Each workflow is parsed (and put in the
/// node's cache) before it is timed; the parse of the longest is reported
/// apart. The rounds alternate the workloads, and each figure is the best of
/// its rounds, so that a busy moment of the machine spoils none of them.
int measure_chain(const global_options& g, const one_options& o) {
  constexpr int rounds = 3;
  auto n = std::max<size_t>(10, o.n);
  std::vector<size_t> sizes{n / 10, n / 4, n / 2, n};
  struct chain {
    std::string source;
    runtime::workflow_spec spec;
    double parse_s = 0;
    double best_s = 0;
  };
  auto node = open_node(g, o);
  std::vector<chain> chains;
  for (auto size : sizes) {
    chain c;
    c.source = chain_source(size);
    auto began = clock_type::now();
    c.spec = parse_or_die(c.source);
    c.parse_s = seconds_since(began);
    std::string error;
    if (!node->specs().get(c.source, error)) {
      std::cerr << "troupe: bench: chain: " << error << "\n";
      std::exit(exit_failed);
    }
    chains.push_back(std::move(c));
  }
  auto& small = chains.front();
  run_load(*node, small.source, small.spec, 1, 1); // warm-up
  size_t ok = 0, failed = 0;
  std::string first_error;
  auto timed = [&](chain& c, size_t runs, double& best) {
    auto r = run_load(*node, c.source, c.spec, runs, 1);
    ok += r.ok;
    failed += r.failed;
    if (first_error.empty())
      first_error = r.first_error;
    if (best == 0 || r.wall_s < best)
      best = r.wall_s;
  };
  double ten_s = 0;
  for (int round = 0; round < rounds; ++round) {
    timed(small, 10, ten_s);
    for (auto& c : chains)
      timed(c, 1, c.best_s);
  }
  auto& big = chains.back();
  json runs = json::array();
  for (size_t i = 0; i < chains.size(); ++i)
    runs.push_back({{"nodes", sizes[i]},
                    {"s", chains[i].best_s},
                    {"us_per_step",
                     chains[i].best_s * 1e6 / static_cast<double>(sizes[i])}});
  json out = {{"workload", "chain"},
              {"durability", o.durability},
              {"n", n},
              {"rounds", rounds},
              {"ok", ok},
              {"failed", failed},
              {"chains", std::move(runs)},
              {"one_run_s", big.best_s},
              {"ten_runs_s", ten_s},
              {"ratio", big.best_s / std::max(1e-9, ten_s)},
              {"parse_s", big.parse_s},
              {"peak_rss_mib", memory_mib("VmHWM")}};
  if (!first_error.empty())
    out["first_error"] = first_error;
  emit(out);
  return failed == 0 ? exit_ok : exit_failed;
}

/// First half of `recover`: parks runs, says so, then waits to be killed.
int recover_fill(const global_options& g, const one_options& o) {
  auto source = workflow_source("recover");
  auto spec = parse_or_die(source);
  auto node = open_node(g, o);
  auto r = run_load(*node, source, spec, o.n, o.concurrency, "nap");
  // Parked runs are journaled as such; make sure the last appends are too.
  node->store().flush();
  emit({{"parked", r.ok}, {"failed", r.failed}, {"park_s", r.wall_s}});
  // The parent kills us with SIGKILL; bounded in case it never does.
  std::this_thread::sleep_for(std::chrono::minutes{10});
  return exit_failed;
}

/// Second half of `recover`: reopens the data dir, resumes, and says when
/// the node was ready and when every run was live again.
int recover_resume(const global_options& g, const one_options& o) {
  auto began = clock_type::now();
  auto node = open_node(g, o);
  auto opened = seconds_since(began);
  // Counts the runs that say they are resumed; an event-based actor, so
  // that counting costs no thread wake-up per run.
  auto expected = std::make_shared<std::atomic<size_t>>(SIZE_MAX);
  std::promise<size_t> all_resumed;
  auto resumed_future = all_resumed.get_future();
  auto counter = node->system().spawn(
    [expected, &all_resumed](caf::event_based_actor* self) -> caf::behavior {
      auto count = std::make_shared<size_t>(0);
      auto check = [self, count, expected, &all_resumed] {
        if (*count >= expected->load()) {
          all_resumed.set_value(*count);
          self->quit();
        }
      };
      return {
        [count, check](runtime::run_progress& p) {
          if (p.event == "resumed")
            ++*count;
          check();
        },
        [check](caf::ok_atom) { check(); },
        [](runtime::run_finished&) {},
      };
    });
  auto recovered = node->recover(counter, true);
  emit({{"ready", recovered.resumed.size()},
        {"problems", recovered.problems.size()},
        {"open_s", opened},
        {"scan_s", seconds_since(began) - opened}});
  // Each run says when its actor has rebuilt it (bounded wait).
  expected->store(recovered.resumed.size());
  caf::anon_send(counter, caf::ok_atom::value);
  size_t resumed = 0;
  if (resumed_future.wait_for(std::chrono::seconds{120})
      == std::future_status::ready)
    resumed = resumed_future.get();
  emit({{"resumed", resumed}});
  if (resumed < recovered.resumed.size())
    std::_Exit(exit_failed); // the counter still refers to this frame
  return exit_ok;
}

// -- history: recovery does not grow with finished runs ----------------------

/// Fills a data dir for `history`: `o.n` finished runs written straight
/// through the store in big batches (each journaled as submitted and running,
/// then finished, as a real run is), and `o.concurrency` runs submitted and
/// never started, which recovery resumes and parks. Then says how long
/// decoding every index entry takes, which is what recovery read before the
/// store kept an index of unfinished runs.
int history_fill(const global_options& g, const one_options& o) {
  std::vector<config::flag_override> flags{
    {"--data-dir", "node.data_dir", o.data_dir}};
  config::settings settings;
  if (!load_config(g, flags, settings))
    return exit_bad_input;
  persistence::journal_store::options so;
  so.path = settings.get_string("node.data_dir");
  so.max_batch = 4096;
  auto source = workflow_source("history");
  auto spec = parse_or_die(source);
  using persistence::event_record;
  using persistence::event_type;
  using persistence::run_state;
  auto began = clock_type::now();
  {
    std::string error;
    auto store = persistence::journal_store::open(so, error);
    if (!store) {
      std::cerr << "troupe: bench: " << error << "\n";
      return exit_failed;
    }
    std::atomic<size_t> failed{0};
    auto check = [&failed](std::string e) {
      if (!e.empty())
        failed.fetch_add(1, std::memory_order_relaxed);
    };
    auto index = [&](const std::string& id, run_state state, int64_t at) {
      return persistence::run_index_entry{id, spec.name, state, at, at, ""};
    };
    for (size_t i = 0; i < o.n + o.concurrency; ++i) {
      auto id = actors::embedded_node::new_run_id(runtime::random_partition());
      auto at = actors::now_ns();
      persistence::journal_store::append_op submit;
      submit.run_id = id;
      submit.events.push_back(event_record{event_type::run_submitted, at, "", 0,
                                           0, "", "", source, "{}"});
      submit.index = index(id, run_state::running, at);
      store->append(std::move(submit), check);
      if (i >= o.n)
        continue; // parked: resumed from its submission
      persistence::journal_store::append_op finish;
      finish.run_id = id;
      for (auto node : {"first", "nap", "last"})
        finish.events.push_back(event_record{event_type::node_completed, at,
                                             node, 1, 0, "", "", "null", ""});
      finish.events.push_back(
        event_record{event_type::run_completed, at, "", 0, 0, "", "", "{}"});
      finish.index = index(id, run_state::completed, at);
      store->append(std::move(finish), check);
      // Bounded memory: wait for the store every 20,000 runs.
      if (i % 20'000 == 19'999)
        store->flush();
    }
    store->flush();
    if (failed > 0) {
      std::cerr << "troupe: bench: " << failed.load()
                << " appends failed while filling the store\n";
      return exit_failed;
    }
  }
  auto fill_s = seconds_since(began);
  // Reopened once, so that what the last memtables held is flushed now and
  // not replayed by the timed start: the comparison is of the stores, not
  // of how recently each was written.
  std::string error;
  auto store = persistence::journal_store::open(so, error);
  if (!store) {
    std::cerr << "troupe: bench: " << error << "\n";
    return exit_failed;
  }
  auto walk_began = clock_type::now();
  size_t entries = 0, unfinished = 0;
  std::string cursor;
  for (;;) {
    auto page = store->list_runs(cursor, 10'000);
    for (auto& e : page) {
      ++entries;
      unfinished += persistence::is_terminal(e.state) ? 0 : 1;
    }
    if (page.size() < 10'000)
      break;
    cursor = page.back().run_id;
  }
  emit({{"fill_s", fill_s},
        {"index_entries", entries},
        {"unfinished", unfinished},
        {"index_walk_s", seconds_since(walk_began)}});
  return exit_ok;
}

int run_one(const global_options& g, const one_options& o) {
  if (o.data_dir.empty()
      || (o.workload != "idle"
          && (o.n == 0 || o.concurrency == 0)
          // history's store without finished runs
          && !(o.workload.starts_with("history-") && o.concurrency > 0))) {
    std::cerr << "troupe: bench: --one needs --data-dir, and --n and "
                 "--concurrency of at least 1\n";
    return exit_bad_input;
  }
  if (o.workload == "http10" && o.echo_url.empty()) {
    std::cerr << "troupe: bench: --one http10 needs --echo-url\n";
    return exit_bad_input;
  }
  if (o.workload == "idle")
    return measure_idle(g, o);
  if (o.workload == "sleepers")
    return measure_sleepers(g, o);
  if (o.workload == "timeouts")
    return measure_timeouts(g, o);
  if (o.workload == "chain")
    return measure_chain(g, o);
  if (o.workload == "recover-fill")
    return recover_fill(g, o);
  if (o.workload == "recover-resume" || o.workload == "history-resume")
    return recover_resume(g, o);
  if (o.workload == "history-fill")
    return history_fill(g, o);
  auto* w = find_workload(o.workload);
  if (!w) {
    std::cerr << "troupe: bench: unknown workload '" << o.workload << "'\n";
    return exit_bad_input;
  }
  return measure_throughput(g, o, *w);
}

// -- the parent: one child process per measurement --------------------------

/// A child `troupe bench --one ...` whose stdout lines are read as they come.
class child {
 public:
  child(const global_options& g, const one_options& o) {
    int fds[2];
    if (pipe(fds) != 0)
      throw std::runtime_error("pipe failed");
    std::vector<std::string> args = {"troupe"};
    if (!g.config_file.empty())
      args.insert(args.end(), {"--config", g.config_file});
    for (auto& s : g.sets)
      args.insert(args.end(), {"--set", s});
    args.insert(args.end(),
                {"bench", "--one", o.workload, "--durability", o.durability,
                 "--n", std::to_string(o.n), "--concurrency",
                 std::to_string(o.concurrency), "--data-dir", o.data_dir});
    if (!o.echo_url.empty())
      args.insert(args.end(), {"--echo-url", o.echo_url});
    started_ = clock_type::now();
    pid_ = fork();
    if (pid_ < 0) {
      close(fds[0]);
      close(fds[1]);
      throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
      dup2(fds[1], STDOUT_FILENO);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args)
        argv.push_back(a.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
  }

  ~child() {
    if (fd_ >= 0)
      close(fd_);
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  /// The next JSON line, and seconds from the child's start until it came;
  /// nothing on end of output or after `timeout`.
  std::optional<std::pair<json, double>> next(std::chrono::seconds timeout) {
    auto deadline = clock_type::now() + timeout;
    while (true) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        auto line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        auto j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object())
          continue;
        return std::make_pair(std::move(j), seconds_since(started_));
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - clock_type::now())
                    .count();
      if (left <= 0)
        return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(std::min<long>(left, 1000))) <= 0)
        continue;
      char buf[4096];
      auto got = read(fd_, buf, sizeof buf);
      if (got <= 0)
        return std::nullopt;
      buffer_.append(buf, static_cast<size_t>(got));
      // A line is timed when it arrives, so keep reading only on demand.
    }
  }

  /// Waits for the child, at most `limit` (then kills it); returns its exit
  /// code, 128 + the signal if one ended it.
  int wait(std::chrono::seconds limit = std::chrono::seconds{120}) {
    if (reaped_)
      return status_;
    auto deadline = clock_type::now() + limit;
    int status = 0;
    pid_t got = 0;
    while ((got = waitpid(pid_, &status, WNOHANG)) == 0
           && clock_type::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds{10});
    if (got == 0) {
      kill(pid_, SIGKILL);
      got = waitpid(pid_, &status, 0);
    }
    reaped_ = true;
    if (got != pid_)
      return status_ = exit_failed;
    if (WIFSIGNALED(status))
      return status_ = 128 + WTERMSIG(status);
    return status_ = WEXITSTATUS(status);
  }

  /// Kills the child (it is ours and not reaped yet) and reaps it.
  void kill_now() {
    if (!reaped_)
      kill(pid_, SIGKILL);
    wait();
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
  std::string buffer_;
  clock_type::time_point started_;
};

/// A scratch data dir, removed when done.
class scratch_dir {
 public:
  explicit scratch_dir(const std::string& base) {
    auto root = base.empty() ? std::filesystem::temp_directory_path()
                             : std::filesystem::path{base};
    std::filesystem::create_directories(root);
    auto pattern = (root / "troupe-bench-XXXXXX").string();
    if (!mkdtemp(pattern.data()))
      throw std::runtime_error("cannot create a folder under " + root.string());
    path_ = pattern;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// A line a child printed, with the seconds since it started.
using timed_line = std::pair<json, double>;

/// What a node's start on a filled data dir took: its first line once
/// every unfinished run is handed to its actor (`ready`: how many, and how
/// long opening and scanning took), its second once every actor has rebuilt
/// its run (`resumed`).
struct resume_timing {
  timed_line ready;
  timed_line resumed;
};

/// Runs `resume` (a *-resume workload) on the data dir a fill left, and
/// returns its timing; nothing when it did not resume `expected` runs
/// (said on stderr, naming `bench`).
std::optional<resume_timing> time_resume(const global_options& g,
                                         const one_options& resume,
                                         size_t expected,
                                         const std::string& bench) {
  child c{g, resume};
  auto ready = c.next(std::chrono::seconds{600});
  auto resumed = ready ? c.next(std::chrono::seconds{600}) : std::nullopt;
  if (!resumed)
    c.kill_now();
  auto rc = c.wait();
  if (!ready || !resumed || rc != exit_ok
      || ready->first.value("ready", size_t{0}) != expected
      || resumed->first.value("resumed", size_t{0}) < expected) {
    std::cerr << "troupe: bench: " << bench
              << ": the restarted node did not resume " << expected << " runs"
              << (ready ? " (" + ready->first.dump() + ")" : std::string{})
              << "\n";
    return std::nullopt;
  }
  return resume_timing{std::move(*ready), std::move(*resumed)};
}

std::optional<json> measure_history(const global_options& g,
                                    const one_options& o,
                                    const std::string& scratch_base);

std::optional<json> measure(const global_options& g, one_options o,
                            const std::string& scratch_base) {
  if (o.workload == "history")
    return measure_history(g, o, scratch_base);
  scratch_dir dir{scratch_base};
  o.data_dir = dir.path() + "/data";
  if (o.workload != "recover") {
    child c{g, o};
    auto line = c.next(std::chrono::seconds{3600});
    if (!line)
      c.kill_now(); // silent for an hour: stuck
    auto rc = c.wait();
    if (!line || rc != exit_ok) {
      std::cerr << "troupe: bench: " << o.workload << " (" << o.durability
                << ") failed (exit " << rc << ")";
      if (line && line->first.contains("first_error"))
        std::cerr << ": " << line->first["first_error"].get<std::string>();
      std::cerr << "\n";
      return std::nullopt;
    }
    return line->first;
  }
  // recover: park runs in one process, kill it, time a fresh one.
  auto fill = o;
  fill.workload = "recover-fill";
  double park_s = 0;
  {
    child c{g, fill};
    auto line = c.next(std::chrono::seconds{3600});
    if (!line || line->first.value("parked", size_t{0}) != o.n) {
      std::cerr << "troupe: bench: recover: could not park " << o.n
                << " runs\n";
      return std::nullopt;
    }
    park_s = line->first.value("park_s", 0.0);
    c.kill_now();
  }
  auto resume = o;
  resume.workload = "recover-resume";
  auto t = time_resume(g, resume, o.n, "recover");
  if (!t)
    return std::nullopt;
  return json{{"workload", "recover"},
              {"durability", o.durability},
              {"n", o.n},
              {"park_s", park_s},
              {"ready_s", t->ready.second},
              {"open_s", t->ready.first.value("open_s", 0.0)},
              {"scan_s", t->ready.first.value("scan_s", 0.0)},
              {"resumed_s", t->resumed.second}};
}

/// One side of `history`: fills a fresh data dir with `finished` finished
/// runs and `parked` unfinished ones, then times a node's start on it.
std::optional<json> history_side(const global_options& g, const one_options& o,
                                 size_t finished,
                                 const std::string& scratch_base) {
  scratch_dir dir{scratch_base};
  auto fill = o;
  fill.workload = "history-fill";
  fill.n = finished;
  fill.data_dir = dir.path() + "/data";
  json filled;
  {
    child c{g, fill};
    auto line = c.next(std::chrono::seconds{3600});
    if (!line)
      c.kill_now();
    if (c.wait(std::chrono::seconds{600}) != exit_ok || !line) {
      std::cerr << "troupe: bench: history: could not fill a store with "
                << finished << " finished runs\n";
      return std::nullopt;
    }
    filled = line->first;
  }
  auto resume = fill;
  resume.workload = "history-resume";
  auto t = time_resume(g, resume, o.concurrency, "history");
  if (!t)
    return std::nullopt;
  return json{{"finished", finished},
              {"index_entries", filled.value("index_entries", size_t{0})},
              {"index_walk_s", filled.value("index_walk_s", 0.0)},
              {"fill_s", filled.value("fill_s", 0.0)},
              {"ready_s", t->ready.second},
              {"open_s", t->ready.first.value("open_s", 0.0)},
              {"scan_s", t->ready.first.value("scan_s", 0.0)},
              {"resumed_s", t->resumed.second}};
}

/// `history`: the same parked runs resumed from a store that also holds N
/// finished runs and from one that holds only them, one after the other.
std::optional<json> measure_history(const global_options& g,
                                    const one_options& o,
                                    const std::string& scratch_base) {
  auto with = history_side(g, o, o.n, scratch_base);
  if (!with)
    return std::nullopt;
  auto alone = history_side(g, o, 0, scratch_base);
  if (!alone)
    return std::nullopt;
  auto ratio = [&](const char* k) {
    return (*with).value(k, 0.0) / std::max(1e-9, (*alone).value(k, 0.0));
  };
  return json{{"workload", "history"},
              {"durability", o.durability},
              {"n", o.n},
              {"parked", o.concurrency},
              {"with_history", *with},
              {"parked_only", *alone},
              {"ready_ratio", ratio("ready_s")},
              {"scan_ratio", ratio("scan_s")},
              {"resumed_ratio", ratio("resumed_s")}};
}

std::string describe(const json& r);

/// A throughput workload against a running node, over one control
/// connection: `concurrency` runs each submitted and then watched to their
/// end, a new one submitted as soon as one ends.
json measure_remote(control_client& client, const workload& w, size_t n,
                    size_t concurrency, const std::string& echo_url) {
  auto submit
    = bench::submit_request(w.name, workflow_source(w.name, echo_url));
  auto run = [&](size_t count) {
    return bench::closed_loop(client, submit, count, concurrency, "the node");
  };
  run(warm_up_runs(n));
  return throughput_json(w, {{"node", client.node_name()}}, n, concurrency,
                         run(n));
}

/// http10's echo service: --echo-url, else (when `names` has http10) one
/// the bench starts in `own` on 127.0.0.1; "" when none is needed.
std::string echo_url_for(const bench_options& b,
                         const std::vector<std::string>& names,
                         std::unique_ptr<bench::echo_service>& own) {
  if (!b.echo_url.empty())
    return b.echo_url;
  if (std::find(names.begin(), names.end(), "http10") == names.end())
    return {};
  own = std::make_unique<bench::echo_service>();
  return own->url();
}

/// `troupe --node ADDR bench`: the throughput workloads against that node.
int run_bench_remote(const global_options& g, const bench_options& b,
                     const std::vector<std::string>& names) {
  for (auto& name : names)
    if (name == "sleepers" || name == "recover" || name == "idle"
        || name == "history" || name == "timeouts" || name == "chain") {
      std::cerr << "troupe: bench: workload '" << name
                << "' measures a node's own process (memory, restart, steps) "
                   "and runs on an embedded node only; against --node give "
                   "seq10, seq10c1, http10, fan10, exec10 or fanexec10\n";
      return exit_bad_input;
    }
  if (b.durability != "machine") {
    std::cerr << "troupe: bench: against --node the node's own "
                 "storage.durability applies; leave out --durability\n";
    return exit_bad_input;
  }
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  std::unique_ptr<bench::echo_service> own_echo;
  auto echo_url = echo_url_for(b, names, own_echo);
  control_client client;
  int rc = exit_ok;
  try {
    client.connect(client_options(g, settings));
    for (auto& name : names) {
      auto& w = *find_workload(name);
      auto n = b.n_set ? b.n : (b.quick ? w.quick_n : w.n);
      auto c = b.concurrency_set ? b.concurrency : w.concurrency;
      if (!g.json)
        std::cerr << "bench: " << name << " against " << client.node_name()
                  << ": " << w.description << ", N=" << n << " ...\n";
      auto r = measure_remote(client, w, n, c, echo_url);
      if (r.value("failed", 0) > 0)
        rc = exit_failed;
      if (g.json)
        emit(r);
      else
        std::cout << describe(r) << std::endl;
    }
  } catch (const client_error& e) {
    std::cerr << "troupe: bench: " << e.what() << "\n";
    if (e.code == "rate_limited")
      std::cerr << "troupe: bench: the node limits each subject's "
                   "submissions (auth.submit_rate, auth.submit_burst); to "
                   "measure the node rather than its limit, start it with "
                   "--set auth.submit_rate=100000 --set "
                   "auth.submit_burst=100000\n";
    return e.exit_code;
  }
  return rc;
}

/// `troupe --node ADDR bench viewers`: how soon a node acknowledges
/// submissions while `viewers` clients, each with one request in flight,
/// ask it about an actor that does not exist, over and over, with many runs
/// parked (each submission waits for its answer before the next). The
/// parked runs stay on the node: give it a scratch data dir.
int run_bench_viewers(const global_options& g, const bench_options& b) {
  if (g.node.empty()) {
    std::cerr << "troupe: bench: workload 'viewers' runs against a node: "
                 "start a scratch one (with --set auth.submit_rate=100000 "
                 "--set auth.submit_burst=100000) and give --node ADDR\n";
    return exit_bad_input;
  }
  if (b.durability != "machine") {
    std::cerr << "troupe: bench: against --node the node's own "
                 "storage.durability applies; leave out --durability\n";
    return exit_bad_input;
  }
  config::settings settings;
  if (!load_config(g, {}, settings))
    return exit_bad_input;
  auto co = client_options(g, settings);
  size_t parked = b.quick ? 2'000 : 50'000;
  size_t submits = b.n_set ? b.n : (b.quick ? 20 : 200);
  size_t viewers = b.concurrency_set ? b.concurrency : 4;
  auto say = [&](const std::string& line) {
    if (!g.json)
      std::cerr << "bench: viewers: " << line << std::endl;
  };
  try {
    control_client client;
    client.connect(co);
    // Park the runs, 64 submissions in flight.
    say("parking " + std::to_string(parked) + " runs in a 1 h sleep on "
        + client.node_name() + " ...");
    json park = {{"t", "submit"},
                 {"workflow", workflow_source("sleepers")},
                 {"file", "bench-sleepers.yaml"},
                 {"inputs", json::object()}};
    auto park_began = clock_type::now();
    size_t sent = 0, done = 0;
    for (; sent < std::min<size_t>(64, parked); ++sent)
      client.start(park);
    while (done < parked) {
      auto msg = client.next(std::chrono::seconds{120});
      if (!msg)
        throw client_error(exit_failed, "no answer from the node in 120 s");
      if (msg->value("t", std::string{}) != "reply")
        continue;
      ++done;
      if (sent < parked) {
        client.start(park);
        ++sent;
      }
    }
    auto park_s = seconds_since(park_began);

    // The viewers.
    std::atomic<bool> stop{false};
    std::atomic<size_t> answered{0};
    std::mutex problem_mtx;
    std::string problem;
    std::vector<std::thread> threads;
    json nobody
      = {{"t", "inspect"}, {"what", "actor"}, {"actor_id", uint64_t{1} << 60}};
    for (size_t v = 0; v < viewers; ++v)
      threads.emplace_back([&] {
        try {
          control_client c;
          c.connect(co);
          while (!stop.load()) {
            try {
              c.call(nobody, std::chrono::seconds{600});
            } catch (const client_error& e) {
              if (e.code != "not_found")
                throw;
            }
            ++answered;
          }
        } catch (const std::exception& e) {
          std::lock_guard guard{problem_mtx};
          problem = e.what();
        }
      });
    // Submissions, one at a time, while they ask.
    say(std::to_string(viewers) + " viewers asking; timing "
        + std::to_string(submits) + " submissions ...");
    json quick = {{"t", "submit"},
                  {"workflow", "name: bench-viewers\nnodes:\n  a: {kind: "
                               "noop}\n"},
                  {"file", "bench-viewers.yaml"},
                  {"inputs", json::object()}};
    std::vector<double> ms;
    auto began = clock_type::now();
    auto answered_before = answered.load();
    for (size_t i = 0; i < submits; ++i) {
      auto t0 = clock_type::now();
      client.call(quick, std::chrono::seconds{600});
      ms.push_back(
        std::chrono::duration<double, std::milli>(clock_type::now() - t0)
          .count());
      // Bounded: a node that makes each submission wait long gives fewer.
      if (seconds_since(began) > 300)
        break;
    }
    auto wall = seconds_since(began);
    auto inspections = answered.load() - answered_before;
    stop = true;
    for (auto& t : threads)
      t.join();
    if (!problem.empty())
      throw client_error(exit_failed, "a viewer failed: " + problem);
    std::sort(ms.begin(), ms.end());
    json out = {{"workload", "viewers"},
                {"node", client.node_name()},
                {"parked", parked},
                {"park_s", park_s},
                {"viewers", viewers},
                {"submits", ms.size()},
                {"inspections", inspections},
                {"inspections_per_s", static_cast<double>(inspections) / wall},
                {"submit_p50_ms", percentile(ms, 0.5)},
                {"submit_p99_ms", percentile(ms, 0.99)},
                {"submit_max_ms", ms.empty() ? 0.0 : ms.back()}};
    if (g.json)
      emit(out);
    else
      std::cout << describe(out) << std::endl;
  } catch (const client_error& e) {
    std::cerr << "troupe: bench: viewers: " << e.what() << "\n";
    return e.exit_code;
  }
  return exit_ok;
}

/// One readable line for a result.
std::string describe(const json& r) {
  auto w = r.value("workload", std::string{});
  auto head = w + " ("
              + (r.contains("node") ? "node " + r.value("node", std::string{})
                                    : r.value("durability", std::string{}))
              + ")";
  auto d
    = [&](const char* k, int digits) { return fixed(r.value(k, 0.0), digits); };
  if (w == "idle")
    return head + ": RSS " + d("rss_mib", 1) + " MiB";
  if (w == "viewers")
    return head + ": " + std::to_string(r.value("parked", 0)) + " runs parked, "
           + std::to_string(r.value("viewers", 0))
           + " viewers asking for an unknown actor ("
           + d("inspections_per_s", 0) + " answers/s); "
           + std::to_string(r.value("submits", 0))
           + " submissions acknowledged in p50/p99/max " + d("submit_p50_ms", 2)
           + "/" + d("submit_p99_ms", 2) + "/" + d("submit_max_ms", 2) + " ms";
  if (w == "sleepers")
    return head + ": " + std::to_string(r.value("parked", 0)) + " parked in "
           + d("park_s", 1) + " s, RSS " + d("idle_rss_mib", 1) + " -> "
           + d("rss_mib", 1) + " MiB, " + d("bytes_per_run", 0)
           + " bytes per parked run";
  if (w == "history") {
    auto side = [&](const char* k) {
      auto& s = r[k];
      return fixed(s.value("ready_s", 0.0), 3) + " s to ready (store opened in "
             + fixed(s.value("open_s", 0.0), 3) + " s, unfinished runs read in "
             + fixed(s.value("scan_s", 0.0), 4) + " s), all resumed in "
             + fixed(s.value("resumed_s", 0.0), 3) + " s";
    };
    return head + ": " + std::to_string(r.value("parked", 0))
           + " parked runs beside " + std::to_string(r.value("n", 0))
           + " finished ones: " + side("with_history")
           + "; parked alone: " + side("parked_only") + "; ratio ready "
           + d("ready_ratio", 2) + ", read " + d("scan_ratio", 2) + ", resumed "
           + d("resumed_ratio", 2)
           + " (decoding every index entry, as recovery did before: "
           + fixed(r["with_history"].value("index_walk_s", 0.0), 2) + " s)";
  }
  if (w == "timeouts")
    return head + ": " + std::to_string(r.value("ok", 0))
           + " runs ended; RSS idle " + d("idle_rss_mib", 1)
           + " MiB, after they ended " + d("rss_mib", 1) + " MiB ("
           + d("rss_ratio", 2) + "x idle"
           + (r.value("purged", false) ? ", jemalloc purged before each" : "")
           + ")";
  if (w == "chain") {
    auto n = r.value("n", 0);
    std::string nodes, times, per_step;
    for (auto& c : r.value("chains", json::array())) {
      auto sep = nodes.empty() ? "" : "/";
      nodes += sep + std::to_string(c.value("nodes", 0));
      times += sep + fixed(c.value("s", 0.0), 3);
      per_step += sep + fixed(c.value("us_per_step", 0.0), 1);
    }
    return head + ", best of " + std::to_string(r.value("rounds", 0))
           + ": chains of " + nodes + " nodes in " + times + " s (" + per_step
           + " us per step); ten chains of " + std::to_string(n / 10) + " in "
           + d("ten_runs_s", 3) + " s: one of " + std::to_string(n) + " takes "
           + d("ratio", 2) + "x ten of " + std::to_string(n / 10) + "; parsed "
           + std::to_string(n) + " nodes in " + d("parse_s", 3)
           + " s, peak RSS " + d("peak_rss_mib", 1) + " MiB";
  }
  if (w == "recover")
    return head + ": " + std::to_string(r.value("n", 0))
           + " parked runs; after kill -9, ready in " + d("ready_s", 2)
           + " s (store opened in " + d("open_s", 2) + " s, runs read in "
           + d("scan_s", 2) + " s), all resumed in " + d("resumed_s", 2) + " s";
  auto line = head + ": " + std::to_string(r.value("ok", 0))
              + " runs (C=" + std::to_string(r.value("concurrency", 0))
              + ") in " + d("wall_s", 2) + " s, " + d("runs_per_s", 0)
              + " runs/s, " + d("steps_per_s", 0) + " steps/s, p50/p95/p99 "
              + d("p50_ms", 2) + "/" + d("p95_ms", 2) + "/" + d("p99_ms", 2)
              + " ms, step p50 " + d("step_p50_ms", 3) + " ms";
  // Only an embedded node's own process is measured.
  if (r.contains("peak_rss_mib"))
    line += ", peak RSS " + d("peak_rss_mib", 1) + " MiB, CPU "
            + d("cpu_s_per_1000_steps", 3) + " s/1000 steps; "
            + d("appends_per_commit", 1) + " appends per commit of "
            + d("commit_ms", 3) + " ms";
  return line;
}

} // namespace

int run_bench(const global_options& g, const bench_options& b) {
  if (!b.one.empty()) {
    one_options o{b.one,         b.durability, b.n,
                  b.concurrency, b.data_dir,   b.echo_url};
    return run_one(g, o);
  }
  if (!b.echo_url.empty())
    if (auto why = bench::check_echo_url(b.echo_url); !why.empty()) {
      std::cerr << "troupe: bench: " << why << "\n";
      return exit_bad_input;
    }
  if (b.cluster_set)
    return run_bench_cluster(g, b);
  std::vector<std::string> names = b.workloads;
  if (std::find(names.begin(), names.end(), "cluster-fan") != names.end()) {
    if (names.size() > 1) {
      std::cerr << "troupe: bench: workload 'cluster-fan' runs alone\n";
      return exit_bad_input;
    }
    return run_bench_cluster_fan(g, b);
  }
  if (std::find(names.begin(), names.end(), "cluster-detect") != names.end()) {
    if (names.size() > 1) {
      std::cerr << "troupe: bench: workload 'cluster-detect' runs alone\n";
      return exit_bad_input;
    }
    return run_bench_cluster_detect(g, b);
  }
  if (std::find(names.begin(), names.end(), "viewers") != names.end()) {
    if (names.size() > 1) {
      std::cerr << "troupe: bench: workload 'viewers' runs alone\n";
      return exit_bad_input;
    }
    return run_bench_viewers(g, b);
  }
  if (names.empty())
    for (auto& w : workloads())
      names.push_back(w.name);
  for (auto& n : names)
    if (!find_workload(n)) {
      std::string known;
      for (auto& w : workloads())
        known += (known.empty() ? "" : ", ") + w.name;
      std::cerr << "troupe: bench: unknown workload '" << n
                << "'; workloads: " << known << "\n";
      return exit_bad_input;
    }
  if (!b.data_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(b.data_dir, ec);
    if (ec || access(b.data_dir.c_str(), W_OK | X_OK) != 0) {
      std::cerr << "troupe: bench: --data-dir '" << b.data_dir
                << "' cannot hold scratch folders: "
                << (ec ? ec.message() : std::strerror(errno)) << "\n";
      return exit_bad_input;
    }
  }
  std::vector<std::string> modes;
  if (b.durability == "both")
    modes = {"machine", "process"};
  else if (b.durability == "machine" || b.durability == "process")
    modes = {b.durability};
  else {
    std::cerr << "troupe: bench: --durability must be machine, process or "
                 "both, not '"
              << b.durability << "'\n";
    return exit_bad_input;
  }
  if (b.concurrency_set && b.concurrency == 0) {
    std::cerr << "troupe: bench: --concurrency must be at least 1\n";
    return exit_bad_input;
  }
  if (b.n_set && b.n == 0) {
    std::cerr << "troupe: bench: --n must be at least 1\n";
    return exit_bad_input;
  }
  if (!g.node.empty())
    return run_bench_remote(g, b, names);
  std::unique_ptr<bench::echo_service> own_echo;
  auto echo_url = echo_url_for(b, names, own_echo);
  int rc = exit_ok;
  for (auto& mode : modes)
    for (auto& name : names) {
      auto& w = *find_workload(name);
      one_options o;
      o.workload = name;
      o.durability = mode;
      o.n = b.n_set ? b.n : (b.quick ? w.quick_n : w.n);
      o.concurrency = b.concurrency_set ? b.concurrency : w.concurrency;
      o.echo_url = echo_url;
      if (!g.json)
        std::cerr << "bench: " << name << " (" << mode << "): " << w.description
                  << ", N=" << o.n << " ...\n";
      auto r = measure(g, o, b.data_dir);
      if (!r) {
        rc = exit_failed;
        continue;
      }
      if (g.json)
        emit(*r);
      else
        std::cout << describe(*r) << std::endl;
    }
  return rc;
}

} // namespace troupe::tools
