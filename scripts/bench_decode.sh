#!/usr/bin/env bash
# Decode / prefill throughput of exported 4-bit models on our CPU kernels.
#   1. builds build/ if llmcompress is missing (BUILD=... to use another build folder)
#   2. exports stories260K at uniform:4 (RTN) and benches it
#   3. if models/SmolLM2-135M-Instruct.Q4_1.gguf exists: exports it at uniform:4 (or each of SMOL_BITS; RTN, 8-bit packed
#      lm_head that the tied embedding shares, group 64) and benches it
#   4. for each model, builds two small LUTs (full widths, the export's bits and group) and runs
#      `bench --lut`: decode against a LUT whose context is the decode's mean context
#      (PROMPT + NEW/2), prefill against one at M = PROMPT from an empty cache
#   5. writes $OUT/bench_decode.json: tokens/s decode and prefill, file sizes, LUT predicted vs
#      measured, the read-only bandwidth probe and the decode's weight reads as % of it, and where a
#      decoded token's time goes op by op (bench --profile --bandwidth), per model; where the runtime
#      held row-tiled copies (2/3 bits on AVX-512, 4 bits on AVX-512 VNNI) also the same bench with
#      LLMC_TILED=0 (the canonical layout and kernels) under "no_tiled", run right after the tiled one
# Options (environment): OUT (default runs/bench_decode), THREADS (default: all cores), PROMPT (128),
# NEW (128), REPEATS (5), LM_HEAD_BITS (8; 16 = exact fp32 lm_head), SMOL_GROUP (64),
# SMOL_BITS ("4"; e.g. "2 3 4" exports SmolLM2 at each width; empty: none).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BUILD=${BUILD:-$root/build}
OUT=${OUT:-$root/runs/bench_decode}
THREADS=${THREADS:-0}
PROMPT=${PROMPT:-128}
NEW=${NEW:-128}
REPEATS=${REPEATS:-5}
LM_HEAD_BITS=${LM_HEAD_BITS:-8}
SMOL_GROUP=${SMOL_GROUP:-64}  # 576 = 9 x 64: no padded columns (group 128 pads K to 640)
SMOL_BITS=${SMOL_BITS-4}  # empty: no SmolLM2 export

if [ ! -x "$bin" ]; then
  echo "== building $BUILD" >&2
  cmake -S "$root" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$BUILD" -j"$(nproc)" --target llmcompress >&2
fi
mkdir -p "$OUT"
G=(--threads "$THREADS")

bench() {  # name model-folder source-model lm-head-bits group [bits, default 4]
  local bits=${6:-4}
  "$bin" "${G[@]}" bench --model "$2" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --repeats "$REPEATS" \
    --json --output "$OUT/$1.bench.json" > /dev/null
  echo "== $1: $(grep -E '"(decode|prefill)_tokens_per_s"' "$OUT/$1.bench.json" | tr -d ' \n')" >&2
  rm -f "$OUT/$1.no_tiled.json"
  # Where the runtime held row-tiled copies (2/3 bits on AVX-512, 4 bits on VNNI: tiled_copy_bytes > 0),
  # the canonical layout right after, for the ratio.
  if grep -Eq '"tiled_copy_bytes": *[1-9]' "$OUT/$1.bench.json"; then
    LLMC_TILED=0 "$bin" "${G[@]}" bench --model "$2" --prompt-tokens "$PROMPT" --new-tokens "$NEW" \
      --repeats "$REPEATS" --json --output "$OUT/$1.no_tiled.json" > /dev/null
    echo "== $1 in the canonical layout (LLMC_TILED=0): $(grep -E '"(decode|prefill)_tokens_per_s"' "$OUT/$1.no_tiled.json" | tr -d ' \n')" >&2
  fi
  # LUT predicted vs measured (same thread count; the prediction covers the runtime's own ops).
  local space="$OUT/$1.space.json" ctx=$((PROMPT + NEW / 2))
  echo "{\"kv_group_fractions\": [1.0], \"mlp_width_fractions\": [1.0], \"bits\": [$bits, 16], \"group_size\": $5}" > "$space"
  "$bin" "${G[@]}" lut --model "$3" --space "$space" --tokens 1 --context "$ctx" --lm-head-bits "$4" \
    --out "$OUT/$1.lut_decode.json" 2> /dev/null > /dev/null
  "$bin" "${G[@]}" lut --model "$3" --space "$space" --tokens "$PROMPT" --context "$PROMPT" --lm-head-bits "$4" \
    --out "$OUT/$1.lut_prefill.json" 2> /dev/null > /dev/null
  "$bin" "${G[@]}" bench --model "$2" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --repeats "$REPEATS" \
    --lut "$OUT/$1.lut_decode.json" --profile --bandwidth --json --output "$OUT/$1.bench_lut_decode.json" > /dev/null
  "$bin" "${G[@]}" bench --model "$2" --prompt-tokens "$PROMPT" --new-tokens 1 --repeats "$REPEATS" \
    --lut "$OUT/$1.lut_prefill.json" --json --output "$OUT/$1.bench_lut_prefill.json" > /dev/null
  python3 - "$OUT/$1" <<'PY'
import json, os, sys
base = sys.argv[1]
j = json.load(open(base + ".bench.json"))
if os.path.exists(base + ".no_tiled.json"):
    n = json.load(open(base + ".no_tiled.json"))
    j["no_tiled"] = {k: n[k] for k in ("decode_tokens_per_s", "prefill_tokens_per_s", "tiled_copy_bytes", "rss_bytes")}
dj = json.load(open(base + ".bench_lut_decode.json"))
d = dj["predicted"]
# The same run: the read-only probe, the decode's weight reads as % of it, the per-op profile.
j["bandwidth"] = dj["bandwidth"]
j["profile"] = dj["profile"]
p = json.load(open(base + ".bench_lut_prefill.json"))["predicted"]
j["lut"] = {"clock": d["clock"], "decode_context": d["decode_ms"]["lut_context"], "decode_ms": d["decode_ms"],
            "prefill_ms": p["prefill_ms"]}
json.dump(j, open(base + ".bench.json", "w"), indent=2)
print("== %s: LUT decode measured/predicted %.2f, prefill %.2f; decode reads weights at %.1f GB/s = %.0f%% of "
      "the read-only probe (%.1f GB/s)" % (base.split("/")[-1], d["decode_ms"]["measured_over_predicted"],
      p["prefill_ms"]["measured_over_predicted"], dj["bandwidth"]["decode_weight_gbps"],
      dj["bandwidth"]["decode_pct_of_read"], dj["bandwidth"]["read_gbps"]), file=sys.stderr)
PY
}

entries=()
STORIES=$shared/models/stories260K
if [ -d "$STORIES" ]; then
  echo "== export stories260K uniform:4 (RTN)" >&2
  "$bin" "${G[@]}" export --model "$STORIES" --arch uniform:4 --quant rtn --out "$OUT/stories260K-u4" >&2
  bench stories260K-u4 "$OUT/stories260K-u4" "$STORIES" 16 128
  entries+=("\"stories260K-u4\": $(cat "$OUT/stories260K-u4.bench.json")")
else
  echo "== skip stories260K: $STORIES not found" >&2
fi

GGUF=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$GGUF" ]; then
  for b in $SMOL_BITS; do
    name=smollm2-135m-u$b
    echo "== export SmolLM2-135M uniform:$b (RTN, lm_head $LM_HEAD_BITS bits, shared by the tied embedding)" >&2
    if "$bin" "${G[@]}" export --model "$GGUF" --arch "uniform:$b" --quant rtn --lm-head-bits "$LM_HEAD_BITS" \
         --dense-dtype bfloat16 --group-size "$SMOL_GROUP" --out "$OUT/$name" >&2; then
      bench "$name" "$OUT/$name" "$GGUF" "$LM_HEAD_BITS" "$SMOL_GROUP" "$b"
      entries+=("\"$name\": $(cat "$OUT/$name.bench.json")")
    else
      echo "== SmolLM2 export failed (GGUF loading unavailable?); skipped" >&2
      break
    fi
  done
  entries+=("\"smollm2-135m-gguf_bytes\": $(stat -c %s "$GGUF")")
else
  echo "== skip SmolLM2: $GGUF not found" >&2
fi

{
  echo "{"
  for i in "${!entries[@]}"; do
    [ "$i" -gt 0 ] && echo ","
    echo "${entries[$i]}"
  done
  echo "}"
} > "$OUT/bench_decode.json"
echo "== wrote $OUT/bench_decode.json" >&2
cat "$OUT/bench_decode.json"
