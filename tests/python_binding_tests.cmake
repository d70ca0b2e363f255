# The Python binding (bindings/python/dash) against this build's libdash
# and a real dashd. Needs /usr/bin/python3 with numpy (torch optional: the
# zero-copy torch case skips without it).
add_test(NAME python_binding
         COMMAND /usr/bin/python3 -m unittest discover
                 -s ${PROJECT_SOURCE_DIR}/bindings/python/tests
                 -p "test_binding.py" -v)
set_tests_properties(python_binding PROPERTIES
  ENVIRONMENT "PYTHONPATH=${PROJECT_SOURCE_DIR}/bindings/python;DASH_LIBRARY=$<TARGET_FILE:dash>;DASHD=$<TARGET_FILE:dashd>"
  TIMEOUT 180
  LABELS "python;integration")
