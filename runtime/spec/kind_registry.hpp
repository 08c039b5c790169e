#pragma once

#include "runtime/spec/diagnostic.hpp"

#include <nlohmann/json.hpp>

#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace troupe::runtime {

/// The type a kind parameter must have.
enum class param_type : uint8_t {
  string,
  integer,
  number,
  boolean,
  duration,
  string_list,
  string_map, ///< A map of string to string (e.g. environment variables).
  choice,     ///< A string from `choices`.
  any,        ///< Any JSON value.
};

/// Declares one parameter of a node kind.
struct param_spec {
  std::string name;
  param_type type = param_type::any;
  bool required = false;
  std::string doc;
  /// Limits for integer and number parameters, and for durations in seconds
  /// (e.g. 0.001 for "at least 1ms", where a zero duration makes no sense).
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices = {};
};

/// Lets a kind's own check report problems in a node's parameters.
class kind_check_context {
 public:
  virtual ~kind_check_context() = default;

  /// Reports a problem at `param` (a parameter name, or empty for the node).
  virtual void error(const std::string& param, const std::string& code,
                     const std::string& message)
    = 0;
};

/// Declares a node kind: its parameters and any check across them.
struct kind_spec {
  std::string name;
  std::string doc;
  std::vector<param_spec> params;
  /// Whether parameters beyond `params` are allowed (e.g. noop's output).
  bool open_params = false;
  /// Checks across parameters, run after each parameter passed its own check.
  std::function<void(const nlohmann::json& node, kind_check_context&)> check;
};

/// All node kinds a workflow may use. Built-in kinds register themselves;
/// later modules and C++ plugins add theirs with `add`.
class kind_registry {
 public:
  /// Returns the process-wide registry, with the built-in kinds in it.
  static kind_registry& global();

  /// Adds a kind; returns false if a kind of that name exists.
  bool add(kind_spec kind);

  /// Returns the kind named `name`, or null.
  const kind_spec* find(const std::string& name) const;

  /// Returns the names of all kinds, sorted.
  std::vector<std::string> names() const;

 private:
  mutable std::mutex mtx_;
  std::map<std::string, kind_spec> kinds_;
};

/// Registers the built-in kinds noop, sleep, fail and exec in `registry`.
void register_builtin_kinds(kind_registry& registry);

} // namespace troupe::runtime
