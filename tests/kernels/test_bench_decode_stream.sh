#!/usr/bin/env bash
# bench_decode_stream runs a tiny stream and writes its JSON (atomically, with the fields the docs
# quote), and rejects bad arguments with a one-line error and exit code 2.
# Usage: test_bench_decode_stream.sh PATH/TO/bench_decode_stream
set -euo pipefail
b="$1"
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT
"$b" --layers 2 --shapes 64:96,40:64 --bits 4 --group 32 --reps 3 --probe-mib 8 --layout both --out "$t/s.json" > "$t/out"
grep -q '^decode stream (canonical): 2 x 2 GEMVs, 4-bit group 32' "$t/out" || { echo "unexpected output:"; cat "$t/out"; exit 1; }
grep -q '^decode stream (tiled): 2 x 2 GEMVs, 4-bit group 32' "$t/out" || { echo "unexpected output:"; cat "$t/out"; exit 1; }
grep -q '^canonical / tiled time: ' "$t/out" || { echo "no ratio:"; cat "$t/out"; exit 1; }
[ ! -e "$t/s.json.tmp" ] || { echo "temp file left behind"; exit 1; }
python3 - "$t/s.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
# 2 layers x (64 rows x 96 columns + 40 x 64) at 4 bits, group 32: codes + fp16 scales and zeros
# (whole groups here: no padding blocks, which a product would not read).
want = 2 * (64 * 96 // 2 + 2 * 2 * 64 * 3 + 40 * 64 // 2 + 2 * 2 * 40 * 2)
assert d["bytes"] == want, (d["bytes"], want)
assert d["shapes"] == ["64:96", "40:64"] and d["bits"] == 4 and d["group"] == 32 and d["layers"] == 2, d
assert sorted(d["layouts"]) == ["canonical", "tiled"], d
for k, v in d["layouts"].items():
    assert v["median_ms"] > 0 and v["p10_ms"] <= v["median_ms"] and v["gbps"] > 0, d
assert d["canonical_over_tiled"] > 0 and d["read_probe_best_gbps"] > 0, d
PY
# 8 bits have no tiled form: the default layout is the canonical one, and asking for tiles fails.
"$b" --layers 1 --shapes 32:64 --bits 8 --reps 1 --probe-mib 8 | grep -q '^decode stream (canonical): 1 x 1 GEMVs, 8-bit' ||
  { echo "8 bits: no canonical run"; exit 1; }
for bad in "--bits 5" "--shapes 3:x" "--reps 0" "--threads" "--frobnicate 1" "--layout diagonal" "--bits 8 --layout tiled"; do
  set +e
  # shellcheck disable=SC2086
  "$b" $bad --layers 1 --probe-mib 8 > /dev/null 2> "$t/err"
  rc=$?
  set -e
  [ "$rc" -eq 2 ] || { echo "'$bad': exit $rc, want 2"; exit 1; }
  [ "$(wc -l < "$t/err")" -eq 1 ] && grep -q '^bench_decode_stream: ' "$t/err" || { echo "'$bad':"; cat "$t/err"; exit 1; }
done
echo ok
