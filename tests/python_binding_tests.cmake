# The Python binding (bindings/python/dash) against this build's libdash
# and a real dashd. Needs /usr/bin/python3 with numpy (torch optional: the
# zero-copy torch case skips without it). About 2 s.
set(DASH_PYTHON_TEST_ENV
    "PYTHONPATH=${PROJECT_SOURCE_DIR}/bindings/python"
    "DASH_LIBRARY=$<TARGET_FILE:dash>"
    "DASHD=$<TARGET_FILE:dashd>")
if(DASH_SANITIZE MATCHES "address")
  # An ASan-built libdash loads into an uninstrumented python only with the
  # runtime preloaded; CPython never frees everything, so no leak check
  # here (the C tests check libdash's leaks).
  execute_process(COMMAND ${CMAKE_C_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE DASH_LIBASAN
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  list(APPEND DASH_PYTHON_TEST_ENV "LD_PRELOAD=${DASH_LIBASAN}"
       "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1")
endif()
add_test(NAME python_binding
         COMMAND /usr/bin/python3 -m unittest discover
                 -s ${PROJECT_SOURCE_DIR}/bindings/python/tests
                 -p "test_binding.py" -v)
set_tests_properties(python_binding PROPERTIES
  ENVIRONMENT "${DASH_PYTHON_TEST_ENV}"
  TIMEOUT 180
  LABELS "python;integration")
