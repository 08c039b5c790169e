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
