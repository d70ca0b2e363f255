# Unit tests of the daemon's self-contained modules: the configuration
# (daemon/config.c) and the log (daemon/log.c). Included from
# tests/CMakeLists.txt; they build without libuv or the rest of dashd.

add_executable(test_config test_config.c
    ${PROJECT_SOURCE_DIR}/daemon/config.c
    ${PROJECT_SOURCE_DIR}/daemon/log.c)
target_include_directories(test_config PRIVATE ${PROJECT_SOURCE_DIR}/daemon)
target_compile_definitions(test_config PRIVATE _GNU_SOURCE)
target_link_libraries(test_config PRIVATE dash_roots PkgConfig::CHECK
                      Threads::Threads)
target_compile_options(test_config PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_config COMMAND test_config)
set_tests_properties(test_config PROPERTIES TIMEOUT 60 LABELS "unit")
