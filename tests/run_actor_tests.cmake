# The run actor driven message by message (in the integration binary).
target_sources(troupe_integration_tests PRIVATE
  ${CMAKE_CURRENT_SOURCE_DIR}/integration/run_actor_test.cpp)
