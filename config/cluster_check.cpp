#include "config/cluster_check.hpp"

#include <charconv>
#include <set>

namespace troupe::config {

namespace {

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
         || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

} // namespace

std::string check_cluster_name(const std::string& name) {
  if (name.empty())
    return "must not be empty";
  if (name.size() > 64)
    return "must be at most 64 characters";
  if (name == "." || name == "..")
    return "must not be \".\" or \"..\"";
  for (char c : name)
    if (!name_char(c))
      return "may hold only letters, digits, '_', '-' and '.'";
  return {};
}

std::string check_etcd_url(const std::string& url) {
  std::string_view rest{url};
  size_t scheme = 0;
  if (rest.starts_with("https://"))
    scheme = 8;
  else if (rest.starts_with("http://"))
    scheme = 7;
  else
    return "expected a URL such as http://127.0.0.1:2379 (or https:// for "
           "etcd client TLS)";
  auto shown = std::string{rest.substr(0, scheme)};
  rest.remove_prefix(scheme);
  while (!rest.empty() && rest.back() == '/')
    rest.remove_suffix(1);
  if (rest.find_first_of("/@?#") != std::string_view::npos)
    return "expected " + shown
           + "HOST:PORT with no path or user (the etcd user is "
             "cluster.etcd_username)";
  auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0
      || (rest.front() == '[' && rest[colon - 1] != ']'))
    return "expected " + shown + "HOST:PORT (the port is required)";
  auto port = rest.substr(colon + 1);
  int n = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
  if (ec != std::errc{} || p != port.data() + port.size() || n < 1 || n > 65535)
    return "the port must be a number from 1 to 65535";
  return {};
}

std::vector<problem> check_cluster(const settings& s) {
  std::vector<problem> out;
  auto report
    = [&](const char* key, const std::string& value, std::string message) {
        auto& e = s.at(key);
        out.push_back({e.source == "default" ? std::string{} : e.source, key,
                       value.empty() ? std::string{} : "\"" + value + "\"",
                       std::move(message)});
      };
  auto& name = s.get_string("cluster.name");
  auto& etcd = s.get_list("cluster.etcd");
  if (!name.empty()) {
    if (auto why = check_cluster_name(name); !why.empty())
      report("cluster.name", name, why);
    if (etcd.empty())
      // Said where the cluster was named: that is what asks for etcd.
      out.push_back({s.at("cluster.name").source, "cluster.etcd", "",
                     "cluster '" + name
                       + "' needs at least one etcd endpoint (--etcd URL or "
                         "cluster.etcd)"});
  } else if (!etcd.empty()) {
    out.push_back(
      {s.at("cluster.etcd").source, "cluster.name", "",
       "cluster.etcd is set but no cluster is named: give --cluster NAME "
       "(or cluster.name), or remove cluster.etcd"});
  }
  for (auto& url : etcd)
    if (auto why = check_etcd_url(url); !why.empty())
      report("cluster.etcd", url, why);
  if (auto& member = s.get_string("cluster.member"); !member.empty())
    if (auto why = check_cluster_name(member); !why.empty())
      report("cluster.member", member, why);

  auto pairs = [&](const char* key, bool numbers) {
    std::set<std::string> seen;
    for (auto& item : s.get_list(key)) {
      auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
        report(key, item,
               numbers ? "expected KIND=N, e.g. exec=8"
                       : "expected NAME=VALUE, e.g. zone=eu-1");
        continue;
      }
      auto left = item.substr(0, eq);
      auto right = item.substr(eq + 1);
      if (auto why = check_cluster_name(left); !why.empty()) {
        report(key, item, "the name before '=' " + why);
        continue;
      }
      if (!seen.insert(left).second)
        report(key, item, "'" + left + "' is given twice");
      if (numbers) {
        int64_t n = -1;
        auto [p, ec]
          = std::from_chars(right.data(), right.data() + right.size(), n);
        if (ec != std::errc{} || p != right.data() + right.size() || n < 0
            || n > 1'000'000)
          report(key, item, "N must be a whole number from 0 to 1000000");
      } else if (right.size() > 256) {
        report(key, item, "the value must be at most 256 characters");
      }
    }
  };
  pairs("cluster.labels", false);
  pairs("cluster.capacity", true);

  auto ttl = s.get_duration("cluster.lease_ttl");
  if (ttl % std::chrono::seconds{1} != duration::zero())
    report("cluster.lease_ttl", to_text(s.at("cluster.lease_ttl").v),
           "must be whole seconds (etcd leases count seconds), e.g. \"5s\"");

  // etcd client TLS: https:// endpoints, all of them or none; the CA (else
  // the system's) and a client certificate with its key, both or neither.
  size_t https = 0;
  for (auto& url : etcd)
    if (url.starts_with("https://"))
      ++https;
  if (https > 0 && https < etcd.size())
    report("cluster.etcd", "",
           "mixes http:// and https:// endpoints: reach every etcd endpoint "
           "the same way");
  auto& etcd_cert = s.get_string("cluster.etcd_cert");
  auto& etcd_key = s.get_string("cluster.etcd_key");
  if (etcd_cert.empty() != etcd_key.empty())
    report(etcd_cert.empty() ? "cluster.etcd_key" : "cluster.etcd_cert", "",
           "set both cluster.etcd_cert and cluster.etcd_key (etcd's client "
           "certificate and its key), or neither");
  if (https == 0)
    for (auto key :
         {"cluster.etcd_ca", "cluster.etcd_cert", "cluster.etcd_key"})
      if (!s.get_string(key).empty())
        report(key, "",
               "is for etcd client TLS, but no cluster.etcd endpoint is "
               "https://");
  // etcd user and password: the password from the environment or a file,
  // never from a config file or a flag (others could read it there).
  auto& user = s.get_string("cluster.etcd_username");
  auto& password = s.get_string("cluster.etcd_password");
  auto& password_file = s.get_string("cluster.etcd_password_file");
  if (!password.empty()) {
    auto& source = s.at("cluster.etcd_password").source;
    if (!source.starts_with("env "))
      report("cluster.etcd_password", "",
             "a password may not be written in a config file or given as a "
             "flag; set TROUPE_CLUSTER_ETCD_PASSWORD or "
             "cluster.etcd_password_file");
    if (!password_file.empty())
      report("cluster.etcd_password_file", "",
             "give the etcd password once: TROUPE_CLUSTER_ETCD_PASSWORD or "
             "cluster.etcd_password_file, not both");
  }
  bool has_password = !password.empty() || !password_file.empty();
  if (!user.empty() && !has_password)
    report("cluster.etcd_username", user,
           "etcd user '" + user
             + "' needs a password: set TROUPE_CLUSTER_ETCD_PASSWORD or "
               "cluster.etcd_password_file");
  if (user.empty() && has_password)
    report(password_file.empty() ? "cluster.etcd_password"
                                 : "cluster.etcd_password_file",
           "", "an etcd password needs cluster.etcd_username");
  // Mutual TLS between members: all three files, or none.
  std::vector<const char*> set_keys, unset_keys;
  for (auto key : {"cluster.tls_cert", "cluster.tls_key", "cluster.tls_ca"})
    (s.get_string(key).empty() ? unset_keys : set_keys).push_back(key);
  if (!set_keys.empty() && !unset_keys.empty()) {
    std::string missing;
    for (auto key : unset_keys)
      missing += (missing.empty() ? "" : " and ") + std::string{key};
    for (auto key : set_keys)
      report(key, "",
             "mutual TLS between members needs cluster.tls_cert, "
             "cluster.tls_key and cluster.tls_ca together; "
               + missing + (unset_keys.size() == 1 ? " is" : " are")
               + " not set");
  }
  if (!s.get_string("cluster.secret").empty()
      && !s.get_string("cluster.secret_file").empty())
    report("cluster.secret_file", "",
           "give the cluster secret once: cluster.secret "
           "(TROUPE_CLUSTER_SECRET) or cluster.secret_file, not both");
  // A partition cannot have more in-sync copies than copies.
  auto replication = s.get_int("cluster.replication");
  auto min_insync = s.get_int("cluster.min_insync");
  if (min_insync > replication)
    report("cluster.min_insync", std::to_string(min_insync),
           "must not exceed cluster.replication (" + std::to_string(replication)
             + "): a partition cannot have more in-sync copies than "
               "copies");
  return out;
}

} // namespace troupe::config
