# troupe_add_module(NAME SOURCES ... [DEPS ...])
#   One library per top-level folder: troupe_NAME, alias troupe::NAME.
#   DEPS names only modules to the left of NAME in the layering
#   (config <- persistence <- runtime <- actors <- cluster <- tools) and
#   third-party targets; tools/check_layering.sh checks the includes.
#   Without SOURCES the module is an INTERFACE library (a folder whose code
#   has not landed yet still fixes its place in the layering).
function(troupe_add_module name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS" ${ARGN})
  if(arg_SOURCES)
    add_library(troupe_${name} STATIC ${arg_SOURCES})
    target_link_libraries(troupe_${name} PUBLIC ${arg_DEPS}
                          PRIVATE troupe_internal)
    target_include_directories(troupe_${name} PUBLIC ${PROJECT_SOURCE_DIR})
  else()
    add_library(troupe_${name} INTERFACE)
    target_link_libraries(troupe_${name} INTERFACE ${arg_DEPS})
    target_include_directories(troupe_${name} INTERFACE ${PROJECT_SOURCE_DIR})
  endif()
  add_library(troupe::${name} ALIAS troupe_${name})
endfunction()

# troupe_add_tests(NAME SOURCES ... [DEPS ...] [LABELS ...])
#   One GoogleTest binary troupe_NAME_tests, its cases discovered by ctest.
function(troupe_add_tests name)
  cmake_parse_arguments(arg "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT arg_LABELS)
    set(arg_LABELS unit)
  endif()
  add_executable(troupe_${name}_tests ${arg_SOURCES})
  target_link_libraries(troupe_${name}_tests PRIVATE ${arg_DEPS}
                        GTest::gtest_main GTest::gmock troupe_internal)
  gtest_discover_tests(troupe_${name}_tests
    PROPERTIES LABELS "${arg_LABELS}"
    DISCOVERY_TIMEOUT 60)
endfunction()
