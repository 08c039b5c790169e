# The metrics registry and its Prometheus text.
troupe_add_tests(metrics
  SOURCES unit/metrics_test.cpp
  DEPS troupe_runtime_metrics)

# promtool (Debian package prometheus) lints a realistic registry's text; the
# test fails, rather than skips, without promtool.
add_executable(troupe_metrics_sample unit/metrics_sample.cpp)
target_link_libraries(troupe_metrics_sample
  PRIVATE troupe_runtime_metrics troupe_internal)
add_test(NAME metrics.promtool
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/support/promtool_check.sh
          $<TARGET_FILE:troupe_metrics_sample>
          ${CMAKE_CURRENT_BINARY_DIR}/metrics_sample.prom)
set_tests_properties(metrics.promtool PROPERTIES LABELS unit TIMEOUT 60)
