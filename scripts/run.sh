#!/usr/bin/env bash
# The main job on the default model: installs and builds, then shows the model, generates from a
# prompt, and measures perplexity. Usage: scripts/run.sh [MODEL]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
shared="${LLMC_SHARED:-$root/../shared}"
model="${1:-$shared/models/stories260K}"
bin="$root/build/bin/llmcompress"

echo "== info =="
"$bin" info --model "$model"
echo "== generate (greedy) =="
"$bin" generate --model "$model" --prompt "Once upon a time" --max-new-tokens 64
echo "== eval: perplexity =="
"$bin" eval --model "$model" --tasks "wikitext,text:$shared/data/tinystories/tinystories_sample.txt" \
  --data-dir "$shared/data" --batch-size 16 --output "$root/build/eval_result.json"
echo "results written to build/eval_result.json"
