#!/usr/bin/env bash
# bench_decode_stream runs a tiny stream and writes its JSON (atomically, with the fields the docs
# quote), and rejects bad arguments with a one-line error and exit code 2.
# Usage: test_bench_decode_stream.sh PATH/TO/bench_decode_stream
set -euo pipefail
b="$1"
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT
"$b" --layers 2 --shapes 64:96,40:64 --bits 4 --group 32 --reps 3 --probe-mib 8 --out "$t/s.json" > "$t/out"
grep -q '^decode stream: 2 x 2 GEMVs, 4-bit group 32' "$t/out" || { echo "unexpected output:"; cat "$t/out"; exit 1; }
[ ! -e "$t/s.json.tmp" ] || { echo "temp file left behind"; exit 1; }
python3 - "$t/s.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
# 2 layers x (64 rows x 96 columns + 40 x 64) at 4 bits, group 32: codes + fp16 scales and zeros.
want = 2 * (64 * 96 // 2 + 2 * 2 * 64 * 3 + 40 * 64 // 2 + 2 * 2 * 40 * 2)
assert d["bytes"] == want, (d["bytes"], want)
assert d["shapes"] == ["64:96", "40:64"] and d["bits"] == 4 and d["group"] == 32 and d["layers"] == 2, d
assert d["median_ms"] > 0 and d["p10_ms"] <= d["median_ms"] and d["gbps"] > 0 and d["read_probe_best_gbps"] > 0, d
PY
for bad in "--bits 5" "--shapes 3:x" "--reps 0" "--threads" "--frobnicate 1"; do
  set +e
  # shellcheck disable=SC2086
  "$b" $bad --layers 1 --probe-mib 8 > /dev/null 2> "$t/err"
  rc=$?
  set -e
  [ "$rc" -eq 2 ] || { echo "'$bad': exit $rc, want 2"; exit 1; }
  [ "$(wc -l < "$t/err")" -eq 1 ] && grep -q '^bench_decode_stream: ' "$t/err" || { echo "'$bad':"; cat "$t/err"; exit 1; }
done
echo ok
