#!/usr/bin/env bash
# The main job: search -> export -> eval -> bench on the default model, then one summary table.
# Usage: scripts/run.sh [smollm2|stories260k]   (default smollm2; stories260k when it can't be fetched)
# Outputs under runs/main-<model>/. Set LIMIT (default 200) for the number of eval documents per task.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
shared="${LLMC_SHARED:-$root/../shared}"
export LLMC_SHARED="$shared"
which="${1:-smollm2}"
limit="${LIMIT:-200}"
bin="$root/build/bin/llmcompress"

if [ "$which" = "smollm2" ] && ! "$root/scripts/get-model.sh" smollm2-135m; then
  echo "run.sh: SmolLM2 unavailable, using stories260K" >&2
  which=stories260k
fi
case "$which" in
  smollm2) model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"; config="$root/configs/smollm2-135m.json" ;;
  stories260k) model="$shared/models/stories260K"; config="$root/configs/stories260k.json" ;;
  *) echo "run.sh: unknown model '$which' (smollm2 | stories260k)" >&2; exit 1 ;;
esac
out="$root/runs/main-$which"
mkdir -p "$out"

echo "== info ==" >&2
"$bin" info --model "$model"
echo "== search (joint widths + bits against the LUT) ==" >&2
"$bin" search --config "$config" --out "$out/search"
echo "== export (GPTQ, data-free calibration) ==" >&2
"$bin" export --model "$model" --arch "$out/search/arch.json" --out "$out/export" --quant gptq
tasks="text:$shared/data/tinystories/tinystories_sample.txt"
[ -d "$shared/data/arc_easy" ] && tasks="$tasks,reasoning7"
for m in original export; do
  path="$model"; [ "$m" = export ] && path="$out/export"
  echo "== eval $m ==" >&2
  "$bin" eval --model "$path" --tasks "$tasks" --limit "$limit" --output "$out/eval_$m.json"
  echo "== bench $m ==" >&2
  "$bin" bench --model "$path" --prompt-tokens 64 --new-tokens 64 --repeats 3 --json --output "$out/bench_$m.json" >/dev/null
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(n):
    p = os.path.join(out, n)
    return json.load(open(p)) if os.path.exists(p) else {}
s = load("search/summary.json")
rows = []
for m in ("original", "export"):
    e, b = load(f"eval_{m}.json"), load(f"bench_{m}.json")
    res = e.get("results", {})
    ppl = next((v.get("word_perplexity") for k, v in res.items() if k.startswith("text:")), None)
    acc = e.get("average", {}).get("acc")
    rows.append((m, ppl, acc, b.get("decode_tokens_per_s"), b.get("prefill_tokens_per_s")))
print("\n| model | TinyStories word ppl | reasoning acc (avg) | decode tok/s | prefill tok/s |")
print("|---|---:|---:|---:|---:|")
f = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
for r in rows:
    print(f"| {r[0]} | {f(r[1])} | {f(r[2])} | {f(r[3], 1)} | {f(r[4], 1)} |")
print(f"\nsearch: target {s.get('target_ms', 0):.3f} ms, LUT-predicted {s.get('predicted_ms', 0):.3f} ms "
      f"(original {s.get('original_ms', 0):.3f} ms) at {s.get('tokens')} token(s)")
PY
