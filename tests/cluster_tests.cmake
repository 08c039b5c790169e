# The cluster's parts against a real etcd that each test starts on free
# loopback ports (tools/bootstrap.sh installs etcd).
troupe_add_tests(etcd_client
  SOURCES integration/etcd_client_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support
  LABELS integration)

troupe_add_tests(membership
  SOURCES integration/membership_test.cpp
  DEPS troupe_cluster_membership troupe_test_support
  LABELS integration)

# Real members: `troupe node start --cluster` processes and their etcd.
troupe_add_tests(cluster
  SOURCES e2e/cluster_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support troupe_frame_client
       troupe_runtime_auth nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_tests troupe)

# The cluster secret and its HMAC proofs.
troupe_add_tests(mesh_secret
  SOURCES unit/mesh_secret_test.cpp
  DEPS troupe_cluster_mesh troupe_test_support
  LABELS unit)

# Placement: which member runs an attempt.
troupe_add_tests(placement
  SOURCES unit/placement_test.cpp
  DEPS troupe_cluster_mesh troupe_test_support
  LABELS unit)

# Steps across real members: members declared down by etcd, load and
# capacity, leaving, the cluster's metrics.
troupe_add_tests(cluster_steps
  SOURCES e2e/cluster_steps_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support troupe_frame_client
       troupe_runtime_auth nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_steps_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_steps_tests troupe)
