# The run actor driven message by message (in the integration binary).
target_sources(troupe_integration_tests PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/integration/run_actor_test.cpp)

# Resuming runs after kill -9, through `troupe run`.
troupe_add_tests(resume
  SOURCES e2e/resume_test.cpp
  DEPS troupe_test_support nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_resume_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_resume_tests troupe)

# The journal store's fence, which a resuming run actor relies on.
target_sources(troupe_persistence_tests PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/unit/persistence/fence_test.cpp)

# The timer service run actors arm their timers with.
target_sources(troupe_integration_tests PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/integration/timer_service_test.cpp)
