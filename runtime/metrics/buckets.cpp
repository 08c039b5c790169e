#include "runtime/metrics/buckets.hpp"

#include <cmath>
#include <stdexcept>

namespace troupe::runtime::metrics {

std::vector<double> default_latency_buckets() {
  return {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
          0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
          2.5,     5,      10,      30,     60};
}

std::vector<double> default_size_buckets() {
  return exponential_buckets(64, 4, 11);
}

std::vector<double> exponential_buckets(double start, double factor,
                                        size_t count) {
  if (!(start > 0) || !std::isfinite(start))
    throw std::invalid_argument("exponential buckets need a finite start > 0");
  if (!(factor > 1) || !std::isfinite(factor))
    throw std::invalid_argument("exponential buckets need a finite factor > 1");
  if (count == 0)
    throw std::invalid_argument("exponential buckets need count >= 1");
  std::vector<double> out;
  out.reserve(count);
  double v = start;
  for (size_t i = 0; i < count; ++i, v *= factor)
    out.push_back(v);
  return out;
}

std::vector<double> linear_buckets(double start, double width, size_t count) {
  if (!std::isfinite(start))
    throw std::invalid_argument("linear buckets need a finite start");
  if (!(width > 0) || !std::isfinite(width))
    throw std::invalid_argument("linear buckets need a finite width > 0");
  if (count == 0)
    throw std::invalid_argument("linear buckets need count >= 1");
  std::vector<double> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i)
    out.push_back(start + static_cast<double>(i) * width);
  return out;
}

} // namespace troupe::runtime::metrics
