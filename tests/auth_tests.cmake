# runtime/auth: tokens, roles and rate limits; and `troupe token issue` run as
# a child process.
troupe_add_tests(auth
  SOURCES unit/auth_test.cpp
  DEPS troupe_runtime_auth nlohmann_json::nlohmann_json OpenSSL::Crypto)

troupe_add_tests(token
  SOURCES e2e/token_test.cpp
  DEPS troupe_runtime_auth troupe_test_support nlohmann_json::nlohmann_json
  LABELS e2e)
target_compile_definitions(troupe_token_tests PRIVATE
  TROUPE_BINARY="$<TARGET_FILE:troupe>")
add_dependencies(troupe_token_tests troupe)
