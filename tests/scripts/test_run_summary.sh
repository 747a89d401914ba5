#!/usr/bin/env bash
# scripts/run_summary.py (the main job's summary) on synthetic result files: the three rows, the
# LUT lines, and the searched-vs-uniform decode ratio timed in turn (versus.json) when it is there;
# without any file it still prints the table (dashes), without versus.json no in-turn line.
# Usage: test_run_summary.sh PATH/TO/scripts/run_summary.py
set -euo pipefail
s="$1"
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT
fail() { echo "$1"; cat "$t/out"; exit 1; }
python3 "$s" "$t/none" 0 > "$t/out"
grep -q '^| original | - | - | - | - | - |$' "$t/out" || fail "empty folder: no dashed row"
grep -q 'timed in turn' "$t/out" && fail "empty folder: an in-turn line"
mkdir -p "$t/o/search"
for m in original uniform4 export; do
  cat > "$t/o/eval_$m.json" <<J
{"results": {"text:/x/tinystories_sample.txt": {"word_perplexity": 15.5},
             "arc_easy": {"acc": 0.5, "acc_stderr": 0.03}, "boolq": {"acc": 0.4, "acc_stderr": 0.04}},
 "average": {"acc": 0.45, "tasks": ["arc_easy", "boolq"]}}
J
  cat > "$t/o/bench_$m.json" <<J
{"decode_tokens_per_s": 250.0, "prefill_tokens_per_s": 1000.0, "model_file_bytes": 90000000,
 "predicted": {"decode_ms": {"predicted": 3.8, "measured": 4.0, "measured_over_predicted": 1.0526}}}
J
done
echo '{"target_ms": 3.83, "predicted_ms": 3.828, "original_ms": 15.6, "tokens": 1}' > "$t/o/search/summary.json"
echo '{"decode_ratio": 0.959, "decode_ratios": [0.94, 0.96, 0.983], "prefill_ratio": 0.997}' > "$t/o/versus.json"
python3 "$s" "$t/o" 100 > "$t/out"
grep -q '^| searched (GPTQ, 100 LoRA steps) | 15.500 | 0.450 ± 0.025 | 250.0 | 1000.0 | 90000000 |$' "$t/out" ||
  fail "no searched row"
grep -q '^search: target 3.830 ms, LUT-predicted 3.828 ms (original 15.600 ms) at 1 token(s)$' "$t/out" || fail "no search line"
grep -q '^searched / uniform 4-bit decode time, timed in turn: 0.959 (0.940-0.983 over 3 repeats; prefill 0.997)$' \
  "$t/out" || fail "no in-turn line"
echo ok
