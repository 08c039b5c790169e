#include "runtime/engine/resolve.hpp"

#include "runtime/spec/template.hpp"

#include <charconv>

namespace troupe::runtime {

namespace {

using json = nlohmann::json;

/// Follows `path` from index `from` into `v`; returns null when a step is
/// missing, naming it in `error`.
const json* walk(const json* v, const std::vector<std::string>& path,
                 size_t from, std::string& error) {
  for (size_t i = from; i < path.size(); ++i) {
    auto& step = path[i];
    if (v->is_object()) {
      auto it = v->find(step);
      if (it == v->end()) {
        error = "has no field '" + step + "'";
        return nullptr;
      }
      v = &*it;
    } else if (v->is_array()) {
      size_t index = 0;
      auto [ptr, ec]
        = std::from_chars(step.data(), step.data() + step.size(), index);
      if (ec != std::errc{} || ptr != step.data() + step.size()) {
        error = "is a list; '" + step + "' is not an index";
        return nullptr;
      }
      if (index >= v->size()) {
        error = "has no item " + step + " (it holds "
                + std::to_string(v->size()) + ")";
        return nullptr;
      }
      v = &(*v)[index];
    } else {
      error
        = "is " + std::string{v->type_name()} + ", so it has no '" + step + "'";
      return nullptr;
    }
  }
  return v;
}

std::optional<json> lookup(const template_segment& seg,
                           const template_scope& scope, std::string& error) {
  auto& p = seg.path;
  std::string why;
  auto fail = [&](const std::string& what) -> std::optional<json> {
    error = "template '{{ " + seg.text + " }}' resolved to nothing: " + what;
    return std::nullopt;
  };
  if (p[0] == "inputs") {
    if (!scope.inputs)
      return fail("the run has no inputs");
    auto* v = walk(scope.inputs, p, 1, why);
    if (!v)
      return fail("the inputs " + why);
    return *v;
  }
  if (p[0] == "nodes" && p.size() >= 3 && p[2] == "output") {
    if (!scope.outputs || !scope.outputs->contains(p[1]))
      return fail("node '" + p[1] + "' has not completed");
    auto* v = walk(&(*scope.outputs)[p[1]], p, 3, why);
    if (!v)
      return fail("the output of node '" + p[1] + "' " + why);
    return *v;
  }
  if (p[0] == "run" && p.size() == 2) {
    if (p[1] == "id")
      return scope.run_id;
    if (p[1] == "workflow")
      return scope.workflow;
  }
  if (p[0] == "item" && scope.item) {
    auto* v = walk(scope.item, p, 1, why);
    if (!v)
      return fail("the item " + why);
    return *v;
  }
  if (p[0] == "item_index" && p.size() == 1 && scope.item_index >= 0)
    return scope.item_index;
  if (p[0] == "node" && p.size() == 2) {
    if (p[1] == "id")
      return scope.node_id;
    if (p[1] == "attempt")
      return scope.attempt;
  }
  return fail("unknown name");
}

std::optional<json> resolve_string(const std::string& s,
                                   const template_scope& scope,
                                   std::string& error) {
  if (s.find("{{") == std::string::npos)
    return s;
  template_error terr;
  auto t = parse_template(s, terr);
  if (!t) {
    error = "bad template at character " + std::to_string(terr.offset + 1)
            + ": " + terr.message;
    return std::nullopt;
  }
  if (t->is_single_expression())
    return lookup(t->segments.front(), scope, error);
  std::string out;
  for (auto& seg : t->segments) {
    if (!seg.is_expression()) {
      out += seg.text;
      continue;
    }
    auto v = lookup(seg, scope, error);
    if (!v)
      return std::nullopt;
    out += v->is_string()
             ? v->get<std::string>()
             : v->dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return out;
}

} // namespace

std::optional<json> resolve_templates(const json& value,
                                      const template_scope& scope,
                                      std::string& error) {
  if (value.is_string())
    return resolve_string(value.get<std::string>(), scope, error);
  if (value.is_array()) {
    json out = json::array();
    for (auto& item : value) {
      auto r = resolve_templates(item, scope, error);
      if (!r)
        return std::nullopt;
      out.push_back(std::move(*r));
    }
    return out;
  }
  if (value.is_object()) {
    json out = json::object();
    for (auto& [key, item] : value.items()) {
      auto r = resolve_templates(item, scope, error);
      if (!r)
        return std::nullopt;
      out[key] = std::move(*r);
    }
    return out;
  }
  return value;
}

std::optional<json> resolve_path(const std::vector<std::string>& path,
                                 const template_scope& scope,
                                 std::string& error) {
  if (path.empty()) {
    error = "empty path";
    return std::nullopt;
  }
  template_segment seg;
  for (auto& p : path)
    seg.text += (seg.text.empty() ? "" : ".") + p;
  seg.path = path;
  return lookup(seg, scope, error);
}

} // namespace troupe::runtime
