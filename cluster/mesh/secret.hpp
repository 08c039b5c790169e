#pragma once

// The cluster secret: where it comes from, how short it may be, and the
// HMAC-SHA256 proofs members exchange with it. The secret itself is never
// logged or rendered.

#include <string>

namespace troupe::cluster {

/// The shortest cluster secret accepted, in bytes.
inline constexpr size_t min_secret_bytes = 16;

/// Sets `secret` from `value` (cluster.secret, i.e. TROUPE_CLUSTER_SECRET)
/// or from the file `file` (cluster.secret_file, trailing newlines
/// dropped). Returns why there is no usable secret, or "".
std::string resolve_secret(const std::string& value, const std::string& file,
                           std::string& secret);

/// Returns HMAC-SHA256(secret, message) as 64 hex digits.
std::string hmac_hex(const std::string& secret, const std::string& message);

/// Whether `a` and `b` are equal, in time independent of where they differ.
bool same_proof(const std::string& a, const std::string& b);

/// Returns 32 random hex digits (a challenge).
std::string random_nonce();

} // namespace troupe::cluster
