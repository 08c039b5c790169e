#include "runtime/spec/workflow_loader.hpp"

#include "config/suggest.hpp"
#include "runtime/spec/document.hpp"
#include "runtime/spec/inputs.hpp"
#include "runtime/spec/template.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace troupe::runtime {

using json = nlohmann::json;
using config::did_you_mean;
using config::join;

workflow_index workflow_spec::make_index() const {
  workflow_index x;
  auto n = nodes.size();
  x.position.reserve(n);
  for (size_t i = 0; i < n; ++i)
    x.position.emplace(nodes[i].id, static_cast<uint32_t>(i));
  x.dependents.resize(n);
  x.primary.assign(n, -1);
  x.compensates.assign(n, -1);
  auto at = [&](const std::string& id) -> int32_t {
    auto i = x.position.find(id);
    return i == x.position.end() ? -1 : static_cast<int32_t>(i->second);
  };
  for (size_t i = 0; i < n; ++i) {
    for (auto& dep : nodes[i].after)
      if (auto d = at(dep); d >= 0)
        x.dependents[static_cast<size_t>(d)].push_back(
          static_cast<uint32_t>(i));
    // The first node naming one wins, as the scans did.
    if (auto f = at(nodes[i].fallback);
        f >= 0 && x.primary[static_cast<size_t>(f)] < 0)
      x.primary[static_cast<size_t>(f)] = static_cast<int32_t>(i);
    if (auto c = at(nodes[i].compensate);
        c >= 0 && x.compensates[static_cast<size_t>(c)] < 0)
      x.compensates[static_cast<size_t>(c)] = static_cast<int32_t>(i);
  }
  return x;
}

void workflow_spec::build_index() {
  index = std::make_shared<const workflow_index>(make_index());
}

int32_t workflow_spec::position_of(std::string_view id) const {
  if (indexed()) {
    auto i = index->position.find(id);
    return i == index->position.end() ? -1 : static_cast<int32_t>(i->second);
  }
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].id == id)
      return static_cast<int32_t>(i);
  return -1;
}

const node_spec* workflow_spec::find_node(std::string_view id) const {
  auto i = position_of(id);
  return i < 0 ? nullptr : &nodes[static_cast<size_t>(i)];
}

const node_spec* workflow_spec::primary_of(std::string_view id) const {
  if (indexed()) {
    auto i = position_of(id);
    auto p = i < 0 ? -1 : index->primary[static_cast<size_t>(i)];
    return p < 0 ? nullptr : &nodes[static_cast<size_t>(p)];
  }
  for (auto& n : nodes)
    if (n.fallback == id)
      return &n;
  return nullptr;
}

const node_spec* workflow_spec::compensated_by(std::string_view id) const {
  if (indexed()) {
    auto i = position_of(id);
    auto c = i < 0 ? -1 : index->compensates[static_cast<size_t>(i)];
    return c < 0 ? nullptr : &nodes[static_cast<size_t>(c)];
  }
  for (auto& n : nodes)
    if (n.compensate == id)
      return &n;
  return nullptr;
}

namespace {

// Fields every node has, whatever its kind.
const std::vector<std::string> node_fields
  = {"kind",       "after",           "description", "retry",
     "timeout",    "fallback",        "trigger",     "schedule_to_close",
     "compensate", "circuit_breaker", "concurrency", "placement",
     "on"};

const std::vector<std::string> placements = {"local", "spread", "least_loaded"};

/// Names other workflow tools give node fields, for suggestions.
const std::vector<std::pair<std::string, std::string>> node_field_aliases
  = {{"retries", "retry"}, {"depends_on", "after"}};

/// Returns the node field `key` looks like a misspelling of (one or two
/// edits away, or near another tool's name for it), or an empty string. A
/// key must keep at least half its characters to count, so that short
/// parameter names ("id", "v") are never taken for one.
std::string misspelt_node_field(const std::string& key) {
  if (std::find(node_fields.begin(), node_fields.end(), key)
      != node_fields.end())
    return {};
  std::string best;
  size_t best_edits = 3;
  auto consider = [&](const std::string& name, const std::string& field) {
    auto edits = config::edits_between(key, name);
    if (edits < best_edits && edits * 2 < key.size()) {
      best_edits = edits;
      best = field;
    }
  };
  for (auto& f : node_fields)
    consider(f, f);
  for (auto& [alias, field] : node_field_aliases)
    consider(alias, field);
  return best;
}

const std::vector<std::string> trigger_rules
  = {"all_success", "all_done", "one_success"};

const std::vector<std::string> top_fields
  = {"name",     "version", "description",     "inputs", "timeout",
     "defaults", "nodes",   "max_concurrency", "outputs"};

const std::vector<std::string> retry_fields
  = {"max_attempts", "initial_backoff", "multiplier",
     "max_backoff",  "jitter",          "non_retryable"};

const std::vector<std::string> input_fields
  = {"type", "default", "required", "description"};

const std::vector<std::string> input_types
  = {"any", "string", "integer", "number", "boolean", "object", "array"};

constexpr size_t max_id_length = 128;

std::string type_name(const json& v) {
  switch (v.type()) {
  case json::value_t::null: return "null";
  case json::value_t::boolean: return "a boolean";
  case json::value_t::number_integer:
  case json::value_t::number_unsigned: return "an integer";
  case json::value_t::number_float: return "a number";
  case json::value_t::string: return "a string";
  case json::value_t::array: return "a list";
  case json::value_t::object: return "a mapping";
  default: return "a value";
  }
}

std::string show(const json& v) {
  auto s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60)
    s = s.substr(0, 57) + "...";
  return s;
}

bool is_identifier(const std::string& s) {
  if (s.empty() || s.size() > max_id_length)
    return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_'))
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

bool is_whole_template(const json& v) {
  if (!v.is_string())
    return false;
  template_error err;
  auto t = parse_template(v.get<std::string>(), err);
  return t && t->is_single_expression();
}

class validator : public kind_check_context {
 public:
  validator(const document& doc, const kind_registry& kinds,
            diagnostics& errors)
      : doc_(doc), kinds_(kinds), errors_(errors) {}

  std::optional<workflow_spec> run() {
    auto& root = doc_.root;
    if (!root.is_object()) {
      report("", "type",
             "expected a mapping with name and nodes, found "
               + type_name(root));
      return std::nullopt;
    }
    check_fields(root, "", top_fields, "the top level", "x-");
    check_name(root);
    check_version(root);
    check_string_field(root, "description", "");
    check_inputs(root);
    check_defaults(root);
    check_max_concurrency(root);
    wf_.timeout = check_timeout(root, "");
    check_nodes(root);
    check_outputs(root);
    if (!errors_.empty())
      return std::nullopt;
    wf_.build_index();
    return std::move(wf_);
  }

  // -- kind_check_context -----------------------------------------------------

  void error(const std::string& param, const std::string& code,
             const std::string& message) override {
    report(param.empty() ? current_node_path_
                         : join_path(current_node_path_, param),
           code, message);
  }

 private:
  void report(const std::string& path, std::string code, std::string message) {
    auto m = doc_.find_mark(path);
    errors_.push_back(
      diagnostic{path, m.line, m.column, std::move(code), std::move(message)});
  }

  /// Reports fields of `obj` not in `allowed` and not starting with
  /// `free_prefix` (when given: such keys are the author's, and ignored).
  void check_fields(const json& obj, const std::string& path,
                    const std::vector<std::string>& allowed,
                    const std::string& where,
                    std::string_view free_prefix = {}) {
    for (auto& [key, _] : obj.items()) {
      if (!free_prefix.empty() && key.size() > free_prefix.size()
          && key.starts_with(free_prefix))
        continue;
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        report(join_path(path, key), "unknown_field",
               "unknown field '" + key + "' in " + where
                 + "; allowed: " + join(allowed)
                 + (free_prefix.empty()
                      ? std::string{}
                      : ", or any name starting with '"
                          + std::string{free_prefix}
                          + "' (ignored, a place for YAML anchors)")
                 + did_you_mean(key, allowed));
    }
  }

  bool expect(const json& v, const std::string& path, bool ok,
              const std::string& wanted) {
    if (!ok)
      report(path, "type",
             "expected " + wanted + ", found " + type_name(v) + " " + show(v));
    return ok;
  }

  void check_string_field(const json& obj, const std::string& key,
                          const std::string& path) {
    if (auto i = obj.find(key); i != obj.end())
      expect(*i, join_path(path, key), i->is_string(), "a string");
  }

  // -- top level --------------------------------------------------------------

  void check_name(const json& root) {
    auto i = root.find("name");
    if (i == root.end()) {
      report("", "missing_field", "missing field 'name' (the workflow's name)");
      return;
    }
    if (!expect(*i, "name", i->is_string(), "a string"))
      return;
    auto name = i->get<std::string>();
    bool ok = !name.empty() && name.size() <= max_id_length
              && std::all_of(name.begin(), name.end(), [](char c) {
                   return std::isalnum(static_cast<unsigned char>(c))
                          || c == '_' || c == '-' || c == '.';
                 });
    if (!ok)
      report("name", "bad_value",
             "workflow name " + show(*i)
               + " must be 1 to 128 letters, digits, '_', '-' or '.'");
    wf_.name = name;
  }

  void check_version(const json& root) {
    auto i = root.find("version");
    if (i == root.end())
      return;
    if (i->is_string())
      wf_.version = i->get<std::string>();
    else if (i->is_number())
      wf_.version = i->dump();
    else
      expect(*i, "version", false, "a string or number");
  }

  void check_max_concurrency(const json& root) {
    auto i = root.find("max_concurrency");
    if (i == root.end())
      return;
    if (!expect(*i, "max_concurrency", i->is_number_integer(), "an integer"))
      return;
    auto n = i->get<int64_t>();
    if (n < 1 || n > 100'000) {
      report("max_concurrency", "out_of_range",
             "max_concurrency " + std::to_string(n)
               + " is out of range; allowed: 1 to 100000");
      return;
    }
    wf_.max_concurrency = static_cast<int32_t>(n);
  }

  // -- inputs -----------------------------------------------------------------

  void check_inputs(const json& root) {
    auto i = root.find("inputs");
    if (i == root.end() || i->is_null())
      return;
    if (!expect(*i, "inputs", i->is_object(), "a mapping of input names"))
      return;
    for (auto& [name, body] : i->items()) {
      auto path = join_path("inputs", name);
      if (!is_identifier(name))
        report(path, "bad_value",
               "input name '" + name
                 + "' must start with a letter or '_' and hold only "
                   "letters, digits, '_' and '-'");
      input_spec in;
      in.name = name;
      // Without a default an input is required unless it says otherwise.
      in.required = true;
      declared_inputs_.insert(name);
      if (body.is_null()) {
        wf_.inputs.push_back(std::move(in));
        continue;
      }
      if (!expect(body, path, body.is_object(),
                  "a mapping {type, default, required}"))
        continue;
      check_fields(body, path, input_fields, "input '" + name + "'");
      check_string_field(body, "description", path);
      if (auto t = body.find("type"); t != body.end()) {
        auto tpath = join_path(path, "type");
        if (expect(*t, tpath, t->is_string(), "a string")) {
          auto s = t->get<std::string>();
          auto pos = std::find(input_types.begin(), input_types.end(), s);
          if (pos == input_types.end())
            report(tpath, "bad_value",
                   "unknown input type '" + s + "'; allowed: "
                     + join(input_types) + did_you_mean(s, input_types));
          else
            in.type = static_cast<input_type>(pos - input_types.begin());
        }
      }
      auto r = body.find("required");
      if (r != body.end())
        if (expect(*r, join_path(path, "required"), r->is_boolean(),
                   "true or false"))
          in.required = r->get<bool>();
      if (auto d = body.find("default"); d != body.end()) {
        auto dpath = join_path(path, "default");
        if (r != body.end() && in.required)
          report(dpath, "conflict",
                 "input '" + name
                   + "' is required and has a default; keep one of them");
        in.required = false;
        if (!input_matches(in.type, *d))
          report(dpath, "type",
                 "default " + show(*d) + " is not of the input's type '"
                   + input_types[static_cast<size_t>(in.type)] + "'");
        in.default_value = *d;
      }
      wf_.inputs.push_back(std::move(in));
    }
  }

  // -- durations and retry ----------------------------------------------------

  std::optional<duration> parse_duration_at(const json& v,
                                            const std::string& path) {
    if (v.is_number()) {
      auto n = v.dump();
      report(path, "bad_duration",
             "duration " + n + " has no unit; write e.g. \"" + n + "s\" or \""
               + n + "ms\"");
      return std::nullopt;
    }
    if (!v.is_string()) {
      report(path, "bad_duration",
             "expected a duration string such as \"250ms\", \"10s\", \"5m\" "
             "or \"1h\", found "
               + type_name(v) + " " + show(v));
      return std::nullopt;
    }
    std::string err;
    auto d = config::parse_duration(v.get<std::string>(), &err);
    if (!d)
      report(path, "bad_duration", err);
    return d;
  }

  /// Reads the duration `field` of `obj` (default: "timeout"), which must be
  /// longer than zero.
  std::optional<duration> check_timeout(const json& obj,
                                        const std::string& path,
                                        const std::string& field = "timeout") {
    auto i = obj.find(field);
    if (i == obj.end() || i->is_null())
      return std::nullopt;
    auto tpath = join_path(path, field);
    auto d = parse_duration_at(*i, tpath);
    if (d && d->count() == 0) {
      report(tpath, "out_of_range", field + " must be longer than 0s");
      return std::nullopt;
    }
    return d;
  }

  /// Reads a per-key concurrency limit: {key: template, limit: N}.
  std::optional<concurrency_spec> check_concurrency(const json& v,
                                                    const std::string& path) {
    if (!expect(v, path, v.is_object(), "a mapping {key, limit}"))
      return std::nullopt;
    check_fields(v, path, {"key", "limit"}, "concurrency");
    concurrency_spec c;
    bool ok = true;
    auto k = v.find("key");
    if (k == v.end()) {
      report(path, "missing_field",
             "a concurrency limit needs a 'key' (executions with the same key "
             "share the limit)");
      ok = false;
    } else if (expect(*k, join_path(path, "key"),
                      k->is_string() && !k->get<std::string>().empty(),
                      "a non-empty string")) {
      c.key = k->get<std::string>();
    } else {
      ok = false;
    }
    auto l = v.find("limit");
    if (l == v.end()) {
      report(path, "missing_field", "a concurrency limit needs a 'limit'");
      ok = false;
    } else if (expect(*l, join_path(path, "limit"), l->is_number_integer(),
                      "an integer")) {
      auto n = l->get<int64_t>();
      if (n < 1 || n > 100'000) {
        report(join_path(path, "limit"), "out_of_range",
               "limit " + std::to_string(n)
                 + " is out of range; allowed: 1 to 100000");
        ok = false;
      } else {
        c.limit = static_cast<int32_t>(n);
      }
    } else {
      ok = false;
    }
    if (!ok)
      return std::nullopt;
    return c;
  }

  /// Reads a circuit breaker: a key and limits that make sense.
  std::optional<circuit_breaker_spec> check_breaker(const json& v,
                                                    const std::string& path) {
    static const std::vector<std::string> fields
      = {"key",    "failure_threshold", "error_rate",         "min_calls",
         "window", "reset_timeout",     "half_open_max_calls"};
    if (!expect(v, path, v.is_object(), "a circuit breaker mapping with a key"))
      return std::nullopt;
    check_fields(v, path, fields, "circuit_breaker");
    size_t before = errors_.size();
    circuit_breaker_spec b;
    if (auto k = v.find("key"); k == v.end())
      report(path, "missing_field",
             "a circuit breaker needs a 'key' (nodes with the same key share "
             "one breaker)");
    else if (expect(*k, join_path(path, "key"),
                    k->is_string() && !k->get<std::string>().empty(),
                    "a non-empty string"))
      b.key = k->get<std::string>();
    auto count = [&](const char* key, int32_t& out, int64_t lo, int64_t hi) {
      auto i = v.find(key);
      if (i == v.end())
        return;
      auto p = join_path(path, key);
      if (!expect(*i, p, i->is_number_integer(), "an integer"))
        return;
      auto n = i->get<int64_t>();
      if (n < lo || n > hi)
        report(p, "out_of_range",
               std::string{key} + " " + std::to_string(n)
                 + " is out of range; allowed: " + std::to_string(lo) + " to "
                 + std::to_string(hi));
      else
        out = static_cast<int32_t>(n);
    };
    count("failure_threshold", b.failure_threshold, 1, 1'000'000);
    count("min_calls", b.min_calls, 1, 1'000'000);
    count("half_open_max_calls", b.half_open_max_calls, 1, 10'000);
    if (auto i = v.find("error_rate"); i != v.end()) {
      auto p = join_path(path, "error_rate");
      if (expect(*i, p, i->is_number(), "a number from 0 to 1")) {
        auto r = i->get<double>();
        if (!(r > 0.0 && r <= 1.0))
          report(p, "out_of_range",
                 "error_rate " + show(*i)
                   + " is out of range; allowed: more than 0, at most 1");
        else
          b.error_rate = r;
      }
    }
    for (auto [key, out] : {std::pair{"window", &b.window},
                            {"reset_timeout", &b.reset_timeout}}) {
      if (auto d = check_timeout(v, path, key))
        *out = *d;
    }
    if (errors_.size() != before)
      return std::nullopt;
    return b;
  }

  /// Reads a retry policy over `base`; fields not given keep base's value.
  retry_policy check_retry(const json& v, const std::string& path,
                           retry_policy base) {
    if (v.is_null())
      return base;
    if (!expect(v, path, v.is_object(), "a retry mapping"))
      return base;
    check_fields(v, path, retry_fields, "retry");
    auto r = base;
    if (auto i = v.find("max_attempts"); i != v.end()) {
      auto p = join_path(path, "max_attempts");
      if (expect(*i, p, i->is_number_integer(), "an integer")) {
        auto n = i->get<int64_t>();
        if (n < 1 || n > 10'000)
          report(p, "out_of_range",
                 "max_attempts " + std::to_string(n)
                   + " is out of range; allowed: 1 to 10000 (1 means no "
                     "retries)");
        else
          r.max_attempts = static_cast<int32_t>(n);
      }
    }
    auto backoff = [&](const char* key, duration& out) {
      auto i = v.find(key);
      if (i == v.end())
        return;
      auto p = join_path(path, key);
      if (auto d = parse_duration_at(*i, p)) {
        if (*d > std::chrono::hours{24 * 7})
          report(p, "out_of_range",
                 std::string{key} + " " + show(*i)
                   + " is out of range; allowed: 0s to 7d");
        else
          out = *d;
      }
    };
    backoff("initial_backoff", r.initial_backoff);
    backoff("max_backoff", r.max_backoff);
    if (auto i = v.find("multiplier"); i != v.end()) {
      auto p = join_path(path, "multiplier");
      if (expect(*i, p, i->is_number(), "a number")) {
        auto m = i->get<double>();
        if (!(m >= 1.0 && m <= 100.0))
          report(p, "out_of_range",
                 "multiplier " + show(*i)
                   + " is out of range; allowed: 1 to 100");
        else
          r.multiplier = m;
      }
    }
    if (auto i = v.find("jitter"); i != v.end()) {
      auto p = join_path(path, "jitter");
      static const std::vector<std::string> modes = {"none", "full", "equal"};
      if (expect(*i, p, i->is_string(), "a string")) {
        auto s = i->get<std::string>();
        auto pos = std::find(modes.begin(), modes.end(), s);
        if (pos == modes.end())
          report(p, "bad_value",
                 "unknown jitter '" + s + "'; allowed: " + join(modes)
                   + did_you_mean(s, modes));
        else
          r.jitter = static_cast<jitter_mode>(pos - modes.begin());
      }
    }
    if (auto i = v.find("non_retryable"); i != v.end()) {
      auto p = join_path(path, "non_retryable");
      if (expect(*i, p, i->is_array(), "a list of error kinds")) {
        r.non_retryable.clear();
        size_t k = 0;
        for (auto& item : *i) {
          if (expect(item, index_path(p, k), item.is_string(), "a string"))
            r.non_retryable.push_back(item.get<std::string>());
          ++k;
        }
      }
    }
    if (r.max_backoff < r.initial_backoff)
      report(join_path(path, v.contains("max_backoff") ? "max_backoff"
                                                       : "initial_backoff"),
             "out_of_range",
             "max_backoff (" + config::format_duration(r.max_backoff)
               + ") is shorter than initial_backoff ("
               + config::format_duration(r.initial_backoff) + ")");
    return r;
  }

  void check_defaults(const json& root) {
    auto i = root.find("defaults");
    if (i == root.end() || i->is_null())
      return;
    if (!expect(*i, "defaults", i->is_object(), "a mapping {retry, timeout}"))
      return;
    check_fields(*i, "defaults", {"retry", "timeout"}, "defaults");
    if (auto r = i->find("retry"); r != i->end())
      default_retry_ = check_retry(*r, "defaults.retry", retry_policy{});
    default_timeout_ = check_timeout(*i, "defaults");
  }

  // -- nodes ------------------------------------------------------------------

  void check_nodes(const json& root) {
    auto i = root.find("nodes");
    if (i == root.end()) {
      report("", "missing_field",
             "missing field 'nodes' (a mapping from node id to node)");
      return;
    }
    if (!expect(*i, "nodes", i->is_object(), "a mapping from node id to node"))
      return;
    if (i->empty()) {
      report("nodes", "bad_value", "a workflow needs at least one node");
      return;
    }
    if (i->size() > max_workflow_nodes) {
      report("nodes", "too_large",
             std::to_string(i->size()) + " nodes; the limit is "
               + std::to_string(max_workflow_nodes));
      return;
    }
    // nlohmann's object keeps keys sorted; file order comes from the marks.
    std::vector<std::string> ids;
    for (auto& [id, _] : i->items())
      ids.push_back(id);
    std::stable_sort(
      ids.begin(), ids.end(), [&](const std::string& a, const std::string& b) {
        auto ma = doc_.find_mark(join_path("nodes", a));
        auto mb = doc_.find_mark(join_path("nodes", b));
        return std::tie(ma.line, ma.column) < std::tie(mb.line, mb.column);
      });
    for (auto& id : ids)
      check_node(id, (*i)[id]);
    link_switch_targets();
    check_references();
    check_cycles();
    check_fallbacks();
    check_compensations();
    // Templates need the DAG: `nodes.x` must be upstream.
    for (auto& n : wf_.nodes) {
      if (n.kind == "switch") {
        check_switch_references(n);
        continue;
      }
      if (n.kind == "map") {
        auto path = join_path("nodes", n.id);
        if (n.map_items.is_string())
          check_template(n.map_items.get<std::string>(),
                         join_path(path, "items"), &n);
        if (n.map_node) {
          in_map_node_ = true;
          check_templates_in(n.map_node->params, join_path(path, "node"), &n);
          in_map_node_ = false;
        }
        continue;
      }
      check_templates_in(n.params, join_path("nodes", n.id), &n);
      if (n.concurrency)
        check_template(
          n.concurrency->key,
          join_path(join_path(join_path("nodes", n.id), "concurrency"), "key"),
          &n);
    }
  }

  void check_node(const std::string& id, const json& body) {
    auto path = join_path("nodes", id);
    current_node_path_ = path;
    if (!is_identifier(id))
      report(path, "bad_value",
             "node id '" + id
               + "' must start with a letter or '_' and hold only letters, "
                 "digits, '_' and '-' (at most 128)");
    if (auto n = parse_node(id, body, path))
      wf_.nodes.push_back(std::move(*n));
  }

  /// Reads one node definition (a workflow's, or the inner node of a map).
  std::optional<node_spec> parse_node(const std::string& id, const json& body,
                                      const std::string& path) {
    if (!expect(body, path, body.is_object(), "a node mapping with a kind"))
      return std::nullopt;
    node_spec n;
    n.id = id;
    n.retry = default_retry_;
    n.timeout = default_timeout_;
    const kind_spec* kind = nullptr;
    if (auto k = body.find("kind"); k == body.end()) {
      report(path, "missing_field",
             "node '" + id + "' has no 'kind'; kinds: " + join(kinds_.names()));
    } else if (expect(*k, join_path(path, "kind"), k->is_string(),
                      "a string")) {
      n.kind = k->get<std::string>();
      kind = kinds_.find(n.kind);
      if (!kind) {
        auto names = kinds_.names();
        report(join_path(path, "kind"), "unknown_kind",
               "unknown node kind '" + n.kind + "'; kinds: " + join(names)
                 + did_you_mean(n.kind, names));
      }
    }
    if (auto a = body.find("after"); a != body.end() && !a->is_null()) {
      auto apath = join_path(path, "after");
      if (a->is_string()) {
        n.after.push_back(a->get<std::string>());
      } else if (expect(*a, apath, a->is_array(), "a list of node ids")) {
        size_t k = 0;
        for (auto& item : *a) {
          auto ipath = index_path(apath, k++);
          if (expect(item, ipath, item.is_string(), "a node id"))
            n.after.push_back(item.get<std::string>());
        }
      }
    }
    if (auto d = body.find("description"); d != body.end())
      if (expect(*d, join_path(path, "description"), d->is_string(),
                 "a string"))
        n.description = d->get<std::string>();
    if (auto r = body.find("retry"); r != body.end())
      n.retry = check_retry(*r, join_path(path, "retry"), default_retry_);
    if (body.contains("timeout"))
      n.timeout = check_timeout(body, path);
    n.schedule_to_close = check_timeout(body, path, "schedule_to_close");
    if (auto t = body.find("trigger"); t != body.end() && !t->is_null()) {
      auto tpath = join_path(path, "trigger");
      if (expect(*t, tpath, t->is_string(), "one of " + join(trigger_rules))) {
        auto rule = t->get<std::string>();
        auto i = std::find(trigger_rules.begin(), trigger_rules.end(), rule);
        if (i == trigger_rules.end())
          report(tpath, "bad_value",
                 "unknown trigger '" + rule + "'; allowed: "
                   + join(trigger_rules) + did_you_mean(rule, trigger_rules));
        else
          n.trigger = static_cast<trigger_rule>(i - trigger_rules.begin());
      }
    }
    if (auto f = body.find("fallback"); f != body.end() && !f->is_null())
      if (expect(*f, join_path(path, "fallback"), f->is_string(), "a node id"))
        n.fallback = f->get<std::string>();
    if (auto b = body.find("circuit_breaker"); b != body.end() && !b->is_null())
      n.circuit_breaker = check_breaker(*b, join_path(path, "circuit_breaker"));
    if (auto c = body.find("concurrency"); c != body.end() && !c->is_null())
      n.concurrency = check_concurrency(*c, join_path(path, "concurrency"));
    if (auto pl = body.find("placement"); pl != body.end() && !pl->is_null()) {
      auto ppath = join_path(path, "placement");
      if (expect(*pl, ppath, pl->is_string(), "one of " + join(placements))) {
        auto v = pl->get<std::string>();
        if (std::find(placements.begin(), placements.end(), v)
            == placements.end())
          report(ppath, "bad_value",
                 "unknown placement '" + v + "'; allowed: " + join(placements)
                   + did_you_mean(v, placements));
        else
          n.placement = v;
      }
    }
    if (auto o = body.find("on"); o != body.end() && !o->is_null()) {
      auto opath = join_path(path, "on");
      if (expect(*o, opath, o->is_object(),
                 "a map of member labels to values, e.g. {zone: eu-1}"))
        for (auto& [label, v] : o->items()) {
          auto lpath = join_path(opath, label);
          if (label.empty() || label.size() > 256)
            report(lpath, "bad_value",
                   "a label name must have 1 to 256 characters");
          else if (expect(v, lpath, v.is_string(), "a string"))
            n.on[label] = v.get<std::string>();
        }
    }
    if (auto c = body.find("compensate"); c != body.end() && !c->is_null())
      if (expect(*c, join_path(path, "compensate"), c->is_string(),
                 "a node id"))
        n.compensate = c->get<std::string>();
    // Everything else is the kind's parameters.
    n.params = json::object();
    for (auto& [key, v] : body.items())
      if (std::find(node_fields.begin(), node_fields.end(), key)
          == node_fields.end())
        n.params[key] = v;
    if (kind)
      check_params(*kind, n.params, path);
    if (n.kind == "switch")
      check_switch(n, path);
    if (n.kind == "map")
      check_map(n, path);
    return n;
  }

  /// Reads a map node: `items` (a template or a list), the inner `node` it
  /// runs once per item, and `max_concurrency`.
  void check_map(node_spec& n, const std::string& path) {
    if (auto i = n.params.find("items"); i != n.params.end()) {
      n.map_items = *i;
      if (!i->is_array()
          && !(i->is_string()
               && i->get<std::string>().find("{{") != std::string::npos))
        report(join_path(path, "items"), "type",
               "expected a list, or a template such as "
               "\"{{ nodes.a.output.list }}\" that gives one");
    }
    if (auto c = n.params.find("max_concurrency");
        c != n.params.end() && c->is_number_integer())
      n.map_concurrency = static_cast<int32_t>(c->get<int64_t>());
    auto inner_body = n.params.find("node");
    if (inner_body == n.params.end())
      return; // reported as a missing parameter
    auto ipath = join_path(path, "node");
    auto inner = parse_node(n.id + "[]", *inner_body, ipath);
    if (!inner)
      return;
    static const std::vector<std::string> outer_only
      = {"after", "fallback", "compensate", "trigger"};
    for (auto& f : outer_only)
      if (inner_body->contains(f))
        report(join_path(ipath, f), "bad_value",
               "'" + f + "' belongs on the map node '" + n.id
                 + "', not on the node it runs per item");
    if (inner->kind == "map" || inner->kind == "switch")
      report(join_path(ipath, "kind"), "bad_value",
             "a map runs a node per item; kind '" + inner->kind
               + "' cannot be that node");
    n.map_node = std::make_shared<node_spec>(std::move(*inner));
  }

  /// Reads a switch node's cases: each a {when, goto} mapping whose
  /// expression parses and whose goto names nodes (checked with the DAG).
  void check_switch(node_spec& n, const std::string& path) {
    auto ids = [&](const json& v, const std::string& p) {
      std::vector<std::string> out;
      if (v.is_string())
        out.push_back(v.get<std::string>());
      else if (expect(v, p, v.is_array() && !v.empty(),
                      "a non-empty list of node ids"))
        for (size_t k = 0; k < v.size(); ++k)
          if (expect(v[k], index_path(p, k), v[k].is_string(), "a node id"))
            out.push_back(v[k].get<std::string>());
      return out;
    };
    auto cases = n.params.find("cases");
    if (cases == n.params.end())
      return; // reported as a missing parameter
    auto cpath = join_path(path, "cases");
    if (!expect(*cases, cpath, cases->is_array() && !cases->empty(),
                "a non-empty list of {when, goto} mappings"))
      return;
    for (size_t k = 0; k < cases->size(); ++k) {
      auto& c = (*cases)[k];
      auto p = index_path(cpath, k);
      if (!expect(c, p, c.is_object(), "a mapping {when, goto}"))
        continue;
      check_fields(c, p, {"when", "goto"}, "a switch case");
      switch_case sc;
      auto w = c.find("when");
      auto g = c.find("goto");
      if (w == c.end() || g == c.end()) {
        report(p, "missing_field", "a switch case needs 'when' and 'goto'");
        continue;
      }
      if (expect(*w, join_path(p, "when"), w->is_string(),
                 "an expression string")) {
        sc.when = w->get<std::string>();
        expression_error err;
        sc.condition = parse_expression(sc.when, err);
        if (!sc.condition)
          report(join_path(p, "when"), "bad_expression",
                 "bad expression at character " + std::to_string(err.offset + 1)
                   + ": " + err.message);
      }
      sc.go_to = ids(*g, join_path(p, "goto"));
      n.cases.push_back(std::move(sc));
    }
    if (auto d = n.params.find("default"); d != n.params.end())
      n.default_goto = ids(*d, join_path(path, "default"));
  }

  /// Makes every node a switch can send the run to run after that switch;
  /// reports targets that don't exist, are the switch itself or run before
  /// it (each at the `goto` that names it, not as a cycle of `after`s).
  void link_switch_targets() {
    std::vector<std::string> ids;
    std::unordered_map<std::string, node_spec*> by_id;
    for (auto& n : wf_.nodes) {
      ids.push_back(n.id);
      by_id.emplace(n.id, &n);
    }
    for (auto& sw : wf_.nodes) {
      if (sw.cases.empty() && sw.default_goto.empty())
        continue;
      // What the switch runs after, through `after` and the links made so
      // far: a target among them would make a cycle.
      std::unordered_set<std::string> upstream;
      std::vector<const node_spec*> todo{&sw};
      while (!todo.empty()) {
        auto* cur = todo.back();
        todo.pop_back();
        for (auto& dep : cur->after)
          if (auto d = by_id.find(dep);
              d != by_id.end() && upstream.insert(dep).second)
            todo.push_back(d->second);
      }
      auto link = [&](const std::string& target, const std::string& path) {
        if (target == sw.id) {
          report(path, "cycle",
                 "switch '" + sw.id + "' sends the run to itself");
          return;
        }
        auto found = by_id.find(target);
        if (found == by_id.end()) {
          report(path, "unknown_reference",
                 "switch '" + sw.id + "' sends the run to unknown node '"
                   + target + "'" + did_you_mean(target, ids));
          return;
        }
        if (upstream.count(target)) {
          report(path, "cycle",
                 "switch '" + sw.id + "' sends the run to '" + target
                   + "', which it runs after (a switch sends the run only to "
                     "nodes downstream of it)");
          return;
        }
        auto* t = found->second;
        if (std::find(t->after.begin(), t->after.end(), sw.id)
            == t->after.end())
          t->after.push_back(sw.id);
      };
      auto base = join_path("nodes", sw.id);
      for (size_t k = 0; k < sw.cases.size(); ++k)
        for (size_t j = 0; j < sw.cases[k].go_to.size(); ++j)
          link(
            sw.cases[k].go_to[j],
            index_path(
              join_path(index_path(join_path(base, "cases"), k), "goto"), j));
      for (size_t j = 0; j < sw.default_goto.size(); ++j)
        link(sw.default_goto[j], index_path(join_path(base, "default"), j));
    }
  }

  void check_params(const kind_spec& kind, const json& params,
                    const std::string& path) {
    size_t before = errors_.size();
    for (auto& item : params.items()) {
      const std::string& key = item.key();
      auto& v = item.value();
      auto ppath = join_path(path, key);
      auto spec = std::find_if(kind.params.begin(), kind.params.end(),
                               [&](auto& p) { return p.name == key; });
      if (spec == kind.params.end()) {
        // A typo of a node field (`afer: [a]`) would otherwise pass as a
        // parameter of a kind that takes any, and silently do nothing.
        auto field = misspelt_node_field(key);
        if (kind.open_params && field.empty())
          continue;
        if (kind.open_params) {
          report(ppath, "unknown_field",
                 "unknown field '" + key + "' (did you mean '" + field
                   + "'?): kind '" + kind.name
                   + "' takes any other name as a parameter, but not one this "
                     "close to a node field");
          continue;
        }
        std::vector<std::string> allowed = node_fields;
        for (auto& p : kind.params)
          allowed.push_back(p.name);
        report(ppath, "unknown_field",
               "unknown field '" + key + "' for kind '" + kind.name
                 + "'; allowed: " + join(allowed)
                 + (field.empty() ? did_you_mean(key, allowed)
                                  : " (did you mean '" + field + "'?)"));
        continue;
      }
      check_param(*spec, v, ppath);
    }
    for (auto& p : kind.params)
      if (p.required && !params.contains(p.name))
        report(path, "missing_field",
               "kind '" + kind.name + "' needs '" + p.name + "' (" + p.doc
                 + ")");
    // The kind's own check assumes each parameter is well-typed.
    if (kind.check && errors_.size() == before)
      kind.check(params, *this);
  }

  void check_param(const param_spec& p, const json& v,
                   const std::string& path) {
    // A whole-value template is resolved at run time, to any type.
    if (p.type != param_type::string && is_whole_template(v))
      return;
    auto range = [&](double x) {
      if (x < p.min || x > p.max)
        report(path, "out_of_range",
               "'" + p.name + "' " + show(v) + " is out of range; allowed: "
                 + show_number(p.min) + " to " + show_number(p.max));
    };
    switch (p.type) {
    case param_type::string: expect(v, path, v.is_string(), "a string"); return;
    case param_type::integer:
      if (expect(v, path, v.is_number_integer(), "an integer"))
        range(v.get<double>());
      return;
    case param_type::number:
      if (expect(v, path, v.is_number(), "a number"))
        range(v.get<double>());
      return;
    case param_type::boolean:
      expect(v, path, v.is_boolean(), "true or false");
      return;
    case param_type::duration:
      if (auto d = parse_duration_at(v, path)) {
        auto seconds = std::chrono::duration<double>(*d).count();
        if (seconds < p.min || seconds > p.max)
          report(path, "out_of_range",
                 "'" + p.name + "' " + show(v) + " is out of range; allowed: "
                   + show_seconds(p.min, p.max));
      }
      return;
    case param_type::string_list:
      if (expect(v, path, v.is_array(), "a list of strings")) {
        size_t k = 0;
        for (auto& item : v) {
          expect(item, index_path(path, k), item.is_string(), "a string");
          ++k;
        }
      }
      return;
    case param_type::string_map:
      if (expect(v, path, v.is_object(), "a mapping of strings"))
        for (auto& [key, item] : v.items())
          expect(item, join_path(path, key), item.is_string(), "a string");
      return;
    case param_type::choice:
      if (expect(v, path, v.is_string(), "a string")) {
        auto s = v.get<std::string>();
        if (std::find(p.choices.begin(), p.choices.end(), s) == p.choices.end())
          report(path, "bad_value",
                 "'" + s + "' is not one of " + join(p.choices)
                   + did_you_mean(s, p.choices));
      }
      return;
    case param_type::any: return;
    }
  }

  /// The limits of a duration parameter (in seconds), e.g. "at least 1ms".
  static std::string show_seconds(double lo, double hi) {
    auto d = [](double s) {
      return config::format_duration(
        std::chrono::duration_cast<duration>(std::chrono::duration<double>(s)));
    };
    if (std::isinf(hi))
      return "at least " + d(lo);
    if (std::isinf(lo))
      return "at most " + d(hi);
    return d(lo) + " to " + d(hi);
  }

  static std::string show_number(double d) {
    if (std::isinf(d))
      return d < 0 ? "-inf" : "inf";
    if (d == std::floor(d) && std::fabs(d) < 1e15)
      return std::to_string(static_cast<int64_t>(d));
    return json(d).dump();
  }

  // -- the DAG ----------------------------------------------------------------

  void check_references() {
    for (auto& n : wf_.nodes)
      index_.emplace(n.id, &n);
    std::vector<std::string> ids;
    for (auto& n : wf_.nodes)
      ids.push_back(n.id);
    for (auto& n : wf_.nodes) {
      std::set<std::string> seen;
      for (size_t k = 0; k < n.after.size(); ++k) {
        auto& dep = n.after[k];
        auto path = index_path(join_path(join_path("nodes", n.id), "after"), k);
        if (dep == n.id)
          report(path, "cycle", "node '" + n.id + "' runs after itself");
        else if (!index_.count(dep))
          report(path, "unknown_reference",
                 "node '" + n.id + "' runs after unknown node '" + dep + "'"
                   + did_you_mean(dep, ids));
        else if (!seen.insert(dep).second)
          report(path, "duplicate", "node '" + dep + "' is listed twice");
      }
    }
  }

  /// Finds cycles by depth-first search and names each one found.
  void check_cycles() {
    enum color : uint8_t { white, grey, black };
    std::unordered_map<std::string, color> colors;
    std::set<std::set<std::string>> reported;
    for (auto& start : wf_.nodes) {
      if (colors[start.id] != white)
        continue;
      // Stack of (node, next dependency index).
      std::vector<std::pair<const node_spec*, size_t>> stack;
      stack.emplace_back(&start, 0);
      colors[start.id] = grey;
      while (!stack.empty()) {
        auto& [node, next] = stack.back();
        if (next == node->after.size()) {
          colors[node->id] = black;
          stack.pop_back();
          continue;
        }
        auto& dep = node->after[next++];
        auto it = index_.find(dep);
        if (it == index_.end() || dep == node->id)
          continue;
        auto c = colors[dep];
        if (c == white) {
          colors[dep] = grey;
          stack.emplace_back(it->second, 0);
        } else if (c == grey) {
          // The stack from `dep` to the top is a cycle of `after` edges.
          std::vector<std::string> cycle;
          bool in = false;
          for (auto& [n, _] : stack) {
            in = in || n->id == dep;
            if (in)
              cycle.push_back(n->id);
          }
          std::set<std::string> members(cycle.begin(), cycle.end());
          if (reported.size() < 10 && reported.insert(members).second) {
            // Show it in run order, from the node first in the file.
            std::reverse(cycle.begin(), cycle.end());
            auto first = std::min_element(
              cycle.begin(), cycle.end(),
              [&](auto& a, auto& b) { return index_.at(a) < index_.at(b); });
            std::rotate(cycle.begin(), first, cycle.end());
            cycle.push_back(cycle.front());
            report(join_path(join_path("nodes", cycle.front()), "after"),
                   "cycle",
                   "nodes form a cycle: " + join(cycle, " -> ")
                     + " (each runs after the one before it, so none can "
                       "start)");
          }
        }
      }
    }
  }

  /// A fallback names a node that exists, stands in for one node only, is
  /// not waited on by others (it may never run), waits only on nodes its
  /// primary waits on, and chains of fallbacks end.
  void check_fallbacks() {
    std::unordered_map<std::string, std::string> primary; // fallback -> node
    std::vector<std::string> ids;
    for (auto& n : wf_.nodes)
      ids.push_back(n.id);
    for (auto& n : wf_.nodes) {
      if (n.fallback.empty())
        continue;
      auto path = join_path(join_path("nodes", n.id), "fallback");
      if (n.fallback == n.id) {
        report(path, "cycle", "node '" + n.id + "' is its own fallback");
      } else if (!index_.count(n.fallback)) {
        report(path, "unknown_reference",
               "node '" + n.id + "' falls back to unknown node '" + n.fallback
                 + "'" + did_you_mean(n.fallback, ids));
      } else if (auto [it, fresh] = primary.emplace(n.fallback, n.id); !fresh) {
        report(path, "conflict",
               "node '" + n.fallback + "' is already the fallback of '"
                 + it->second + "'; a node stands in for one node only");
      }
    }
    for (auto& n : wf_.nodes) {
      for (size_t k = 0; k < n.after.size(); ++k) {
        auto p = primary.find(n.after[k]);
        if (p != primary.end())
          report(index_path(join_path(join_path("nodes", n.id), "after"), k),
                 "bad_reference",
                 "node '" + n.id + "' runs after '" + p->first
                   + "', which runs only as the fallback of '" + p->second
                   + "'; run after '" + p->second + "' instead");
      }
      auto p = primary.find(n.id);
      if (p == primary.end())
        continue;
      for (size_t k = 0; k < n.after.size(); ++k)
        if (!is_upstream(n.after[k], p->second) && !primary.count(n.after[k]))
          report(index_path(join_path(join_path("nodes", n.id), "after"), k),
                 "bad_reference",
                 "fallback '" + n.id + "' runs after '" + n.after[k]
                   + "', which is not upstream of '" + p->second
                   + "' (the node it stands in for)");
    }
    // Chains: a -> b -> ... must not come back.
    std::set<std::string> reported;
    for (auto& n : wf_.nodes) {
      std::vector<std::string> chain{n.id};
      const node_spec* cur = &n;
      while (!cur->fallback.empty() && index_.count(cur->fallback)
             && cur->fallback != cur->id) {
        auto next = cur->fallback;
        if (std::find(chain.begin(), chain.end(), next) != chain.end()) {
          if (next == n.id && reported.insert(n.id).second) {
            for (auto& c : chain)
              reported.insert(c);
            chain.push_back(next);
            report(join_path(join_path("nodes", n.id), "fallback"), "cycle",
                   "fallback cycle: " + join(chain, " -> "));
          }
          break;
        }
        chain.push_back(next);
        cur = index_.at(next);
      }
    }
  }

  /// A compensation names a node that exists, undoes one node only, is
  /// nobody's fallback, is not waited on by other nodes, and waits only on
  /// its node or what its node waits on.
  void check_compensations() {
    std::unordered_map<std::string, std::string> owner; // compensation -> node
    std::vector<std::string> ids;
    for (auto& n : wf_.nodes)
      ids.push_back(n.id);
    for (auto& n : wf_.nodes) {
      if (n.compensate.empty())
        continue;
      auto path = join_path(join_path("nodes", n.id), "compensate");
      if (n.compensate == n.id) {
        report(path, "cycle", "node '" + n.id + "' compensates itself");
      } else if (!index_.count(n.compensate)) {
        report(path, "unknown_reference",
               "node '" + n.id + "' is compensated by unknown node '"
                 + n.compensate + "'" + did_you_mean(n.compensate, ids));
      } else if (auto [it, fresh] = owner.emplace(n.compensate, n.id); !fresh) {
        report(path, "conflict",
               "node '" + n.compensate + "' already compensates '" + it->second
                 + "'; a compensation undoes one node only");
      } else if (wf_.primary_of(n.compensate)) {
        report(path, "conflict",
               "node '" + n.compensate + "' is the fallback of '"
                 + wf_.primary_of(n.compensate)->id
                 + "'; a compensation must be a node of its own");
      } else if (!index_.at(n.compensate)->compensate.empty()
                 || !index_.at(n.compensate)->fallback.empty()) {
        report(path, "conflict",
               "compensation '" + n.compensate
                 + "' has a compensation or fallback of its own; give it "
                   "retries instead");
      }
    }
    for (auto& n : wf_.nodes) {
      for (size_t k = 0; k < n.after.size(); ++k) {
        auto o = owner.find(n.after[k]);
        if (o != owner.end())
          report(index_path(join_path(join_path("nodes", n.id), "after"), k),
                 "bad_reference",
                 "node '" + n.id + "' runs after '" + o->first
                   + "', which runs only to compensate '" + o->second + "'");
      }
      auto o = owner.find(n.id);
      if (o == owner.end())
        continue;
      for (size_t k = 0; k < n.after.size(); ++k)
        if (n.after[k] != o->second && !is_upstream(n.after[k], o->second)
            && !owner.count(n.after[k]))
          report(index_path(join_path(join_path("nodes", n.id), "after"), k),
                 "bad_reference",
                 "compensation '" + n.id + "' runs after '" + n.after[k]
                   + "', which is neither '" + o->second
                   + "' nor upstream of it");
    }
  }

  /// Returns whether node `id` runs after node `up`, directly or through
  /// others (true when `up` is unknown: that is reported where it is named).
  bool is_upstream(const std::string& up, const std::string& id) {
    auto u = index_.find(up);
    auto n = index_.find(id);
    if (u == index_.end())
      return true;
    if (n == index_.end())
      return false;
    auto& after = n->second->after;
    if (std::find(after.begin(), after.end(), up) != after.end())
      return true;
    if (!ancestors_built_)
      build_ancestors();
    if (ancestors_.empty())
      return upstream_of(id).count(up) > 0; // a cycle: no order to use
    auto words = (wf_.nodes.size() + 63) / 64;
    auto row = position_.at(id) * words;
    auto bit = position_.at(up);
    return (ancestors_[row + bit / 64] >> (bit % 64)) & 1;
  }

  /// Computes every node's upstream nodes as one bit set per node (for
  /// 10,000 nodes 12.5 MB, in one pass in run order), so that asking is
  /// cheap however long the chains; leaves them empty when `after` has a
  /// cycle (reported already).
  void build_ancestors() {
    ancestors_built_ = true;
    auto count = wf_.nodes.size();
    for (size_t i = 0; i < count; ++i)
      position_.emplace(wf_.nodes[i].id, i);
    // Kahn's order: a node comes after everything it runs after.
    std::vector<size_t> waiting(count, 0);
    std::vector<std::vector<size_t>> dependents(count);
    for (size_t i = 0; i < count; ++i)
      for (auto& dep : wf_.nodes[i].after)
        if (auto d = position_.find(dep);
            d != position_.end() && d->second != i) {
          ++waiting[i];
          dependents[d->second].push_back(i);
        }
    std::vector<size_t> order;
    order.reserve(count);
    for (size_t i = 0; i < count; ++i)
      if (waiting[i] == 0)
        order.push_back(i);
    for (size_t k = 0; k < order.size(); ++k)
      for (auto d : dependents[order[k]])
        if (--waiting[d] == 0)
          order.push_back(d);
    if (order.size() != count)
      return;
    auto words = (count + 63) / 64;
    ancestors_.assign(count * words, 0);
    for (auto i : order)
      for (auto& dep : wf_.nodes[i].after) {
        auto d = position_.find(dep);
        if (d == position_.end() || d->second == i)
          continue;
        auto* to = &ancestors_[i * words];
        auto* from = &ancestors_[d->second * words];
        for (size_t w = 0; w < words; ++w)
          to[w] |= from[w];
        to[d->second / 64] |= uint64_t{1} << (d->second % 64);
      }
  }

  /// Returns the nodes `id` transitively runs after (by search: for a
  /// workflow whose `after` has a cycle).
  const std::unordered_set<std::string>& upstream_of(const std::string& id) {
    auto [it, fresh] = upstream_.try_emplace(id);
    if (!fresh)
      return it->second;
    std::vector<std::string> todo{id};
    auto& seen = it->second;
    while (!todo.empty()) {
      auto cur = std::move(todo.back());
      todo.pop_back();
      auto n = index_.find(cur);
      if (n == index_.end())
        continue;
      for (auto& dep : n->second->after)
        if (seen.insert(dep).second)
          todo.push_back(dep);
    }
    return it->second;
  }

  // -- templates --------------------------------------------------------------

  void check_templates_in(const json& v, const std::string& path,
                          const node_spec* node) {
    if (v.is_string()) {
      check_template(v.get<std::string>(), path, node);
    } else if (v.is_array()) {
      size_t k = 0;
      for (auto& item : v)
        check_templates_in(item, index_path(path, k++), node);
    } else if (v.is_object()) {
      for (auto& [key, item] : v.items())
        check_templates_in(item, join_path(path, key), node);
    }
  }

  void check_template(const std::string& text, const std::string& path,
                      const node_spec* node) {
    if (text.find("{{") == std::string::npos)
      return;
    template_error err;
    auto t = parse_template(text, err);
    if (!t) {
      report(path, "bad_template",
             "bad template at character " + std::to_string(err.offset + 1)
               + ": " + err.message);
      return;
    }
    for (auto& seg : t->segments)
      if (seg.is_expression())
        check_reference(seg, path, node);
  }

  /// The paths in a switch's expressions follow the rules of templates.
  void check_switch_references(const node_spec& n) {
    for (size_t k = 0; k < n.cases.size(); ++k) {
      if (!n.cases[k].condition)
        continue;
      auto path = join_path(
        index_path(join_path(join_path("nodes", n.id), "cases"), k), "when");
      for (auto& p : expression_paths(*n.cases[k].condition)) {
        template_segment seg;
        seg.text = join(p.segments, ".");
        seg.path = p.segments;
        seg.offset = p.offset;
        check_reference(seg, path, &n);
      }
    }
  }

  void check_reference(const template_segment& seg, const std::string& path,
                       const node_spec* node) {
    auto& p = seg.path;
    auto bad = [&](const std::string& why) {
      report(path, "unknown_reference",
             "template '{{ " + seg.text + " }}': " + why);
    };
    auto& root = p[0];
    if (root == "inputs") {
      if (p.size() >= 2 && !declared_inputs_.count(p[1])) {
        std::vector<std::string> names(declared_inputs_.begin(),
                                       declared_inputs_.end());
        bad("no input '" + p[1] + "' is declared"
            + (names.empty() ? std::string{" (the workflow has no inputs)"}
                             : "; inputs: " + join(names))
            + did_you_mean(p[1], names));
      }
    } else if (root == "nodes") {
      if (p.size() < 3 || p[2] != "output") {
        bad("write nodes.<id>.output[.field...]");
        return;
      }
      if (!index_.count(p[1])) {
        std::vector<std::string> ids;
        for (auto& [id, _] : index_)
          ids.push_back(id);
        std::sort(ids.begin(), ids.end());
        bad("no node '" + p[1] + "'" + did_you_mean(p[1], ids));
        return;
      }
      if (node && !is_upstream(p[1], node->id))
        bad("node '" + p[1] + "' is not upstream of '" + node->id
            + "'; add it to 'after' (directly or through another node)");
    } else if (root == "run") {
      if (p.size() != 2 || (p[1] != "id" && p[1] != "workflow"))
        bad("run has id and workflow");
    } else if (root == "item" || root == "item_index") {
      if (!in_map_node_)
        bad("'" + root + "' is only defined inside a map's node");
      else if (root == "item_index" && p.size() != 1)
        bad("item_index is a number");
    } else if (root == "node") {
      if (!node)
        bad("'node' is only defined inside a node");
      else if (p.size() != 2 || (p[1] != "id" && p[1] != "attempt"))
        bad("node has id and attempt");
    } else {
      static const std::vector<std::string> roots
        = {"inputs", "nodes", "run", "node"};
      bad("unknown name '" + root
          + "'; templates start with inputs, nodes, run or node"
          + did_you_mean(root, roots));
    }
  }

  // -- outputs ----------------------------------------------------------------

  void check_outputs(const json& root) {
    auto i = root.find("outputs");
    if (i == root.end() || i->is_null())
      return;
    if (!expect(*i, "outputs", i->is_object(),
                "a mapping from output name to template"))
      return;
    for (auto& [name, v] : i->items()) {
      auto path = join_path("outputs", name);
      if (!is_identifier(name))
        report(path, "bad_value",
               "output name '" + name
                 + "' must start with a letter or '_' and hold only "
                   "letters, digits, '_' and '-'");
      check_templates_in(v, path, nullptr);
      wf_.outputs.emplace_back(name, v);
    }
  }

  const document& doc_;
  const kind_registry& kinds_;
  diagnostics& errors_;
  workflow_spec wf_;
  retry_policy default_retry_;
  /// Whether templates being checked belong to a map's inner node (where
  /// `item` and `item_index` are defined).
  bool in_map_node_ = false;
  std::optional<duration> default_timeout_;
  std::set<std::string> declared_inputs_;
  std::unordered_map<std::string, const node_spec*> index_;
  std::unordered_map<std::string, std::unordered_set<std::string>> upstream_;
  /// Upstream nodes as bits: row i (of (nodes + 63) / 64 words) holds the
  /// nodes that node i runs after, by position in the file.
  std::vector<uint64_t> ancestors_;
  std::unordered_map<std::string, size_t> position_;
  bool ancestors_built_ = false;
  std::string current_node_path_;
};

} // namespace

load_outcome parse_workflow(std::string_view text, const kind_registry& kinds) {
  load_outcome out;
  auto doc = parse_document(text, out.errors);
  if (!doc)
    return out;
  validator v{*doc, kinds, out.errors};
  out.workflow = v.run();
  // Errors in file order; those without a line (whole-file) first.
  std::stable_sort(out.errors.begin(), out.errors.end(),
                   [](const diagnostic& a, const diagnostic& b) {
                     return std::tie(a.line, a.column)
                            < std::tie(b.line, b.column);
                   });
  return out;
}

load_outcome load_workflow_file(const std::filesystem::path& file,
                                const kind_registry& kinds) {
  load_outcome out;
  auto fail = [&](std::string code, std::string message) {
    out.errors.push_back(
      diagnostic{"", 0, 0, std::move(code), std::move(message)});
    return out;
  };
  std::error_code ec;
  auto status = std::filesystem::status(file, ec);
  if (ec || !std::filesystem::exists(status))
    return fail("unreadable", "no such file");
  if (std::filesystem::is_directory(status))
    return fail("unreadable", "is a folder, not a workflow file");
  std::ifstream in{file, std::ios::binary};
  if (!in)
    return fail("unreadable", "cannot open the file for reading");
  // Read at most one byte past the limit, so a huge file is refused without
  // being read whole (and special files such as pipes are bounded too).
  std::string text;
  text.resize(max_workflow_bytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (in.bad())
    return fail("unreadable", "read error");
  if (text.size() > max_workflow_bytes) {
    auto size = std::filesystem::file_size(file, ec);
    return fail("too_large", (ec ? std::string{"more than 10 MiB"}
                                 : std::to_string(size) + " bytes")
                               + "; workflow files are limited to 10 MiB");
  }
  return parse_workflow(text, kinds);
}

} // namespace troupe::runtime
