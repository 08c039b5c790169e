# The switch expression language.
troupe_add_tests(expression
  SOURCES unit/expression_test.cpp
  DEPS troupe_runtime_spec)
