# Integration tests of dashd: each test starts a real daemon on a socket in
# a temporary directory and talks to it through libdash and the raw
# protocol (proto/wire.h). Included from tests/CMakeLists.txt.

add_executable(test_daemon test_daemon.c)
# dash: the client under test; dash_proto: raw frames for the bad-input
# cases; dash_roots: the in-process reference roots.
target_link_libraries(test_daemon PRIVATE dash dash_proto dash_roots
                      PkgConfig::CHECK)
target_compile_definitions(test_daemon PRIVATE _GNU_SOURCE)
target_compile_options(test_daemon PRIVATE ${DASH_C_WARNINGS})
if(DASH_SANITIZE)
  # Under sanitizers the 5 ms bound of invariant 2 is reported, not
  # asserted, when it cannot be met.
  target_compile_definitions(test_daemon PRIVATE DASH_TEST_SANITIZED)
endif()
add_dependencies(test_daemon dashd)

add_test(NAME test_daemon COMMAND test_daemon $<TARGET_FILE:dashd>)
# About 10 s in RelWithDebInfo and 15 s under ASan+UBSan on two cores; each Check test has its own
# timeout (test_daemon.c), so a hang fails one test, not the run.
set_tests_properties(test_daemon PROPERTIES
    TIMEOUT 300
    LABELS "integration;cpu"
    ENVIRONMENT "DASHD_TEST_BINARY=$<TARGET_FILE:dashd>")

# The CUDA_IPC stacks (the "cuda_ipc" case of test_daemon.c): everywhere on
# the GPU that tests/cuda_sim.c simulates in host memory, for the daemon
# (which inherits the environment) and the client alike; and on a real GPU
# with label gpu, skipping without one.
add_dependencies(test_daemon dash_cuda_sim)
add_test(NAME test_daemon_cuda_sim COMMAND test_daemon $<TARGET_FILE:dashd>)
set_tests_properties(test_daemon_cuda_sim PROPERTIES
    TIMEOUT 300
    LABELS "integration;cpu"
    ENVIRONMENT "DASH_TEST_CUDA_IPC=1;CK_RUN_CASE=cuda_ipc;DASH_CUDA_PLUGIN=$<TARGET_FILE:dash_cuda_sim>")
add_test(NAME test_daemon_cuda_ipc COMMAND test_daemon $<TARGET_FILE:dashd>)
set_tests_properties(test_daemon_cuda_ipc PROPERTIES
    TIMEOUT 300
    LABELS "integration;gpu"
    SKIP_RETURN_CODE 77
    ENVIRONMENT "DASH_TEST_CUDA_IPC=1;CK_RUN_CASE=cuda_ipc")
