#pragma once

// The C++ plugin API for node kinds: how code outside Troupe's sources adds a
// kind that workflows can use. It shows no CAF: an executor receives a
// node_call, does its work (on its own threads when it takes time) and
// completes the call once. See docs/plugins.md.
//
//   class echo : public troupe::plugin::node_executor {
//    public:
//     void start(std::shared_ptr<troupe::plugin::node_call> call) override {
//       call->succeed({{"said", call->params.at("text")}});
//     }
//   };
//   troupe::plugin::executor_registry::global().add(
//     {"echo", "Echoes `text`.",
//      {{"text", troupe::runtime::param_type::string, true, "What to say."}}},
//     std::make_shared<echo>());

#include "runtime/spec/kind_registry.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace troupe::plugin {

/// How a call ended, as handed to the function a node_call delivers to.
struct node_outcome {
  bool ok = false;
  /// The node's output, when ok.
  nlohmann::json output;
  /// Why not, otherwise: the error kind (see the workflow's
  /// retry.non_retryable) and a message for people.
  std::string error_kind;
  std::string message;
  /// The least wait before the next attempt; 0: the retry policy decides.
  std::chrono::milliseconds retry_after{0};
};

/// One attempt of one node, handed to node_executor::start. The executor
/// completes it exactly once, with `succeed` or `fail`, from any thread; it
/// should stop its work when the attempt is cancelled (see `on_cancel`).
///
/// All members are thread-safe. The data members are set before `start` and
/// never changed by Troupe afterwards.
class node_call {
 public:
  /// Where the outcome goes: Troupe's attempt actor, or a test's function.
  using deliver_fn = std::function<void(node_outcome)>;

  /// Makes a call whose outcome goes to `deliver` (called at most once,
  /// while an internal lock is held: it must be quick and must not call back
  /// into this call). Troupe makes the calls executors receive; tests of an
  /// executor may make their own.
  explicit node_call(deliver_fn deliver);

  node_call(const node_call&) = delete;
  node_call& operator=(const node_call&) = delete;
  ~node_call();

  /// The run, the node's id in the workflow, its kind and the attempt number
  /// (1 for the first attempt).
  std::string run_id;
  std::string node;
  std::string kind;
  int32_t attempt = 0;
  /// The node's parameters, templates resolved, as validated against the
  /// kind's param_specs.
  nlohmann::json params = nlohmann::json::object();
  /// The node's context, as an exec node's stdin gets it:
  /// {"inputs": {...}, "nodes": {<each node in after>: <its output>}}.
  nlohmann::json context = nlohmann::json::object();
  /// Writes one line for people about this call, prefixed with the run,
  /// node and attempt: to the node's options.log, or to stderr when that is
  /// empty. Never empty in calls Troupe makes.
  std::function<void(const std::string&)> log;

  /// Completes the attempt with `output` (any JSON value; an object lets
  /// templates read its fields: {{ nodes.<id>.output.<field> }}). Returns
  /// whether this call completed it: false once it was completed or
  /// cancelled (the later outcome is dropped).
  bool succeed(nlohmann::json output);

  /// Fails the attempt with `error_kind` (empty: "error") and `message`.
  /// The node's retry policy decides what comes next: another attempt after
  /// the backoff, but not sooner than `retry_after`, unless `error_kind` is
  /// in retry.non_retryable or the attempts are used up. Returns whether
  /// this call completed it, as `succeed` does.
  bool fail(std::string error_kind, std::string message,
            std::chrono::milliseconds retry_after
            = std::chrono::milliseconds{0});

  /// Whether `succeed` or `fail` completed the attempt.
  bool completed() const;

  /// Whether the attempt was stopped before it completed: it timed out, its
  /// run was cancelled or failed, or the node is shutting down. Its outcome
  /// no longer matters; long work should poll this or use `on_cancel`.
  bool cancelled() const;

  /// Calls `fn` once when the attempt is cancelled; at once (on this
  /// thread) if it already was, never if it completes first. `fn` runs on
  /// one of Troupe's threads: it must be quick and must not block (set a
  /// flag, close a socket, signal your worker). Exceptions from it are
  /// dropped.
  void on_cancel(std::function<void()> fn);

  /// Cancels the call: later outcomes are dropped and the `on_cancel`
  /// functions run. Troupe calls it when the attempt stops; executors have
  /// no need to (tests of an executor may). Does nothing once completed or
  /// cancelled.
  void cancel();

 private:
  bool complete(node_outcome outcome);

  mutable std::mutex mtx_;
  deliver_fn deliver_;
  bool completed_ = false;
  bool cancelled_ = false;
  std::vector<std::function<void()>> on_cancel_;
};

/// Runs the attempts of one node kind. One executor serves every node of
/// its kind, in all runs, on many threads at once: `start` may be called
/// concurrently.
class node_executor {
 public:
  virtual ~node_executor();

  /// Starts one attempt and returns at once: `start` runs on one of the
  /// actor system's few threads, so it must not block. Do the work on your
  /// own thread or I/O context and complete `call` from there, or complete
  /// it right here if the work is trivial and fast. An exception escaping
  /// `start` fails the attempt with error kind "crash" (unless `call` was
  /// already completed).
  virtual void start(std::shared_ptr<node_call> call) = 0;
};

/// The executors of the kinds C++ code adds. The kinds run on every
/// embedded node of the process.
class executor_registry {
 public:
  /// Returns the process-wide registry.
  static executor_registry& global();

  /// Adds kind `kind`, run by `exec`: declares its parameters to
  /// runtime::kind_registry::global() (so that parsing a workflow, and
  /// `troupe validate`, check them) and routes its attempts to `exec`.
  /// Returns false, adding nothing, if `exec` is null or a kind of that
  /// name exists (built-in or added before). Call it before submitting or
  /// recovering runs that use the kind.
  bool add(runtime::kind_spec kind, std::shared_ptr<node_executor> exec);

  /// Returns the executor of kind `name`, or null.
  std::shared_ptr<node_executor> find(const std::string& name) const;

  /// Returns the names of the kinds added, sorted.
  std::vector<std::string> names() const;

 private:
  mutable std::mutex mtx_;
  std::map<std::string, std::shared_ptr<node_executor>> executors_;
};

} // namespace troupe::plugin
