#pragma once

// The control protocol's `fault` request: turns the chaos fault hooks
// (persistence/chaos_hooks.hpp) on and off in a member started with
// TROUPE_CHAOS_HOOKS=1, for `troupe chaos` (docs/chaos.md).

#include "cluster/control/control_server.hpp"

#include <nlohmann/json.hpp>

namespace troupe::cluster {

/// Answers `{"t":"fault","hook":...}`: checks the fields (bad_request
/// naming the field), then, when the hooks are on, sets the hook and
/// replies {"ok": true, "hook", "hooks": what is in force}; when they are
/// off, fails with hooks_off. Quick; on the caller's thread.
void answer_fault(const request_ptr& req, const nlohmann::json& msg);

} // namespace troupe::cluster
