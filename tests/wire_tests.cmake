# Unit tests of the framing of the control protocol (proto/wire.h).
# Included from tests/CMakeLists.txt.

add_executable(test_wire test_wire.c)
target_link_libraries(test_wire PRIVATE dash_proto PkgConfig::CHECK)
target_compile_options(test_wire PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_wire COMMAND test_wire)
set_tests_properties(test_wire PROPERTIES TIMEOUT 60 LABELS "unit")
