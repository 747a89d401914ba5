#!/usr/bin/env bash
# Search-step cost, per model and supernet store (docs/lean-supernet.md): seconds per search step,
# the ratio to a plain forward+backward step of the original model on the same batch, and peak
# memory: the whole process's (summary.json) and, sampled from /proc every 50 ms, the peak before
# the supernet exists (model, teacher, the plain fwd+bwd with gradients of every weight) and from
# the supernet's construction on (construction, search steps, discretization).
# Usage: scripts/bench_search.sh [OUT.json]   (default runs/bench_search.json)
# Environment:
#   MODELS   space-separated, from: stories260K smollm2 synthetic:100m synthetic:1b
#            (default "stories260K synthetic:100m"). smollm2 = models/SmolLM2-135M-Instruct.Q4_1.gguf
#            with configs/smollm2-135m.json (uniform init instead of sensitivity: steps only; the
#            study's LUT docs/results/smollm2-135m/lut.json when present). synthetic:* are random bf16
#            Llamas with the Llama-2 tokenizer (timing and memory only): 100m = hidden 768, 12 layers,
#            MLP 2048, 12/4 heads, tied; 1b = TinyLlama-1.1B's shape (hidden 2048, 22 layers, MLP 5632,
#            32/4 heads, untied), with short sequences (2 x 64 tokens per batch).
#   STORES   supernet stores to run per model, "stacked lean" by default (LLMC_SUPERNET_STORE);
#            a stacked row for synthetic:1b is skipped unless FORCE_STACKED_1B=1 (~55 GB).
#   SYNTH1B_DISTILL  0: synthetic:1b without the distillation teacher (a second fp32 copy of the
#            model, ~4.4 GB; default 1 as in the other rows).
#   THREADS (default: all cores), STEPS (20; SMOL_STEPS 4, SYNTH1B_STEPS 2), BUILD (build).
# Each run's process gets oom_score_adj 1000: under memory pressure the kernel kills it first.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="${1:-$root/runs/bench_search.json}"
threads="${THREADS:-0}"
steps="${STEPS:-20}"
models="${MODELS:-stories260K synthetic:100m}"
stores="${STORES:-stacked lean}"
[ -x "$bin" ] || "$root/scripts/setup.sh"
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A random Llama in HF layout (synth DIR SHAPE). Weights are bf16 with random magnitudes in
# [2^-8, 2^-6) and random signs; norms are 1.
synth() {
  python3 - "$1" "$2" "$shared/tokenizers/llama2/tokenizer.model" <<'PY'
import json, os, shutil, struct, sys
d, shape, tok = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(d, exist_ok=True)
H, I, L, NH, KV, V, tied = {"100m": (768, 2048, 12, 12, 4, 32000, True),
                            "1b": (2048, 5632, 22, 32, 4, 32000, False)}[shape]
hd = H // NH
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV, "vocab_size": V,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": tied,
       "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
shutil.copy(tok, os.path.join(d, "tokenizer.model"))
tensors = [("model.embed_tokens.weight", [V, H]), ("model.norm.weight", [H])]
if not tied:
    tensors.append(("lm_head.weight", [V, H]))
for l in range(L):
    p = f"model.layers.{l}."
    tensors += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H]),
                (p + "self_attn.q_proj.weight", [NH * hd, H]), (p + "self_attn.k_proj.weight", [KV * hd, H]),
                (p + "self_attn.v_proj.weight", [KV * hd, H]), (p + "self_attn.o_proj.weight", [H, NH * hd]),
                (p + "mlp.gate_proj.weight", [I, H]), (p + "mlp.up_proj.weight", [I, H]),
                (p + "mlp.down_proj.weight", [H, I])]
# bf16 high byte: sign | exponent 119..120 (magnitude 2^-8 .. 2^-6); the low byte stays random.
table = bytes((b & 0x80) | (0x3B + (b & 1)) for b in range(256))
header, off = {}, 0
for name, shape_ in tensors:
    n = 1
    for s in shape_: n *= s
    header[name] = {"dtype": "BF16", "shape": shape_, "data_offsets": [off, off + 2 * n]}
    off += 2 * n
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name, shape_ in tensors:  # written tensor by tensor: the file can be larger than memory
        n = 1
        for s in shape_: n *= s
        if name.endswith("norm.weight"):
            f.write(struct.pack("<H", 0x3F80) * n)  # 1.0
            continue
        blob = bytearray(os.urandom(2 * n))
        blob[1::2] = bytes(blob[1::2]).translate(table)
        f.write(blob)
print(f"synthetic model: {off // 2 / 1e6:.1f}M parameters in {d}", file=sys.stderr)
PY
}

# config NAME MODEL TEMPLATE STEPS [LUT]: the search config of one bench row.
config() {
  python3 - "$3" "$work/$1.json" "$2" "$shared" "$4" "${5:-}" "$1" <<'PY'
import json, os, sys
c = json.load(open(sys.argv[1]))
c["model"] = sys.argv[3]
c["data"]["sources"] = ["text:" + sys.argv[4] + "/data/tinystories/tinystories_sample.txt"]
c["schedule"]["steps"] = int(sys.argv[5])
c["schedule"]["checkpoint_every"] = 0
c["schedule"].pop("init", None)  # steps only: no sensitivity pass before them
c.pop("lut", None)
if sys.argv[6]:
    c["lut"] = sys.argv[6]
name = sys.argv[7]
if name.startswith("synthetic"):
    c.pop("space", None)  # the default search space
    c["data"].update({"batch_size": 4, "train_sequences": 16, "valid_sequences": 8})
    if name == "synthetic-1b":
        c["data"].update({"seq_len": 64, "batch_size": 2, "train_sequences": 2, "valid_sequences": 2})
        c["schedule"]["distill"] = os.environ.get("SYNTH1B_DISTILL", "1") == "1"
    c["lut_settings"] = {"tokens": [1], "context": 128}
    c["target"] = {"fraction": 0.5, "tokens": 1}
json.dump(c, open(sys.argv[2], "w"))
PY
}

# run_one NAME STORE: one search, its summary and the RSS samples, as one JSON row on stdout.
run_one() {
  local name="$1" store="$2" run="$work/run_$1_$2"
  echo "== search $name, $store supernet ($(python3 -c "import json;print(json.load(open('$work/$name.json'))['schedule']['steps'])") steps)" >&2
  python3 - "$bin" "$threads" "$work/$name.json" "$run" "$name" "$store" <<'PY'
import json, os, subprocess, sys, threading, time
binp, threads, cfg, run, name, store = sys.argv[1:7]
env = dict(os.environ, LLMC_SUPERNET_STORE=store)
def first():  # the child: killed first under memory pressure
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
t0 = time.time()
p = subprocess.Popen([binp, "--threads", threads, "--log-level", "info", "search", "--config", cfg, "--out", run],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=first)
marks, lines = {}, []
def read():
    for line in p.stderr:
        lines.append(line)
        if "supernet_start" not in marks and "supernet: building" in line:
            marks["supernet_start"] = time.time()  # logged as the supernet's construction starts
threading.Thread(target=read, daemon=True).start()
samples = []  # (time, rss MiB)
while p.poll() is None:
    try:
        with open(f"/proc/{p.pid}/status") as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    samples.append((time.time(), int(l.split()[1]) / 1024))
    except OSError:
        pass
    time.sleep(0.05)
if p.returncode != 0:
    sys.stderr.write("".join(lines[-20:]))
    sys.exit(f"search {name} ({store}) failed with exit code {p.returncode}")
s = json.load(open(os.path.join(run, "summary.json")))
start = marks.get("supernet_start", t0)
before = [r for t, r in samples if t < start]
after = [r for t, r in samples if t >= start]
print(json.dumps({"model": name, "store": store, "steps": s["steps"],
                  "seconds_per_search_step": s["seconds_per_search_step"],
                  "seconds_per_plain_fwd_bwd": s["seconds_per_plain_fwd_bwd"],
                  "ratio": s["seconds_per_search_step"] / s["seconds_per_plain_fwd_bwd"],
                  "peak_rss_mib": s["peak_rss_mib"],
                  "sampled_peak_before_supernet_mib": round(max(before, default=0), 1),
                  "sampled_peak_from_supernet_mib": round(max(after, default=0), 1),
                  "wall_s": round(time.time() - t0, 1)}))
PY
}

rows=()
for m in $models; do
  lut=""
  case "$m" in
    stories260K) name=stories260K; model="$shared/models/stories260K"; tmpl="$root/configs/stories260k.json"; n="$steps" ;;
    smollm2)
      name=smollm2-135m; model="$root/models/SmolLM2-135M-Instruct.Q4_1.gguf"; tmpl="$root/configs/smollm2-135m.json"
      n="${SMOL_STEPS:-4}"
      [ -f "$root/docs/results/smollm2-135m/lut.json" ] && lut="$root/docs/results/smollm2-135m/lut.json"
      [ -f "$model" ] || "$root/scripts/get-model.sh" smollm2-135m ;;
    synthetic:100m|synthetic:1b)
      shape="${m#synthetic:}"; name="synthetic-$shape"; model="$work/synth$shape"; tmpl="$root/configs/stories260k.json"
      n="$steps"; [ "$shape" = 1b ] && n="${SYNTH1B_STEPS:-2}"
      synth "$model" "$shape" ;;
    *) echo "bench_search.sh: unknown model '$m' (stories260K smollm2 synthetic:100m synthetic:1b)" >&2; exit 1 ;;
  esac
  config "$name" "$model" "$tmpl" "$n" "$lut"
  for st in $stores; do
    if [ "$name" = synthetic-1b ] && [ "$st" = stacked ] && [ "${FORCE_STACKED_1B:-0}" != 1 ]; then
      echo "== skipping synthetic-1b with the stacked supernet (~55 GB; FORCE_STACKED_1B=1 runs it)" >&2
      continue
    fi
    rows+=("$(run_one "$name" "$st")")
  done
  case "$m" in synthetic:*) rm -rf "$model" ;; esac
done
printf '%s\n' "${rows[@]}" > "$work/rows.jsonl"
python3 - "$out" "$threads" "$work/rows.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
r = {"threads": int(sys.argv[2]) or os.cpu_count(), "loadavg_1min": os.getloadavg()[0], "runs": rows}
json.dump(r, open(sys.argv[1] + ".tmp", "w"), indent=2)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print(json.dumps(r, indent=2))
PY
