#!/usr/bin/env bash
# Eval throughput in one run, two comparisons (COMPARE):
#
# COMPARE=scoring (default): `eval --scoring legacy` (full logits from forward(), log_softmax over
#   them, one GEMM call per linear: the path before issue 17's eval item) against `--scoring fast`
#   (lm_head and log-softmax on the scored positions only, linears in 256-row blocks) on an exported
#   model (runtime engine), same documents: BoolQ and HellaSwag (MC_LIMIT documents), WikiText-2
#   GPTQ windows (WT_WINDOWS x 512 tokens) and TinyStories (TS_LIMIT documents, rolling). Runs
#   alternate (legacy, fast, legacy, ...) so background load hits both alike; the fastest of REPS
#   runs of each is reported, with the engine's own prefill speed (bench, 256 tokens) measured in the
#   same run. Fails when acc / acc_norm differ or a perplexity differs by more than 1e-4 relative.
#     scripts/bench_eval.sh [MODEL] [OUT.json]
#     MODEL default: an export of models/SmolLM2-135M-Instruct.Q4_1.gguf (uniform:4, rtn, group 64,
#     8-bit lm_head), made under build/bench_eval_u4 when missing.
#     env: THREADS (2), REPS (2), MC_LIMIT (20), WT_WINDOWS (4), TS_LIMIT (24), LLMC_BIN, LLMC_SHARED
#     Output JSON: {"machine", "model", "threads", "reps", "prefill_tokens_per_s", "tasks": {task:
#       {"legacy": {"seconds", "all_seconds", "tokens_per_second", "requests_per_second", metrics},
#        "fast": {...}, "speedup", "ppl_rel_diff" | "acc_equal"}}}
#
# COMPARE=scorer: the multiple-choice scorers, naive (one request per forward) against batched.
#     scripts/bench_eval.sh [MODEL] [TASK] [LIMIT] [OUT.json]
#     defaults: stories260K, arc_easy, 200, build/bench_eval.json; env THREADS (1), BATCH_SIZE (32), REPS (3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bin="${LLMC_BIN:-$bin}"
[ -x "$bin" ] || { echo "$0: $bin not found (build first: scripts/setup.sh)" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if [ "${COMPARE:-scoring}" = scorer ]; then
  model="${1:-$shared/models/stories260K}"
  task="${2:-arc_easy}"
  limit="${3:-200}"
  out="${4:-$root/build/bench_eval.json}"
  threads="${THREADS:-1}"
  batch="${BATCH_SIZE:-32}"
  reps="${REPS:-3}"
  mkdir -p "$(dirname "$out")"
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
  exit 0
fi

# COMPARE=scoring
threads="${THREADS:-2}"
reps="${REPS:-2}"
mc_limit="${MC_LIMIT:-20}"
wt_windows="${WT_WINDOWS:-4}"
ts_limit="${TS_LIMIT:-24}"
model="${1:-}"
out="${2:-$root/build/bench_eval_scoring.json}"
mkdir -p "$(dirname "$out")"
if [ -z "$model" ]; then
  model="$root/build/bench_eval_u4"
  if [ ! -f "$model/model.safetensors" ] && [ ! -f "$model/arch.json" ]; then
    gguf="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    [ -f "$gguf" ] || { echo "$0: $gguf not found (scripts/get-model.sh smollm2-135m) and no MODEL given" >&2; exit 1; }
    echo "bench_eval: exporting $gguf -> $model" >&2
    "$bin" --threads "$threads" --log-level warn export --model "$gguf" --arch uniform:4 --quant rtn --group-size 64 \
      --lm-head-bits 8 --dense-dtype bfloat16 --out "$model" >/dev/null
  fi
fi
ts="$shared/data/tinystories/tinystories_sample.txt"
# name|eval arguments
sets=("mc|--tasks boolq,hellaswag --limit $mc_limit"
      "wt|--tasks wikitext2_gptq --max-length 512 --limit $wt_windows"
      "ts|--tasks text:$ts --limit $ts_limit")
cat /proc/loadavg > "$tmp/load_before"
for i in $(seq "$reps"); do
  for s in "${sets[@]}"; do
    name="${s%%|*}"
    args="${s#*|}"
    for path in legacy fast; do
      echo "bench_eval: $path run $i/$reps ($args, $threads thread(s))" >&2
      # shellcheck disable=SC2086
      "$bin" --threads "$threads" --log-level warn eval --model "$model" $args --scoring "$path" \
        --data-dir "$shared/data" --output "$tmp/$name.$path.$i.json" >/dev/null
    done
  done
done
"$bin" --threads "$threads" --log-level warn bench --model "$model" --prompt-tokens 256 --new-tokens 1 --repeats 2 \
  --json > "$tmp/prefill.json"
cat /proc/loadavg > "$tmp/load_after"

python3 - "$tmp" "$reps" "$model" "$threads" "$out" <<'EOF'
import json, os, platform, sys
tmp, reps, model, threads, out = sys.argv[1:]
reps = int(reps)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
res = {
    "machine": {"cpu": cpu, "cpus": os.cpu_count(), "avx512f": "avx512f" in flags, "avx2": "avx2" in flags,
                "loadavg_before": open(f"{tmp}/load_before").read().split()[:3],
                "loadavg_after": open(f"{tmp}/load_after").read().split()[:3]},
    "model": model, "threads": int(threads), "reps": reps,
    "prefill_tokens_per_s": json.load(open(f"{tmp}/prefill.json"))["prefill_tokens_per_s"],
    "tasks": {},
}
bad = []
for name in ("mc", "wt", "ts"):
    runs = {p: [json.load(open(f"{tmp}/{name}.{p}.{i}.json"))["results"] for i in range(1, reps + 1)]
            for p in ("legacy", "fast")}
    for task in runs["legacy"][0]:
        t = {}
        for p in ("legacy", "fast"):
            rs = [r[task] for r in runs[p]]
            b = min(rs, key=lambda x: x["seconds"])
            e = {"seconds": b["seconds"], "all_seconds": [x["seconds"] for x in rs],
                 "tokens_per_second": b["tokens"] / b["seconds"], "tokens": b["tokens"]}
            if "requests" in b:
                e["requests"] = b["requests"]
                e["requests_per_second"] = b["requests"] / b["seconds"]
                e["acc"], e["acc_norm"] = b["acc"], b["acc_norm"]
            else:
                e["token_perplexity"] = b["token_perplexity"]
            t[p] = e
        t["speedup"] = t["legacy"]["seconds"] / t["fast"]["seconds"]
        if "acc" in t["legacy"]:
            t["acc_equal"] = all(t["legacy"][k] == t["fast"][k] for k in ("acc", "acc_norm"))
            if not t["acc_equal"]:
                bad.append(f"{task}: acc/acc_norm differ")
        else:
            t["ppl_rel_diff"] = t["fast"]["token_perplexity"] / t["legacy"]["token_perplexity"] - 1
            if abs(t["ppl_rel_diff"]) > 1e-4:
                bad.append(f"{task}: perplexity differs by {t['ppl_rel_diff']:.2e} relative")
        res["tasks"][task] = t
tmp_out = f"{out}.tmp.{os.getpid()}"
with open(tmp_out, "w") as f:
    json.dump(res, f, indent=2)
    f.write("\n")
os.replace(tmp_out, out)
print(f"machine: {cpu}, {res['machine']['cpus']} CPUs, load {' '.join(res['machine']['loadavg_before'])} -> "
      f"{' '.join(res['machine']['loadavg_after'])}; {threads} threads; best of {reps}; "
      f"engine prefill (256 tokens) {res['prefill_tokens_per_s']:.0f} tok/s")
print("| task | legacy tok/s | fast tok/s | legacy req/s | fast req/s | speedup | result legacy / fast |")
print("|---|---|---|---|---|---|---|")
for task, t in res["tasks"].items():
    l, f = t["legacy"], t["fast"]
    rq = lambda e: f"{e['requests_per_second']:.2f}" if "requests_per_second" in e else "-"
    if "acc" in l:
        r = f"acc {l['acc']:.4f} / {f['acc']:.4f}"
    else:
        r = f"ppl {l['token_perplexity']:.5f} / {f['token_perplexity']:.5f} ({t['ppl_rel_diff']:+.1e})"
    name = os.path.basename(task) if task.startswith("text:") else task
    print(f"| {name} | {l['tokens_per_second']:.0f} | {f['tokens_per_second']:.0f} | {rq(l)} | {rq(f)} | "
          f"{t['speedup']:.2f}x | {r} |")
print(f"wrote {out}")
if bad:
    sys.exit("bench_eval: " + "; ".join(bad))
EOF
