# runtime/query: the tooling shell's query language.
troupe_add_tests(query
  SOURCES unit/query_test.cpp
  DEPS troupe_runtime_query)
