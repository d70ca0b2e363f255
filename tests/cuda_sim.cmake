# A CUDA plugin that simulates one GPU in host memory (tests/cuda_sim.c),
# so that the CUDA_IPC paths of dashd and libdash run where there is no
# GPU. Built in every build, with or without CUDA, and never installed.
# A test loads it by pointing the loader at it:
#   ENVIRONMENT "DASH_CUDA_PLUGIN=$<TARGET_FILE:dash_cuda_sim>"
# (and add_dependencies(<test executable> dash_cuda_sim)). Included from
# tests/CMakeLists.txt.
add_library(dash_cuda_sim MODULE cuda_sim.c)
target_include_directories(dash_cuda_sim PRIVATE ${PROJECT_SOURCE_DIR}/include
                           ${PROJECT_SOURCE_DIR}/kernels)
target_compile_options(dash_cuda_sim PRIVATE ${DASH_C_WARNINGS})
target_link_libraries(dash_cuda_sim PRIVATE Threads::Threads)
# Only the entry point is exported; the math comes from the host (the CPU
# backend of whatever loaded the plugin), so nothing is left undefined.
set_target_properties(dash_cuda_sim PROPERTIES C_VISIBILITY_PRESET hidden)
target_link_options(dash_cuda_sim PRIVATE -Wl,--no-undefined)

# The simulation itself: it loads as the CUDA plugin, computes what the CPU
# backend computes, and shares memory between processes as CUDA IPC does,
# refusing what the runtime refuses.
add_executable(test_cuda_sim test_cuda_sim.c)
target_link_libraries(test_cuda_sim PRIVATE dash_roots PkgConfig::CHECK
                      Threads::Threads)
target_compile_options(test_cuda_sim PRIVATE ${DASH_C_WARNINGS})
add_dependencies(test_cuda_sim dash_cuda_sim)
add_test(NAME test_cuda_sim COMMAND test_cuda_sim)
set_tests_properties(test_cuda_sim PROPERTIES
    TIMEOUT 60
    LABELS "unit;cpu"
    ENVIRONMENT "DASH_CUDA_PLUGIN=$<TARGET_FILE:dash_cuda_sim>")
