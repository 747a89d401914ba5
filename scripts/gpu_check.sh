#!/usr/bin/env bash
# GPU check of the CUDA kernels (issue 17) on a bare CUDA machine: needs only the CUDA toolkit
# (nvcc, cuBLAS), a host C++ compiler and CMake (if CMake is missing, pip's `cmake` module is
# tried, then a direct nvcc build); none of the project's Debian libraries, no torch, no GTest.
#
#   scripts/gpu_check.sh [OUT.json] [gpu_check args...]
#
# 1. probes for a device with a 10-line CUDA program (no device or no nvcc: one clear line, exit 2,
#    in seconds, before anything is built);
# 2. configures and builds kernels/ on its own into $BUILD_DIR (default build-gpu/), Release,
#    -DLLMC_WITH_TORCH=OFF -DLLMC_BUILD_TESTS=OFF, CUDA architectures "80;90a" as the project
#    builds them ("native" for a device that is neither sm_8x nor sm_90 where CMake >= 3.24 can
#    do it; GPU_CHECK_ARCHS overrides), and reports ptxas spills of the kernels;
# 3. runs gpu_check (kernels/bench/gpu_check.cpp: qgemm_cuda against the CPU fp64 reference,
#    then timed against cuBLAS fp16) under a timeout, writes OUT.json (default
#    $BUILD_DIR/gpu_check.json) and prints its tables.
# Every step runs under `timeout`; the whole script stays under 10 minutes (GPU_CHECK_BUDGET_S,
# default 570). Extra arguments go to gpu_check (e.g. --quick, --reps 100, --group 64).
# Exit: 0 pass, 1 a check failed / build failed / timed out, 2 no nvcc or no CUDA device.
# Env: CUDACXX (nvcc), BUILD_DIR, JOBS (default: all cores), GPU_CHECK_ARCHS, GPU_CHECK_BUDGET_S,
#   GPU_CHECK_BUILD_ONLY=1 (no device needed: skip the probe and the run; a build check on a
#   machine without a GPU), GPU_CHECK_CMAKE (a cmake binary, or "none" for the direct nvcc build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-}"
[[ $# -gt 0 ]] && shift
BUILD_DIR="${BUILD_DIR:-build-gpu}"
[[ "$BUILD_DIR" == /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
[[ -n "$OUT" ]] || OUT="$BUILD_DIR/gpu_check.json"
[[ "$OUT" == /* ]] || OUT="$PWD/$OUT"
JOBS="${JOBS:-$(nproc 2>/dev/null || echo 4)}"
BUDGET="${GPU_CHECK_BUDGET_S:-570}"
START=$SECONDS

say() { echo "gpu_check.sh: $*"; }
die() { local rc="$1"; shift; echo "gpu_check.sh: $*" >&2; exit "$rc"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# Runs "$@" under timeout with at most $1 seconds (and never past the budget).
timed() {
  local limit="$1"; shift
  local l; l="$(left)"
  ((l < limit)) && limit="$l"
  ((limit > 5)) || die 1 "out of time (budget ${BUDGET}s) before: $*"
  timeout -k 10 "$limit" "$@"
}

# ---- nvcc ----------------------------------------------------------------------------------------
NVCC="${CUDACXX:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then NVCC="$(command -v nvcc)"
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
[[ -n "$NVCC" && -x "$NVCC" ]] || die 2 "no nvcc found (install the CUDA toolkit, put its bin/ on PATH or set CUDACXX)"
command -v timeout >/dev/null 2>&1 || die 1 "'timeout' (coreutils) is missing"
mkdir -p "$BUILD_DIR" "$(dirname "$OUT")"

# ---- device probe (before any build) -------------------------------------------------------------
PROBE_SRC="$BUILD_DIR/device_probe.cpp"
cat >"$PROBE_SRC" <<'EOF'
#include <cuda_runtime.h>
#include <cstdio>
int main() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) { std::printf("no CUDA device (cudaGetDeviceCount: %s)\n", cudaGetErrorString(e)); return 2; }
  if (n <= 0) { std::printf("no CUDA device (cudaGetDeviceCount found 0 devices)\n"); return 2; }
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) { std::printf("no CUDA device (cudaGetDeviceProperties failed)\n"); return 2; }
  std::printf("%d%d %s\n", p.major, p.minor, p.name);
  return 0;
}
EOF
CC_DEV=""
if [[ "${GPU_CHECK_BUILD_ONLY:-0}" == 1 ]]; then
  say "GPU_CHECK_BUILD_ONLY=1: no device probe, build only"
elif timed 120 "$NVCC" -std=c++17 -O1 -o "$BUILD_DIR/device_probe" "$PROBE_SRC" >"$BUILD_DIR/device_probe.log" 2>&1; then
  set +e
  PROBE="$(timed 60 "$BUILD_DIR/device_probe")"
  prc=$?
  set -e
  if ((prc == 2)); then die 2 "$PROBE"; fi
  ((prc == 0)) || die 1 "device probe failed (exit $prc): $PROBE"
  CC_DEV="${PROBE%% *}"
  say "device: ${PROBE#* } (sm_$CC_DEV); nvcc: $("$NVCC" --version | tail -n 1)"
else
  say "WARNING: could not build the device probe ($BUILD_DIR/device_probe.log); gpu_check itself will check for a device"
fi

# ---- build ---------------------------------------------------------------------------------------
CMAKE="${GPU_CHECK_CMAKE:-}"
if [[ "$CMAKE" == none ]]; then CMAKE=""
elif [[ -n "$CMAKE" ]]; then [[ -x "$CMAKE" ]] || die 1 "GPU_CHECK_CMAKE=$CMAKE is not executable"
elif command -v cmake >/dev/null 2>&1; then CMAKE="$(command -v cmake)"
elif command -v python3 >/dev/null 2>&1; then
  d="$(python3 -c 'import cmake, os; print(cmake.CMAKE_BIN_DIR)' 2>/dev/null || true)"
  [[ -n "$d" && -x "$d/cmake" ]] && CMAKE="$d/cmake"
fi
CMAKE_VER=""
[[ -n "$CMAKE" ]] && CMAKE_VER="$("$CMAKE" --version | head -n 1 | awk '{print $3}')"
ver_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]; }
if [[ -n "$CMAKE_VER" ]] && ! ver_ge "$CMAKE_VER" 3.18; then
  say "cmake $CMAKE_VER is older than 3.18: building with nvcc directly"
  CMAKE=""
fi

ARCHS="${GPU_CHECK_ARCHS:-}"
if [[ -z "$ARCHS" ]]; then
  ARCHS="80;90a"
  # sm_8x runs the sm_80 code, sm_90 the sm_90a code; another device would JIT the compute_80 PTX.
  if [[ -n "$CC_DEV" && "$CC_DEV" != 8? && "$CC_DEV" != 90 && -n "$CMAKE" ]] && ver_ge "$CMAKE_VER" 3.24; then
    ARCHS=native
  fi
fi

LOG="$BUILD_DIR/build.log"
BIN="$BUILD_DIR/bin/gpu_check"
say "building kernels/ alone into $BUILD_DIR (CUDA architectures $ARCHS, $JOBS jobs; log $LOG)"
if [[ -n "$CMAKE" ]]; then
  GEN=()
  command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && GEN=(-G Ninja)
  timed 180 "$CMAKE" -S "$ROOT/kernels" -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DLLMC_WITH_TORCH=OFF -DLLMC_BUILD_TESTS=OFF -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DLLMC_CUDA_ARCHITECTURES="$ARCHS" >"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die 1 "cmake configure failed (log $LOG)"; }
  timed 420 "$CMAKE" --build "$BUILD_DIR" --target gpu_check -j "$JOBS" >>"$LOG" 2>&1 \
    || { grep -E "error|Error" "$LOG" | head -n 20 >&2; die 1 "build failed (log $LOG)"; }
else
  say "no cmake: compiling with $NVCC directly"
  GENCODE=()
  IFS=';' read -r -a arch_list <<<"$ARCHS"
  for a in "${arch_list[@]}"; do
    if [[ "$a" == native ]]; then GENCODE+=(-arch=native); else GENCODE+=("-gencode=arch=compute_$a,code=[sm_$a,compute_$a]"); fi
  done
  SRCS=()
  for f in "$ROOT"/kernels/src/*.cpp; do [[ "$f" == *qgemm_cuda_stub.cpp ]] || SRCS+=("$f"); done
  X86=()
  [[ "$(uname -m)" == x86_64 ]] && X86=(-DLLMC_KERNELS_X86=1)
  mkdir -p "$BUILD_DIR/bin"
  timed 420 "$NVCC" -std=c++17 -O3 "${GENCODE[@]}" -Xptxas=-v -lineinfo -DLLMC_HAVE_CUDA=1 "${X86[@]}" \
    -I"$ROOT/kernels/include" -I"$ROOT/kernels/src" -Xcompiler=-pthread \
    "${SRCS[@]}" "$ROOT/kernels/cuda/qgemm_cuda.cu" "$ROOT/kernels/bench/gpu_check.cpp" \
    -lcublas -o "$BIN" >"$LOG" 2>&1 || { grep -E "error" "$LOG" | head -n 20 >&2; die 1 "nvcc build failed (log $LOG)"; }
fi
[[ -x "$BIN" ]] || die 1 "gpu_check was not built (CUDA or cuBLAS not found by CMake? log $LOG)"
kernels="$(grep -c "spill stores" "$LOG" || true)"
spills="$(grep "spill stores" "$LOG" | grep -vc "0 bytes spill stores, 0 bytes spill loads" || true)"
if ((kernels == 0)); then say "ptxas: no -Xptxas -v report in $LOG (kernels not rebuilt?)"
elif ((spills > 0)); then say "WARNING: ptxas reports register spills in $spills of $kernels kernel builds (grep spill $LOG)"
else say "ptxas: $kernels kernel builds, no spills"
fi
say "built in $((SECONDS - START)) s"
if [[ "${GPU_CHECK_BUILD_ONLY:-0}" == 1 ]]; then
  say "build only: $BIN (not run)"
  exit 0
fi

# ---- run -----------------------------------------------------------------------------------------
set +e
timed 420 "$BIN" --out "$OUT" "$@" 2>&1 | tee "$BUILD_DIR/gpu_check.log"
rc=${PIPESTATUS[0]}
set -e
case "$rc" in
  0) say "PASS in $((SECONDS - START)) s; JSON: $OUT" ;;
  2) die 2 "no CUDA device (see above)" ;;
  124|137) die 1 "gpu_check timed out ($((SECONDS - START)) s in all); partial log $BUILD_DIR/gpu_check.log" ;;
  *) die 1 "FAIL (gpu_check exit $rc) in $((SECONDS - START)) s; JSON: $OUT; log $BUILD_DIR/gpu_check.log" ;;
esac
