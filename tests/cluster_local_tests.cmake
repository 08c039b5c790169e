# `troupe cluster start-local`: a real etcd and real members it starts on
# free loopback ports (tools/bootstrap.sh installs etcd).
troupe_add_tests(cluster_local
  SOURCES e2e/cluster_local_test.cpp
  DEPS troupe_test_support nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_local_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_cluster_local_tests troupe)
