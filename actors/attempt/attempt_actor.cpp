#include "actors/attempt/attempt_actor.hpp"

#include "actors/plugin/plugin_attempt.hpp"
#include "config/duration.hpp"
#include "persistence/chaos_hooks.hpp"
#include "runtime/engine/backoff.hpp"

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstring>
#include <ctime>
#include <functional>
#include <optional>
#include <strings.h>

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

process_spec make_process(const runtime::attempt_spec& spec, const json& p,
                          const std::string& member) {
  process_spec ps;
  for (auto& item : p["command"])
    ps.argv.push_back(as_text(item));
  if (auto e = p.find("env"); e != p.end() && e->is_object())
    for (auto& [k, v] : e->items())
      ps.env[k] = as_text(v);
  // Who runs it and what, over whatever the node's env says.
  ps.env["TROUPE_MEMBER"] = member;
  ps.env["TROUPE_RUN_ID"] = spec.run_id;
  ps.env["TROUPE_NODE_ID"] = spec.node;
  ps.env["TROUPE_ATTEMPT"] = std::to_string(spec.attempt);
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
  // The attempt's process never runs beside one of an earlier attempt of
  // the node whose run actor died (that attempt died with it, and its
  // process may be in its kill grace).
  ps.key = work_key(spec.run_id, spec.node);
  if (auto h = p.find("heartbeat_timeout"); h != p.end() && h->is_string())
    if (auto d = config::parse_duration(h->get<std::string>()))
      ps.heartbeat_timeout
        = std::max(std::chrono::milliseconds{1},
                   std::chrono::duration_cast<std::chrono::milliseconds>(*d));
  return ps;
}

/// The last `limit` bytes of `s`, cut at a line start where one is near.
std::string tail_bytes(const std::string& s, size_t limit) {
  if (s.size() <= limit)
    return s;
  auto from = s.size() - limit;
  if (auto nl = s.find('\n', from);
      nl != std::string::npos && nl + 1 < s.size() && nl - from < limit / 4)
    from = nl + 1;
  return s.substr(from);
}

attempt_result exec_result_of(const runtime::attempt_spec& spec,
                              const process_outcome& r,
                              std::chrono::milliseconds heartbeat);

/// An exec attempt's result, with the tails of its output for `troupe logs`.
attempt_result exec_result(const runtime::attempt_spec& spec,
                           const process_outcome& r,
                           std::chrono::milliseconds heartbeat) {
  auto result = exec_result_of(spec, r, heartbeat);
  if (r.spawn_error.empty()) {
    constexpr size_t log_tail = 8 << 10;
    result.logs = dump(json{{"stdout", tail_bytes(r.out, log_tail)},
                            {"stderr", tail_bytes(r.err, log_tail)},
                            {"exit_code", r.exit_code},
                            {"signal", r.signal}});
  }
  return result;
}

attempt_result exec_result_of(const runtime::attempt_spec& spec,
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
  // A JSON object cut off at the cap is no output at all: fail here rather
  // than hand {stdout, ...} to nodes that expect the object's fields.
  auto first = r.out.find_first_not_of(" \t\r\n");
  if (r.out_truncated && first != std::string::npos && r.out[first] == '{')
    return failure(spec, "output_too_large",
                   "stdout started a JSON object but was cut off at "
                     + std::to_string(r.out.size())
                     + " bytes (max_output_bytes); raise max_output_bytes or "
                       "write less (keep large results elsewhere and output "
                       "references to them)");
  json out = {{"stdout", r.out}, {"stderr", r.err}, {"exit_code", r.exit_code}};
  if (r.out_truncated)
    out["stdout_truncated"] = true;
  if (r.err_truncated)
    out["stderr_truncated"] = true;
  return success(spec, out);
}

/// Percent-encodes `s` for a URL query (RFC 3986 unreserved kept).
std::string url_encode(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

bool has_header(const http_request& r, std::string_view name) {
  for (auto& [k, v] : r.headers)
    if (k.size() == name.size()
        && std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a))
                    == std::tolower(static_cast<unsigned char>(b));
           }))
      return true;
  return false;
}

http_request make_request(const runtime::attempt_spec& spec, const json& p) {
  http_request r;
  r.method = p.value("method", std::string{"GET"});
  r.url = as_text(p["url"]);
  if (auto q = p.find("query"); q != p.end() && q->is_object() && !q->empty()) {
    auto sep = r.url.find('?') == std::string::npos ? '?' : '&';
    for (auto& [k, v] : q->items()) {
      r.url += sep + url_encode(k) + "=" + url_encode(as_text(v));
      sep = '&';
    }
  }
  if (auto h = p.find("headers"); h != p.end() && h->is_object())
    for (auto& [k, v] : h->items())
      r.headers.emplace_back(k, as_text(v));
  if (auto b = p.find("body"); b != p.end() && !b->is_null()) {
    r.body = as_text(*b);
    if (!has_header(r, "Content-Type"))
      r.headers.emplace_back("Content-Type", b->is_string()
                                               ? "text/plain; charset=utf-8"
                                               : "application/json");
  }
  if (!has_header(r, "Idempotency-Key"))
    r.headers.emplace_back("Idempotency-Key",
                           p.contains("idempotency_key")
                             ? as_text(p["idempotency_key"])
                             : spec.run_id + "-" + spec.node);
  if (auto t = p.find("request_timeout"); t != p.end() && t->is_string())
    if (auto d = config::parse_duration(t->get<std::string>()))
      r.timeout
        = std::max(std::chrono::milliseconds{1},
                   std::chrono::duration_cast<std::chrono::milliseconds>(*d));
  if (auto m = p.find("max_response_bytes"); m != p.end() && m->is_number())
    r.max_response_bytes = m->get<uint64_t>();
  r.verify_tls = p.value("verify_tls", true);
  return r;
}

/// Seconds of a Retry-After header (delta-seconds or an HTTP date), in ms.
int64_t retry_after_ms(const http_outcome& o) {
  for (auto& [k, v] : o.headers) {
    if (k.size() != 11 || strncasecmp(k.c_str(), "Retry-After", 11) != 0)
      continue;
    char* end = nullptr;
    auto secs = std::strtoll(v.c_str(), &end, 10);
    if (end != v.c_str() && *end == '\0' && secs >= 0)
      return std::min<int64_t>(secs, 86'400) * 1000;
    std::tm tm{};
    if (strptime(v.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
      auto at = static_cast<int64_t>(timegm(&tm)) * 1000;
      auto now = now_ns() / 1'000'000;
      return std::clamp<int64_t>(at - now, 0, 86'400'000);
    }
  }
  return 0;
}

attempt_result http_result(const runtime::attempt_spec& spec,
                           const http_request& req, const http_outcome& o) {
  if (!o.error_kind.empty())
    return failure(
      spec, o.error_kind == "bad_url" ? "bad_params" : o.error_kind, o.error);
  json headers = json::object();
  std::string content_type;
  for (auto& [k, v] : o.headers) {
    std::string name = k;
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "content-type")
      content_type = v;
    headers[name] = v;
  }
  json body = o.body;
  if (content_type.find("json") != std::string::npos) {
    auto parsed = json::parse(o.body, nullptr, false);
    if (!parsed.is_discarded())
      body = std::move(parsed);
  }
  if (o.status >= 200 && o.status < 400)
    return success(
      spec, {{"status", o.status}, {"headers", headers}, {"body", body}});
  auto what = "HTTP " + std::to_string(o.status) + " from " + req.method + " "
              + req.url.substr(0, req.url.find('?'))
              + (o.body.empty() ? "" : ": " + o.body.substr(0, 200));
  std::string kind = o.status == 429   ? "http_429"
                     : o.status >= 500 ? "http_5xx"
                                       : "http_4xx";
  auto r = failure(spec, kind, what);
  if (o.status == 429 || o.status == 503)
    r.retry_after_ms = retry_after_ms(o);
  return r;
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
  // Whether the run asked this attempt to halt, and the exec process it
  // waits for then.
  struct halting {
    bool asked = false;
    std::optional<process_runner::handle> process;
  };
  auto halt = std::make_shared<halting>();
  auto finish = [self, parent, halt](attempt_result r) {
    // A halted attempt's run no longer waits for its result.
    if (!halt->asked)
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
      // (noop and sleep nodes run in their run actor, not here.)
      // The attempt starts here, on the member that runs it: a test-only
      // ledger line for `troupe chaos` (nothing without the ledger).
      if (persistence::chaos::ledger_on())
        persistence::chaos::record("start", spec.run_id, spec.node,
                                   spec.attempt);
      if (spec.kind == "fail") {
        finish(run_fail(spec, params));
      } else if (spec.kind == "exec") {
        auto actor = caf::actor{self};
        auto* runner = svc->runner;
        auto process = make_process(spec, params, svc->member);
        auto heartbeat = process.heartbeat_timeout;
        // The outcome becomes a result on the runner's thread and comes back
        // to this actor as a message.
        auto h = runner->start(
          std::move(process), [actor, spec, heartbeat](process_outcome o) {
            caf::anon_send(actor, exec_result(spec, o, heartbeat));
          });
        halt->process = h;
        // This actor's end (its run's, the node's) kills the child too.
        self->attach_functor([runner, h] { runner->kill(h); });
      } else if (spec.kind == "http") {
        auto actor = caf::actor{self};
        auto* client = svc->http;
        auto req = make_request(spec, params);
        auto h = client->start(req, [actor, spec, req](http_outcome o) {
          caf::anon_send(actor, http_result(spec, req, o));
        });
        // Stopping this actor (timeout, cancel, shutdown) aborts the request.
        self->attach_functor([client, h] { client->cancel(h); });
      } else if (auto custom
                 = plugin::executor_registry::global().find(spec.kind)) {
        // A kind added through the plugin API: its result comes back as an
        // attempt_result, and stopping this actor cancels it.
        start_plugin_attempt(self, *custom, spec, params, *svc);
      } else {
        finish(failure(spec, "bad_params",
                       "no executor for kind '" + spec.kind + "'"));
      }
    },
    [=](attempt_result& r) mutable { finish(std::move(r)); },
    [=](runtime::halt_attempt&) {
      if (halt->asked)
        return;
      halt->asked = true;
      // An exec process is killed, and this actor ends with its outcome,
      // which comes once its process group is gone: its run waits for
      // that. Anything else stops as this actor ends (attach_functor).
      if (halt->process)
        svc->runner->kill(*halt->process);
      else
        self->quit();
    },
  };
}

} // namespace troupe::actors
