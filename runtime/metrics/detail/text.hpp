#pragma once

#include "runtime/metrics/fwd.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace troupe::runtime::metrics::detail {

/// What is wrong with `name` as the name of a `type` family, or "" if
/// nothing: the format's syntax, then the conventions promtool checks.
std::string check_metric_name(std::string_view name, metric_type type);

/// What is wrong with `name` as a label name, or "" if nothing.
std::string check_label_name(std::string_view name);

/// Makes `labels` canonical: checks the names (and that none repeats), sorts
/// by name and replaces invalid UTF-8 in values. Returns what is wrong, or ""
/// if nothing.
std::string canonicalize(label_set& labels);

/// `s` with each invalid UTF-8 sequence replaced by U+FFFD.
std::string valid_utf8(std::string_view s);

/// The TYPE line's word for `type`.
std::string_view type_name(metric_type type);

/// Appends the HELP and TYPE lines.
void append_header(std::string& out, std::string_view name,
                   std::string_view help, metric_type type);

/// Appends `{a="x",b="y"}` (values escaped), followed by `le="..."` when
/// `le` is not empty; nothing for no labels and no `le`.
void append_labels(std::string& out, const label_set& labels,
                   std::string_view le = {});

/// Appends a sample value: shortest round-trip form, +Inf, -Inf or NaN.
void append_value(std::string& out, double v);

/// Appends an integer sample value.
void append_value(std::string& out, uint64_t v);

} // namespace troupe::runtime::metrics::detail
