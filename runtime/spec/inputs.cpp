#include "runtime/spec/inputs.hpp"

#include "config/suggest.hpp"

namespace troupe::runtime {

using json = nlohmann::json;

namespace {

const char* type_names[]
  = {"any", "string", "integer", "number", "boolean", "object", "array"};

} // namespace

json parse_input_text(const input_spec* input, const std::string& text) {
  if (input && input->type == input_type::string)
    return text;
  auto v = json::parse(text, nullptr, false);
  if (v.is_discarded())
    return text;
  return v;
}

std::optional<json> bind_inputs(const workflow_spec& spec, const json& given,
                                std::vector<std::string>& errors) {
  size_t before = errors.size();
  if (!given.is_object()) {
    errors.push_back("inputs must be a JSON object, not "
                     + std::string{given.type_name()});
    return std::nullopt;
  }
  std::vector<std::string> names;
  for (auto& in : spec.inputs)
    names.push_back(in.name);
  for (auto& [name, _] : given.items())
    if (std::find(names.begin(), names.end(), name) == names.end())
      errors.push_back(
        "unknown input '" + name + "'; workflow '" + spec.name + "' declares "
        + (names.empty() ? std::string{"no inputs"} : config::join(names))
        + config::did_you_mean(name, names));
  json out = json::object();
  for (auto& in : spec.inputs) {
    auto i = given.find(in.name);
    if (i == given.end()) {
      if (in.default_value)
        out[in.name] = *in.default_value;
      else if (in.required)
        errors.push_back("missing required input '" + in.name + "' of type "
                         + type_names[static_cast<size_t>(in.type)]
                         + " (it has no default)");
      else
        out[in.name] = nullptr; // optional: templates read null
      continue;
    }
    if (!input_matches(in.type, *i)) {
      errors.push_back(
        "input '" + in.name + "' must be of type "
        + type_names[static_cast<size_t>(in.type)] + ", not "
        + i->dump(-1, ' ', false, json::error_handler_t::replace));
      continue;
    }
    out[in.name] = *i;
  }
  if (errors.size() != before)
    return std::nullopt;
  return out;
}

bool input_matches(input_type t, const json& v) {
  switch (t) {
  case input_type::any: return true;
  case input_type::string: return v.is_string();
  case input_type::integer: return v.is_number_integer();
  case input_type::number: return v.is_number();
  case input_type::boolean: return v.is_boolean();
  case input_type::object: return v.is_object();
  case input_type::array: return v.is_array();
  }
  return false;
}

} // namespace troupe::runtime
