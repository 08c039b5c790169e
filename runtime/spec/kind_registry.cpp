#include "runtime/spec/kind_registry.hpp"

namespace troupe::runtime {

kind_registry& kind_registry::global() {
  static kind_registry* instance = [] {
    auto* r = new kind_registry;
    register_builtin_kinds(*r);
    return r;
  }();
  return *instance;
}

bool kind_registry::add(kind_spec kind) {
  std::lock_guard guard{mtx_};
  auto name = kind.name;
  return kinds_.emplace(std::move(name), std::move(kind)).second;
}

const kind_spec* kind_registry::find(const std::string& name) const {
  std::lock_guard guard{mtx_};
  auto i = kinds_.find(name);
  // Kinds are never removed, so the pointer stays valid.
  return i == kinds_.end() ? nullptr : &i->second;
}

std::vector<std::string> kind_registry::names() const {
  std::lock_guard guard{mtx_};
  std::vector<std::string> out;
  for (auto& [name, _] : kinds_)
    out.push_back(name);
  return out;
}

void register_builtin_kinds(kind_registry& registry) {
  using pt = param_type;
  registry.add(
    {"switch",
     "Branches: the first of `cases` ({when: expression, goto: [node ids]}) "
     "whose expression holds sends the run to its nodes; `default` names "
     "the nodes for when none holds. Nodes of branches not taken are "
     "skipped. Output: {case, goto}.",
     {{"cases", pt::any, true,
       "A list of {when: expression, goto: [node ids]}, tried in order."},
      {"default", pt::any, false,
       "Node (or list of nodes) to run when no case holds; without it, none "
       "run."}},
     false,
     nullptr});
  registry.add(
    {"http",
     "Calls an HTTP(S) service. Output: {status, headers, body} (a JSON body "
     "parsed). Connection errors, timeouts, 5xx and 429 are retried "
     "(honouring Retry-After); other 4xx are not.",
     {{"url", pt::string, true, "http:// or https:// URL."},
      {"method",
       pt::choice,
       false,
       "Default: GET.",
       0,
       0,
       {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"}},
      {"headers", pt::string_map, false, "Request headers."},
      {"query", pt::string_map, false,
       "Query parameters, added to the URL (encoded)."},
      {"body", pt::any, false,
       "A string is sent as text; anything else as JSON."},
      {"idempotency_key", pt::string, false,
       "Sent as Idempotency-Key on every attempt; default "
       "'{{ run.id }}-{{ node.id }}'."},
      {"request_timeout", pt::duration, false,
       "Limit on one request, at least 1ms; default 30s (the node's timeout "
       "also ends it).",
       0.001},
      {"max_response_bytes", pt::integer, false,
       "Largest response body; default 1 MiB.", 1, 1073741824.0},
      {"verify_tls", pt::boolean, false,
       "Check the server's certificate; default true."}},
     false,
     [](const nlohmann::json& node, kind_check_context& ctx) {
       auto u = node.find("url");
       if (u == node.end() || !u->is_string())
         return;
       auto url = u->get<std::string>();
       if (url.find("{{") == std::string::npos && url.rfind("http://", 0) != 0
           && url.rfind("https://", 0) != 0)
         ctx.error("url", "bad_value",
                   "'" + url + "' must start with http:// or https://");
     }});
  registry.add(
    {"map",
     "Runs `node` once per item of `items` (each item its own journaled, "
     "retried execution; `{{ item }}` and `{{ item_index }}` in its "
     "parameters), at most `max_concurrency` at once. Output: the list of "
     "the items' outputs, in item order.",
     {{"items", pt::any, true,
       "A list, or a template giving one (e.g. \"{{ nodes.a.output.ids }}\")."},
      {"node", pt::any, true, "The node definition to run per item."},
      {"max_concurrency", pt::integer, false,
       "Items running at once; default 16.", 1, 10000}},
     false,
     nullptr});
  registry.add({"noop",
                "Does nothing; its output is its parameters, resolved.",
                {},
                true,
                nullptr});
  registry.add({"sleep",
                "Waits for `duration` on a durable timer that survives "
                "restarts.",
                {{"duration", pt::duration, true, "How long to wait."}},
                false,
                nullptr});
  registry.add(
    {"fail",
     "Fails on purpose, for tests and demos: its first `times` attempts, or "
     "each attempt with `probability`.",
     {{"times", pt::integer, false, "Attempts that fail before one succeeds.",
       0, 1e9},
      {"probability", pt::number, false, "Chance that an attempt fails.", 0, 1},
      {"seed", pt::integer, false, "Seed for `probability`, so runs repeat.", 0,
       9.007199254740992e15},
      {"error_kind", pt::string, false,
       "Error kind of the failure (see retry.non_retryable)."},
      {"message", pt::string, false, "Error message of the failure."},
      {"exception", pt::boolean, false,
       "Throw from the attempt instead of failing it (to exercise "
       "supervision)."}},
     false,
     [](const nlohmann::json& node, kind_check_context& ctx) {
       bool times = node.contains("times");
       bool probability = node.contains("probability");
       if (node.value("exception", false) && !times && !probability)
         return;
       if (times == probability)
         ctx.error("", "missing_field",
                   "a fail node needs exactly one of 'times' or "
                   "'probability'");
       if (node.contains("seed") && !probability)
         ctx.error("seed", "bad_value",
                   "'seed' only applies with "
                   "'probability'");
     }});
  registry.add(
    {"exec",
     "Runs a program (argv, no shell); its output is its stdout parsed as a "
     "JSON object, else {stdout, stderr, exit_code}.",
     {{"command", pt::string_list, true,
       "Program and arguments, e.g. [\"/bin/echo\", \"hi\"]."},
      {"env", pt::string_map, false, "Extra environment variables."},
      {"cwd", pt::string, false, "Working folder."},
      {"stdin", pt::string, false,
       "Standard input; default: JSON {inputs, nodes}, the run's inputs and "
       "the outputs of the nodes in `after` by id (a map's item also gets "
       "item and item_index)."},
      {"max_output_bytes", pt::integer, false,
       "Cap on captured stdout and stderr each; default 1 MiB.", 1024,
       1073741824.0},
      {"heartbeat_timeout", pt::duration, false,
       "The program must write to fd 3 (TROUPE_HEARTBEAT_FD) at least this "
       "often (at least 1ms), or it is killed and the attempt fails "
       "(retryable).",
       0.001}},
     false,
     [](const nlohmann::json& node, kind_check_context& ctx) {
       auto i = node.find("command");
       if (i == node.end() || !i->is_array())
         return;
       if (i->empty())
         ctx.error("command", "bad_value",
                   "must name a program: an empty list runs nothing");
       else if (i->front().is_string() && i->front().get<std::string>().empty())
         ctx.error("command", "bad_value", "the program name is empty");
     }});
}

} // namespace troupe::runtime
