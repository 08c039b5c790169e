# The terminal side of `troupe shell`.
# Drives programs in a pseudo-terminal (forkpty).
add_library(troupe_pty_session STATIC support/pty_session.cpp)
target_link_libraries(troupe_pty_session PUBLIC troupe_internal PRIVATE util)

troupe_add_tests(shell_pty
  SOURCES integration/shell_pty_test.cpp
  DEPS troupe_pty_session
  LABELS integration)
