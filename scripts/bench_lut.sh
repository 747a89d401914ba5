#!/usr/bin/env bash
# Builds the latency LUT of stories260K and of a synthetic 1B-shaped Llama twice each, and reports
# wall time and the per-entry spread between the two builds (|a - b| / a: max, median, p90) as JSON.
#
#   scripts/bench_lut.sh [BUILD_DIR=build] [OUT_DIR=lut_bench]
#   env: THREADS (default: all cores), TOKENS (default 1,128), CONTEXT (512), REPEATS (25),
#        MODELS (default "stories260K synthetic:1b"; a name without ':' is $LLMC_SHARED/models/NAME)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OUT=${2:-lut_bench}
BIN=$BUILD/bin/llmcompress
SHARED=${LLMC_SHARED:-$(cd .. && pwd)/shared}
THREADS=${THREADS:-0}
TOKENS=${TOKENS:-1,128}
CONTEXT=${CONTEXT:-512}
REPEATS=${REPEATS:-25}
MODELS=${MODELS:-"stories260K synthetic:1b"}
[ -x "$BIN" ] || { echo "error: $BIN not found (build first)" >&2; exit 1; }
mkdir -p "$OUT"

runs=()
for m in $MODELS; do
  if [[ $m == *:* ]]; then path=$m; else path=$SHARED/models/$m; fi
  tag=${m//[:\/]/_}
  for i in 1 2; do
    start=$(date +%s.%N)
    "$BIN" --threads "$THREADS" lut --model "$path" --space configs/space_default.json --tokens "$TOKENS" \
      --context "$CONTEXT" --repeats "$REPEATS" --out "$OUT/$tag.$i.json" >/dev/null
    end=$(date +%s.%N)
    echo "$tag build $i: $(echo "$end - $start" | bc) s" >&2
    runs+=("$tag:$OUT/$tag.$i.json:$(echo "$end - $start" | bc)")
  done
done

python3 - "$OUT/summary.json" "${runs[@]}" <<'EOF'
import json, statistics, sys
out, runs = sys.argv[1], sys.argv[2:]
by = {}
for r in runs:
    tag, path, wall = r.rsplit(":", 2)
    by.setdefault(tag, []).append((path, float(wall)))

def entries(lut):
    d = {}
    for e in lut["linears"]:
        d[("linear", e["N"], e["K"], e["bits"], e["M"])] = e["us"]
    for e in lut["attention"]:
        d[("attention", e["kv_heads"], e["M"])] = e["us"]
    for e in lut["layer_fixed"]:
        d[("layer_fixed", e["M"])] = e["us"]
    for e in lut["model_fixed"]:
        d[("model_fixed", e["M"])] = e["us"]
    return d

def stats(xs):
    xs = sorted(xs)
    return {"n": len(xs), "max": round(xs[-1], 4), "median": round(statistics.median(xs), 4),
            "p90": round(xs[int(0.9 * (len(xs) - 1))], 4), "within_10pct": sum(x <= 0.10 for x in xs)}

summary = {}
for tag, ((pa, wa), (pb, wb)) in by.items():
    la, lb = json.load(open(pa)), json.load(open(pb))
    a, b = entries(la), entries(lb)
    assert a.keys() == b.keys(), "the two builds have different entries"
    rel = {k: abs(a[k] - b[k]) / a[k] for k in a}
    worst = sorted(rel.items(), key=lambda kv: -kv[1])[:8]
    summary[tag] = {
        "device": la["device"], "threads": la["threads"], "kernel_version": la["kernel_version"],
        "statistic": la["build"].get("statistic"), "passes": la["build"].get("passes"),
        "entries": len(a), "wall_s": [round(wa, 1), round(wb, 1)],
        "spread_all": stats(list(rel.values())),
        "spread_linears": stats([v for k, v in rel.items() if k[0] == "linear"]),
        "spread_other": stats([v for k, v in rel.items() if k[0] != "linear"]),
        "worst": [{"entry": list(k), "a_us": a[k], "b_us": b[k], "rel": round(v, 4)} for k, v in worst],
    }
json.dump(summary, open(out, "w"), indent=1)
print(json.dumps(summary, indent=1))
EOF
