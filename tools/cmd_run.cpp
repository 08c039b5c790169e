#include "actors/node/embedded_node.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/document.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"
#include "tools/commands.hpp"
#include "tools/data_dir.hpp"
#include "tools/node_setup.hpp"

#include <caf/all.hpp>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <unistd.h>

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

/// Shows the progress of runs: a table of nodes redrawn in place on a
/// terminal, one line per event otherwise. Everything goes to stderr.
class progress_view {
 public:
  explicit progress_view(bool json_mode)
      : tty_(!json_mode && isatty(STDERR_FILENO)), quiet_(json_mode) {}

  void on(const runtime::run_progress& p) {
    if (quiet_ || p.node.empty())
      return;
    auto state = p.event;
    std::string line
      = p.node + "  " + state + "  attempt " + std::to_string(p.attempt);
    if (p.event == "attempt_failed" && p.next_retry_ns != 0) {
      auto in_ms = (p.next_retry_ns - actors::now_ns()) / 1'000'000;
      line += "  next retry in " + std::to_string(std::max<int64_t>(0, in_ms))
              + "ms";
    }
    if (!p.message.empty())
      line += "  " + p.message.substr(0, 120);
    if (!tty_) {
      std::cerr << p.run_id << " " << line << "\n";
      return;
    }
    auto [it, fresh] = rows_.try_emplace(p.run_id + "/" + p.node);
    if (fresh)
      order_.push_back(it->first);
    it->second = line;
    redraw();
  }

  void end() {
    if (tty_ && drawn_ > 0)
      std::cerr << "\n";
  }

 private:
  void redraw() {
    if (drawn_ > 0)
      std::cerr << "\r\033[" << drawn_ << "A";
    for (auto& key : order_)
      std::cerr << "\r\033[2K  " << rows_[key] << "\n";
    drawn_ = order_.size();
    std::cerr << std::flush;
  }

  bool tty_;
  bool quiet_;
  std::map<std::string, std::string> rows_;
  std::vector<std::string> order_;
  size_t drawn_ = 0;
};

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
  if (r.resume != r.file.empty()) {
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
      new_run = node->submit(source, *spec, inputs, self, error,
                             r.idempotency_key, &existing);
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
    progress_view view{g.json};
    bool running = true;
    while (running && !waiting.empty()) {
      self->receive(
        [&](runtime::run_progress& p) { view.on(p); },
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
              std::cout << dump(report, r.resume ? -1 : 2) << "\n";
            } else if (ok) {
              view.end();
              std::cout << dump(outputs, 2) << "\n";
            }
          }
          if (!ok)
            std::cerr << "run " << f.run_id << " (" << f.workflow << ") "
                      << persistence::to_string(f.state) << ": " << f.reason
                      << "\n";
          else if (f.run_id != new_run && !r.resume && !g.json)
            std::cerr << "resumed run " << f.run_id << " (" << f.workflow
                      << ") completed\n";
        },
        caf::after(std::chrono::milliseconds(100)) >>
          [&] {
            if (stop_signal.load() != 0)
              running = false;
          });
    }
    view.end();
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
