#include "runtime/protocol/messages.hpp"

namespace troupe::runtime {

void register_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_types<caf::id_block::troupe>();
}

} // namespace troupe::runtime
