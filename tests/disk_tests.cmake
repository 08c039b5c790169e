# A node whose data dir runs low on space (storage.min_free).
troupe_add_tests(disk
  SOURCES e2e/disk_test.cpp
  DEPS troupe_test_support troupe_frame_client troupe_runtime_auth
       nlohmann_json::nlohmann_json
  LABELS "e2e;slow")
target_compile_definitions(troupe_disk_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>"
  TROUPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
add_dependencies(troupe_disk_tests troupe)
