# Unit tests of the root library's CPU backend (roots.h) and of the status
# table (status.h). Included from tests/CMakeLists.txt.

add_executable(test_roots test_roots.c roots_ref.c roots_stack.c)
target_include_directories(test_roots PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_roots PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_roots PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_roots COMMAND test_roots)
# The whole file takes a few seconds in RelWithDebInfo and a few times
# that under ASan/UBSan on two slow cores; each Check test also has its own
# timeout (see test_roots.c), so a hang fails one test, not the run.
set_tests_properties(test_roots PROPERTIES TIMEOUT 120 LABELS "unit;cpu")

add_executable(test_status test_status.c)
target_link_libraries(test_status PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_status PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_status COMMAND test_status)
set_tests_properties(test_status PROPERTIES TIMEOUT 30 LABELS "unit")

add_executable(test_slots test_slots.c)
target_link_libraries(test_slots PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_slots PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_slots COMMAND test_slots)
set_tests_properties(test_slots PROPERTIES TIMEOUT 30 LABELS "unit")

# The CUDA backend is a plugin: it loads where the build has CUDA, and its
# absence means "no device", with the reason (tests/test_cuda_plugin.c).
add_executable(test_cuda_plugin test_cuda_plugin.c)
target_link_libraries(test_cuda_plugin PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_cuda_plugin PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_cuda_plugin COMMAND test_cuda_plugin)
add_test(NAME test_cuda_plugin_absent COMMAND test_cuda_plugin)
set_tests_properties(test_cuda_plugin test_cuda_plugin_absent PROPERTIES
                     TIMEOUT 30 LABELS "unit")
set_tests_properties(test_cuda_plugin_absent PROPERTIES
                     ENVIRONMENT DASH_CUDA_PLUGIN=none)
add_test(NAME no_cuda_link
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/no_cuda_link.sh
                 $<TARGET_FILE:dash> $<TARGET_FILE:dashd>
                 $<TARGET_FILE:dashctl> $<TARGET_FILE:dash-roots>
                 $<TARGET_FILE:dash-bench>)
set_tests_properties(no_cuda_link PROPERTIES TIMEOUT 30 LABELS "unit")
