# The fault hooks and the ledger of `troupe chaos`, on real nodes.
troupe_add_tests(chaos_hooks
  SOURCES e2e/chaos_hooks_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_chaos_hooks_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_chaos_hooks_tests troupe)

# The ledger on a 3-member cluster with replicated partitions (real etcd).
troupe_add_tests(chaos_ledger_cluster
  SOURCES e2e/chaos_ledger_cluster_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_chaos_ledger_cluster_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_chaos_ledger_cluster_tests troupe)
