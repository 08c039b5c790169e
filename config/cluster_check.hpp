#pragma once

#include "config/loader.hpp"

#include <string>
#include <vector>

namespace troupe::config {

/// Checks the [cluster] keys together: names, etcd URLs, labels, capacity,
/// the lease TTL, the etcd TLS and user settings, and the members' TLS files
/// (which must come together; the files themselves are read when the node
/// starts). Returns one problem per mistake, each naming its key and where it
/// was set.
std::vector<problem> check_cluster(const settings& s);

/// Returns why `name` cannot name a cluster or a member (letters, digits,
/// '_', '-', '.', at most 64, not "." or ".."), or "".
std::string check_cluster_name(const std::string& name);

/// Returns why `url` cannot be an etcd endpoint, or "".
std::string check_etcd_url(const std::string& url);

} // namespace troupe::config
