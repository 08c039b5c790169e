#pragma once

#include "actors/services.hpp"
#include "runtime/protocol/messages.hpp"

#include <caf/behavior.hpp>
#include <caf/event_based_actor.hpp>

namespace troupe::actors {

/// Executes one attempt of one node and sends its attempt_result to `parent`,
/// then quits. An exception escaping the kind's code kills the actor with the
/// exception's text as reason, which the run actor records as the attempt's
/// error. A halt_attempt stops it: an exec attempt kills the child's process
/// group and quits once the group is gone (without a result); others quit at
/// once. Ending the actor otherwise kills the group too, without waiting.
caf::behavior attempt_actor_impl(caf::event_based_actor* self,
                                 runtime::attempt_spec spec, caf::actor parent,
                                 services_ptr svc);

} // namespace troupe::actors
