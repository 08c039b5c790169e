# Finds every third-party dependency once, so modules only name targets.
# Debian's packages are the source of truth (tools/bootstrap.sh installs them).

find_package(Threads REQUIRED)
find_package(toml11 REQUIRED)
find_package(nlohmann_json REQUIRED)
# libyaml (the reference C parser) rather than yaml-cpp 0.7: fuzzing found
# inputs of a few hundred bytes on which yaml-cpp 0.7 loops, allocating until
# the process is killed. libyaml ships no CMake config.
find_path(LIBYAML_INCLUDE_DIR yaml.h REQUIRED)
find_library(LIBYAML_LIBRARY yaml REQUIRED)
add_library(libyaml::libyaml UNKNOWN IMPORTED)
set_target_properties(libyaml::libyaml PROPERTIES
  IMPORTED_LOCATION ${LIBYAML_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${LIBYAML_INCLUDE_DIR})
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(msgpack CONFIG REQUIRED)

if(TROUPE_FUZZ_ONLY)
  return()
endif()

find_package(CLI11 REQUIRED)
find_package(RocksDB CONFIG REQUIRED)
find_package(Boost 1.74 REQUIRED)
find_package(OpenSSL REQUIRED)

# libedit (BSD licence) edits the lines of `troupe shell`. GNU readline is
# GPL: never link it, nor libedit's readline emulation in its place. Debian
# ships libedit.pc, whose include dir is only the emulation's folder, so
# pkg-config gives hints and histedit.h is looked for by name.
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PC_LIBEDIT QUIET libedit)
endif()
find_path(LIBEDIT_INCLUDE_DIR histedit.h HINTS ${PC_LIBEDIT_INCLUDEDIR}
          REQUIRED)
find_library(LIBEDIT_LIBRARY edit HINTS ${PC_LIBEDIT_LIBDIR} REQUIRED)
add_library(libedit::libedit UNKNOWN IMPORTED)
set_target_properties(libedit::libedit PROPERTIES
  IMPORTED_LOCATION ${LIBEDIT_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${LIBEDIT_INCLUDE_DIR})

# CAF 0.17 ships no CMake config: build imported targets by hand.
find_path(CAF_INCLUDE_DIR caf/all.hpp REQUIRED)
foreach(comp core io openssl)
  find_library(CAF_${comp}_LIBRARY caf_${comp} REQUIRED)
  add_library(CAF::${comp} SHARED IMPORTED)
  set_target_properties(CAF::${comp} PROPERTIES
    IMPORTED_LOCATION ${CAF_${comp}_LIBRARY}
    INTERFACE_INCLUDE_DIRECTORIES ${CAF_INCLUDE_DIR})
endforeach()
set_property(TARGET CAF::core PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
set_property(TARGET CAF::io PROPERTY INTERFACE_LINK_LIBRARIES CAF::core)
set_property(TARGET CAF::openssl PROPERTY INTERFACE_LINK_LIBRARIES
             CAF::io OpenSSL::SSL OpenSSL::Crypto)

if(TROUPE_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
if(TROUPE_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
