#!/usr/bin/env bash
# Benchmarks the CPU quantized GEMM kernels (kernels/bench/bench_qgemm.cpp) and writes JSON.
#
#   scripts/bench_kernels.sh [OUT_JSON] [extra bench_qgemm args...]
#
# OUT_JSON defaults to build/bench_kernels.json. Builds bench_qgemm if needed, in $BUILD_DIR
# (default: build; configured as Release if it does not exist yet). Needs libtorch (dense fp32
# baseline). Extra arguments go to bench_qgemm, e.g. --threads 2 --reps 30 --group 64 --quick.
# On a shared, oversubscribed machine wall-clock times mostly measure the scheduler; then use
#   scripts/bench_kernels.sh out.json --threads 1 --clock cpu
# (thread CPU time; every measurement runs on the calling thread).
# Set JOBS to limit build parallelism (default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-build/bench_kernels.json}"
[[ $# -gt 0 ]] && shift
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-2}"

cd "$ROOT"
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$BUILD_DIR" --target bench_qgemm -j "$JOBS"

BIN="$BUILD_DIR/bin/bench_qgemm"
[[ -x "$BIN" ]] || BIN="$(find "$BUILD_DIR" -name bench_qgemm -type f -perm -u+x | head -n 1)"
if [[ -z "$BIN" || ! -x "$BIN" ]]; then
  echo "bench_qgemm was not built (is libtorch installed?)" >&2
  exit 1
fi
mkdir -p "$(dirname "$OUT")"
"$BIN" --out "$OUT" "$@"
