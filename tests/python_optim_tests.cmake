# Tests of the PyTorch optimizer dash.optim.DashShampoo against real dashd
# daemons (started and stopped by the test itself): synchronous refresh
# equals the in-process path, asynchronous refresh trains, a killed daemon
# is survived and a restarted one picked up, state_dict round-trips.
# Included from tests/CMakeLists.txt; needs /usr/bin/python3 with numpy and
# torch.

add_test(NAME python_optim
         COMMAND /usr/bin/python3 -m unittest discover
                 -s ${PROJECT_SOURCE_DIR}/bindings/python/tests
                 -p "test_optim.py" -v)
set_tests_properties(python_optim PROPERTIES
  ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/bindings/python;DASH_LIBRARY=$<TARGET_FILE:dash>;DASHD=$<TARGET_FILE:dashd>"
  TIMEOUT 300
  LABELS "python;integration")
