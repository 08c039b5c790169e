#include "actors/plugin/node_executor.hpp"

#include "actors/plugin/plugin_attempt.hpp"

#include <caf/all.hpp>

#include <algorithm>
#include <cstdio>

namespace troupe::plugin {

using json = nlohmann::json;

// -- node_call ----------------------------------------------------------------

node_call::node_call(deliver_fn deliver) : deliver_(std::move(deliver)) {}

node_call::~node_call() {
  // The executor let go of the call without completing it: fail the attempt
  // now rather than leave it to its timeout.
  std::lock_guard guard{mtx_};
  if (!completed_ && !cancelled_ && deliver_) {
    node_outcome o;
    o.error_kind = "crash";
    o.message = "the executor of kind '" + kind
                + "' dropped the call without completing it";
    try {
      deliver_(std::move(o));
    } catch (...) {
      // Nothing to tell: the attempt is gone either way.
    }
  }
}

bool node_call::complete(node_outcome outcome) {
  std::lock_guard guard{mtx_};
  if (completed_ || cancelled_)
    return false;
  completed_ = true;
  on_cancel_.clear();
  // Delivered under the lock, so that `cancel` (the attempt actor stopping)
  // cannot run in between.
  auto deliver = std::move(deliver_);
  deliver_ = nullptr;
  if (deliver)
    deliver(std::move(outcome));
  return true;
}

bool node_call::succeed(json output) {
  node_outcome o;
  o.ok = true;
  o.output = std::move(output);
  return complete(std::move(o));
}

bool node_call::fail(std::string error_kind, std::string message,
                     std::chrono::milliseconds retry_after) {
  node_outcome o;
  o.error_kind = error_kind.empty() ? "error" : std::move(error_kind);
  o.message = std::move(message);
  o.retry_after = std::max(std::chrono::milliseconds{0}, retry_after);
  return complete(std::move(o));
}

bool node_call::completed() const {
  std::lock_guard guard{mtx_};
  return completed_;
}

bool node_call::cancelled() const {
  std::lock_guard guard{mtx_};
  return cancelled_;
}

void node_call::on_cancel(std::function<void()> fn) {
  if (!fn)
    return;
  {
    std::lock_guard guard{mtx_};
    if (completed_)
      return;
    if (!cancelled_) {
      on_cancel_.push_back(std::move(fn));
      return;
    }
  }
  try {
    fn();
  } catch (...) {
    // Documented: dropped.
  }
}

void node_call::cancel() {
  std::vector<std::function<void()>> fns;
  {
    std::lock_guard guard{mtx_};
    if (completed_ || cancelled_)
      return;
    cancelled_ = true;
    fns.swap(on_cancel_);
    deliver_ = nullptr;
  }
  for (auto& fn : fns) {
    try {
      fn();
    } catch (...) {
      // Documented: dropped.
    }
  }
}

// -- node_executor ------------------------------------------------------------

node_executor::~node_executor() = default;

// -- executor_registry --------------------------------------------------------

executor_registry& executor_registry::global() {
  // Never destroyed: executors may still hold threads at exit.
  static auto* instance = new executor_registry;
  return *instance;
}

bool executor_registry::add(runtime::kind_spec kind,
                            std::shared_ptr<node_executor> exec) {
  if (!exec || kind.name.empty())
    return false;
  std::lock_guard guard{mtx_};
  auto name = kind.name;
  if (executors_.count(name) != 0)
    return false;
  if (!runtime::kind_registry::global().add(std::move(kind)))
    return false;
  executors_.emplace(std::move(name), std::move(exec));
  return true;
}

std::shared_ptr<node_executor>
executor_registry::find(const std::string& name) const {
  std::lock_guard guard{mtx_};
  auto i = executors_.find(name);
  return i == executors_.end() ? nullptr : i->second;
}

std::vector<std::string> executor_registry::names() const {
  std::lock_guard guard{mtx_};
  std::vector<std::string> out;
  for (auto& [name, _] : executors_)
    out.push_back(name);
  return out;
}

} // namespace troupe::plugin

namespace troupe::actors {

namespace {

void write_stderr(const std::string& line) {
  static std::mutex mtx;
  std::lock_guard guard{mtx};
  std::fwrite(line.data(), 1, line.size(), stderr);
}

} // namespace

void start_plugin_attempt(caf::event_based_actor* self,
                          plugin::node_executor& exec,
                          const runtime::attempt_spec& spec,
                          nlohmann::json params, const services& svc) {
  auto deliver = [actor = caf::actor{self}, node = spec.node,
                  attempt = spec.attempt](plugin::node_outcome o) {
    runtime::attempt_result r;
    r.node = node;
    r.attempt = attempt;
    r.ok = o.ok;
    if (o.ok) {
      r.output = o.output.dump(-1, ' ', false,
                               nlohmann::json::error_handler_t::replace);
    } else {
      r.error_kind = std::move(o.error_kind);
      r.message = std::move(o.message);
      r.retry_after_ms = o.retry_after.count();
    }
    caf::anon_send(actor, std::move(r));
  };
  auto call = std::make_shared<plugin::node_call>(std::move(deliver));
  call->run_id = spec.run_id;
  call->node = spec.node;
  call->kind = spec.kind;
  call->attempt = spec.attempt;
  call->params = std::move(params);
  auto context = nlohmann::json::parse(spec.context, nullptr, false);
  if (!context.is_discarded())
    call->context = std::move(context);
  auto prefix = "run " + spec.run_id + " node " + spec.node + " attempt "
                + std::to_string(spec.attempt) + ": ";
  call->log = [prefix, sink = svc.log](const std::string& line) {
    if (sink)
      sink(prefix + line);
    else
      write_stderr("troupe: " + prefix + line + "\n");
  };
  // Stopping this actor (timeout, cancel, shutdown) cancels the call; after
  // a result it does nothing. A weak reference: an executor that drops the
  // call unfinished fails the attempt at once (see ~node_call).
  self->attach_functor([weak = std::weak_ptr<plugin::node_call>{call}] {
    if (auto c = weak.lock())
      c->cancel();
  });
  try {
    exec.start(call);
  } catch (const std::exception& e) {
    call->fail("crash",
               "the executor of kind '" + spec.kind + "' threw: " + e.what());
  } catch (...) {
    call->fail("crash",
               "the executor of kind '" + spec.kind + "' threw an exception");
  }
}

} // namespace troupe::actors
