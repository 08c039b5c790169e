#include "runtime/metrics/registry.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

using namespace troupe::runtime::metrics;

namespace {

/// The message of the invalid_metric `f` throws, or "" if it throws none.
template<class F>
std::string refusal(F&& f) {
  try {
    f();
  } catch (const invalid_metric& e) {
    return e.what();
  }
  return {};
}

} // namespace

TEST(MetricsRegistry, RendersCountersAndGaugesExactly) {
  registry reg;
  auto& started = reg.add_counter("troupe_runs_started_total", "Runs started.");
  started.with({{"workflow", "b"}}).inc();
  started.with({{"workflow", "a"}}).inc(41);
  started.with({{"workflow", "a"}}).inc();
  auto& open = reg.add_gauge("troupe_breakers", "Circuit breakers by state.");
  open.with({{"state", "open"}, {"kind", "http"}}).set(2);
  open.with({{"kind", "exec"}, {"state", "closed"}}).set(0.5);
  open.with({}).dec(3);
  EXPECT_EQ(reg.render(),
            "# HELP troupe_breakers Circuit breakers by state.\n"
            "# TYPE troupe_breakers gauge\n"
            "troupe_breakers -3\n"
            "troupe_breakers{kind=\"exec\",state=\"closed\"} 0.5\n"
            "troupe_breakers{kind=\"http\",state=\"open\"} 2\n"
            "# HELP troupe_runs_started_total Runs started.\n"
            "# TYPE troupe_runs_started_total counter\n"
            "troupe_runs_started_total{workflow=\"a\"} 42\n"
            "troupe_runs_started_total{workflow=\"b\"} 1\n");
}

TEST(MetricsRegistry, GivesTheSameSeriesForLabelsInAnyOrder) {
  registry reg;
  auto& f = reg.add_counter("x_total", "X.");
  auto& a = f.with({{"a", "1"}, {"b", "2"}});
  auto& b = f.with({{"b", "2"}, {"a", "1"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &f.with({{"a", "1"}}));
  EXPECT_EQ(&reg.add_counter("x_total", "X."), &f);
}

TEST(MetricsRegistry, RendersHistogramsWithCumulativeBuckets) {
  registry reg;
  auto& f = reg.add_histogram("troupe_step_duration_seconds", "Step time.",
                              {0.25, 1, 2.5});
  auto& h = f.with({{"kind", "exec"}});
  h.observe(0.125);
  h.observe(0.25); // le: a value on a bound counts in that bucket
  h.observe(0.75);
  h.observe(3.0);
  h.observe(std::numeric_limits<double>::quiet_NaN()); // ignored
  EXPECT_EQ(reg.render(),
            "# HELP troupe_step_duration_seconds Step time.\n"
            "# TYPE troupe_step_duration_seconds histogram\n"
            "troupe_step_duration_seconds_bucket{kind=\"exec\",le=\"0.25\"} 2\n"
            "troupe_step_duration_seconds_bucket{kind=\"exec\",le=\"1\"} 3\n"
            "troupe_step_duration_seconds_bucket{kind=\"exec\",le=\"2.5\"} 3\n"
            "troupe_step_duration_seconds_bucket{kind=\"exec\",le=\"+Inf\"} 4\n"
            "troupe_step_duration_seconds_sum{kind=\"exec\"} 4.125\n"
            "troupe_step_duration_seconds_count{kind=\"exec\"} 4\n");
}

TEST(MetricsHistogram, CountsEachValueInTheFirstBucketAtOrAboveIt) {
  registry reg;
  auto& h = reg.add_histogram("wait_seconds", "W.", {1, 2, 4}).with({});
  for (double v : {-5.0, 0.0, 1.0, 1.000001, 2.0, 3.9, 4.0, 4.1, 1e300,
                   std::numeric_limits<double>::infinity()})
    h.observe(v);
  EXPECT_EQ(h.bucket_counts(), (std::vector<uint64_t>{3, 2, 2, 3}));
  h.observe(std::chrono::milliseconds{1500});
  EXPECT_EQ(h.bucket_counts()[1], 3u);
  EXPECT_TRUE(std::isinf(h.sum()));
}

TEST(MetricsHistogram, DropsATrailingInfAndChecksBounds) {
  registry reg;
  auto inf = std::numeric_limits<double>::infinity();
  auto& f = reg.add_histogram("one_seconds", "A.", {1, 2, inf});
  EXPECT_EQ(f.bounds(), (std::vector<double>{1, 2}));
  EXPECT_EQ(
    refusal([&] {
      reg.add_histogram("two_seconds", "B.", {2, 1});
    }),
    "histogram 'two_seconds': bucket bounds must be strictly increasing");
  EXPECT_EQ(
    refusal([&] {
      reg.add_histogram("three_seconds", "C.", {1, 1});
    }),
    "histogram 'three_seconds': bucket bounds must be strictly increasing");
  EXPECT_EQ(refusal([&] { reg.add_histogram("four_seconds", "D.", {}); }),
            "histogram 'four_seconds': needs at least one finite bucket bound");
  EXPECT_EQ(refusal([&] { reg.add_histogram("five_seconds", "E.", {inf}); }),
            "histogram 'five_seconds': needs at least one finite bucket bound");
  EXPECT_NE(refusal([&] {
              reg.add_histogram("six_seconds", "F.", {NAN, 1});
            }),
            "");
  EXPECT_EQ(refusal([&] {
              reg.add_histogram("one_seconds", "A.", {1, 3});
            }),
            "metric 'one_seconds' is already registered with other buckets");
}

TEST(MetricsBuckets, HasDefaultsForLatenciesAndSizes) {
  auto latency = default_latency_buckets();
  ASSERT_EQ(latency.size(), 19u);
  EXPECT_EQ(latency.front(), 0.00005);
  EXPECT_EQ(latency.back(), 60);
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
  auto size = default_size_buckets();
  ASSERT_EQ(size.size(), 11u);
  EXPECT_EQ(size.front(), 64);
  EXPECT_EQ(size.back(), 64.0 * 1024 * 1024);
  EXPECT_EQ(exponential_buckets(1, 10, 3), (std::vector<double>{1, 10, 100}));
  EXPECT_EQ(linear_buckets(0, 5, 3), (std::vector<double>{0, 5, 10}));
  EXPECT_THROW(exponential_buckets(0, 2, 3), std::invalid_argument);
  EXPECT_THROW(exponential_buckets(1, 1, 3), std::invalid_argument);
  EXPECT_THROW(linear_buckets(0, 0, 3), std::invalid_argument);
  EXPECT_THROW(linear_buckets(0, 1, 0), std::invalid_argument);
  // The defaults render as short numbers.
  registry reg;
  reg.add_histogram("lat_seconds", "L.").with({});
  auto text = reg.render();
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"5e-05\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.00025\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.0001\"} 0\n"),
            std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"60\"} 0\n"), std::string::npos);
}

TEST(MetricsRegistry, EscapesLabelValuesAndHelp) {
  registry reg;
  reg.add_gauge("g", "Line one\nback\\slash \"quoted\".")
    .with({{"path", "C:\\dir\n\"x\""}})
    .set(1);
  EXPECT_EQ(reg.render(), "# HELP g Line one\\nback\\\\slash \"quoted\".\n"
                          "# TYPE g gauge\n"
                          "g{path=\"C:\\\\dir\\n\\\"x\\\"\"} 1\n");
}

TEST(MetricsRegistry, ReplacesInvalidUtf8InValuesAndHelp) {
  registry reg;
  reg.add_gauge("alpha", "bad \xff help")
    .with({{"v", "a\xc3\x28z\xe2\x82"}})
    .set(1);
  reg.add_gauge("beta", "ok")
    .with({{"v", "gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80"}});
  EXPECT_EQ(reg.render(),
            "# HELP alpha bad \xef\xbf\xbd help\n"
            "# TYPE alpha gauge\n"
            "alpha{v=\"a\xef\xbf\xbd(z\xef\xbf\xbd\xef\xbf\xbd\"} 1\n"
            "# HELP beta ok\n"
            "# TYPE beta gauge\n"
            "beta{v=\"gr\xc3\xbc\xc3\x9f \xf0\x9f\x98\x80\"} 0\n");
}

TEST(MetricsRegistry, RendersSpecialValues) {
  registry reg;
  auto& f = reg.add_gauge("v", "V.");
  f.with({{"k", "a"}}).set(std::numeric_limits<double>::infinity());
  f.with({{"k", "b"}}).set(-std::numeric_limits<double>::infinity());
  f.with({{"k", "c"}}).set(std::numeric_limits<double>::quiet_NaN());
  f.with({{"k", "d"}}).set(1e-7);
  f.with({{"k", "e"}}).set(123456789.25);
  f.with({{"k", "f"}}).set(0.0001);
  f.with({{"k", "g"}}).set(-2.5e20);
  f.with({{"k", "h"}}).set(1e300);
  EXPECT_EQ(reg.render(), "# HELP v V.\n"
                          "# TYPE v gauge\n"
                          "v{k=\"a\"} +Inf\n"
                          "v{k=\"b\"} -Inf\n"
                          "v{k=\"c\"} NaN\n"
                          "v{k=\"d\"} 1e-07\n"
                          "v{k=\"e\"} 123456789.25\n"
                          "v{k=\"f\"} 0.0001\n"
                          "v{k=\"g\"} -2.5e+20\n"
                          "v{k=\"h\"} 1e+300\n");
}

TEST(MetricsRegistry, RendersAFamilyWithoutSeriesAsItsHeader) {
  registry reg;
  reg.add_counter("none_total", "Nothing yet.");
  EXPECT_EQ(reg.render(), "# HELP none_total Nothing yet.\n"
                          "# TYPE none_total counter\n");
}

TEST(MetricsRegistry, RefusesInvalidMetricNames) {
  registry reg;
  auto counter_error = [&](const std::string& name) {
    return refusal([&] { reg.add_counter(name, "help"); });
  };
  auto gauge_error = [&](const std::string& name) {
    return refusal([&] { reg.add_gauge(name, "help"); });
  };
  EXPECT_EQ(gauge_error(""),
            "invalid metric name '': a metric name must not be empty");
  EXPECT_EQ(gauge_error("1abc"), "invalid metric name '1abc': it must match "
                                 "[a-zA-Z_:][a-zA-Z0-9_:]*");
  EXPECT_EQ(gauge_error("a-b"), "invalid metric name 'a-b': it must match "
                                "[a-zA-Z_:][a-zA-Z0-9_:]*");
  EXPECT_EQ(gauge_error("a b"), "invalid metric name 'a b': it must match "
                                "[a-zA-Z_:][a-zA-Z0-9_:]*");
  EXPECT_EQ(gauge_error("job:rate"), "invalid metric name 'job:rate': colons "
                                     "are reserved for recording rules");
  EXPECT_EQ(gauge_error("queueDepth"),
            "invalid metric name 'queueDepth': metric names are snake_case "
            "(no upper-case letters)");
  EXPECT_EQ(gauge_error("__x"),
            "invalid metric name '__x': names starting with '__' are reserved");
  EXPECT_EQ(counter_error("runs"),
            "invalid metric name 'runs': a counter's name must end in _total");
  EXPECT_EQ(gauge_error("runs_total"), "invalid metric name 'runs_total': "
                                       "only a counter's name may end in "
                                       "_total");
  EXPECT_EQ(gauge_error("runs_count"),
            "invalid metric name 'runs_count': the suffix _count is reserved "
            "for the series of histograms");
  EXPECT_EQ(gauge_error("queue_gauge"),
            "invalid metric name 'queue_gauge': a name must not include a "
            "metric type ('gauge')");
  EXPECT_EQ(gauge_error("latency_ms"),
            "invalid metric name 'latency_ms': abbreviated unit 'ms': spell "
            "out a base unit (_seconds, _bytes)");
  EXPECT_EQ(gauge_error("latency_milliseconds"),
            "invalid metric name 'latency_milliseconds': use the base unit "
            "'seconds' instead of 'milliseconds'");
  EXPECT_EQ(gauge_error("uptime_hours"),
            "invalid metric name 'uptime_hours': use the base unit 'seconds' "
            "instead of 'hours'");
  EXPECT_EQ(gauge_error("heap_kilobytes"),
            "invalid metric name 'heap_kilobytes': use the base unit 'bytes' "
            "instead of 'kilobytes'");
  EXPECT_EQ(refusal([&] { reg.add_histogram("size_bits", "help"); }),
            "invalid metric name 'size_bits': use the base unit 'bytes' "
            "instead of 'bits'");
  // Fine names.
  EXPECT_EQ(counter_error("troupe_http_requests_total"), "");
  EXPECT_EQ(gauge_error("troupe_mailbox_messages"), "");
  EXPECT_EQ(gauge_error("_private_bytes"), "");
  EXPECT_EQ(gauge_error("troupe_orbits"), "");
}

TEST(MetricsRegistry, RefusesInvalidLabelNames) {
  registry reg;
  auto& f = reg.add_counter("x_total", "X.");
  auto& h = reg.add_histogram("y_seconds", "Y.");
  EXPECT_EQ(refusal([&] {
              f.with({{"1a", "v"}});
            }),
            "metric 'x_total': invalid label name '1a': it must match "
            "[a-zA-Z_][a-zA-Z0-9_]*");
  EXPECT_EQ(refusal([&] {
              f.with({{"a:b", "v"}});
            }),
            "metric 'x_total': invalid label name 'a:b': it must match "
            "[a-zA-Z_][a-zA-Z0-9_]*");
  EXPECT_EQ(refusal([&] {
              f.with({{"", "v"}});
            }),
            "metric 'x_total': invalid label name '': a label name must not "
            "be empty");
  EXPECT_EQ(refusal([&] {
              f.with({{"__name__", "v"}});
            }),
            "metric 'x_total': invalid label name '__name__': names starting "
            "with '__' are reserved");
  EXPECT_EQ(refusal([&] {
              f.with({{"runId", "v"}});
            }),
            "metric 'x_total': invalid label name 'runId': label names are "
            "snake_case (no upper-case letters)");
  EXPECT_EQ(refusal([&] {
              h.with({{"le", "1"}});
            }),
            "metric 'y_seconds': invalid label name 'le': reserved for "
            "histogram buckets and summary quantiles");
  EXPECT_EQ(refusal([&] {
              f.with({{"quantile", "1"}});
            }),
            "metric 'x_total': invalid label name 'quantile': reserved for "
            "histogram buckets and summary quantiles");
  EXPECT_EQ(refusal([&] {
              f.with({{"a", "1"}, {"b", "2"}, {"a", "3"}});
            }),
            "metric 'x_total': label 'a' given twice");
  EXPECT_EQ(refusal([&] { f.with({{"_a", "1"}, {"b2", ""}}); }), "");
}

TEST(MetricsRegistry, RefusesANameTakenByAnotherFamily) {
  registry reg;
  reg.add_gauge("g", "G.");
  reg.add_gauge_callback("live_actors", "Live actors.", [] { return 1.0; });
  EXPECT_EQ(refusal([&] { reg.add_histogram("g", "G."); }),
            "metric 'g' is already registered as a gauge");
  EXPECT_EQ(refusal([&] { reg.add_gauge("g", "Other."); }),
            "metric 'g' is already registered with another help text");
  EXPECT_EQ(refusal([&] { reg.add_gauge("live_actors", "Live actors."); }),
            "metric 'live_actors' is already registered as a computed gauge");
  EXPECT_EQ(refusal([&] {
              reg.add_collector(metric_type::gauge, "g", "G.",
                                [](sample_sink&) {});
            }),
            "metric 'g' is already registered");
  EXPECT_EQ(
    refusal([&] {
      reg.add_collector(metric_type::histogram, "lat_seconds", "L.",
                        [](sample_sink&) {});
    }),
    "metric 'lat_seconds': a collector computes counters or gauges only");
}

TEST(MetricsRegistry, AsksCollectorsAtEachRender) {
  registry reg;
  int live = 3;
  reg.add_gauge_callback("troupe_live_actors", "Actors alive.",
                         [&live] { return static_cast<double>(live); });
  std::vector<bool> added;
  reg.add_collector(metric_type::gauge, "troupe_mailbox_messages",
                    "Messages waiting per actor.", [&](sample_sink& sink) {
                      added.push_back(sink.add({{"actor", "run-2"}}, 7));
                      added.push_back(sink.add({{"actor", "run-1"}}, 0));
                      // Repeated labels and bad names are dropped.
                      added.push_back(sink.add({{"actor", "run-1"}}, 9));
                      added.push_back(sink.add({{"Actor", "x"}}, 1));
                    });
  reg.add_collector(metric_type::counter, "troupe_gc_runs_total", "GC runs.",
                    [&reg](sample_sink& sink) {
                      // Collectors may use the registry: no lock is held.
                      reg.add_counter("troupe_late_total", "Late.");
                      sink.add(5);
                    });
  auto expected = std::string{"# HELP troupe_gc_runs_total GC runs.\n"
                              "# TYPE troupe_gc_runs_total counter\n"
                              "troupe_gc_runs_total 5\n"
                              "# HELP troupe_live_actors Actors alive.\n"
                              "# TYPE troupe_live_actors gauge\n"
                              "troupe_live_actors 3\n"
                              "# HELP troupe_mailbox_messages Messages "
                              "waiting per actor.\n"
                              "# TYPE troupe_mailbox_messages gauge\n"
                              "troupe_mailbox_messages{actor=\"run-1\"} 0\n"
                              "troupe_mailbox_messages{actor=\"run-2\"} 7\n"};
  EXPECT_EQ(reg.render(), expected);
  EXPECT_EQ(added, (std::vector<bool>{true, true, false, false}));
  live = 4;
  auto text = reg.render();
  EXPECT_NE(text.find("troupe_live_actors 4\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE troupe_late_total counter\n"), std::string::npos);
}

TEST(MetricsRegistry, CountsIncrementsFromSeveralThreadsExactly) {
  registry reg;
  auto& c = reg.add_counter("ops_total", "Ops.");
  auto& g = reg.add_gauge("level", "Level.").with({});
  auto& h = reg.add_histogram("op_seconds", "Op time.", {0.5, 1.5}).with({});
  constexpr int threads = 4;
  constexpr int per_thread = 50'000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      // Each thread gets its handle through the lock, then stays lock-free.
      auto& mine = c.with({{"thread", std::to_string(t % 2)}});
      for (int i = 0; i < per_thread; ++i) {
        mine.inc();
        g.inc();
        h.observe(i % 2 == 0 ? 1.0 : 2.0);
      }
    });
  // Renders while the writers run must not get in their way.
  for (int i = 0; i < 20; ++i)
    EXPECT_FALSE(reg.render().empty());
  for (auto& t : pool)
    t.join();
  EXPECT_EQ(c.with({{"thread", "0"}}).value()
              + c.with({{"thread", "1"}}).value(),
            uint64_t{threads * per_thread});
  EXPECT_EQ(g.value(), threads * per_thread);
  auto counts = h.bucket_counts();
  EXPECT_EQ(counts, (std::vector<uint64_t>{0, threads * per_thread / 2,
                                           threads * per_thread / 2}));
  // 1.0 and 2.0 are exact in binary: the sum is exact too.
  EXPECT_EQ(h.sum(), 1.5 * threads * per_thread);
  auto text = reg.render();
  EXPECT_NE(text.find("op_seconds_count 200000\n"), std::string::npos);
  EXPECT_NE(text.find("op_seconds_bucket{le=\"+Inf\"} 200000\n"),
            std::string::npos);
  EXPECT_NE(text.find("op_seconds_sum 300000\n"), std::string::npos);
}
