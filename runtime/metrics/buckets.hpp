#pragma once

#include <cstddef>
#include <vector>

namespace troupe::runtime::metrics {

/// Latency bounds in seconds from 50µs to 60s: 0.00005, 0.0001, 0.00025,
/// 0.0005, 0.001, ..., 1, 2.5, 5, 10, 30, 60 (19 bounds).
std::vector<double> default_latency_buckets();

/// Size bounds in bytes: 64 B to 64 MiB, each 4 times the one before (11
/// bounds).
std::vector<double> default_size_buckets();

/// `count` bounds: start, start * factor, start * factor², ... Refuses
/// (std::invalid_argument) start <= 0, factor <= 1 or count == 0.
std::vector<double> exponential_buckets(double start, double factor,
                                        size_t count);

/// `count` bounds: start, start + width, start + 2 * width, ... Refuses
/// (std::invalid_argument) width <= 0 or count == 0.
std::vector<double> linear_buckets(double start, double width, size_t count);

} // namespace troupe::runtime::metrics
