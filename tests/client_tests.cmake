# Unit tests of libdash (client/) against a scripted fake daemon in the
# test itself; no dashd needed. Included from tests/CMakeLists.txt.

add_executable(test_client_unit test_client_unit.c)
# The client's internals (client/internal.h) and the wire module, so that
# the fake daemon speaks the protocol and the tests can reach inside.
target_link_libraries(test_client_unit PRIVATE dash_client_obj dash_proto
                      dash_roots PkgConfig::CHECK Threads::Threads)
target_compile_definitions(test_client_unit PRIVATE _GNU_SOURCE)
target_compile_options(test_client_unit PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_client_unit COMMAND test_client_unit)
set_tests_properties(test_client_unit PROPERTIES TIMEOUT 120 LABELS "unit")
