# Decides whether the CUDA backend is built. AUTO builds it whenever nvcc,
# cuBLAS and cuSOLVER are found; ON makes their absence an error.
set(DASH_HAVE_CUDA OFF)
string(TOUPPER "${DASH_CUDA}" _dash_cuda)
if(NOT _dash_cuda STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    # Ampere and Hopper at least; gpu-check passes the device's own.
    set(CMAKE_CUDA_ARCHITECTURES "80;90")
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit)
    # 12.5: the plugin looks driver calls up with
    # cudaGetDriverEntryPointByVersion, so that it links no libcuda.
    if(CUDAToolkit_FOUND AND CUDAToolkit_VERSION VERSION_LESS 12.5)
      message(STATUS "dashd: CUDA ${CUDAToolkit_VERSION} is older than 12.5, "
                     "which the CUDA backend needs")
    elseif(CUDAToolkit_FOUND AND TARGET CUDA::cublas AND
           TARGET CUDA::cusolver)
      set(DASH_HAVE_CUDA ON)
    endif()
  endif()
  if(_dash_cuda STREQUAL "ON" AND NOT DASH_HAVE_CUDA)
    message(FATAL_ERROR "DASH_CUDA=ON but nvcc (12.5 or newer), cuBLAS or "
                        "cuSOLVER is missing")
  endif()
endif()
message(STATUS "dashd: CUDA backend ${DASH_HAVE_CUDA}")
