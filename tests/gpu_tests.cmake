# GPU tests: label "gpu"; each exits 77 with "skipped: no CUDA device"
# when no device is present, which ctest reports as skipped.
add_executable(test_cuda_seam test_cuda_seam.c)
target_link_libraries(test_cuda_seam PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_cuda_seam PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_cuda_seam COMMAND test_cuda_seam)
set_tests_properties(test_cuda_seam PROPERTIES LABELS gpu
                     SKIP_RETURN_CODE 77 TIMEOUT 120)
