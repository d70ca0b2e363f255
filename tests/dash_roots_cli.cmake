# End-to-end tests of the dash-roots tool: malformed .npy files, bad flags,
# and roots checked against a float64 reference. Included from
# tests/CMakeLists.txt; needs /usr/bin/python3 with numpy.

add_test(NAME dash_roots_cli
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/dash_roots_cli.py
                 $<TARGET_FILE:dash-roots>)
# About a second normally; sanitizer builds on two slow cores take longer.
set_tests_properties(dash_roots_cli PROPERTIES TIMEOUT 300 LABELS "cli;cpu")
