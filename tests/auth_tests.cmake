# runtime/auth: tokens, roles and rate limits.
troupe_add_tests(auth
  SOURCES unit/auth_test.cpp
  DEPS troupe_runtime_auth nlohmann_json::nlohmann_json OpenSSL::Crypto)
