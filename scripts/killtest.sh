#!/usr/bin/env bash
# Kill test (issue 21): SIGKILL `llmcompress search` and `llmcompress export` at random moments,
# run them again, and check the results equal an uninterrupted run's.
#   search: each round starts a fresh --out, kills the search 1-2 times at a random moment within
#           the reference run's duration (+10%), then reruns it (--resume once a checkpoint exists)
#           until it finishes; arch.json must be byte-identical to the reference, search_log.jsonl
#           must hold each step once, in order, and nothing but search's own files may be left.
#   export: each round kills an export over an earlier complete export of the same folder at a
#           random moment; right after the kill the folder must be absent or complete (the same
#           files as the reference); the rerun must give the reference's files (hashes of every file
#           but export_report.json, which holds timings), and no .NAME.tmp-PID / NAME.old-PID is left.
# Model: stories260K ($LLMC_SHARED/models/stories260K; LLMC_SHARED default ../shared). Both commands
# run with --threads 1 (exactly repeatable arithmetic) and a small search (40 steps, a checkpoint
# every 5) against one latency table measured first, so every run predicts the same latencies.
# Usage: scripts/killtest.sh [N]   N kill rounds per command (default 30; env KILLTEST_N too)
# Environment: KILLTEST_SEED (bash RANDOM seed, default: the PID), KILLTEST_WORK (work folder, default a
# temporary one, removed at the end unless KILLTEST_KEEP=1), BUILD (build folder, default build).
# Prints one summary line per command and exits 1 when any round's result differed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
n="${1:-${KILLTEST_N:-30}}"
RANDOM="${KILLTEST_SEED:-$$}"
model="$shared/models/stories260K"
[ -d "$model" ] || { echo "killtest: $model not found (set LLMC_SHARED)" >&2; exit 1; }
[ -x "$bin" ] || { echo "killtest: $bin not built" >&2; exit 1; }
work="${KILLTEST_WORK:-$(mktemp -d /tmp/llmc_killtest.XXXXXX)}"
mkdir -p "$work"
[ "${KILLTEST_KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
B=("$bin" --threads 1 --log-level warn)

cat > "$work/space.json" <<'JSON'
{"kv_group_fractions": [1.0, 0.75, 0.5, 0.25], "mlp_width_fractions": [1.0, 0.75, 0.5],
 "bits": [2, 3, 4, 8, 16], "group_size": 64, "width_multiple": 32}
JSON
cat > "$work/search.json" <<JSON
{"model": "$model",
 "data": {"sources": ["text:$shared/data/tinystories/tinystories_sample.txt"], "seq_len": 32, "batch_size": 4,
          "train_sequences": 16, "valid_sequences": 8},
 "space": "space.json",
 "target": {"fraction": 0.6, "tokens": 1},
 "schedule": {"steps": 40, "arch_lr": 0.1, "lambda": 2.0, "tau_start": 1.0, "tau_end": 0.1, "distill": true,
              "seed": 0, "checkpoint_every": 5},
 "mode": "joint", "lut": "lut.json", "lut_settings": {"tokens": [1], "context": 128}}
JSON
"${B[@]}" lut --model "$model" --space "$work/space.json" --tokens 1 --context 128 --out "$work/lut.json" >/dev/null

now() { date +%s.%N; }
# A random moment in [0, max) seconds, as a decimal for sleep.
rand_sleep() { awk -v m="$1" -v r="$RANDOM$RANDOM" 'BEGIN { srand(r); printf "%.3f", rand() * m }'; }
# Starts "$@" in the background, kills it with SIGKILL after $1 seconds unless it ended; returns 0
# when the kill landed (the process was still running), 1 when it had already finished.
kill_after() {
  local t="$1"; shift
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$t"
  if kill -0 "$pid" 2>/dev/null; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 0
  fi
  wait "$pid" 2>/dev/null || true
  return 1
}
hash_export() {  # every file of an exported folder but the report (timings), by name and content
  (cd "$1" && find . -type f ! -name export_report.json | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16
}
# search_log.jsonl holds steps 1..K once each, in order.
log_ok() {
  python3 - "$1" <<'PY'
import json, sys
steps = [json.loads(l)["step"] for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if steps == list(range(1, len(steps) + 1)) else 1)
PY
}
leftovers() {  # entries next to or inside $1 named by our temporary schemes
  find "$(dirname "$1")" -maxdepth 2 \( -name '*.tmp.[0-9]*' -o -name '.*.tmp-[0-9]*' -o -name '*.old-[0-9]*' \
    -o -name 'checkpoint.tmp' \) 2>/dev/null | head -5
}

# ---- search ------------------------------------------------------------------------------------
t0=$(now)
"${B[@]}" search --config "$work/search.json" --out "$work/ref" >/dev/null
t_search=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
ref_arch=$(sha256sum < "$work/ref/arch.json" | cut -c1-16)
s_kills=0 s_resumes=0 s_bad=0
for i in $(seq 1 "$n"); do
  out="$work/s$i"
  rm -rf "$out"
  kills=$((1 + RANDOM % 2))
  while :; do
    args=(search --config "$work/search.json" --out "$out")
    [ -d "$out/checkpoint" ] || [ -d "$out/checkpoint.old" ] && args+=(--resume) && s_resumes=$((s_resumes + 1))
    if [ "$kills" -gt 0 ]; then
      kills=$((kills - 1))
      if kill_after "$(rand_sleep "$(awk -v t="$t_search" 'BEGIN { print t * 1.1 }')")" "${B[@]}" "${args[@]}"; then
        s_kills=$((s_kills + 1))
        continue
      fi
      break  # it finished before the kill
    fi
    "${B[@]}" "${args[@]}" >/dev/null 2>"$work/err" || { echo "killtest: search round $i: $(tail -1 "$work/err")" >&2; break; }
    break
  done
  got=$( [ -f "$out/arch.json" ] && sha256sum < "$out/arch.json" | cut -c1-16 || echo missing)
  why=""
  [ "$got" = "$ref_arch" ] || why="arch.json $got != $ref_arch"
  [ -z "$why" ] && ! log_ok "$out/search_log.jsonl" && why="search_log.jsonl steps not 1..K once each"
  [ -z "$why" ] && [ -n "$(leftovers "$out/arch.json")" ] && why="left: $(leftovers "$out/arch.json" | tr '\n' ' ')"
  if [ -n "$why" ]; then
    s_bad=$((s_bad + 1))
    echo "killtest: search round $i differs: $why" >&2
  fi
  rm -rf "$out"
done
echo "killtest search: $n rounds, $s_kills SIGKILLs landed, $s_resumes resumes, $s_bad results differ from the uninterrupted run (reference ${t_search} s, arch.json $ref_arch)"

# ---- export ------------------------------------------------------------------------------------
exp=(export --model "$model" --arch "$work/ref/arch.json" --quant rtn)
t0=$(now)
"${B[@]}" "${exp[@]}" --out "$work/eref" >/dev/null
t_export=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
ref_exp=$(hash_export "$work/eref")
e_kills=0 e_bad=0 e_absent=0
for i in $(seq 1 "$n"); do
  d="$work/e$i"
  mkdir -p "$d"
  out="$d/out"
  cp -r "$work/eref" "$out"  # an earlier complete export of this folder
  why=""
  if kill_after "$(rand_sleep "$(awk -v t="$t_export" 'BEGIN { print t * 1.1 }')")" "${B[@]}" "${exp[@]}" --out "$out"; then
    e_kills=$((e_kills + 1))
    if [ -d "$out" ]; then
      [ "$(hash_export "$out")" = "$ref_exp" ] || why="after the kill $out is incomplete"
    else
      e_absent=$((e_absent + 1))
    fi
  fi
  "${B[@]}" "${exp[@]}" --out "$out" >/dev/null 2>"$work/err" || why="rerun failed: $(tail -1 "$work/err")"
  [ -z "$why" ] && [ "$(hash_export "$out")" != "$ref_exp" ] && why="rerun's files differ"
  [ -z "$why" ] && [ -n "$(leftovers "$out")" ] && why="left: $(leftovers "$out" | tr '\n' ' ')"
  if [ -n "$why" ]; then
    e_bad=$((e_bad + 1))
    echo "killtest: export round $i: $why" >&2
  fi
  rm -rf "$d"
done
echo "killtest export: $n rounds, $e_kills SIGKILLs landed ($e_absent left the folder absent, the rest complete), $e_bad results differ from the uninterrupted run (reference ${t_export} s, files $ref_exp)"
[ "$s_bad" -eq 0 ] && [ "$e_bad" -eq 0 ]
