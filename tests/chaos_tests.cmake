# Chaos scenarios: the parser and the seeded schedule, and the invariants and
# report over hand-made ledgers; then `troupe chaos --dry-run` as a child
# process.
troupe_add_tests(chaos
  SOURCES unit/chaos_scenario_test.cpp unit/chaos_report_test.cpp
  DEPS troupe_chaos)
target_compile_definitions(troupe_chaos_tests PRIVATE
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

troupe_add_tests(chaos_cli
  SOURCES e2e/chaos_cli_test.cpp e2e/chaos_run_test.cpp
  DEPS troupe_test_support troupe_runtime_auth nlohmann_json::nlohmann_json
  LABELS e2e)
target_compile_definitions(troupe_chaos_cli_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_chaos_cli_tests troupe)

# The network namespaces `troupe chaos` runs members in (as root; skipped
# otherwise): a troupe node and etcd in them, cut, healed, reached from the
# root namespace.
troupe_add_tests(chaos_netns
  SOURCES e2e/chaos_netns_test.cpp
  DEPS troupe_chaos troupe_test_support
  LABELS e2e)
target_compile_definitions(troupe_chaos_netns_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_chaos_netns_tests troupe)
