#include "runtime/metrics/registry.hpp"

#include "runtime/metrics/detail/text.hpp"

#include <algorithm>
#include <cmath>

namespace troupe::runtime::metrics {

namespace detail {

family_base::family_base(std::string name, std::string help, metric_type type)
    : name_(std::move(name)), help_(std::move(help)), type_(type) {}

family_base::~family_base() = default;

} // namespace detail

// -- family -------------------------------------------------------------------

namespace {

template<class Series>
constexpr metric_type type_of() {
  if constexpr (std::is_same_v<Series, counter>)
    return metric_type::counter;
  else if constexpr (std::is_same_v<Series, gauge>)
    return metric_type::gauge;
  else
    return metric_type::histogram;
}

void append_series(std::string& out, const std::string& name,
                   const label_set& labels, const counter& c) {
  out += name;
  detail::append_labels(out, labels);
  out += ' ';
  detail::append_value(out, c.value());
  out += '\n';
}

void append_series(std::string& out, const std::string& name,
                   const label_set& labels, const gauge& g) {
  out += name;
  detail::append_labels(out, labels);
  out += ' ';
  detail::append_value(out, g.value());
  out += '\n';
}

void append_series(std::string& out, const std::string& name,
                   const label_set& labels, const histogram& h) {
  // Counts are read once, so the +Inf bucket and _count agree even while
  // observations arrive.
  auto counts = h.bucket_counts();
  auto bounds = h.bounds();
  uint64_t cumulative = 0;
  std::string le;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += counts[i];
    le.clear();
    if (i < bounds.size())
      detail::append_value(le, bounds[i]);
    else
      le = "+Inf";
    out += name;
    out += "_bucket";
    detail::append_labels(out, labels, le);
    out += ' ';
    detail::append_value(out, cumulative);
    out += '\n';
  }
  out += name;
  out += "_sum";
  detail::append_labels(out, labels);
  out += ' ';
  detail::append_value(out, h.sum());
  out += '\n';
  out += name;
  out += "_count";
  detail::append_labels(out, labels);
  out += ' ';
  detail::append_value(out, cumulative);
  out += '\n';
}

} // namespace

template<class Series>
family<Series>::family(std::string name, std::string help,
                       std::shared_ptr<const std::vector<double>> bounds)
    : detail::family_base(std::move(name), std::move(help), type_of<Series>()),
      bounds_(std::move(bounds)) {}

template<class Series>
Series& family<Series>::with(const label_set& labels) {
  auto key = labels;
  auto why = detail::canonicalize(key);
  if (!why.empty())
    throw invalid_metric("metric '" + name() + "': " + why);
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = series_.find(key);
  if (i == series_.end()) {
    std::unique_ptr<Series> s;
    if constexpr (std::is_same_v<Series, histogram>)
      s = std::make_unique<histogram>(bounds_);
    else
      s = std::make_unique<Series>();
    i = series_.emplace(std::move(key), std::move(s)).first;
  }
  return *i->second;
}

template<class Series>
std::vector<double> family<Series>::bounds() const {
  return bounds_ ? *bounds_ : std::vector<double>{};
}

template<class Series>
void family<Series>::render(std::string& out) const {
  detail::append_header(out, name(), help(), type());
  std::lock_guard<std::mutex> guard{mtx_};
  for (const auto& [labels, series] : series_)
    append_series(out, name(), labels, *series);
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

// -- sample_sink --------------------------------------------------------------

bool sample_sink::add(label_set labels, double value) {
  if (!detail::canonicalize(labels).empty())
    return false;
  return samples_.emplace(std::move(labels), value).second;
}

// -- registry -----------------------------------------------------------------

/// A family whose series a collector computes at render time.
class registry::computed_family final : public detail::family_base {
 public:
  computed_family(std::string name, std::string help, metric_type type,
                  collector fn)
      : detail::family_base(std::move(name), std::move(help), type),
        fn_(std::move(fn)) {}

  void render(std::string& out) const override {
    sample_sink sink;
    fn_(sink);
    detail::append_header(out, name(), help(), type());
    for (const auto& [labels, value] : sink.samples_) {
      out += name();
      detail::append_labels(out, labels);
      out += ' ';
      detail::append_value(out, value);
      out += '\n';
    }
  }

 private:
  collector fn_;
};

registry::registry() = default;

registry::~registry() = default;

template<class Series>
family<Series>&
registry::add_family(const std::string& name, const std::string& help,
                     metric_type type,
                     std::shared_ptr<const std::vector<double>> bounds) {
  auto why = detail::check_metric_name(name, type);
  if (!why.empty())
    throw invalid_metric(why);
  auto text = detail::valid_utf8(help);
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = families_.find(name);
  if (i != families_.end()) {
    auto* f = dynamic_cast<family<Series>*>(i->second.get());
    if (f == nullptr) {
      // The same type but another class: a collector's family.
      auto kind = std::string{detail::type_name(i->second->type())};
      if (i->second->type() == type)
        kind = "computed " + kind;
      throw invalid_metric("metric '" + name + "' is already registered as a "
                           + kind);
    }
    if (f->help() != text)
      throw invalid_metric("metric '" + name
                           + "' is already registered with another help text");
    if (bounds && f->bounds() != *bounds)
      throw invalid_metric("metric '" + name
                           + "' is already registered with other buckets");
    return *f;
  }
  auto f = std::make_unique<family<Series>>(name, std::move(text),
                                            std::move(bounds));
  auto& ref = *f;
  families_.emplace(name, std::move(f));
  return ref;
}

family<counter>& registry::add_counter(const std::string& name,
                                       const std::string& help) {
  return add_family<counter>(name, help, metric_type::counter, nullptr);
}

family<gauge>& registry::add_gauge(const std::string& name,
                                   const std::string& help) {
  return add_family<gauge>(name, help, metric_type::gauge, nullptr);
}

family<histogram>& registry::add_histogram(const std::string& name,
                                           const std::string& help,
                                           std::vector<double> bounds) {
  if (!bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0)
    bounds.pop_back();
  auto bad = [&name](const std::string& why) {
    return invalid_metric("histogram '" + name + "': " + why);
  };
  if (bounds.empty())
    throw bad("needs at least one finite bucket bound");
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]))
      throw bad("bucket bounds must be finite (+Inf is implicit)");
    if (i > 0 && !(bounds[i - 1] < bounds[i]))
      throw bad("bucket bounds must be strictly increasing");
  }
  return add_family<histogram>(
    name, help, metric_type::histogram,
    std::make_shared<const std::vector<double>>(std::move(bounds)));
}

void registry::add_collector(metric_type type, const std::string& name,
                             const std::string& help, collector fn) {
  if (type == metric_type::histogram)
    throw invalid_metric("metric '" + name
                         + "': a collector computes counters or gauges only");
  auto why = detail::check_metric_name(name, type);
  if (!why.empty())
    throw invalid_metric(why);
  if (!fn)
    throw invalid_metric("metric '" + name + "': the collector is empty");
  auto f = std::make_unique<computed_family>(name, detail::valid_utf8(help),
                                             type, std::move(fn));
  std::lock_guard<std::mutex> guard{mtx_};
  if (!families_.emplace(name, std::move(f)).second)
    throw invalid_metric("metric '" + name + "' is already registered");
}

void registry::add_gauge_callback(const std::string& name,
                                  const std::string& help,
                                  std::function<double()> fn) {
  if (!fn)
    throw invalid_metric("metric '" + name + "': the callback is empty");
  add_collector(metric_type::gauge, name, help,
                [fn = std::move(fn)](sample_sink& sink) { sink.add(fn()); });
}

std::string registry::render() const {
  // Families are never removed: render them without the registry's lock, so
  // collectors may use the registry and registering never waits for them.
  std::vector<const detail::family_base*> all;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    all.reserve(families_.size());
    for (const auto& [name, f] : families_)
      all.push_back(f.get());
  }
  std::string out;
  for (const auto* f : all)
    f->render(out);
  return out;
}

} // namespace troupe::runtime::metrics
