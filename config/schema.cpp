#include "config/schema.hpp"

#include "config/size.hpp"
#include "config/suggest.hpp"

#include <algorithm>
#include <charconv>

namespace troupe::config {

namespace {

using vk = value_kind;

constexpr int64_t kib = 1024;
constexpr int64_t mib = 1024 * kib;
constexpr int64_t ms_per_hour = 3'600'000;

// The one table of keys. Defaults are text so they go through the same parser
// and limit checks as user input (a unit test checks every default).
const std::vector<key_spec>& table() {
  static const std::vector<key_spec> keys = {
    // -- node ---------------------------------------------------------------
    {"node", "name", vk::string, "node-1",
     "Name of this node in logs, metrics and the cluster."},
    {"node", "data_dir", vk::path, "data",
     "Folder holding the node's RocksDB store; created if missing."},
    {"node", "shutdown_grace", vk::duration, "10s",
     "On SIGTERM, how long a node may take to stop its attempts and close "
     "its store before it exits anyway.",
     100, 600'000},
    // -- storage ------------------------------------------------------------
    {"storage",
     "durability",
     vk::choice,
     "process",
     "process: survive kill -9 of the node (WAL, no fsync); machine: fsync "
     "before a change counts as durable (survive power loss).",
     0,
     0,
     {"process", "machine"}},
    {"storage", "group_commit_max_batch", vk::integer, "512",
     "Most journal events one group commit writes (and fsyncs) together.", 1,
     65536},
    {"storage", "group_commit_max_delay", vk::duration, "0ms",
     "How long a group commit may wait for more events before writing.", 0,
     1000},
    {"storage", "block_cache_mb", vk::integer, "8",
     "RocksDB block cache size in MiB.", 0, 65536},
    {"storage", "retention", vk::duration, "7d",
     "How long a finished run (its journal, index entry and idempotency key) "
     "is kept after it ends; the node then deletes it in the background. 0s "
     "keeps every run.",
     0, 3650 * 24 * ms_per_hour},
    {"storage", "tombstone_retention", vk::duration, "7d",
     "How long a run deleted after retention is still answered as \"deleted "
     "after retention\" rather than plainly not found.",
     0, 3650 * 24 * ms_per_hour},
    {"storage", "gc_interval", vk::duration, "10m",
     "How often the node looks for finished runs past storage.retention.", 100,
     24 * ms_per_hour},
    {"storage", "min_free", vk::free_space, "5%,1GiB",
     "Free space the data dir's filesystem must keep: below it the node "
     "holds journal writes (so starts no attempts) and refuses submissions "
     "until space returns. A size (\"1GiB\", \"512MiB\"), a share of the "
     "disk (\"5%\") or both (\"5%,1GiB\": the smaller); \"0\" turns the "
     "check off."},
    // -- engine -------------------------------------------------------------
    {"engine", "scheduler_threads", vk::integer, "0",
     "Actor scheduler threads; 0 uses one per core (at least 2).", 0, 256},
    {"engine", "max_restarts", vk::integer, "5",
     "Restarts of one crashed run actor allowed within restart_window before "
     "the run is failed.",
     0, 1000},
    {"engine", "restart_window", vk::duration, "60s",
     "The window in which max_restarts counts restarts.", 1000,
     24 * ms_per_hour},
    {"engine", "restart_backoff", vk::duration, "100ms",
     "Delay before the first restart of a crashed run actor; doubles after "
     "each.",
     1, 600'000},
    {"engine", "spec_cache_entries", vk::integer, "1000",
     "Most parsed workflows kept for reuse, least recently used dropped "
     "first; a run keeps its own workflow while it lives.",
     1, 1'000'000},
    {"engine", "spec_cache_mb", vk::integer, "64",
     "Most workflow text, in MiB, behind the parsed workflows kept for reuse.",
     1, 65536},
    // -- exec ---------------------------------------------------------------
    {"exec", "max_output_bytes", vk::integer, "1048576",
     "Cap on an exec node's captured stdout and stderr, each.", 1 * kib,
     1024 * mib},
    {"exec", "kill_grace", vk::duration, "2s",
     "Between SIGTERM and SIGKILL when an exec attempt is stopped.", 0,
     600'000},
    // -- log ----------------------------------------------------------------
    {"log",
     "level",
     vk::choice,
     "info",
     "Least severe level that is logged.",
     0,
     0,
     {"trace", "debug", "info", "warn", "error", "off"}},
    {"log",
     "format",
     vk::choice,
     "text",
     "text for people, json for one JSON object per line.",
     0,
     0,
     {"text", "json"}},
    {"log",
     "file",
     vk::path,
     "",
     "File to log to; empty logs to standard error.",
     0,
     0,
     {},
     true},
    {"log",
     "levels",
     vk::string_list,
     "",
     "Per-logger levels over log.level, as LOGGER=LEVEL entries such as "
     "control=debug (loggers: node, run, control, http, store, auth, cluster).",
     0,
     0,
     {"trace", "debug", "info", "warn", "error", "off"}},
    // -- control ------------------------------------------------------------
    {"control",
     "listen",
     vk::address,
     "127.0.0.1:7400",
     "HOST:PORT of the control protocol (CLI and shell).",
     0,
     0,
     {},
     true},
    {"control", "max_frame_bytes", vk::integer, "4194304",
     "Largest control-protocol frame accepted.", 1 * kib, 256 * mib},
    {"control", "max_connections", vk::integer, "1024",
     "Most control connections served at once.", 1, 100'000},
    {"control", "max_in_flight", vk::integer, "128",
     "Requests of one control connection that may await their first answer "
     "at once; more are refused (too_many_requests).",
     1, 100'000},
    {"control", "idle_timeout", vk::duration, "5m",
     "A control connection silent this long is closed.", 1000,
     24 * ms_per_hour},
    {"control", "read_timeout", vk::duration, "30s",
     "A frame must arrive whole within this span once it has begun.", 100,
     ms_per_hour},
    {"control", "hello_timeout", vk::duration, "10s",
     "A control connection that has not said hello this long after it was "
     "accepted is closed.",
     100, ms_per_hour},
    {"control", "max_connections_per_address", vk::integer, "256",
     "Most control connections from one source address at once; raise it "
     "when many clients share one address (behind one NAT).",
     1, 100'000},
    {"control", "drain_timeout", vk::duration, "5s",
     "On SIGTERM, how long control clients are given to take their answers "
     "before their connections are closed (at most half of "
     "node.shutdown_grace).",
     0, 600'000},
    // -- http ---------------------------------------------------------------
    {"http",
     "listen",
     vk::address,
     "127.0.0.1:7401",
     "HOST:PORT of the HTTP endpoint (health, metrics); empty turns it off.",
     0,
     0,
     {},
     true},
    // -- auth ---------------------------------------------------------------
    {"auth", "enabled", vk::boolean, "true",
     "Whether requests need a signed token; turning it off is explicit."},
    {"auth", "secret", vk::string, "",
     "HS256 key that signs and checks tokens (TROUPE_AUTH_SECRET); use at "
     "least 32 random bytes, shorter ones get a warning."},
    {"auth", "token_ttl", vk::duration, "24h",
     "Lifetime of tokens minted by `troupe token issue`.", 1000,
     24 * 366 * ms_per_hour},
    {"auth", "submit_rate", vk::integer, "50",
     "Run submissions per second allowed to one token subject, sustained.", 1,
     100'000},
    {"auth", "submit_burst", vk::integer, "100",
     "Run submissions one token subject may make at once before submit_rate "
     "applies.",
     1, 1'000'000},
    // -- tls ----------------------------------------------------------------
    {"tls",
     "cert",
     vk::path,
     "",
     "PEM certificate for the control and HTTP listeners; empty: plain TCP.",
     0,
     0,
     {},
     true},
    {"tls",
     "key",
     vk::path,
     "",
     "PEM private key matching tls.cert.",
     0,
     0,
     {},
     true},
    // -- cluster ------------------------------------------------------------
    {"cluster", "name", vk::string, "",
     "The cluster this node joins (letters, digits, '_', '-', '.'); empty "
     "runs the node alone, with no etcd and no peers (--cluster)."},
    {"cluster", "etcd", vk::string_list, "",
     "etcd client URLs (http://HOST:PORT, or https:// for etcd client "
     "TLS), tried in turn; needed with cluster.name (--etcd, "
     "comma-separated)."},
    {"cluster", "member", vk::string, "",
     "This member's name in the cluster; empty: HOSTNAME-PORT, with the "
     "control port (--member)."},
    {"cluster",
     "advertise",
     vk::address,
     "",
     "HOST:PORT peers use to reach this member; empty: cluster.listen.",
     0,
     0,
     {},
     true},
    {"cluster", "labels", vk::string_list, "",
     "NAME=VALUE labels of this member, e.g. zone=eu-1."},
    {"cluster", "capacity", vk::string_list, "",
     "KIND=N: attempts of a node kind this member runs at once, e.g. "
     "exec=8."},
    {"cluster",
     "placement",
     vk::choice,
     "least_loaded",
     "Where a node's attempts run when the node says no placement: local "
     "(on the run's owner), spread (each member in turn) or least_loaded "
     "(the member with the fewest attempts in flight).",
     0,
     0,
     {"local", "spread", "least_loaded"}},
    {"cluster", "partitions", vk::integer, "64",
     "Partitions of the cluster's runs: fixed when the cluster is made (its "
     "first member records it in etcd), and every member must give the "
     "same.",
     1, 256},
    {"cluster", "replication", vk::integer, "3",
     "Copies of each partition's journal, on as many members (fewer while "
     "fewer members are up): its leader and followers.",
     1, 7},
    {"cluster", "min_insync", vk::integer, "2",
     "In-sync copies a partition needs to take new submissions and "
     "attempts; with fewer it refuses them and says why. At most "
     "cluster.replication.",
     1, 7},
    {"cluster", "rebalance_concurrency", vk::integer, "2",
     "Partitions moved at once toward their place by rendezvous hashing "
     "when members join or come back (a replica added, then leadership "
     "moved, then the replica no longer wanted removed); 0: none is moved "
     "for balance.",
     0, 64},
    {"cluster", "log_retain_records", vk::integer, "10000",
     "Records each partition's log keeps below what all its replicas hold: "
     "older ones are trimmed, and a replica that lacks trimmed records "
     "catches up from a snapshot of the leader's state instead.",
     0, 1'000'000'000},
    {"cluster", "replica_lag", vk::duration, "2s",
     "A follower this far behind its leader is dropped from the in-sync "
     "replicas, and added back once it has caught up.",
     50, 600'000},
    {"cluster", "lease_ttl", vk::duration, "5s",
     "TTL of the member's etcd lease, renewed every quarter of it: a member "
     "that stops renewing is gone from the cluster this long after. Whole "
     "seconds.",
     1000, 60'000},
    {"cluster", "etcd_timeout", vk::duration, "1s",
     "Deadline of one etcd request on one endpoint; a request that misses "
     "it is tried on the next endpoint.",
     50, 30'000},
    {"cluster",
     "etcd_ca",
     vk::path,
     "",
     "PEM CA that signed etcd's server certificate, for https:// "
     "endpoints; empty: the system's CAs.",
     0,
     0,
     {},
     true},
    {"cluster",
     "etcd_cert",
     vk::path,
     "",
     "PEM client certificate this member shows etcd (etcd's "
     "--client-cert-auth); with cluster.etcd_key.",
     0,
     0,
     {},
     true},
    {"cluster",
     "etcd_key",
     vk::path,
     "",
     "PEM key of cluster.etcd_cert.",
     0,
     0,
     {},
     true},
    {"cluster", "etcd_username", vk::string, "",
     "etcd user this member authenticates as (etcd auth enabled); needs a "
     "password from TROUPE_CLUSTER_ETCD_PASSWORD or "
     "cluster.etcd_password_file."},
    {"cluster", "etcd_password", vk::string, "",
     "Password of cluster.etcd_username; only from the environment "
     "(TROUPE_CLUSTER_ETCD_PASSWORD), never from a config file or a flag."},
    {"cluster",
     "etcd_password_file",
     vk::path,
     "",
     "A file holding the password of cluster.etcd_username (trailing "
     "newlines dropped), instead of TROUPE_CLUSTER_ETCD_PASSWORD.",
     0,
     0,
     {},
     true},
    {"cluster",
     "listen",
     vk::address,
     "",
     "HOST:PORT where a member listens for its peers (the mesh); empty: "
     "the control address's host, with a free port.",
     0,
     0,
     {},
     true},
    {"cluster", "seeds", vk::string_list, "",
     "HOST:PORT of peers to join at start. Not used: members find each "
     "other through etcd."},
    {"cluster", "heartbeat_interval", vk::duration, "200ms",
     "How often peers exchange heartbeats over the mesh.", 50, 60'000},
    {"cluster", "connection_timeout", vk::duration, "1s",
     "A peer silent this long on the mesh becomes suspect (its lease is "
     "then revoked); must exceed the heartbeat interval.",
     100, 600'000},
    {"cluster", "secret", vk::string, "",
     "The cluster secret every member proves to its peers "
     "(TROUPE_CLUSTER_SECRET); at least 16 bytes; needed with cluster.name, "
     "unless cluster.secret_file is set."},
    {"cluster",
     "secret_file",
     vk::path,
     "",
     "A file holding the cluster secret (trailing newlines dropped), instead "
     "of cluster.secret.",
     0,
     0,
     {},
     true},
    {"cluster",
     "tls_cert",
     vk::path,
     "",
     "PEM certificate this member shows its peers (mutual TLS on the mesh; "
     "with cluster.tls_key and cluster.tls_ca).",
     0,
     0,
     {},
     true},
    {"cluster",
     "tls_key",
     vk::path,
     "",
     "PEM key matching cluster.tls_cert.",
     0,
     0,
     {},
     true},
    {"cluster",
     "tls_ca",
     vk::path,
     "",
     "PEM CA that signed every member's certificate: a peer whose "
     "certificate it did not sign is never linked.",
     0,
     0,
     {},
     true},
  };
  return keys;
}

bool parse_int(std::string_view text, int64_t& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && ptr == text.data() + text.size();
}

std::string check_address(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    return "expected HOST:PORT, e.g. 127.0.0.1:7400";
  auto host = text.substr(0, colon);
  if (host.front() == '[' && host.back() != ']')
    return "unbalanced brackets around an IPv6 host";
  if (host.front() != '[' && host.find(':') != std::string_view::npos)
    return "write an IPv6 host in brackets, e.g. [::1]:7400";
  int64_t port = 0;
  if (!parse_int(text.substr(colon + 1), port) || port < 0 || port > 65535)
    return "port must be a number from 0 to 65535";
  return {};
}

} // namespace

std::string_view describe(value_kind kind) {
  switch (kind) {
  case vk::string: return "a string";
  case vk::path: return "a path string";
  case vk::integer: return "an integer";
  case vk::boolean: return "a boolean (true or false)";
  case vk::duration: return "a duration string such as \"10s\"";
  case vk::choice: return "a string";
  case vk::address: return "a \"HOST:PORT\" string";
  case vk::string_list: return "a list of strings";
  case vk::free_space:
    return "a size such as \"1GiB\", a share such as \"5%\", or both as "
           "\"5%,1GiB\"";
  }
  return "a value";
}

std::string key_spec::name() const {
  return std::string{section} + "." + std::string{key};
}

bool key_spec::is_secret() const {
  for (auto word : {"secret", "token", "password"})
    if (key.find(word) != std::string_view::npos && key != "token_ttl")
      return true;
  return false;
}

std::span<const key_spec> all_keys() {
  return table();
}

const std::vector<std::string>& all_sections() {
  static const std::vector<std::string> sections = [] {
    std::vector<std::string> out;
    for (auto& k : table())
      if (std::find(out.begin(), out.end(), k.section) == out.end())
        out.emplace_back(k.section);
    return out;
  }();
  return sections;
}

const key_spec* find_key(std::string_view section, std::string_view key) {
  for (auto& k : table())
    if (k.section == section && k.key == key)
      return &k;
  return nullptr;
}

std::vector<std::string> keys_of(std::string_view section) {
  std::vector<std::string> out;
  for (auto& k : table())
    if (k.section == section)
      out.emplace_back(k.key);
  return out;
}

std::optional<value> parse_text(const key_spec& spec, std::string_view text,
                                std::string& error) {
  value result;
  switch (spec.kind) {
  case vk::string:
  case vk::path:
  case vk::choice:
  case vk::address:
  case vk::free_space: result = std::string{text}; break;
  case vk::integer: {
    int64_t n = 0;
    if (!parse_int(text, n)) {
      error = "expected an integer";
      return std::nullopt;
    }
    result = n;
    break;
  }
  case vk::boolean:
    if (text == "true" || text == "1")
      result = true;
    else if (text == "false" || text == "0")
      result = false;
    else {
      error = "expected true or false";
      return std::nullopt;
    }
    break;
  case vk::duration: {
    auto d = parse_duration(text, &error);
    if (!d)
      return std::nullopt;
    result = *d;
    break;
  }
  case vk::string_list: {
    std::vector<std::string> items;
    size_t start = 0;
    while (start <= text.size() && !text.empty()) {
      auto comma = text.find(',', start);
      auto item = text.substr(start, comma == std::string_view::npos
                                       ? std::string_view::npos
                                       : comma - start);
      if (!item.empty())
        items.emplace_back(item);
      if (comma == std::string_view::npos)
        break;
      start = comma + 1;
    }
    result = std::move(items);
    break;
  }
  }
  error = check_limits(spec, result);
  if (!error.empty())
    return std::nullopt;
  return result;
}

std::string check_limits(const key_spec& spec, const value& v) {
  switch (spec.kind) {
  case vk::integer: {
    auto n = std::get<int64_t>(v);
    if (n < spec.min || n > spec.max)
      return "must be from " + std::to_string(spec.min) + " to "
             + std::to_string(spec.max);
    return {};
  }
  case vk::duration: {
    auto d = std::get<duration>(v);
    auto lo = std::chrono::milliseconds{spec.min};
    auto hi = std::chrono::milliseconds{spec.max};
    if (d < lo || d > hi)
      return "must be from " + format_duration(lo) + " to "
             + format_duration(hi);
    return {};
  }
  case vk::choice: {
    auto& s = std::get<std::string>(v);
    for (auto c : spec.choices)
      if (c == s)
        return {};
    std::vector<std::string> names(spec.choices.begin(), spec.choices.end());
    return "must be one of " + join(names) + did_you_mean(s, names);
  }
  case vk::address: {
    auto& s = std::get<std::string>(v);
    if (s.empty())
      return spec.optional ? std::string{} : "must not be empty";
    return check_address(s);
  }
  case vk::path:
  case vk::string: {
    auto& s = std::get<std::string>(v);
    if (s.empty() && spec.kind == vk::path && !spec.optional)
      return "must not be empty";
    if (s.find('\0') != std::string::npos)
      return "must not contain a NUL character";
    return {};
  }
  case vk::string_list: {
    std::vector<std::string> names(spec.choices.begin(), spec.choices.end());
    for (auto& item : std::get<std::vector<std::string>>(v)) {
      if (item.empty())
        return "list items must not be empty";
      if (names.empty())
        continue;
      // With choices, each item is NAME=CHOICE.
      auto eq = item.find('=');
      if (eq == 0 || eq == std::string::npos)
        return "entry \"" + item + "\": expected NAME=" + join(names, "|");
      auto choice = item.substr(eq + 1);
      if (std::find(names.begin(), names.end(), choice) == names.end())
        return "entry \"" + item + "\": \"" + choice + "\" must be one of "
               + join(names) + did_you_mean(choice, names);
    }
    return {};
  }
  case vk::free_space: {
    std::string error;
    if (!parse_free_space_floor(std::get<std::string>(v), &error))
      return error;
    return {};
  }
  case vk::boolean: return {};
  }
  return {};
}

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        static const char* hex = "0123456789abcdef";
        out += "\\u00";
        out += hex[(c >> 4) & 0xf];
        out += hex[c & 0xf];
      } else {
        out += c;
      }
    }
  }
  return out + "\"";
}

} // namespace

std::string to_toml(const value& v) {
  struct visitor {
    std::string operator()(const std::string& s) { return quote(s); }
    std::string operator()(int64_t n) { return std::to_string(n); }
    std::string operator()(bool b) { return b ? "true" : "false"; }
    std::string operator()(duration d) { return quote(format_duration(d)); }
    std::string operator()(const std::vector<std::string>& xs) {
      std::vector<std::string> quoted;
      for (auto& x : xs)
        quoted.push_back(quote(x));
      return "[" + join(quoted) + "]";
    }
  };
  return std::visit(visitor{}, v);
}

std::string to_text(const value& v) {
  struct visitor {
    std::string operator()(const std::string& s) { return s; }
    std::string operator()(int64_t n) { return std::to_string(n); }
    std::string operator()(bool b) { return b ? "true" : "false"; }
    std::string operator()(duration d) { return format_duration(d); }
    std::string operator()(const std::vector<std::string>& xs) {
      return join(xs, ",");
    }
  };
  return std::visit(visitor{}, v);
}

} // namespace troupe::config
