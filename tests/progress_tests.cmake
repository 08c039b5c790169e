# The progress view of `troupe run` and `troupe watch`, without a terminal;
# run_test.cpp drives it through one.
troupe_add_tests(progress_view
  SOURCES unit/progress_view_test.cpp
  DEPS troupe_progress_view)
