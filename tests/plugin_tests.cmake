# The plugin API for node kinds: kinds added from C++ on an embedded node in
# the test process, and the example program that embeds Troupe
# (examples/plugins) run as a child process.
troupe_add_tests(plugin
  SOURCES e2e/plugin_test.cpp
  DEPS troupe::actors troupe_test_support nlohmann_json::nlohmann_json
  LABELS "e2e;integration")
target_compile_definitions(troupe_plugin_tests PRIVATE
  TROUPE_PLUGIN_EXAMPLE="$<TARGET_FILE:troupe_plugin_example>")
add_dependencies(troupe_plugin_tests troupe_plugin_example)
