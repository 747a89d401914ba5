#!/usr/bin/env bash
# Export table on stories260K (issue: discretize, quantize, fine-tune, export, run): for every
# architecture x quantizer x fine-tune steps, TinyStories perplexity, file size, average bits per
# weight, decode tokens/s and LUT-predicted vs measured latency, written to JSON and a markdown table.
#   scripts/bench_export.sh ARCH...      ARCH: uniform:B or a search output folder (RUN/arch.json + RUN/lut.json)
# Environment: OUT (runs/bench_export), THREADS (1), FT_STEPS (100), LIMIT (200 TinyStories documents),
# LUT (latency table; default: the first search folder's lut.json; uniform archs are exported with
# its space's group size so one table covers every row).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
M=$shared/models/stories260K
DATA=$shared/data/tinystories/tinystories_sample.txt
OUT=${OUT:-$root/runs/bench_export}
THREADS=${THREADS:-1}
FT_STEPS=${FT_STEPS:-100}
LIMIT=${LIMIT:-200}
[ -x "$bin" ] || "$root/scripts/setup.sh"
[ -d "$M" ] || { echo "bench_export.sh: $M not found (set LLMC_SHARED)" >&2; exit 1; }
[ $# -gt 0 ] || set -- uniform:4 uniform:3
mkdir -p "$OUT"
LUT=${LUT:-}
if [ -z "$LUT" ]; then
  for a in "$@"; do [ -f "$a/lut.json" ] && { LUT=$a/lut.json; break; }; done
fi
G=64
[ -n "$LUT" ] && G=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['space']['group_size'])" "$LUT")
T=(--threads "$THREADS")

rows=()
ppl() {  # model -> TinyStories token perplexity over LIMIT documents
  "$bin" "${T[@]}" eval --model "$1" --tasks "text:$DATA" --limit "$LIMIT" --json 2>/dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin)['results']; print(list(r.values())[0]['token_perplexity'])"
}
echo "== original: $(ppl "$M")" >&2
for arch in "$@"; do
  archfile=$arch; [ -d "$arch" ] && archfile=$arch/arch.json
  for q in rtn gptq; do
    for ft in 0 "$FT_STEPS"; do
      name=$(basename "$arch" | tr ':/' '__')-$q-ft$ft
      dir=$OUT/$name
      extra=(--group-size "$G"); [ "$ft" -gt 0 ] && extra+=(--finetune-steps "$ft" --distill)
      "$bin" "${T[@]}" export --model "$M" --arch "$archfile" --quant "$q" "${extra[@]}" --out "$dir" > "$dir.log" 2>&1
      p=$(ppl "$dir")
      lut=(); [ -n "$LUT" ] && lut=(--lut "$LUT")
      # Decode from 64 to 192 cached tokens: mean context 128 (the stories config's LUT context).
      "$bin" "${T[@]}" bench --model "$dir" --prompt-tokens 64 --new-tokens 128 --repeats 5 "${lut[@]}" --json \
        --output "$dir.bench.json" > /dev/null 2>> "$dir.log"
      rows+=("$(python3 - "$dir" "$name" "$p" "$arch" "$q" "$ft" <<'PY'
import json, os, sys
d, name, p, arch, q, ft = sys.argv[1:]
rep = json.load(open(os.path.join(d, "export_report.json")))
b = json.load(open(d + ".bench.json"))
pred = (b.get("predicted") or {}).get("decode_ms") or {}
print(json.dumps({"name": name, "arch": arch, "quant": q, "finetune_steps": int(ft), "tinystories_ppl": float(p),
                  "file_bytes": b["model_file_bytes"], "avg_bits_per_weight": rep["size"]["avg_bits_per_weight"],
                  "decode_tokens_per_s": b["decode_tokens_per_s"],
                  "decode_ms_predicted": pred.get("predicted"), "decode_ms_measured": pred.get("measured"),
                  "measured_over_predicted": pred.get("measured_over_predicted"), "clock": (b.get("predicted") or {}).get("clock"),
                  "finetune": rep.get("finetune")}))
PY
)")
      echo "== $name: ppl $p" >&2
    done
  done
done
printf '%s\n' "${rows[@]}" > "$OUT/rows.jsonl"
python3 - "$OUT/bench_export.json" "$(ppl "$M")" "$THREADS" "$OUT/rows.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[4]) if l.strip()]
out = {"model": "stories260K", "original_tinystories_ppl": float(sys.argv[2]), "threads": int(sys.argv[3]), "rows": rows}
tmp = sys.argv[1] + ".tmp"
json.dump(out, open(tmp, "w"), indent=2)
os.replace(tmp, sys.argv[1])
print("| arch | quant | ft steps | TinyStories ppl | file bytes | bits/weight | decode tok/s | LUT decode ms predicted / measured |")
print("|---|---|---:|---:|---:|---:|---:|---|")
for r in rows:
    lut = "-" if r["decode_ms_predicted"] is None else \
        f'{r["decode_ms_predicted"]:.4f} / {r["decode_ms_measured"]:.4f} ({r["measured_over_predicted"]:.2f})'
    print(f'| {r["arch"]} | {r["quant"]} | {r["finetune_steps"]} | {r["tinystories_ppl"]:.3f} | {r["file_bytes"]} | '
          f'{r["avg_bits_per_weight"]:.2f} | {r["decode_tokens_per_s"]:.0f} | {lut} |')
print(f'original fp32 TinyStories ppl {out["original_tinystories_ppl"]:.3f}')
PY
