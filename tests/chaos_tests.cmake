# Chaos scenarios: the parser, the seeded schedule, and `troupe chaos
# --dry-run` as a child process.
troupe_add_tests(chaos
  SOURCES unit/chaos_scenario_test.cpp e2e/chaos_cli_test.cpp
  DEPS troupe_chaos troupe_test_support nlohmann_json::nlohmann_json)
target_compile_definitions(troupe_chaos_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_chaos_tests troupe)
