#pragma once

#include "cluster/control/control_server.hpp"
#include "config/loader.hpp"

#include <optional>
#include <string>

namespace troupe::tools {

/// The node's token check from configuration: HS256 tokens signed with
/// auth.secret, or everyone an admin when auth.enabled is false. Nothing,
/// with `error` set, when auth is on without a secret.
std::optional<cluster::authenticator>
make_authenticator(const config::settings& settings, std::string& error);

} // namespace troupe::tools
