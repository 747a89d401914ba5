#!/usr/bin/env bash
# Benchmarks the multiple-choice log-likelihood scorer of `llmcompress eval` in one run: the batched
# scorer (shared-context KV cache, length-sorted batches) against the naive one (one request per
# forward pass, as lm-evaluation-harness with batch size 1) on the same model, task and documents.
# Runs are interleaved (naive, batched, naive, ...) so background load hits both alike; the fastest
# of REPS runs of each is reported. Both must give the same acc/acc_norm.
#
#   scripts/bench_eval.sh [MODEL] [TASK] [LIMIT] [OUT.json]
#   defaults: stories260K, arc_easy, 200, build/bench_eval.json
#   env: LLMC_BIN (default build/bin/llmcompress), THREADS (1), BATCH_SIZE (32), REPS (3), LLMC_SHARED
#
# Output JSON: {"model", "task", "limit", "threads", "batch_size", "requests", "tokens",
#   "naive": {"seconds", "requests_per_second", "tokens_per_second"}, "batched": {...}, "speedup",
#   "acc", "acc_norm"}. tokens = context + continuation tokens of every request (the same count for
#   both scorers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
model="${1:-$shared/models/stories260K}"
task="${2:-arc_easy}"
limit="${3:-200}"
out="${4:-$root/build/bench_eval.json}"
bin="${LLMC_BIN:-$bin}"
threads="${THREADS:-1}"
batch="${BATCH_SIZE:-32}"
reps="${REPS:-3}"

[ -x "$bin" ] || { echo "$0: $bin not found (build first: scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for i in $(seq "$reps"); do
  for scorer in naive batched; do
    echo "bench_eval: $scorer run $i/$reps ($task, --limit $limit, $threads thread(s))" >&2
    "$bin" --threads "$threads" --log-level warn eval --model "$model" --tasks "$task" --limit "$limit" \
      --batch-size "$batch" --scorer "$scorer" --data-dir "$shared/data" --output "$tmp/$scorer.$i.json" >/dev/null
  done
done

python3 - "$tmp" "$reps" "$model" "$task" "$limit" "$threads" "$batch" "$out" <<'EOF'
import json, os, sys
tmp, reps, model, task, limit, threads, batch, out = sys.argv[1:]
runs = {s: [json.load(open(f"{tmp}/{s}.{i}.json"))["results"][task] for i in range(1, int(reps) + 1)]
        for s in ("naive", "batched")}
best = {s: min(r, key=lambda x: x["seconds"]) for s, r in runs.items()}
for key in ("acc", "acc_norm", "requests", "tokens", "n"):
    if best["naive"][key] != best["batched"][key]:
        sys.exit(f"bench_eval: naive and batched disagree on {key}: {best['naive'][key]} vs {best['batched'][key]}")
res = {
    "model": model, "task": task, "limit": int(limit), "threads": int(threads), "batch_size": int(batch),
    "documents": best["naive"]["n"], "requests": best["naive"]["requests"], "tokens": best["naive"]["tokens"],
}
for s, r in best.items():
    res[s] = {"seconds": r["seconds"], "requests_per_second": r["requests_per_second"],
              "tokens_per_second": r["tokens_per_second"], "all_seconds": [x["seconds"] for x in runs[s]]}
res["speedup"] = best["naive"]["seconds"] / best["batched"]["seconds"]
res["acc"], res["acc_norm"] = best["batched"]["acc"], best["batched"]["acc_norm"]
tmp_out = f"{out}.tmp.{os.getpid()}"
with open(tmp_out, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
os.replace(tmp_out, out)
print(json.dumps(res, indent=2))
EOF
