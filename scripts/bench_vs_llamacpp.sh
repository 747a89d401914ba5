#!/usr/bin/env bash
# Our decode and prefill next to llama.cpp's on the same machine, in one run with the rounds
# alternated (issue 17's table): llama.cpp on the model's own GGUF (e.g. Q4_1) and on a Q4_0 copy
# (llama-quantize), ours on `export --arch uniform:4 --quant rtn --lm-head-bits 8` at group 32 (the
# size of Q4_1), group 64 (the size of Q4_0) and group 128 (the export's default, 4.25 bits per
# weight: smaller than Q4_0), each at every thread count.
# Builds nothing of llama.cpp: LLAMACPP_BIN names a folder with llama-bench and llama-quantize
# (../shared/bench/llamacpp.sh builds the reference one from the PyPI sdist and prints the folder).
# Usage: LLAMACPP_BIN=DIR scripts/bench_vs_llamacpp.sh [OUT_DIR]   (default runs/bench_vs_llamacpp)
# Environment: MODEL (models/SmolLM2-135M-Instruct.Q4_1.gguf), THREADS ("1 2"), ROUNDS (3),
# PROMPT (128), NEW (64), OUR_GROUPS (our quantization groups: "32 64 128"), OUR_X8_GROUPS (groups also
# run with --prefill-x-bits 8, int8 activations in prefill as llama.cpp's Q4_0 path: "64"; "" for none). Writes
# OUT_DIR/bench_vs_llamacpp.json (every round's tok/s, medians, ratios) and
# OUT_DIR/bench_vs_llamacpp.md (the table), and prints the table.
set -euo pipefail
# llama-bench runs with the caller's OpenMP wait policy, as llama.cpp's users run it: common.sh
# defaults OMP_WAIT_POLICY to PASSIVE (for ATen's OpenMP workers in our other scripts), which puts
# llama.cpp's OpenMP threads to sleep at every barrier (on the 2-vCPU Xeon: its 2-thread decode
# 34 against 241 tok/s, prefill 1287 against 1693; every run of this script before 2026-12-07 12:40
# had that handicap). Our engine uses its own thread pool and ran the same either way.
caller_omp_wait="${OMP_WAIT_POLICY-}"
caller_omp_wait_set="${OMP_WAIT_POLICY+1}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ -n "$caller_omp_wait_set" ]; then llamacpp_env=(env "OMP_WAIT_POLICY=$caller_omp_wait"); else llamacpp_env=(env -u OMP_WAIT_POLICY); fi
out="${1:-$root/runs/bench_vs_llamacpp}"
model="${MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${THREADS:-1 2}"
rounds="${ROUNDS:-3}"
prompt="${PROMPT:-128}"
new="${NEW:-64}"
groups="${OUR_GROUPS:-32 64 128}"
x8_groups="${OUR_X8_GROUPS-64}"
if [ -z "${LLAMACPP_BIN:-}" ]; then
  echo "error: set LLAMACPP_BIN to a llama.cpp bin folder (llama-bench, llama-quantize); ../shared/bench/llamacpp.sh builds one" >&2
  exit 2
fi
for t in llama-bench llama-quantize; do
  [ -x "$LLAMACPP_BIN/$t" ] || { echo "error: $LLAMACPP_BIN/$t: not found or not executable" >&2; exit 2; }
done
[ -f "$model" ] || { echo "error: $model: model not found (scripts/get-model.sh fetches SmolLM2)" >&2; exit 2; }
[ -x "$bin" ] || "$root/scripts/setup.sh"
mkdir -p "$out"

# The contenders: llama.cpp on the model file and on its Q4_0 copy; ours at each of $groups.
q40="$out/model.Q4_0.gguf"
[ -f "$q40" ] || "$LLAMACPP_BIN/llama-quantize" --allow-requantize "$model" "$q40" Q4_0 > "$out/quantize.log" 2>&1 ||
  { echo "error: llama-quantize failed; see $out/quantize.log" >&2; exit 1; }
for g in $groups $x8_groups; do
  [ -f "$out/ours-g$g/config.json" ] || "$bin" export --model "$model" --arch uniform:4 --quant rtn --group-size "$g" \
    --lm-head-bits 8 --out "$out/ours-g$g" > "$out/export-g$g.log" 2>&1 ||
    { echo "error: export failed; see $out/export-g$g.log" >&2; exit 1; }
done
src_type=$(basename "$model" .gguf)  # SmolLM2-135M-Instruct.Q4_1 -> Q4_1
case "$src_type" in *.*) src_type="${src_type##*.}" ;; *) src_type="model file" ;; esac

# rows.jsonl: one line per (round, threads, contender): prefill and decode tok/s.
rows="$out/rows.jsonl"
: > "$rows"
contenders=("llama.cpp $src_type" "llama.cpp Q4_0")
for g in $groups; do contenders+=("ours g$g"); done
for g in $x8_groups; do contenders+=("ours g$g x8"); done
for r in $(seq 1 "$rounds"); do
  for t in $threads; do
    for c in "${contenders[@]}"; do
      echo "== round $r/$rounds, $t threads: $c" >&2
      case "$c" in
        llama.cpp*)
          m="$model"; [ "$c" = "llama.cpp Q4_0" ] && m="$q40"
          rc=0
          "${llamacpp_env[@]}" "$LLAMACPP_BIN/llama-bench" -m "$m" -p "$prompt" -n "$new" -r 1 -t "$t" -o json \
            2> "$out/lb.err" > "$out/lb.json" || rc=$?
          if [ "$rc" -eq 132 ]; then
            # Seen on AMX CPUs (Sapphire Rapids): ggml's AMX path faults at its first tilezero because GCC's
            # _tile_loadconfig names only 8 bytes of the config as its input and the other stores are dropped.
            echo "error: llama-bench died of SIGILL ($c, $t threads). On AMX CPUs the reference build's AMX path faults:" \
              "in ggml/src/ggml-cpu/amx/mmq.cpp replace '_tile_loadconfig(&tc);' with" \
              "'asm volatile(\"ldtilecfg %0\" :: \"m\"(tc));' and rebuild (docs/measurements.md)" >&2
            exit 1
          fi
          [ "$rc" -eq 0 ] || { echo "error: llama-bench failed ($c, $t threads, exit $rc); see $out/lb.err" >&2; exit 1; }
          python3 - "$out/lb.json" "$c" "$r" "$t" "$prompt" "$new" >> "$rows" <<'PY'
import json, sys
tests = json.load(open(sys.argv[1]))
p, n = int(sys.argv[5]), int(sys.argv[6])
pre = [x["avg_ts"] for x in tests if x["n_prompt"] == p and x["n_gen"] == 0]
dec = [x["avg_ts"] for x in tests if x["n_gen"] == n and x["n_prompt"] == 0]
if not pre or not dec:
    sys.exit(f"llama-bench output has no pp{p} / tg{n} test: {sys.argv[1]}")
print(json.dumps({"round": int(sys.argv[3]), "threads": int(sys.argv[4]), "engine": sys.argv[2],
                  "prefill_tok_s": pre[0], "decode_tok_s": dec[0]}))
PY
          ;;
        ours*)
          spec="${c#ours }" xb=16  # "g64" or "g64 x8"
          [ "${spec% x8}" != "$spec" ] && xb=8
          "$bin" --threads "$t" --prefill-x-bits "$xb" bench --model "$out/ours-${spec% x8}" --prompt-tokens "$prompt" \
            --new-tokens "$new" --repeats 1 --json --output "$out/ob.json" > /dev/null 2>&1
          python3 - "$out/ob.json" "$c" "$r" "$t" >> "$rows" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
print(json.dumps({"round": int(sys.argv[3]), "threads": int(sys.argv[4]), "engine": sys.argv[2],
                  "prefill_tok_s": b["prefill_tokens_per_s"], "decode_tok_s": b["decode_tokens_per_s"]}))
PY
          ;;
      esac
    done
  done
done

python3 - "$rows" "$out" "$model" "$prompt" "$new" "${caller_omp_wait_set:+$caller_omp_wait}" <<'PY'
import json, platform, statistics, subprocess, sys, time
rows = [json.loads(l) for l in open(sys.argv[1])]
out, model, prompt, new = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
llamacpp_omp = sys.argv[6] or None  # OMP_WAIT_POLICY llama-bench ran with (None: unset, OpenMP's default)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
engines = list(dict.fromkeys(r["engine"] for r in rows))
threads = sorted({r["threads"] for r in rows})
med = {}
for e in engines:
    for t in threads:
        rs = [r for r in rows if r["engine"] == e and r["threads"] == t]
        med[(e, t)] = {k: statistics.median(r[k] for r in rs) for k in ("prefill_tok_s", "decode_tok_s")}
ref = "llama.cpp Q4_0"
res = {"machine": cpu, "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "model": model, "prompt": prompt,
       "new": new, "llamacpp_omp_wait_policy": llamacpp_omp, "rounds": rows, "median": [{"engine": e, "threads": t, **med[(e, t)]} for e in engines for t in threads],
       "ours_over_llamacpp_q4_0": [{"engine": e, "threads": t,
                                    "prefill": med[(e, t)]["prefill_tok_s"] / med[(ref, t)]["prefill_tok_s"],
                                    "decode": med[(e, t)]["decode_tok_s"] / med[(ref, t)]["decode_tok_s"]}
                                   for e in engines if e.startswith("ours") for t in threads]}
json.dump(res, open(out + "/bench_vs_llamacpp.json.tmp", "w"), indent=1)
md = [f"Machine: {cpu}; {res['date']} UTC; {model}; prefill {prompt} tokens, decode {new}; tok/s, every round "
      f"(rounds alternated), median in bold; llama-bench with OMP_WAIT_POLICY {llamacpp_omp or 'unset'}.", "",
      "| engine, weights | " + " | ".join(f"decode {t} thr" for t in threads) + " | " +
      " | ".join(f"prefill {t} thr" for t in threads) + " |", "|---|" + "---:|" * (2 * len(threads))]
for e in engines:
    cells = []
    for k in ("decode_tok_s", "prefill_tok_s"):
        for t in threads:
            vals = " / ".join(f"{r[k]:.0f}" for r in rows if r["engine"] == e and r["threads"] == t)
            cells.append(f"{vals} (**{med[(e, t)][k]:.0f}**)")
    md.append(f"| {e} | " + " | ".join(cells) + " |")
md.append("")
for x in res["ours_over_llamacpp_q4_0"]:
    md.append(f"- {x['engine']} / {ref}, {x['threads']} thr: decode {x['decode']:.2f}x, prefill {x['prefill']:.2f}x")
open(out + "/bench_vs_llamacpp.md.tmp", "w").write("\n".join(md) + "\n")
import os
os.replace(out + "/bench_vs_llamacpp.json.tmp", out + "/bench_vs_llamacpp.json")
os.replace(out + "/bench_vs_llamacpp.md.tmp", out + "/bench_vs_llamacpp.md")
print("\n".join(md))
PY
