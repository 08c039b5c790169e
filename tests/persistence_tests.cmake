# The persistence module: codec and RocksDB journal store.
troupe_add_tests(persistence
  SOURCES unit/persistence/codec_test.cpp unit/persistence/journal_store_test.cpp
          unit/persistence/partition_log_test.cpp
  DEPS troupe::persistence)
# The store tests corrupt records through a raw RocksDB handle.
target_link_libraries(troupe_persistence_tests PRIVATE RocksDB::rocksdb-shared)
