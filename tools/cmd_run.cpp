#include "actors/node/embedded_node.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/document.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tools/commands.hpp"
#include "tools/data_dir.hpp"
#include "tools/node_setup.hpp"
#include "tools/progress/progress_view.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <set>

namespace troupe::tools {

using json = nlohmann::json;
using persistence::run_state;

namespace {

std::atomic<int> stop_signal{0};

extern "C" void on_stop_signal(int sig) {
  stop_signal.store(sig);
}

std::string dump(const json& v, int indent = -1) {
  return v.dump(indent, ' ', false, json::error_handler_t::replace);
}

/// The progress view's account of a run's event.
progress::event progress_event(const runtime::run_progress& p) {
  return {p.run_id,        p.node,    p.event, p.attempt,
          p.next_retry_ns, p.message, p.at_ns, p.items};
}

} // namespace

int run_run(const global_options& g, const run_options& r) {
  std::vector<config::flag_override> flags;
  if (!r.data_dir.empty())
    flags.push_back({"--data-dir", "node.data_dir", r.data_dir});
  if (!r.durability.empty())
    flags.push_back({"--durability", "storage.durability", r.durability});
  config::settings settings;
  if (!load_config(g, flags, settings))
    return exit_bad_input;
  if (r.resume && !r.file.empty()) {
    std::cerr << "troupe: run: a workflow FILE and --resume cannot be "
                 "combined: --resume starts no new run, it finishes the "
                 "unfinished runs of the data dir; give one or the other\n";
    return exit_bad_input;
  }
  if (!r.resume && r.file.empty()) {
    std::cerr << "troupe: run: give a workflow FILE, or --resume to finish "
                 "the unfinished runs of the data dir\n";
    return exit_bad_input;
  }
  if (r.resume && !r.idempotency_key.empty()) {
    std::cerr << "troupe: run: --idempotency-key applies to a new run: give "
                 "a workflow FILE, not --resume\n";
    return exit_bad_input;
  }
  if (r.idempotency_key.size() > 1024
      || r.idempotency_key.find('\0') != std::string::npos) {
    std::cerr << "troupe: run: --idempotency-key must be at most 1024 "
                 "characters, without NUL\n";
    return exit_bad_input;
  }

  // Check the workflow and its inputs before touching the data dir.
  std::optional<runtime::workflow_spec> spec;
  std::string source;
  json inputs;
  if (!r.resume) {
    auto outcome = runtime::load_workflow_file(r.file);
    if (!outcome.ok()) {
      for (auto& d : outcome.errors)
        std::cerr << d.to_string(r.file) << "\n";
      return exit_bad_input;
    }
    spec = std::move(outcome.workflow);
    std::ifstream in{r.file, std::ios::binary};
    source.assign(std::istreambuf_iterator<char>{in}, {});
    std::vector<std::string> errors;
    auto bound = bind_cli_inputs(*spec, r.inputs, r.inputs_file, errors);
    if (!bound) {
      for (auto& e : errors)
        std::cerr << "troupe: run: " << e << "\n";
      return exit_bad_input;
    }
    inputs = std::move(*bound);
  }

  std::string error;
  auto opts = node_options(settings);
  opts.tune_store = [](auto& so) { so.holder.command = "run"; };
  auto node = actors::embedded_node::open(opts, error);
  if (!node)
    return report_open_failure("run", opts.data_dir, error);
  if (auto low = node->disk_low(); low && spec) {
    std::cerr << "troupe: run: cannot start the run: " << *low
              << "; free space and run again\n";
    return exit_unreachable;
  }
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);

  int rc = exit_ok;
  std::string new_run;
  {
    caf::scoped_actor self{node->system()};
    auto recovered = node->recover(self);
    for (auto& p : recovered.problems)
      std::cerr << "troupe: run: not resumed: " << p << "\n";
    // With --resume, a run that could not be resumed is a failed run.
    if (r.resume && !recovered.problems.empty())
      rc = exit_failed;
    std::set<std::string> waiting(recovered.resumed.begin(),
                                  recovered.resumed.end());
    if (!recovered.resumed.empty() && !g.json)
      std::cerr << "resuming " << recovered.resumed.size()
                << " unfinished run(s) from "
                << settings.get_string("node.data_dir") << "\n";
    if (spec) {
      bool existing = false;
      std::string conflict;
      new_run = node->submit(source, *spec, inputs, self, error,
                             r.idempotency_key, &existing, &conflict);
      if (!conflict.empty()) {
        std::cerr << "troupe: run: " << error << "\n";
        return exit_bad_input;
      }
      if (new_run.empty()) {
        std::cerr << "troupe: run: cannot journal the run: " << error << "\n";
        return exit_failed;
      }
      waiting.insert(new_run);
      if (!existing) {
        if (!g.json)
          std::cerr << "run " << new_run << " of workflow '" << spec->name
                    << "' started\n";
      } else {
        if (!g.json)
          std::cerr << "idempotency key '" << r.idempotency_key << "' is run "
                    << new_run << "; no new run started\n";
        // A finished run reports at once; an unfinished one was resumed
        // above and reports when it ends.
        if (auto f = node->finished_run(new_run))
          self->send(self, std::move(*f));
      }
    }
    progress::view view{{progress::view::mode_for_stderr(g.json)}};
    // FILE's run ends the command: runs resumed alongside it that are still
    // unfinished then stop with the node, journaled, for a later --resume.
    auto done = [&] {
      return waiting.empty() || (spec && waiting.count(new_run) == 0)
             || stop_signal.load() != 0;
    };
    while (!done()) {
      self->receive(
        [&](runtime::run_progress& p) { view.on(progress_event(p)); },
        [&](runtime::run_finished& f) {
          waiting.erase(f.run_id);
          auto outputs = json::parse(f.outputs, nullptr, false);
          bool ok = f.state == run_state::completed;
          if (f.run_id == new_run || r.resume) {
            if (!ok)
              rc = exit_failed;
            if (g.json || r.resume) {
              json report = {{"run_id", f.run_id},
                             {"workflow", f.workflow},
                             {"state", persistence::to_string(f.state)}};
              if (ok) {
                report["outputs"] = outputs;
              } else {
                report["error"] = f.reason;
                if (outputs.is_object() && outputs.contains("compensated"))
                  report["compensation"] = outputs;
              }
              view.print(std::cout, dump(report, r.resume ? -1 : 2) + "\n");
            } else if (ok) {
              view.end();
              std::cout << dump(outputs, 2) << "\n";
            }
          }
          if (!ok)
            view.print(std::cerr,
                       "run " + f.run_id + " (" + f.workflow + ") "
                         + std::string{persistence::to_string(f.state)} + ": "
                         + f.reason + "\n");
          else if (f.run_id != new_run && !r.resume && !g.json)
            view.print(std::cerr, "resumed run " + f.run_id + " (" + f.workflow
                                    + ") completed\n");
        },
        caf::after(std::chrono::milliseconds(100)) >> [] {});
    }
    view.end();
    if (spec && stop_signal.load() == 0)
      waiting.erase(new_run);
    if (!waiting.empty() && stop_signal.load() == 0) {
      auto dir = settings.get_string("node.data_dir");
      auto n = waiting.size();
      std::cerr << n << " other unfinished run" << (n == 1 ? "" : "s")
                << " resumed from " << dir << (n == 1 ? " is" : " are")
                << " stopped now that this run has ended; "
                << (n == 1 ? "it stays" : "they stay")
                << " journaled, and 'troupe run --resume --data-dir " << dir
                << "' finishes " << (n == 1 ? "it" : "them") << "\n";
    }
  }
  if (int sig = stop_signal.load(); sig != 0) {
    std::cerr << "troupe: stopped by signal " << sig
              << "; unfinished runs are journaled and resume with 'troupe run "
                 "--resume --data-dir "
              << settings.get_string("node.data_dir") << "'\n";
    node.reset();
    return 128 + sig;
  }
  node.reset();
  return rc;
}

} // namespace troupe::tools
