# The HTTP client of http nodes: against a local server on 127.0.0.1.
troupe_add_tests(http
  SOURCES unit/http/http_client_test.cpp
  DEPS troupe_http)
# The test's own server: Asio/Beast, and OpenSSL for TLS and its certificate.
target_link_libraries(troupe_http_tests
  PRIVATE Boost::headers OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
