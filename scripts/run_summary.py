#!/usr/bin/env python3
"""The main job's summary table (scripts/run.sh): original, uniform 4-bit and the searched model side
by side from the JSON files run.sh wrote under OUT (eval_*.json, bench_*.json, search/summary.json,
versus.json: the searched model timed in turn against uniform 4-bit). Missing files print as "-".
Usage: run_summary.py OUT FT_STEPS
"""
import json, os, sys
out, ft_steps = sys.argv[1], int(sys.argv[2])
def load(n):
    p = os.path.join(out, n)
    return json.load(open(p)) if os.path.exists(p) else {}
s = load("search/summary.json")
rows = []
names = {"original": "original", "uniform4": "uniform 4-bit GPTQ", "export": "searched (GPTQ" + (f", {ft_steps} LoRA steps)" if ft_steps else ")")}
for m in ("original", "uniform4", "export"):
    e, b = load(f"eval_{m}.json"), load(f"bench_{m}.json")
    res = e.get("results", {})
    ppl = next((v.get("word_perplexity") for k, v in res.items() if k.startswith("text:")), None)
    acc = e.get("average", {}).get("acc")
    # stderr of the unweighted average of independent task accuracies
    ses = [res[t]["acc_stderr"] for t in e.get("average", {}).get("tasks", []) if "acc_stderr" in res.get(t, {})]
    acc_s = None if acc is None else (f"{acc:.3f} ± {sum(x * x for x in ses) ** 0.5 / len(ses):.3f}" if ses else f"{acc:.3f}")
    rows.append((names[m], ppl, acc_s, b.get("decode_tokens_per_s"), b.get("prefill_tokens_per_s"), b.get("model_file_bytes")))
print("\n| model | TinyStories word ppl | reasoning acc (avg ± stderr) | decode tok/s | prefill tok/s | file bytes |")
print("|---|---:|---:|---:|---:|---:|")
f = lambda v, d=3: "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
for r in rows:
    print(f"| {r[0]} | {f(r[1])} | {f(r[2])} | {f(r[3], 1)} | {f(r[4], 1)} | {f(r[5])} |")
print(f"\nsearch: target {s.get('target_ms', 0):.3f} ms, LUT-predicted {s.get('predicted_ms', 0):.3f} ms "
      f"(original {s.get('original_ms', 0):.3f} ms) at {s.get('tokens')} token(s)")
for m in ("uniform4", "export"):
    p = (load(f"bench_{m}.json").get("predicted") or {}).get("decode_ms")
    if p:
        print(f"{names[m]} decode: LUT-predicted {p['predicted']:.3f} ms/token, measured {p['measured']:.3f} ms/token "
              f"(measured/predicted {p['measured_over_predicted']:.2f})")
v = load("versus.json")
if v:
    r = v["decode_ratios"]
    print(f"searched / uniform 4-bit decode time, timed in turn: {v['decode_ratio']:.3f} "
          f"({min(r):.3f}-{max(r):.3f} over {len(r)} repeats; prefill {v['prefill_ratio']:.3f})")
