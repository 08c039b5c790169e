# runtime/log: structured records, text and JSON lines, levels and masking.
troupe_add_tests(log
  SOURCES unit/log_test.cpp
  DEPS troupe_runtime_log nlohmann_json::nlohmann_json)
