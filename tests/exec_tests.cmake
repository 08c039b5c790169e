# The exec process runner: real child processes.
troupe_add_tests(exec
  SOURCES unit/exec/process_runner_test.cpp
  DEPS troupe_exec)
