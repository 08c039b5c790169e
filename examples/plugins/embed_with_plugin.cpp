// Troupe as a library, with a node kind of its own: registers the kind
// `word_count`, opens an embedded node in DATA_DIR, runs a workflow that uses
// the kind after a noop node, and prints the run's outputs as JSON.
//
//   troupe_plugin_example DATA_DIR [--text TEXT] [--fail-on WORD]
//
// Exit codes: 0 the run completed, 1 it failed, 2 bad usage or a data dir
// that cannot be opened. Walked through in docs/plugins.md.

#include "actors/node/embedded_node.hpp"
#include "actors/plugin/node_executor.hpp"
#include "runtime/protocol/messages.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/workflow_loader.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <condition_variable>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

namespace {

using json = nlohmann::json;
using namespace troupe;

// -- the kind -----------------------------------------------------------------

/// What workflows may write on a word_count node; parse_workflow (and
/// `troupe validate`) check nodes against it.
runtime::kind_spec word_count_kind() {
  using pt = runtime::param_type;
  runtime::kind_spec kind;
  kind.name = "word_count";
  kind.doc = "Counts the words of `text` (split at white space). Output: "
             "{words}.";
  kind.params = {
    {"text", pt::string, true, "The text whose words to count."},
    {"fail_on", pt::string, false,
     "A word that fails the node with error kind bad_word (empty: none)."},
  };
  // Checks beyond one parameter's type; templates are only known at run time.
  kind.check = [](const json& node, runtime::kind_check_context& ctx) {
    auto f = node.find("fail_on");
    if (f == node.end() || !f->is_string())
      return;
    auto word = f->get<std::string>();
    if (word.find("{{") == std::string::npos
        && word.find_first_of(" \t\r\n") != std::string::npos)
      ctx.error("fail_on", "bad_value", "must be a single word");
  };
  return kind;
}

/// Runs word_count attempts on a worker thread of its own: start() only
/// queues the call, so it never blocks the actor system's threads.
class word_count_executor : public plugin::node_executor {
 public:
  word_count_executor() : worker_([this] { work(); }) {}

  ~word_count_executor() override {
    {
      std::lock_guard guard{mtx_};
      stopping_ = true;
    }
    ready_.notify_all();
    worker_.join();
  }

  void start(std::shared_ptr<plugin::node_call> call) override {
    {
      std::lock_guard guard{mtx_};
      queue_.push_back(std::move(call));
    }
    ready_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::shared_ptr<plugin::node_call> call;
      {
        std::unique_lock lock{mtx_};
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty())
          return;
        call = std::move(queue_.front());
        queue_.pop_front();
      }
      count(*call);
    }
  }

  static void count(plugin::node_call& call) {
    // Timed out, cancelled or shut down while it waited: nothing to do.
    if (call.cancelled())
      return;
    auto text = call.params.at("text").get<std::string>();
    auto bad = call.params.value("fail_on", std::string{});
    std::istringstream in{text};
    int64_t words = 0;
    for (std::string word; in >> word; ++words)
      if (!bad.empty() && word == bad) {
        // The workflow lists bad_word in retry.non_retryable: no retry.
        call.fail("bad_word",
                  "word " + std::to_string(words + 1) + " is '" + word + "'");
        return;
      }
    call.log("counted " + std::to_string(words) + " words");
    call.succeed({{"words", words}});
  }

  std::mutex mtx_;
  std::condition_variable ready_;
  std::deque<std::shared_ptr<plugin::node_call>> queue_;
  bool stopping_ = false;
  std::thread worker_; // Last: starts once the members above exist.
};

// -- the workflow -------------------------------------------------------------

const char* const workflow_yaml = R"(name: count-words
inputs:
  text: {type: string, default: "the quick brown fox"}
  fail_on: {type: string, default: ""}
defaults:
  retry: {max_attempts: 3, initial_backoff: 10ms, non_retryable: [bad_word]}
  timeout: 10s
nodes:
  prepare:
    kind: noop
    text: "{{ inputs.text }}"
  count:
    kind: word_count
    after: [prepare]
    text: "{{ nodes.prepare.output.text }}"
    fail_on: "{{ inputs.fail_on }}"
outputs:
  text: "{{ nodes.prepare.output.text }}"
  words: "{{ nodes.count.output.words }}"
)";

int usage() {
  std::cerr << "usage: troupe_plugin_example DATA_DIR [--text TEXT] "
               "[--fail-on WORD]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-')
    return usage();
  std::string data_dir = argv[1];
  json given = json::object();
  for (int i = 2; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc)
      return usage();
    if (flag == "--text")
      given["text"] = argv[i + 1];
    else if (flag == "--fail-on")
      given["fail_on"] = argv[i + 1];
    else
      return usage();
  }

  // 1. Register the kind before parsing workflows that use it (and before
  //    recovering runs that do).
  if (!plugin::executor_registry::global().add(
        word_count_kind(), std::make_shared<word_count_executor>())) {
    std::cerr << "troupe_plugin_example: kind 'word_count' exists already\n";
    return 2;
  }

  // 2. Parse the workflow (this checks word_count's parameters) and bind
  //    its inputs.
  auto loaded = runtime::parse_workflow(workflow_yaml);
  if (!loaded.ok()) {
    for (auto& d : loaded.errors)
      std::cerr << d.to_string("count-words.yaml") << "\n";
    return 2;
  }
  std::vector<std::string> errors;
  auto inputs = runtime::bind_inputs(*loaded.workflow, given, errors);
  if (!inputs) {
    for (auto& e : errors)
      std::cerr << "troupe_plugin_example: " << e << "\n";
    return 2;
  }

  // 3. Open an embedded node on the data dir.
  actors::embedded_node::options opts;
  opts.data_dir = data_dir;
  opts.log = [](const std::string& line) {
    static std::mutex mtx;
    std::lock_guard guard{mtx};
    std::cerr << "troupe: " << line << "\n";
  };
  std::string error;
  auto node = actors::embedded_node::open(opts, error);
  if (!node) {
    std::cerr << "troupe_plugin_example: " << error << "\n";
    return 2;
  }

  // 4. Resume what an earlier process left unfinished, submit the run, and
  //    wait for it on a scoped actor that receives its progress.
  int rc = 1;
  {
    caf::scoped_actor self{node->system()};
    node->recover(self);
    auto id
      = node->submit(workflow_yaml, *loaded.workflow, *inputs, self, error);
    if (id.empty()) {
      std::cerr << "troupe_plugin_example: cannot submit: " << error << "\n";
      return 1;
    }
    std::cerr << "run " << id << " started\n";
    for (bool done = false; !done;) {
      self->receive(
        [&](runtime::run_progress& p) {
          if (p.run_id == id && !p.node.empty())
            std::cerr << p.node << "  " << p.event << "  attempt " << p.attempt
                      << (p.message.empty() ? "" : "  " + p.message) << "\n";
        },
        [&](runtime::run_finished& f) {
          if (f.run_id != id)
            return; // A resumed run of an earlier process.
          done = true;
          if (f.state == persistence::run_state::completed) {
            std::cout << json::parse(f.outputs).dump(2) << "\n";
            rc = 0;
          } else {
            std::cerr << "run " << id << " " << persistence::to_string(f.state)
                      << ": " << f.reason << "\n";
          }
        });
    }
  }

  // 5. Stop: every state change is journaled already.
  node->stop();
  return rc;
}
