# The control protocol: frames, and the node's control server.
troupe_add_tests(wire
  SOURCES unit/control/wire_test.cpp
  DEPS troupe_runtime_control)

# The control listener against raw clients.
add_library(troupe_frame_client STATIC support/frame_client.cpp)
target_link_libraries(troupe_frame_client
  PUBLIC troupe_runtime_control nlohmann_json::nlohmann_json
  PRIVATE troupe_internal)
troupe_add_tests(control_server
  SOURCES integration/control_server_test.cpp
  DEPS troupe_control troupe_frame_client troupe_test_support Boost::headers
  LABELS integration)

# A real node driven by the real CLI and raw clients.
troupe_add_tests(node
  SOURCES e2e/node_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       troupe_pty_session
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_node_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_node_tests troupe)

# A real node under load on its control port: requests during recovery,
# long watches, viewers hammering it.
troupe_add_tests(node_control
  SOURCES e2e/node_control_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       troupe::persistence nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_node_control_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_node_control_tests troupe)

# The node's answers to the control protocol over an embedded node, in one
# process, with requests through a fake connection.
troupe_add_tests(node_service
  SOURCES integration/node_service_test.cpp
  DEPS troupe_node troupe_test_support Boost::headers
  LABELS integration)
