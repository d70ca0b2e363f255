# Tests of the PyTorch optimizer dash.optim.DashShampoo against real dashd
# daemons (started and stopped by the test itself): synchronous refresh
# equals the in-process path, asynchronous refresh trains, a killed daemon
# is survived and a restarted one picked up, state_dict round-trips.
# Included from tests/CMakeLists.txt; needs /usr/bin/python3 with numpy and
# torch. Uses DASH_PYTHON_TEST_ENV of python_binding_tests.cmake, which is
# included first.

add_test(NAME python_optim
         COMMAND /usr/bin/python3 -m unittest discover
                 -s ${PROJECT_SOURCE_DIR}/bindings/python/tests
                 -p "test_optim.py" -v)
set_tests_properties(python_optim PROPERTIES
  ENVIRONMENT "${DASH_PYTHON_TEST_ENV}"
  TIMEOUT 300
  LABELS "python;integration")

# examples/train_digits.py, shortened, against a real dashd.
add_test(NAME train_digits
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/train_digits_test.py
                 $<TARGET_FILE:dashd> $<TARGET_FILE:dashctl>)
set_tests_properties(train_digits PROPERTIES
  ENVIRONMENT "${DASH_PYTHON_TEST_ENV}"
  TIMEOUT 300
  LABELS "python;integration;example")
