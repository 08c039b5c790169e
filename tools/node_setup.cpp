#include "tools/node_setup.hpp"

#include "runtime/spec/document.hpp"
#include "runtime/spec/inputs.hpp"

#include <fstream>
#include <iostream>
#include <mutex>

namespace troupe::tools {

using json = nlohmann::json;

namespace {

/// Reads `--inputs-file` (JSON or YAML); appends problems to `errors`.
json read_inputs_file(const std::string& path,
                      std::vector<std::string>& errors) {
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    errors.push_back(path + ": cannot open the inputs file");
    return json::object();
  }
  // Read at most one byte past the limit, so a huge file (or a pipe that
  // never ends) is refused without being read whole.
  std::string text;
  text.resize(runtime::max_workflow_bytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > runtime::max_workflow_bytes) {
    errors.push_back(path
                     + ": more than 10 MiB; inputs files are limited to 10 "
                       "MiB (keep large data elsewhere and pass a reference)");
    return json::object();
  }
  runtime::diagnostics diags;
  auto doc = runtime::parse_document(text, diags);
  if (!doc) {
    for (auto& d : diags)
      errors.push_back(d.to_string(path));
    return json::object();
  }
  if (!doc->root.is_object()) {
    errors.push_back(path + ": expected a mapping of input names to values");
    return json::object();
  }
  return doc->root;
}

} // namespace

std::optional<json> bind_cli_inputs(const runtime::workflow_spec& spec,
                                    const std::vector<std::string>& inputs,
                                    const std::string& inputs_file,
                                    std::vector<std::string>& errors) {
  json given = inputs_file.empty() ? json::object()
                                   : read_inputs_file(inputs_file, errors);
  for (auto& kv : inputs) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors.push_back("--input " + kv + ": expected name=value");
      continue;
    }
    auto name = kv.substr(0, eq);
    const runtime::input_spec* decl = nullptr;
    for (auto& in : spec.inputs)
      if (in.name == name)
        decl = &in;
    given[name] = runtime::parse_input_text(decl, kv.substr(eq + 1));
  }
  if (!errors.empty())
    return std::nullopt;
  return runtime::bind_inputs(spec, given, errors);
}

actors::embedded_node::options node_options(const config::settings& s) {
  actors::embedded_node::options o;
  o.data_dir = s.get_string("node.data_dir");
  o.member = s.get_string("node.name");
  o.sync = s.get_string("storage.durability") == "machine";
  o.max_batch
    = static_cast<size_t>(s.get_int("storage.group_commit_max_batch"));
  o.block_cache_mb = static_cast<size_t>(s.get_int("storage.block_cache_mb"));
  // Validated when the configuration was loaded.
  o.min_free = config::parse_free_space_floor(s.get_string("storage.min_free"))
                 .value_or(config::free_space_floor{});
  o.scheduler_threads
    = static_cast<size_t>(s.get_int("engine.scheduler_threads"));
  o.engine.max_output_bytes
    = static_cast<size_t>(s.get_int("exec.max_output_bytes"));
  auto ms = [&](const char* key) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
      s.get_duration(key));
  };
  o.engine.kill_grace = ms("exec.kill_grace");
  o.engine.max_restarts
    = static_cast<int32_t>(s.get_int("engine.max_restarts"));
  o.engine.restart_window = ms("engine.restart_window");
  o.engine.restart_backoff = ms("engine.restart_backoff");
  o.engine.spec_cache_entries
    = static_cast<size_t>(s.get_int("engine.spec_cache_entries"));
  o.engine.spec_cache_bytes
    = static_cast<size_t>(s.get_int("engine.spec_cache_mb")) << 20;
  o.retention = s.get_duration("storage.retention");
  o.tombstone_retention = s.get_duration("storage.tombstone_retention");
  o.gc_interval = s.get_duration("storage.gc_interval");
  o.log = [](const std::string& line) {
    static std::mutex mtx;
    std::lock_guard guard{mtx};
    std::cerr << "troupe: " << line << "\n";
  };
  return o;
}

} // namespace troupe::tools
