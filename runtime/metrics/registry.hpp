#pragma once

#include "runtime/metrics/buckets.hpp"
#include "runtime/metrics/fwd.hpp"
#include "runtime/metrics/series.hpp"

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::runtime::metrics {

/// The kind of a metric family, as its TYPE line says.
enum class metric_type : uint8_t { counter, gauge, histogram };

/// The Content-Type of render()'s text (Prometheus text format 0.0.4).
inline constexpr std::string_view exposition_content_type
  = "text/plain; version=0.0.4; charset=utf-8";

/// A metric or label name the registry refuses: not valid in the text format,
/// reserved, or against Prometheus' naming conventions (what `promtool check
/// metrics` reports). Names are fixed in code, so this is a programming
/// error; label values are never refused.
class invalid_metric : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

/// What every family has: name, help text, type, and how it renders.
class family_base {
 public:
  family_base(std::string name, std::string help, metric_type type);
  virtual ~family_base();

  family_base(const family_base&) = delete;
  family_base& operator=(const family_base&) = delete;

  const std::string& name() const noexcept { return name_; }
  const std::string& help() const noexcept { return help_; }
  metric_type type() const noexcept { return type_; }

  /// Appends the HELP and TYPE lines and every series, sorted by labels.
  virtual void render(std::string& out) const = 0;

 private:
  std::string name_;
  std::string help_;
  metric_type type_;
};

} // namespace detail

/// The series of one metric, one per label set. Made by the registry, which
/// owns it.
template<class Series>
class family final : public detail::family_base {
 public:
  /// `bounds`: the bucket bounds of a histogram family, null otherwise.
  family(std::string name, std::string help,
         std::shared_ptr<const std::vector<double>> bounds);

  /// The series with these labels (given in any order), made on first use.
  /// The reference stays valid as long as the registry: get it once, keep
  /// it, and update it without locks. Takes a lock; not for the hot path.
  /// Throws invalid_metric for an invalid, reserved or repeated label name.
  /// Values may be anything: invalid UTF-8 becomes U+FFFD.
  Series& with(const label_set& labels);

  /// The upper bounds of a histogram family's buckets (empty otherwise).
  std::vector<double> bounds() const;

  void render(std::string& out) const override;

 private:
  std::shared_ptr<const std::vector<double>> bounds_;
  mutable std::mutex mtx_;
  /// Keys are canonical: sorted by label name.
  std::map<label_set, std::unique_ptr<Series>> series_;
};

extern template class family<counter>;
extern template class family<gauge>;
extern template class family<histogram>;

/// Collects the series of a computed family at render time.
class sample_sink {
 public:
  /// Adds a series. Returns false, and drops it, for an invalid, reserved
  /// or repeated label name, or labels already added.
  bool add(label_set labels, double value);

  /// Adds the series without labels.
  bool add(double value) { return add({}, value); }

 private:
  friend class registry;
  sample_sink() = default;
  std::map<label_set, double> samples_;
};

/// Every metric of a process, rendered as Prometheus text for `GET /metrics`.
/// All members are thread-safe.
class registry {
 public:
  /// Fills a sink with the series of a computed family. Runs on the thread
  /// that calls render(), without the registry's locks held; it must be
  /// quick and must not block.
  using collector = std::function<void(sample_sink&)>;

  registry();
  ~registry();

  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  /// A counter family; its name must end in `_total`. Asking again with the
  /// same name and help returns the same family. Throws invalid_metric for a
  /// bad name or a name taken by another kind of family.
  family<counter>& add_counter(const std::string& name,
                               const std::string& help);

  /// A gauge family (name rules and repeats as for add_counter, but the name
  /// must not end in `_total`).
  family<gauge>& add_gauge(const std::string& name, const std::string& help);

  /// A histogram family with these bucket bounds (strictly increasing and
  /// finite; a trailing +Inf is dropped, as it is always there). Asking again
  /// needs the same bounds. Durations are in seconds (`_seconds`), sizes in
  /// bytes (`_bytes`).
  family<histogram>&
  add_histogram(const std::string& name, const std::string& help,
                std::vector<double> bounds = default_latency_buckets());

  /// A counter or gauge family whose series `fn` computes at render time
  /// (live actors, mailbox depths, breaker states). Throws invalid_metric
  /// for a histogram type, a bad name or a name already registered.
  void add_collector(metric_type type, const std::string& name,
                     const std::string& help, collector fn);

  /// A gauge without labels whose value `fn` computes at render time.
  void add_gauge_callback(const std::string& name, const std::string& help,
                          std::function<double()> fn);

  /// Every family in the text format 0.0.4, sorted by name, each series
  /// sorted by labels. A histogram has cumulative `_bucket` series ending
  /// with le="+Inf", then `_sum` and `_count`. Exceptions from collectors
  /// propagate.
  std::string render() const;

 private:
  template<class Series>
  family<Series>& add_family(const std::string& name, const std::string& help,
                             metric_type type,
                             std::shared_ptr<const std::vector<double>> bounds);

  class computed_family;

  mutable std::mutex mtx_;
  std::map<std::string, std::unique_ptr<detail::family_base>, std::less<>>
    families_;
};

} // namespace troupe::runtime::metrics
