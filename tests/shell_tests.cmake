# The terminal side of `troupe shell`: the pure helpers of the line editor,
# then the editor itself driven through a pseudo-terminal.
troupe_add_tests(shell_line
  SOURCES unit/shell_line_test.cpp
  DEPS troupe_shell_line)

# Drives programs in a pseudo-terminal (forkpty).
add_library(troupe_pty_session STATIC support/pty_session.cpp)
target_link_libraries(troupe_pty_session PUBLIC troupe_internal PRIVATE util)

# A small REPL on line_editor, for the pty tests only.
add_executable(troupe_line_editor_demo support/line_editor_demo.cpp)
target_link_libraries(troupe_line_editor_demo PRIVATE troupe_shell_line
                      troupe_internal)

troupe_add_tests(shell_pty
  SOURCES integration/shell_pty_test.cpp
  DEPS troupe_pty_session troupe_test_support
  LABELS integration)
target_compile_definitions(troupe_shell_pty_tests PRIVATE
  LINE_EDITOR_DEMO="$<TARGET_FILE:troupe_line_editor_demo>")
add_dependencies(troupe_shell_pty_tests troupe_line_editor_demo)
