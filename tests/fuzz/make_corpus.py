#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/): small valid inputs of
every layout each parser reads, so mutations start from files that get deep into the parsers.
Deterministic; rerun after changing it and commit the result. Task seeds copy the first records of
the shared data ($LLMC_SHARED/data, default ../shared) when present, else hand-written ones."""
import json, os, random, struct, sys

here = os.path.dirname(os.path.abspath(__file__))
out_root = os.path.join(here, "corpus")
shared = os.environ.get("LLMC_SHARED", os.path.join(here, "..", "..", "..", "shared"))
rng = random.Random(5)


def put(target, name, data):
    d = os.path.join(out_root, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors ---------------------------------------------------------------------------------
def safetensors(tensors, metadata=None, align=8):
    header, blob = {}, b""
    for name, dtype, shape, data in tensors:
        blob += b"\0" * (-len(blob) % align)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


def f32(n):
    return struct.pack("<%df" % n, *[rng.gauss(0, 0.1) for _ in range(n)])


def f16(n):
    return struct.pack("<%de" % n, *[rng.gauss(0, 0.1) for _ in range(n)])


def bf16(n):
    return b"".join(struct.pack("<f", rng.gauss(0, 0.1))[2:] for _ in range(n))


put("safetensors", "f32_one", safetensors([("w", "F32", [2, 3], f32(6))]))
put("safetensors", "mixed", safetensors([("a.weight", "F16", [4, 2], f16(8)), ("b", "BF16", [3], bf16(3)),
                                         ("c", "F32", [1, 1, 2], f32(2))], {"format": "pt"}))
put("safetensors", "scalar_empty", safetensors([("s", "F32", [], f32(1)), ("e", "F32", [0, 4], b"")]))
put("safetensors", "ints", safetensors([("i", "I32", [2], struct.pack("<2i", 1, -1)), ("u", "U8", [3], b"abc"),
                                        ("l", "I64", [1], struct.pack("<q", 7))]))

# ---- GGUF ----------------------------------------------------------------------------------------
U8, I8, U16, I16, U32, I32, F32T, BOOL, STR, ARR, U64, I64, F64 = range(13)
GG = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q5_K": 13,
      "Q6_K": 14, "BF16": 30}
BLOCK = {"Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
         "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}


def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


class Gguf:
    def __init__(self):
        self.kv, self.n_kv, self.tensors = b"", 0, []

    def add(self, key, typ, payload):
        self.kv += gstr(key) + struct.pack("<I", typ) + payload
        self.n_kv += 1

    def u32(self, k, v): self.add(k, U32, struct.pack("<I", v))
    def f32(self, k, v): self.add(k, F32T, struct.pack("<f", v))
    def bool(self, k, v): self.add(k, BOOL, struct.pack("<B", 1 if v else 0))
    def str(self, k, v): self.add(k, STR, gstr(v))

    def arr(self, k, typ, vals):
        p = struct.pack("<IQ", typ, len(vals))
        for v in vals:
            p += gstr(v) if typ == STR else struct.pack({F32T: "<f", I32: "<i"}[typ], v)
        self.add(k, ARR, p)

    def tensor(self, name, ne, typ, data):
        self.tensors.append((name, ne, GG[typ], data))

    def build(self, align=32):
        out = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), self.n_kv) + self.kv
        data = b""
        for name, ne, typ, d in self.tensors:
            data += b"\0" * (-len(data) % align)
            out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
            out += struct.pack("<IQ", typ, len(data))
            data += d
        out += b"\0" * (-len(out) % align)
        return out + data


def qdata(typ, n):
    """Blocks of type `typ` for n weights: random bytes with small, finite fp16 scales."""
    bs, nb = BLOCK[typ]
    out = b""
    for _ in range(n // bs):
        blk = bytearray(rng.getrandbits(8) for _ in range(nb))
        if typ in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K"):
            blk[0:2] = struct.pack("<e", 0.01 * rng.randint(1, 8))
        if typ in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            blk[2:4] = struct.pack("<e", 0.001 * rng.randint(1, 8))
        if typ == "Q6_K":
            blk[208:210] = struct.pack("<e", 0.01)
        out += bytes(blk)
    return out


def tiny_llama(tok="llama", embd_type="Q8_0"):
    g = Gguf()
    g.str("general.architecture", "llama")
    g.str("general.name", "tiny")
    g.u32("llama.embedding_length", 32)
    g.u32("llama.feed_forward_length", 64)
    g.u32("llama.block_count", 1)
    g.u32("llama.attention.head_count", 2)
    g.u32("llama.attention.head_count_kv", 1)
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    g.u32("llama.context_length", 128)
    if tok == "llama":
        g.str("tokenizer.ggml.model", "llama")
        toks = ["<unk>", "<s>", "</s>", "\u2581", "a", "b", "\u2581a", "ab"]
        g.arr("tokenizer.ggml.tokens", STR, toks)
        g.arr("tokenizer.ggml.scores", F32T, [0, 0, 0, -1, -2, -2, -1.5, -3])
        g.arr("tokenizer.ggml.token_type", I32, [2, 3, 3, 1, 1, 1, 1, 1])
        g.u32("tokenizer.ggml.unknown_token_id", 0)
    else:
        g.str("tokenizer.ggml.model", "gpt2")
        g.str("tokenizer.ggml.pre", "smollm")
        toks = ["<|endoftext|>", "<|im_start|>", "a", "b", "\u0120", "ab", "\u0120a", "\u0120ab", "<unk>"]
        g.arr("tokenizer.ggml.tokens", STR, toks)
        g.arr("tokenizer.ggml.token_type", I32, [3, 3, 1, 1, 1, 1, 1, 1, 2])
        g.u32("tokenizer.ggml.unknown_token_id", 8)
        g.arr("tokenizer.ggml.merges", STR, ["a b", "\u0120 a", "\u0120a b"])
        g.bool("tokenizer.ggml.add_bos_token", False)
    g.u32("tokenizer.ggml.bos_token_id", 1)
    g.u32("tokenizer.ggml.eos_token_id", 2)
    V = len(toks)

    def t(name, ne, typ):
        n = 1
        for x in ne:
            n *= x
        data = {"F32": lambda: f32(n), "F16": lambda: f16(n), "BF16": lambda: bf16(n)}.get(typ, lambda: qdata(typ, n))()
        g.tensor(name, ne, typ, data)

    t("token_embd.weight", [32, V], embd_type)
    t("output_norm.weight", [32], "F32")
    t("blk.0.attn_norm.weight", [32], "F32")
    t("blk.0.attn_q.weight", [32, 32], "Q8_0")
    t("blk.0.attn_k.weight", [32, 16], "Q4_0")
    t("blk.0.attn_v.weight", [32, 16], "F16")
    t("blk.0.attn_output.weight", [32, 32], "Q5_1")
    t("blk.0.ffn_gate.weight", [32, 64], "Q4_1")
    t("blk.0.ffn_up.weight", [32, 64], "Q5_0")
    t("blk.0.ffn_down.weight", [64, 32], "BF16")
    t("blk.0.ffn_norm.weight", [32], "F32")
    return g.build()


put("gguf", "tiny_llama_spm", tiny_llama("llama"))
put("gguf", "tiny_llama_bpe", tiny_llama("gpt2", "F16"))
g = Gguf()
g.str("general.architecture", "llama")
g.add("general.misc", ARR, struct.pack("<IQ", U8, 3) + b"\1\2\3")
g.add("general.i64", I64, struct.pack("<q", -5))
g.add("general.f64", F64, struct.pack("<d", 0.5))
for typ in ("Q4_K", "Q5_K", "Q6_K"):
    g.tensor("k." + typ, [256, 1], typ, qdata(typ, 256))
put("gguf", "kquants", g.build())

# ---- tokenizer.json (+ optional tokenizer_config.json after a line "#####") -------------------------
G = "\u0120"
vocab = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, G: 4, "ab": 5, G + "a": 6, G + "ab": 7, "bc": 8, "1": 9, "2": 10,
         "<unk>": 11}
bytelevel = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
tj = {"version": "1.0", "added_tokens": [{"id": 0, "content": "<|endoftext|>", "special": True}],
      "normalizer": None, "pre_tokenizer": bytelevel, "post_processor": None, "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": vocab, "unk_token": "<unk>", "merges": ["a b", G + " a", G + "a b", "b c"]}}
put("tokenizer_json", "gpt2_bytelevel", json.dumps(tj))
tj2 = json.loads(json.dumps(tj))
tj2["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
tj2["model"]["merges"] = [["a", "b"], [G, "a"], [G + "a", "b"], ["b", "c"]]
tj2["model"]["ignore_merges"] = True
tj2["model"]["vocab"]["<user>"] = 12
tj2["added_tokens"].append({"id": 12, "content": "<user>", "special": False})
tj2["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                                                   {"Sequence": {"id": "A", "type_id": 0}}]}
put("tokenizer_json", "llama3_split", json.dumps(tj2) + "\n#####\n" +
    json.dumps({"add_bos_token": True, "bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}}))
tj3 = json.loads(json.dumps(tj))
tj3["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, bytelevel]}
put("tokenizer_json", "digits", json.dumps(tj3))

# ---- SentencePiece tokenizer.model (protobuf ModelProto) -----------------------------------------
def pb_varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        c = v & 0x7F
        v >>= 7
        out += bytes([c | (0x80 if v else 0)])
        if not v:
            return out


def pb_tag(field, wire):
    return pb_varint(field << 3 | wire)


def pb_len(field, payload):
    payload = payload.encode() if isinstance(payload, str) else payload
    return pb_tag(field, 2) + pb_varint(len(payload)) + payload


def pb_int(field, v):
    return pb_tag(field, 0) + pb_varint(v)


def spm_piece(text, score=None, typ=None):
    p = pb_len(1, text)
    if score is not None:
        p += pb_tag(2, 5) + struct.pack("<f", score)
    if typ is not None:
        p += pb_int(3, typ)
    return pb_len(1, p)


def spm_model(pieces, model_type=2, dummy_prefix=True, extra_trainer=b""):
    m = b"".join(spm_piece(*p) for p in pieces)
    m += pb_len(2, pb_len(1, "data.txt") + pb_int(3, model_type) + pb_int(4, len(pieces)) + pb_int(35, 1) +
                pb_int(40, 0) + pb_int(41, 1) + pb_int(42, 2) + pb_int(43, -1) + extra_trainer)
    m += pb_len(3, pb_len(1, "identity") + pb_len(2, b"") + (b"" if dummy_prefix else pb_int(3, 0)))
    return m


SP = "\u2581"
spm_pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + \
             [("<0x%02X>" % b, 0.0, 6) for b in range(256)] + \
             [(t, -float(i), None) for i, t in enumerate([SP, "a", "b", "c", "ab", SP + "a", SP + "ab", "bc", "1", "2"])]
put("spm_model", "bpe_byte_fallback", spm_model(spm_pieces))
put("spm_model", "no_dummy_prefix", spm_model(spm_pieces[:3] + spm_pieces[-10:], dummy_prefix=False))
put("spm_model", "unigram", spm_model(spm_pieces[:3] + spm_pieces[-10:], model_type=1))
stories_tok = os.path.join(shared, "models", "stories260K", "tokenizer.model")
if os.path.exists(stories_tok):
    put("spm_model", "stories260k", open(stories_tok, "rb").read())

# ---- search configs (parsed with base_dir holding space.json) -------------------------------------
cfg_dir = os.path.join(here, "..", "..", "configs")
for name in ("stories260k.json", "smollm2-135m.json"):
    p = os.path.join(cfg_dir, name)
    if os.path.exists(p):
        put("search_config", name.replace(".json", ""), open(p, "rb").read())
put("search_config", "minimal_space_file", json.dumps({
    "model": "model", "space": "space.json", "target": {"ms": 2.5, "tokens": 1},
    "data": {"sources": ["text:doc.txt"], "seq_len": 16}, "schedule": {"steps": 3, "hard": True},
    "mode": "sequential", "lut": "lut.json"}))

# ---- task files: first byte picks the reader (see fuzz_tasks.cpp) ----------------------------------
def head_lines(rel, n, fallback):
    p = os.path.join(shared, "data", rel)
    if os.path.exists(p):
        with open(p, "rb") as f:
            return b"".join(f.readline() for _ in range(n))
    return fallback.encode()

arc = head_lines("arc_easy/ARC-Easy-Test.jsonl", 2, json.dumps({"id": "x", "question": {"stem": "Q?", "choices": [
    {"text": "one", "label": "A"}, {"text": "two", "label": "B"}]}, "answerKey": "B"}) + "\n")
boolq = head_lines("boolq/val.jsonl", 2, json.dumps({"question": "is it", "passage": "It is.", "idx": 0, "label": True}) + "\n")
piqa = head_lines("piqa/valid.jsonl", 2, json.dumps({"goal": "g", "sol1": "a", "sol2": "b"}) + "\n") + b"#####\n" + \
    head_lines("piqa/valid-labels.lst", 2, "0\n")
hella = head_lines("hellaswag/hellaswag_val_full.txt", 12, "Ctx: a b. c\n3\nx.\ny.\nz.\nw.\n")
wino = head_lines("winogrande/winogrande.jsonl", 2, json.dumps({"sentence": "A _ B.", "option1": "x", "option2": "y", "answer": "1"}) + "\n")
obqa_tsv = (b"ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
            b"7-980\tThe sun is\t(A) cold (B) hot (C) wet (D) dry\tThe sun is hot\tB\n")
obqa_jsonl = (json.dumps({"query": "The sun is", "choices": ["cold", "hot", "wet", "dry"], "gold": 1}) + "\n" +
              json.dumps({"id": "7-980", "question": {"stem": "The sun is", "choices": [{"text": "cold", "label": "A"},
                          {"text": "hot", "label": "B"}]}, "answerKey": "B"}) + "\n").encode()
mmlu = head_lines("mmlu/test/abstract_algebra_test.csv", 3, 'What is 1+1?,1,2,3,4,B\n"Quoted, ""field""",a,b,c,d,A\n')
text = head_lines("tinystories/tinystories_sample.txt", 6, "Once upon a time.\n<|endoftext|>\nThe end.\n")
wiki = head_lines("wikitext2/wiki.test.raw", 12, " \n = Title = \n \n Text @-@ here , and ( this ) .\n")
for i, (name, data) in enumerate([("arc", arc), ("boolq", boolq), ("piqa", piqa), ("hellaswag", hella),
                                  ("winogrande", wino), ("openbookqa_tsv", obqa_tsv), ("openbookqa_jsonl", obqa_jsonl),
                                  ("mmlu_csv", mmlu), ("text_docs", text), ("wikitext", wiki)]):
    put("tasks", name, bytes([i]) + data)
print("corpus written to", out_root)
