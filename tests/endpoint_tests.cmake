# The node's HTTP endpoint: real connections on 127.0.0.1 (plain and TLS).
troupe_add_tests(endpoint
  SOURCES integration/endpoint_test.cpp
  DEPS troupe_endpoint
  LABELS integration)
# The test's client: Asio/Beast, and OpenSSL for TLS and its certificate.
target_link_libraries(troupe_endpoint_tests
  PRIVATE Boost::headers OpenSSL::SSL OpenSSL::Crypto Threads::Threads)
