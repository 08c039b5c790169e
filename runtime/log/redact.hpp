#pragma once

#include <string>
#include <string_view>

namespace troupe::runtime::log {

/// The text that stands for a hidden value.
inline constexpr std::string_view masked = "********";

/// Returns whether a field named `key` holds a secret whose value must not be
/// logged: its name contains secret, token, password, passwd, credential,
/// authorization or api_key / apikey (any case).
bool is_sensitive_key(std::string_view key);

/// Returns whether `text` holds something `redact` would hide.
bool needs_redaction(std::string_view text);

/// Returns `text` with bearer tokens hidden: whatever follows "Bearer " and
/// anything shaped like a JWT (`eyJ...` base64url, two dots) becomes
/// "[redacted]". The logging functions apply it to every message and text
/// field; it is a safety net, not a licence to log credentials.
std::string redact(std::string_view text);

} // namespace troupe::runtime::log
