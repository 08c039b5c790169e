# Replication of the partition logs: three replicators over real stores in
# one process, linked by memory (messages dropped or delayed at will), and
# through two actor systems and the mesh.
troupe_add_tests(replication
  SOURCES integration/replicator_test.cpp
  DEPS troupe_cluster_replication troupe_test_support
  LABELS integration)
# The journals are compared through a raw RocksDB handle.
target_link_libraries(troupe_replication_tests PRIVATE RocksDB::rocksdb-shared)
