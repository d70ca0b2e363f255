# GPU tests: label "gpu"; each exits 77 with "skipped: no CUDA device"
# when no device is present, which ctest reports as skipped.
add_executable(test_cuda_seam test_cuda_seam.c)
target_link_libraries(test_cuda_seam PRIVATE dash_roots PkgConfig::CHECK)
target_compile_options(test_cuda_seam PRIVATE ${DASH_C_WARNINGS})
add_test(NAME test_cuda_seam COMMAND test_cuda_seam)
set_tests_properties(test_cuda_seam PROPERTIES LABELS gpu
                     SKIP_RETURN_CODE 77 TIMEOUT 120)

# The CUDA backend against float64 references and the CPU backend. Its
# "device" tests call the CUDA runtime themselves (cudaMalloc, streams);
# without CUDA in the build they are compiled out. DASH_TEST_BACKEND=cpu
# runs the rest on the CPU backend, to check the tests themselves on a
# machine without a GPU; that mode is not a ctest (test_roots covers the
# CPU). On an H100 the whole file takes seconds; the TIMEOUT also covers
# the CPU comparisons and the float64 references of B = 256 stacks.
add_executable(test_roots_cuda test_roots_cuda.c roots_ref.c roots_stack.c)
target_include_directories(test_roots_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_roots_cuda PRIVATE dash_roots PkgConfig::CHECK)
if(DASH_HAVE_CUDA)
  target_link_libraries(test_roots_cuda PRIVATE CUDA::cudart)
endif()
target_compile_options(test_roots_cuda PRIVATE ${DASH_C_WARNINGS})
# One ctest per Check TCase: on a GPU the tests run unforked (a process
# forked after CUDA was initialised cannot use it), so a crash ends its
# process; split, a crash in one case leaves the others' results.
foreach(case core precision edge device)
  add_test(NAME test_roots_cuda_${case} COMMAND test_roots_cuda)
  set_tests_properties(test_roots_cuda_${case} PROPERTIES LABELS gpu
                       ENVIRONMENT CK_RUN_CASE=${case}
                       SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
