# All dependencies are Debian packages installed by scripts/setup.sh.
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
if(LLMC_WITH_TORCH)
  find_package(CLI11 REQUIRED)
  # Debian's TorchConfig pulls in Caffe2 which wants gloo's config; both come from setup.sh.
  find_package(Torch REQUIRED)
  find_package(OpenMP REQUIRED)
endif()
if(LLMC_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# CUDA is optional: built only when a CUDA compiler is found (there is no GPU on CI; kernels are
# compiled and their host-side index math is tested on the CPU).
set(LLMC_HAVE_CUDA OFF)
if(LLMC_WITH_CUDA)
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    set(CMAKE_CUDA_ARCHITECTURES "80;90a")
    set(CMAKE_CUDA_STANDARD 17)
    set(LLMC_HAVE_CUDA ON)
    message(STATUS "llmcompress: CUDA kernels enabled (${CMAKE_CUDA_COMPILER})")
  else()
    message(STATUS "llmcompress: no CUDA compiler found, CUDA kernels disabled")
  endif()
endif()

function(llmc_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()

# Executables reuse llmc_pch's precompiled ATen header. GCC accepts a PCH only when -fpic/-fpie match,
# and CMake compiles a library with -fPIC but an executable with -fPIE, so the executable's sources
# are compiled with -fPIC as the library's are (still linked as a PIE); otherwise every one of
# them silently parses ATen again (-Winvalid-pch).
function(llmc_reuse_pch target)
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fPIC>)
  target_precompile_headers(${target} REUSE_FROM llmc_pch)
endfunction()
