# Members against a 3-member etcd that loses a member for a while (SIGSTOP
# of a follower, then of the leader), and `troupe cluster start-local` and
# fencing paths (tools/bootstrap.sh installs etcd).
troupe_add_tests(cluster_quorum
  SOURCES e2e/cluster_quorum_test.cpp
  DEPS troupe_test_support troupe_runtime_auth nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_quorum_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_quorum_tests troupe)
