# http nodes end to end: troupe run against a local server.
troupe_add_tests(http_node
  SOURCES e2e/http_node_test.cpp support/http_server.cpp
  DEPS troupe_test_support nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_link_libraries(troupe_http_node_tests PRIVATE Boost::headers Threads::Threads)
target_compile_definitions(troupe_http_node_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_http_node_tests troupe)
