#pragma once

// A small etcd v3 client over etcd's JSON gateway (`/v3/...`, HTTP or
// HTTPS with Boost.Beast; no gRPC). Every call is synchronous for its caller
// but runs its I/O on an io_context of its own, bounded by a deadline per
// attempt, and is retried on the next endpoint when one does not answer.
// Callers must be threads of their own: never a CAF scheduler thread or the
// node's io_context thread.
//
// Retries are safe only for idempotent requests or guarded ones: a txn's
// compare makes a retried write fail instead of applying twice, and the
// caller then reads what is there (create_if_absent returns the value found,
// so a caller can tell its own earlier write from another's).
//
// Over https:// endpoints the client checks etcd's certificate against a CA
// (and the endpoint's host or IP), and may show a client certificate. With
// a user, it authenticates (POST /v3/auth/authenticate) and sends the token
// in the Authorization header; a token etcd no longer knows (expired, or
// from before a restart) is replaced and the request sent again, within
// the call's deadline. The password and the token are never in an error.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace troupe::cluster::etcd {

/// How to reach etcd.
struct client_options {
  /// Base URLs such as "http://127.0.0.1:2379" or "https://etcd-1:2379";
  /// all http:// or all https://.
  std::vector<std::string> endpoints;
  /// Deadline of one attempt on one endpoint (connect, send, answer).
  /// Default: 1 s.
  std::chrono::milliseconds request_timeout{1000};
  /// Deadline of a whole call across its retries. Default: 3 s.
  std::chrono::milliseconds call_timeout{3000};
  /// For https:// endpoints: the PEM CA that signed etcd's server
  /// certificate; empty: the system's CAs.
  std::string ca_file;
  /// A PEM client certificate and its key, for etcd's --client-cert-auth;
  /// both or neither.
  std::string cert_file;
  std::string key_file;
  /// etcd user and password, when etcd's auth is enabled; empty: no auth.
  std::string username;
  std::string password;
  /// Told of the end of every call (not of watches), on the caller's
  /// thread: the operation ("kv_put", "kv_range", "kv_txn",
  /// "kv_deleterange", "lease_grant", "lease_keepalive", "lease_revoke",
  /// "lease_timetolive"), how long it took across its retries, and the
  /// error: "" when it succeeded, else "unreachable", "refused",
  /// "bad_answer" or "invalid". For metrics; may be empty; must be quick.
  std::function<void(const std::string& op, std::chrono::nanoseconds took,
                     const std::string& error)>
    observe;
};

/// Why a call failed.
struct error {
  enum class kind {
    none,
    /// Bad options (a URL that cannot be used).
    invalid,
    /// No endpoint answered within the deadline.
    unreachable,
    /// etcd answered with an error (its message is kept).
    refused,
    /// etcd's answer could not be read.
    bad_answer,
  };
  kind what = kind::none;
  std::string message;

  explicit operator bool() const noexcept { return what != kind::none; }
};

/// The value of a call, or why it failed.
template<class T>
struct result {
  std::optional<T> value;
  etcd::error err;

  result() = default;
  result(T v) : value(std::move(v)) {}
  result(etcd::error e) : err(std::move(e)) {}

  explicit operator bool() const noexcept { return value.has_value(); }
  T& operator*() { return *value; }
  const T& operator*() const { return *value; }
  T* operator->() { return &*value; }
  const T* operator->() const { return &*value; }
};

/// One key as etcd stores it.
struct key_value {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
};

/// The keys of a range read and the store's revision when it was read.
struct range_result {
  std::vector<key_value> kvs;
  int64_t revision = 0;
};

/// What a guarded write did: whether its compare held, the revision after
/// it, and (when it did not hold) the key as it is.
struct txn_result {
  bool succeeded = false;
  int64_t revision = 0;
  std::optional<key_value> current;
};

/// One condition of a transaction: a key's mod revision, version or
/// create revision equals `value` (0 for the latter two: the key is
/// absent).
struct compare {
  enum class target { mod, version, create };
  std::string key;
  target what = target::mod;
  int64_t value = 0;
};

/// One operation of a transaction: put (with a lease when not 0), delete,
/// or read one key.
struct txn_op {
  enum class type { put, del, get };
  type what = type::put;
  std::string key;
  std::string value;
  int64_t lease = 0;
};

/// What a transaction did: whether every compare held (the success
/// operations ran) or not (the failure ones did), the revision after it,
/// and for each operation that ran, the key a get found (nothing for puts,
/// deletes and absent keys).
struct txn_reply {
  bool succeeded = false;
  int64_t revision = 0;
  std::vector<std::optional<key_value>> got;
};

/// A granted lease.
struct lease {
  int64_t id = 0;
  /// The TTL etcd granted, which may exceed the one asked for (etcd's
  /// minimum is about 1.5 election timeouts).
  int64_t ttl_s = 0;
};

/// One change seen by a watch.
struct watch_event {
  enum class type { put, del };
  type what = type::put;
  key_value kv;
  /// The key before the change, when etcd still had it.
  std::optional<key_value> prev;
};

/// Returns the first key after every key that starts with `prefix`: the
/// range_end that makes a range cover the prefix.
std::string prefix_end(const std::string& prefix);

/// Whether `e` says etcd does not accept the auth token sent (expired,
/// unknown, or older than the auth store): authenticate again and retry.
bool is_token_error(const error& e);

/// Checks an endpoint URL; returns why it cannot be used, or "".
std::string check_endpoint(const std::string& url);

class watch_stream;

class client {
 public:
  explicit client(client_options opts);
  ~client();

  client(const client&) = delete;
  client& operator=(const client&) = delete;

  const client_options& options() const noexcept;

  /// While on, calls stop trying (between attempts: at most one attempt's
  /// deadline later) and fail as unreachable; for a quick shutdown. From
  /// any thread.
  void interrupt(bool on);

  /// Writes `value` at `key`, attached to `lease_id` when not 0; returns the
  /// revision after the write.
  result<int64_t> put(const std::string& key, const std::string& value,
                      int64_t lease_id = 0);

  /// Reads one key; nothing when it does not exist.
  result<std::optional<key_value>> get(const std::string& key);

  /// Reads every key that starts with `prefix`.
  result<range_result> range_prefix(const std::string& prefix);

  /// Deletes one key; returns how many keys were deleted (0 or 1).
  result<int64_t> remove(const std::string& key);

  /// Writes `key` only if it does not exist (its create revision is 0).
  /// When it exists, `current` holds it.
  result<txn_result> create_if_absent(const std::string& key,
                                      const std::string& value,
                                      int64_t lease_id = 0);

  /// Writes `key` only if its mod revision is still `mod_revision`. When it
  /// changed (or is gone), `current` holds it as it is.
  result<txn_result> put_if_mod_revision(const std::string& key,
                                         const std::string& value,
                                         int64_t mod_revision,
                                         int64_t lease_id = 0);

  /// Runs `success` if every compare holds, else `failure`, atomically.
  /// Retried across endpoints like every call: guard its writes with
  /// compares so that a retry cannot apply them twice.
  result<txn_reply> txn(const std::vector<compare>& compares,
                        const std::vector<txn_op>& success,
                        const std::vector<txn_op>& failure);

  /// Grants a lease of `ttl_s` seconds.
  result<lease> lease_grant(int64_t ttl_s);

  /// Renews a lease once; returns the TTL it has now, 0 when it is gone
  /// (expired or revoked).
  result<int64_t> lease_keepalive(int64_t id);

  /// Revokes a lease, deleting the keys attached to it. A lease that is
  /// already gone counts as revoked.
  result<bool> lease_revoke(int64_t id);

  /// Returns the seconds a lease has left, -1 when it is gone.
  result<int64_t> lease_time_to_live(int64_t id);

  /// Watches every key that starts with `prefix` from `start_revision` (0:
  /// from now). See watch_stream.
  std::unique_ptr<watch_stream> watch_prefix(const std::string& prefix,
                                             int64_t start_revision);

  /// The client's state (endpoints, the last one that answered).
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

/// A watch: one long HTTP answer carrying a line of JSON per batch of
/// changes, read by `next`. Connects on the first `next`, to the endpoints in
/// turn.
class watch_stream {
 public:
  watch_stream(std::shared_ptr<client::impl> c, std::string prefix,
               int64_t start_revision);
  ~watch_stream();

  watch_stream(const watch_stream&) = delete;
  watch_stream& operator=(const watch_stream&) = delete;

  /// Waits at most `limit` for changes. Returns the changes (empty when
  /// `limit` passed with none), or an error once the stream ended or could
  /// not start (then make a new one). Events the watch was created with are
  /// not reported as changes.
  result<std::vector<watch_event>> next(std::chrono::milliseconds limit);

  /// Ends the stream from any thread; a `next` in progress returns an
  /// error soon after.
  void cancel();

  /// The revision of the newest change reported so far (or the watch's
  /// start revision minus one).
  int64_t revision() const noexcept;

  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

} // namespace troupe::cluster::etcd
