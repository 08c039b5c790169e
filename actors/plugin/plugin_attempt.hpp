#pragma once

// Troupe's side of the plugin API: runs an attempt on a node_executor from
// inside the attempt actor. Not for plugins (see node_executor.hpp).

#include "actors/plugin/node_executor.hpp"
#include "actors/services.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/fwd.hpp>
#include <nlohmann/json.hpp>

namespace troupe::actors {

/// Starts the attempt `spec` (its resolved `params`) on `exec`, for the
/// attempt actor `self`. The outcome reaches `self` as an attempt_result;
/// stopping `self` before that cancels the call. An exception from
/// node_executor::start becomes a failure of kind "crash".
void start_plugin_attempt(caf::event_based_actor* self,
                          plugin::node_executor& exec,
                          const runtime::attempt_spec& spec,
                          nlohmann::json params, const services& svc);

} // namespace troupe::actors
