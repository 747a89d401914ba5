#!/usr/bin/env bash
# Fuzz bench: each fuzz target (tests/fuzz: safetensors, GGUF, tokenizer.json, SentencePiece
# tokenizer.model, search configs, task files) under ASan/UBSan for FUZZ_SECONDS each, starting from the committed corpus
# (tests/fuzz/corpus) plus what earlier runs of this script kept. Records per target: executions,
# crashes, distinct error classes (kinds of clean rejection), into OUT/summary.md and stdout.
# Usage: scripts/fuzz.sh [OUT]   (default build-fuzz/runs; the issue's bench: FUZZ_SECONDS=600)
# Environment:
#   FUZZ_SECONDS  seconds per target (default 600)
#   FUZZ_TARGETS  space-separated subset (default: all six)
#   FUZZ_ENGINE   libfuzzer (clang's coverage-guided libFuzzer, build-fuzz/) | builtin (driver.cpp's
#                 mutation loop under GCC's ASan/UBSan, build-asan/) | auto (default: libfuzzer when
#                 clang++ can link -fsanitize=fuzzer, else builtin)
#   FUZZ_SEED     seed (default 0: random)
# A crash leaves its input in OUT/<target>/artifacts/ (rerun: the target binary with that file);
# the script exits 1 when any target crashed. The CI smoke run is `ctest -L fuzz` in build-asan.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
secs="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-safetensors gguf tokenizer_json spm_model search_config tasks}"
engine="${FUZZ_ENGINE:-auto}"
seed="${FUZZ_SEED:-0}"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

if [ "$engine" = auto ]; then
  engine=builtin
  if command -v clang++ >/dev/null 2>&1 &&
     echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
       clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
    engine=libfuzzer
  fi
fi
if [ "$engine" = libfuzzer ]; then
  bdir="$root/build-fuzz"
  cmake -S "$root" -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang \
    -DLLMC_WITH_TORCH=OFF -DLLMC_WITH_CUDA=OFF -DLLMC_FUZZ_ENGINE=libfuzzer \
    "-DCMAKE_CXX_FLAGS=$san -fsanitize=fuzzer-no-link" "-DCMAKE_EXE_LINKER_FLAGS=$san" \
    "-DCMAKE_SHARED_LINKER_FLAGS=$san" >/dev/null
else
  bdir="$root/build-asan"
  (cd "$root" && cmake --preset asan >/dev/null)
fi
out="${1:-$root/build-fuzz/runs}"
mkdir -p "$out"
cmake --build "$bdir" -j"$(nproc)" --target $(for t in $targets; do printf 'fuzz_%s ' "$t"; done) >/dev/null

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"
summary="$out/summary.md"
{
  echo "| target | engine | seconds | executions | crashes | distinct error classes | new corpus inputs | slow units, rerun alone |"
  echo "|---|---|---:|---:|---:|---:|---:|---|"
} > "$summary"
failed=0
for t in $targets; do
  dict="$root/tests/fuzz/dict/json.dict"
  [ "$t" = gguf ] && dict="$root/tests/fuzz/dict/gguf.dict"
  work="$out/$t"
  mkdir -p "$work/corpus" "$work/artifacts"
  log="$work/fuzz.log"
  before=$(find "$work/corpus" -type f | wc -l)
  echo "== fuzz_$t ($engine, ${secs} s)" >&2
  set +e
  if [ "$engine" = libfuzzer ]; then
    "$bdir/bin/fuzz_$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=65536 -seed="$seed" \
      -dict="$dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
      "$work/corpus" "$root/tests/fuzz/corpus/$t" > "$log" 2>&1
  else
    "$bdir/bin/fuzz_$t" -max_total_time="$secs" -timeout=20 -seed="$seed" -dict="$dict" \
      -artifact_prefix="$work/artifacts/" "$root/tests/fuzz/corpus/$t" > "$log" 2>&1
  fi
  rc=$?
  set -e
  if [ "$engine" = libfuzzer ]; then
    execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  else
    execs=$(grep -a -o 'done: [0-9]* executions' "$log" | grep -o '[0-9]*' | tail -1)
  fi
  classes=$(grep -a -o '([0-9]* distinct error classes)' "$log" | grep -o '[0-9]*' | tail -1)
  # libFuzzer also saves inputs that ran long (slow-unit-*): not failures, and on a machine that
  # paused the fuzzer (SIGSTOP, a busy neighbour) any input can be one; each is rerun alone and its
  # time reported instead.
  crashes=$(find "$work/artifacts" -type f ! -name 'slow-unit-*' | wc -l)
  slow=""
  for f in $(find "$work/artifacts" -type f -name 'slow-unit-*'); do
    t0=$(date +%s%N)
    "$bdir/bin/fuzz_$t" "$f" > /dev/null 2>&1 || crashes=$((crashes + 1))
    slow="$slow $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  done
  after=$(find "$work/corpus" -type f | wc -l)
  [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ] && crashes="exit $rc"
  [ "$rc" -ne 0 ] && { failed=1; tail -30 "$log" >&2; }
  echo "| $t | $engine | $secs | ${execs:-?} | $crashes | ${classes:-?} | $((after - before)) | ${slow:- none} |" >> "$summary"
done
cat "$summary"
exit $failed
