# The cluster's parts against a real etcd that each test starts on free
# loopback ports (tools/bootstrap.sh installs etcd).
troupe_add_tests(etcd_client
  SOURCES integration/etcd_client_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support
  LABELS integration)

# The etcd client over TLS and with etcd users (certificates made at test
# time with the openssl command).
troupe_add_tests(etcd_tls
  SOURCES integration/etcd_tls_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support
  LABELS integration)

troupe_add_tests(membership
  SOURCES integration/membership_test.cpp integration/partition_map_test.cpp
          integration/failure_detector_test.cpp unit/rebalance_test.cpp
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

# Mutual TLS on the mesh, etcd over TLS and with users (real members and
# etcd; certificates made at test time with the openssl command).
troupe_add_tests(cluster_tls
  SOURCES e2e/cluster_tls_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_tls_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_tls_tests troupe)

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

# A member taking over or handing over a partition's runs.
troupe_add_tests(partition_agent
  SOURCES unit/partition_agent_test.cpp
  DEPS troupe_node troupe_runtime_metrics
  LABELS unit)

# Any member answers: requests about a run owned by another member are
# forwarded to it over the mesh; list is merged across members.
troupe_add_tests(cluster_forward
  SOURCES e2e/cluster_forward_test.cpp
  DEPS troupe_cluster_etcd troupe_test_support troupe_frame_client troupe_runtime_auth
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_forward_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_forward_tests troupe)

# How list pages of several members merge into one.
troupe_add_tests(list_merge
  SOURCES unit/list_merge_test.cpp
  DEPS troupe_cluster_forward troupe_test_support
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

# Replicated partitions with real members: failover after a kill -9.
troupe_add_tests(cluster_failover
  SOURCES e2e/cluster_failover_test.cpp e2e/cluster_watch_test.cpp
          e2e/cluster_gc_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       troupe_cluster_membership troupe_chaos nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_cluster_failover_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_cluster_failover_tests troupe)
