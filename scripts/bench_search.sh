#!/usr/bin/env bash
# Search-step cost: time per search step / time per plain forward+backward step of the original
# model on the same batch (goal <= 1.5x), and peak memory, for stories260K and a synthetic
# ~100M-parameter Llama (random bf16 weights, Llama-2 tokenizer; written here, timing only).
# Usage: scripts/bench_search.sh [OUT.json]   (default runs/bench_search.json)
# Environment: THREADS (default: all cores), STEPS (20), SYNTH (1; 0 = stories260K only), BUILD (build).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
out="${1:-$root/runs/bench_search.json}"
threads="${THREADS:-0}"
steps="${STEPS:-20}"
[ -x "$bin" ] || "$root/scripts/setup.sh"
mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A ~100M Llama in HF layout: hidden 768, 12 layers, MLP 2048, 12 heads / 4 KV heads, vocab 32000
# (tied). Weights are bf16 with random magnitudes in [2^-8, 2^-6) and random signs; norms are 1.
synth() {
  python3 - "$1" "$shared/tokenizers/llama2/tokenizer.model" <<'PY'
import json, os, shutil, struct, sys
d, tok = sys.argv[1], sys.argv[2]
os.makedirs(d, exist_ok=True)
H, I, L, NH, KV, V = 768, 2048, 12, 12, 4, 32000
hd = H // NH
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H, "intermediate_size": I,
       "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": KV, "vocab_size": V,
       "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": True,
       "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}
json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=1)
shutil.copy(tok, os.path.join(d, "tokenizer.model"))
tensors = [("model.embed_tokens.weight", [V, H]), ("model.norm.weight", [H])]
for l in range(L):
    p = f"model.layers.{l}."
    tensors += [(p + "input_layernorm.weight", [H]), (p + "post_attention_layernorm.weight", [H]),
                (p + "self_attn.q_proj.weight", [NH * hd, H]), (p + "self_attn.k_proj.weight", [KV * hd, H]),
                (p + "self_attn.v_proj.weight", [KV * hd, H]), (p + "self_attn.o_proj.weight", [H, NH * hd]),
                (p + "mlp.gate_proj.weight", [I, H]), (p + "mlp.up_proj.weight", [I, H]),
                (p + "mlp.down_proj.weight", [H, I])]
# bf16 high byte: sign | exponent 119..120 (magnitude 2^-8 .. 2^-6); the low byte stays random.
table = bytes((b & 0x80) | (0x3B + (b & 1)) for b in range(256))
header, off, blobs = {}, 0, []
for name, shape in tensors:
    n = 1
    for s in shape: n *= s
    if name.endswith("norm.weight"):
        blob = struct.pack("<H", 0x3F80) * n  # 1.0
    else:
        blob = bytearray(os.urandom(2 * n))
        blob[1::2] = bytes(blob[1::2]).translate(table)
    header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len(blob)]}
    off += len(blob)
    blobs.append(blob)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(d, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for b in blobs: f.write(b)
print(f"synthetic model: {off // 2 / 1e6:.1f}M parameters in {d}", file=sys.stderr)
PY
}

run_one() {  # name model-path config-template
  python3 - "$3" "$work/$1.json" "$2" "$shared" "$steps" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["model"] = sys.argv[3]
c["data"]["sources"] = ["text:" + sys.argv[4] + "/data/tinystories/tinystories_sample.txt"]
c["schedule"]["steps"] = int(sys.argv[5])
c["schedule"]["checkpoint_every"] = 0
c.pop("lut", None)
json.dump(c, open(sys.argv[2], "w"))
PY
  echo "== search $1 ($steps steps)" >&2
  "$bin" --threads "$threads" --log-level warn search --config "$work/$1.json" --out "$work/run_$1" >/dev/null
  python3 - "$work/run_$1/summary.json" "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({"model": sys.argv[2], "steps": s["steps"],
                  "seconds_per_search_step": s["seconds_per_search_step"],
                  "seconds_per_plain_fwd_bwd": s["seconds_per_plain_fwd_bwd"],
                  "ratio": s["seconds_per_search_step"] / s["seconds_per_plain_fwd_bwd"],
                  "peak_rss_mib": s["peak_rss_mib"]}))
PY
}

rows=("$(run_one stories260K "$shared/models/stories260K" "$root/configs/stories260k.json")")
if [ "${SYNTH:-1}" = 1 ]; then
  synth "$work/synth100m"
  # The stories260K schedule on the synthetic shapes; the default search space.
  python3 - "$root/configs/stories260k.json" "$work/synth_template.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.pop("space", None)
c["data"].update({"batch_size": 4, "train_sequences": 16, "valid_sequences": 8})
c["lut_settings"] = {"tokens": [1], "context": 128}
c["target"] = {"fraction": 0.5, "tokens": 1}
json.dump(c, open(sys.argv[2], "w"))
PY
  rows+=("$(run_one synthetic-100M "$work/synth100m" "$work/synth_template.json")")
fi
printf '%s\n' "${rows[@]}" > "$work/rows.jsonl"
python3 - "$out" "$threads" "$work/rows.jsonl" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
r = {"threads": int(sys.argv[2]) or os.cpu_count(), "loadavg_1min": os.getloadavg()[0], "runs": rows}
json.dump(r, open(sys.argv[1] + ".tmp", "w"), indent=2)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print(json.dumps(r, indent=2))
PY
