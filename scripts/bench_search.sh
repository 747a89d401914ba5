#!/usr/bin/env bash
# Search-step cost: time per search step / time per plain forward+backward step of the original
# model on the same batch, and peak memory, from a short search on stories260K.
# Usage: scripts/bench_search.sh [OUT.json]   (default build/bench_search.json)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/build/bench_search.json}"
bin="$root/build/bin/llmcompress"
[ -x "$bin" ] || "$root/scripts/setup.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 - "$root/configs/stories260k.json" "$work/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["model"] = c["model"]
c["schedule"]["steps"] = 20
c["schedule"]["checkpoint_every"] = 0
json.dump(c, open(sys.argv[2], "w"))
PY
sed -i "s|\${shared}|${LLMC_SHARED:-$root/../shared}|g" "$work/config.json"
"$bin" --log-level warn search --config "$work/config.json" --out "$work/run" >/dev/null
python3 - "$work/run/summary.json" "$out" <<'PY'
import json, sys, os
s = json.load(open(sys.argv[1]))
r = {"model": "stories260K", "steps": s["steps"], "threads": os.cpu_count(),
     "seconds_per_search_step": s["seconds_per_search_step"],
     "seconds_per_plain_fwd_bwd": s["seconds_per_plain_fwd_bwd"],
     "ratio": s["seconds_per_search_step"] / s["seconds_per_plain_fwd_bwd"],
     "peak_rss_mib": s["peak_rss_mib"]}
json.dump(r, open(sys.argv[2] + ".tmp", "w"), indent=2)
os.replace(sys.argv[2] + ".tmp", sys.argv[2])
print(json.dumps(r, indent=2))
PY
