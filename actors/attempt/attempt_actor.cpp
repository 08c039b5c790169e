#include "actors/attempt/attempt_actor.hpp"

#include "config/duration.hpp"
#include "runtime/engine/backoff.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstring>
#include <functional>

namespace troupe::actors {

using json = nlohmann::json;
using runtime::attempt_result;

namespace {

std::string dump(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// Returns the last `n` lines of `text`.
std::string tail_lines(const std::string& text, size_t n) {
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n')
    --pos;
  size_t lines = 0;
  while (pos > 0) {
    if (text[pos - 1] == '\n' && ++lines == n)
      break;
    --pos;
  }
  auto tail = text.substr(pos);
  while (!tail.empty() && tail.back() == '\n')
    tail.pop_back();
  return tail;
}

/// Text for JSON params that should be strings (argv items, env values).
std::string as_text(const json& v) {
  return v.is_string() ? v.get<std::string>() : dump(v);
}

attempt_result success(const runtime::attempt_spec& spec, const json& output) {
  return {spec.node, spec.attempt, true, dump(output), "", ""};
}

attempt_result failure(const runtime::attempt_spec& spec, std::string kind,
                       std::string message) {
  return {spec.node, spec.attempt,    false,
          "",        std::move(kind), std::move(message)};
}

/// The `fail` kind: fails its first `times` attempts, or each attempt with
/// `probability` (reproducible from `seed`, the node and the attempt).
attempt_result run_fail(const runtime::attempt_spec& spec, const json& p) {
  bool fails = false;
  std::string why;
  if (p.contains("times")) {
    auto times = p["times"].get<int64_t>();
    fails = spec.attempt <= times;
    why = "attempt " + std::to_string(spec.attempt) + " of the first "
          + std::to_string(times) + " fails on purpose";
  } else if (!p.contains("probability")) {
    // Only `exception: true` (the spec check allows it alone): every attempt.
    fails = true;
    why = "fails on every attempt";
  } else {
    auto probability = p.value("probability", 0.0);
    auto seed = p.value("seed", uint64_t{0});
    auto u = runtime::unit_interval(seed ^ std::hash<std::string>{}(spec.node)
                                    ^ runtime::mix64(spec.attempt));
    fails = u < probability;
    why = "failed on purpose with probability " + json(probability).dump();
  }
  if (!fails)
    return success(spec, {{"attempt", spec.attempt}});
  // `exception: true` fails by throwing, to exercise the crash path.
  if (p.value("exception", false))
    throw std::runtime_error("fail node '" + spec.node + "' threw on purpose");
  return failure(spec, p.value("error_kind", std::string{"injected"}),
                 p.value("message", why));
}

process_spec make_process(const runtime::attempt_spec& spec, const json& p) {
  process_spec ps;
  for (auto& item : p["command"])
    ps.argv.push_back(as_text(item));
  if (auto e = p.find("env"); e != p.end() && e->is_object())
    for (auto& [k, v] : e->items())
      ps.env[k] = as_text(v);
  if (auto c = p.find("cwd"); c != p.end())
    ps.cwd = as_text(*c);
  if (auto s = p.find("stdin"); s != p.end())
    ps.stdin_data = as_text(*s);
  else
    ps.stdin_data = spec.context;
  ps.max_output_bytes = p.contains("max_output_bytes")
                          ? p["max_output_bytes"].get<uint64_t>()
                          : spec.max_output_bytes;
  ps.kill_grace = std::chrono::milliseconds{spec.kill_grace_ms};
  if (auto h = p.find("heartbeat_timeout"); h != p.end() && h->is_string())
    if (auto d = config::parse_duration(h->get<std::string>()))
      ps.heartbeat_timeout
        = std::max(std::chrono::milliseconds{1},
                   std::chrono::duration_cast<std::chrono::milliseconds>(*d));
  return ps;
}

attempt_result exec_result(const runtime::attempt_spec& spec,
                           const process_outcome& r,
                           std::chrono::milliseconds heartbeat) {
  if (!r.spawn_error.empty())
    return failure(spec, "spawn_error", r.spawn_error);
  if (r.heartbeat_lost)
    return failure(
      spec, "heartbeat_timeout",
      "no heartbeat on fd 3 within " + config::format_duration(heartbeat)
        + (r.err.empty() ? "" : "; stderr: " + tail_lines(r.err, 5)));
  if (r.signal != 0)
    return failure(
      spec, "signal",
      std::string{"killed by signal "} + std::to_string(r.signal) + " ("
        + strsignal(r.signal) + ")"
        + (r.err.empty() ? "" : "; stderr: " + tail_lines(r.err, 5)));
  if (r.exit_code != 0)
    return failure(
      spec, "exit_code",
      "exit code " + std::to_string(r.exit_code)
        + (r.err.empty() ? "" : "; stderr: " + tail_lines(r.err, 5)));
  auto parsed = json::parse(r.out, nullptr, false);
  if (!parsed.is_discarded() && parsed.is_object())
    return success(spec, parsed);
  json out = {{"stdout", r.out}, {"stderr", r.err}, {"exit_code", r.exit_code}};
  if (r.out_truncated)
    out["stdout_truncated"] = true;
  if (r.err_truncated)
    out["stderr_truncated"] = true;
  return success(spec, out);
}

} // namespace

caf::behavior attempt_actor_impl(caf::event_based_actor* self,
                                 runtime::attempt_spec spec, caf::actor parent,
                                 services_ptr svc) {
  self->set_exception_handler([](caf::scheduled_actor*,
                                 std::exception_ptr& eptr) -> caf::error {
    try {
      std::rethrow_exception(eptr);
    } catch (const std::exception& e) {
      return caf::make_error(caf::sec::runtime_error,
                             std::string{"unexpected exception: "} + e.what());
    } catch (...) {
      return caf::make_error(caf::sec::runtime_error, "unexpected exception");
    }
  });
  auto finish = [self, parent](attempt_result r) {
    self->send(parent, std::move(r));
    self->quit();
  };
  auto params = json::parse(spec.params, nullptr, false);
  if (params.is_discarded())
    params = json::object();
  // Work starts from a message to ourselves, so that an exception in it goes
  // through the exception handler like any other.
  self->send(self, caf::ok_atom::value);
  return {
    [=](caf::ok_atom) mutable {
      if (spec.kind == "noop") {
        finish(success(spec, params));
      } else if (spec.kind == "fail") {
        finish(run_fail(spec, params));
      } else if (spec.kind == "sleep") {
        auto left = spec.timer_deadline_ns - now_ns();
        self->delayed_send(self,
                           std::chrono::nanoseconds{std::max<int64_t>(0, left)},
                           troupe::atom::fire_v);
      } else if (spec.kind == "exec") {
        auto actor = caf::actor{self};
        auto* runner = svc->runner;
        auto process = make_process(spec, params);
        auto heartbeat = process.heartbeat_timeout;
        // The outcome becomes a result on the runner's thread and comes back
        // to this actor as a message.
        auto h = runner->start(
          std::move(process), [actor, spec, heartbeat](process_outcome o) {
            caf::anon_send(actor, exec_result(spec, o, heartbeat));
          });
        // Stopping this actor (timeout, cancel, shutdown) kills the child.
        self->attach_functor([runner, h] { runner->kill(h); });
      } else {
        finish(failure(spec, "bad_params",
                       "no executor for kind '" + spec.kind + "'"));
      }
    },
    [=](troupe::atom::fire) mutable {
      finish(success(spec, {{"deadline_ns", spec.timer_deadline_ns}}));
    },
    [=](attempt_result& r) mutable { finish(std::move(r)); },
  };
}

} // namespace troupe::actors
