// A quantized Llama as a GGUF file for llama.cpp (include/llmc/export/gguf_export.h has the rules).
#include "llmc/export/gguf_export.h"

#include <ATen/ATen.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llmc/core/dtype.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/model/load.h"
#include "llmc/tokenizer/gguf_vocab.h"
#include "llmc_kernels/qformat.h"

namespace llmc {

using json = nlohmann::ordered_json;
namespace kq = llmc::kernels;

namespace {

constexpr int kBlock = 32;      // QK4_1 = QK8_0
constexpr int64_t kFillerFfn = 32;  // channels of the zero FFN standing in for an absent one

struct Encoded {
  GGMLType type = GGMLType::F32;
  std::vector<uint8_t> bytes;
  json rep;
};

// (N, K) float32 rows in the order `rows` gives (empty: as they are).
at::Tensor reorder_rows(const at::Tensor& w, const std::vector<int64_t>& rows) {
  auto c = w.to(at::kFloat).contiguous();
  if (rows.empty()) return c;
  return c.index_select(0, at::tensor(rows, at::kLong)).contiguous();
}

// The error of what the file decodes to against the reference values.
void add_error(json& rep, const at::Tensor& ref, const Encoded& e) {
  const int64_t n = ref.numel();
  std::vector<float> got(static_cast<size_t>(n));
  if (n) ggml_dequantize(e.type, e.bytes.data(), got.data(), n);
  const float* r = ref.data_ptr<float>();
  double max_abs = 0, num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - r[i];
    max_abs = std::max(max_abs, std::fabs(d));
    num += d * d;
    den += static_cast<double>(r[i]) * r[i];
  }
  rep["exact"] = num == 0;
  rep["max_abs_err"] = max_abs;
  rep["rel_fro_err"] = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
}

Encoded encode_dense(const at::Tensor& ref, const std::string& dense_dtype, const char* source) {
  Encoded e;
  const float* p = ref.data_ptr<float>();
  if (dense_dtype == "bfloat16") {
    e.type = GGMLType::BF16;
    e.bytes = ggml_encode_bf16(p, ref.numel());
  } else {
    e.type = GGMLType::F32;
    e.bytes = ggml_encode_f32(p, ref.numel());
  }
  e.rep["source"] = source;
  return e;
}

// A linear (HF layout [N, K]) in GGUF row order `rows`.
Encoded encode_linear(const Linear& lin, const std::vector<int64_t>& rows, const std::string& dense_dtype) {
  const at::Tensor ref = reorder_rows(lin.dense_weight(), rows);  // what the packed export computes with
  const kq::QMatrix* q = lin.packed_matrix();
  const int64_t N = lin.out_features(), K = lin.in_features();
  Encoded e;
  if (!q) {
    e = encode_dense(ref, dense_dtype, "dense");
    if (dense_dtype == "bfloat16") e.rep["note"] = "bf16 as the packed folder stores it";
    add_error(e.rep, ref, e);
    return e;
  }
  const int bits = q->layout.bits, G = q->layout.groups_per_row, group = q->layout.group;
  const std::string source = fmt::format("{}-bit g{}", bits, group);
  if (K % kBlock != 0) {
    e.type = GGMLType::F32;
    e.bytes = ggml_encode_f32(ref.data_ptr<float>(), ref.numel());
    e.rep["source"] = source;
    e.rep["note"] = fmt::format("row length {} is not a multiple of 32: dequantized to F32", K);
    add_error(e.rep, ref, e);
    return e;
  }
  const std::vector<uint8_t> codes = kq::unpack_codes(q->view());  // [N][K]
  const int64_t nb = K / kBlock;
  int64_t requantized = 0;
  if (bits <= 4) {
    e.type = GGMLType::Q4_1;
    e.bytes.resize(static_cast<size_t>(N * nb) * 20);
    for (int64_t r = 0; r < N; ++r) {
      const int64_t n = rows.empty() ? r : rows[r];
      for (int64_t b = 0; b < nb; ++b) {
        const size_t gi = static_cast<size_t>(n) * G + static_cast<size_t>(b * kBlock / group);
        const uint16_t sh = q->scales[gi];
        const float s = kq::fp16_to_fp32(sh), z = kq::fp16_to_fp32(q->zeros[gi]);
        const uint16_t m = f32_to_f16(-(s * z));  // s*z is exact in fp32 (11 x 11 significant bits)
        ggml_pack_q4_1_block(sh, m, &codes[static_cast<size_t>(n * K + b * kBlock)],
                             &e.bytes[static_cast<size_t>(r * nb + b) * 20]);
      }
    }
  } else {  // 8 bits
    e.type = GGMLType::Q8_0;
    e.bytes.resize(static_cast<size_t>(N * nb) * 34);
    const float* refp = ref.data_ptr<float>();
    for (int64_t r = 0; r < N; ++r) {
      const int64_t n = rows.empty() ? r : rows[r];
      for (int64_t b = 0; b < nb; ++b) {
        const size_t gi = static_cast<size_t>(n) * G + static_cast<size_t>(b * kBlock / group);
        const float z = kq::fp16_to_fp32(q->zeros[gi]);
        uint8_t* out = &e.bytes[static_cast<size_t>(r * nb + b) * 34];
        int8_t c8[kBlock];
        bool fits = z == std::floor(z);
        for (int j = 0; j < kBlock && fits; ++j) {
          const float v = static_cast<float>(codes[static_cast<size_t>(n * K + b * kBlock + j)]) - z;
          fits = v >= -128.f && v <= 127.f;
          c8[j] = static_cast<int8_t>(v);
        }
        if (fits) {
          ggml_pack_q8_0_block(q->scales[gi], c8, out);
        } else {
          const auto blk = ggml_quantize_q8_0(refp + r * K + b * kBlock, kBlock);
          std::copy(blk.begin(), blk.end(), out);
          ++requantized;
        }
      }
    }
  }
  e.rep["source"] = source;
  if (bits == 8) e.rep["requantized_blocks"] = requantized;
  if (bits == 8) e.rep["blocks"] = N * nb;
  add_error(e.rep, ref, e);
  return e;
}

Encoded encode_zeros(int64_t n) {
  std::vector<float> z(static_cast<size_t>(n), 0.0f);
  Encoded e;
  e.bytes = ggml_encode_f32(z.data(), n);
  e.rep["source"] = "filler";
  e.rep["exact"] = true;
  return e;
}

Encoded encode_norm(const at::Tensor& w) {
  auto c = w.to(at::kFloat).contiguous();
  Encoded e = encode_dense(c, "float32", "norm");
  e.rep["exact"] = true;
  return e;
}

}  // namespace

std::vector<int64_t> rope_gguf_row_order(int64_t n_heads, int64_t hd) {
  std::vector<int64_t> rows(static_cast<size_t>(n_heads * hd));
  const int64_t half = hd / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t j = 0; j < half; ++j)
      for (int64_t p = 0; p < 2; ++p) rows[static_cast<size_t>(h * hd + 2 * j + p)] = h * hd + p * half + j;
  return rows;
}

GGUFMetadata gguf_tokenizer_metadata(const std::string& source, const ModelConfig& c) {
  if (dir_exists(source)) return gguf_tokenizer_from_hf(source, c.vocab_size, c.bos_token_id, c.eos_token_id);
  LLMC_CHECK(looks_like_gguf(source), "{}: neither a GGUF file nor a Hugging Face folder to take the tokenizer from",
             source);
  GGUFFile f(source);
  LLMC_CHECK(f.has("tokenizer.ggml.model") && f.has("tokenizer.ggml.tokens"),
             "{}: the file carries no tokenizer (tokenizer.ggml.model / tokens)", source);
  const size_t n_tok = f.get("tokenizer.ggml.tokens").array.size();
  LLMC_CHECK(static_cast<int64_t>(n_tok) == c.vocab_size,
             "{}: the tokenizer has {} tokens but the model's embedding has {} rows", source, n_tok, c.vocab_size);
  GGUFMetadata kv;
  for (const auto& [k, v] : f.metadata())
    if (k.rfind("tokenizer.", 0) == 0) kv.emplace_back(k, v);
  return kv;
}

GGUFExport build_gguf(const Llama& model, const GGUFExportOptions& o) {
  const ModelConfig& c = model.config();
  const LlamaWeights& w = model.weights();
  LLMC_CHECK(model.dtype() == at::kFloat, "GGUF export: the model must be float32");
  LLMC_CHECK(o.dense_dtype == "float32" || o.dense_dtype == "bfloat16",
             "--dense-dtype: '{}' is not supported (float32 or bfloat16)", o.dense_dtype);
  LLMC_CHECK(c.rope_scaling.type.empty() || c.rope_scaling.type == "none",
             "GGUF export: rope scaling '{}' is not written yet (llama.cpp reads it from a rope_freqs tensor); "
             "export this model as a packed folder",
             c.rope_scaling.type);
  const int64_t H = c.hidden_size, hd = c.head_dim, g = c.num_heads / c.num_kv_heads;

  // Architecture and per-layer widths (fillers included).
  bool pruned = false;
  for (int64_t l = 0; l < c.num_layers; ++l)
    pruned = pruned || c.kv_heads(l) != c.num_kv_heads || c.mlp_width(l) != c.intermediate_size;
  GGUFExport out;
  out.architecture = pruned ? "deci" : "llama";
  const std::string A = out.architecture + ".";
  std::vector<int32_t> n_head, n_head_kv, n_ff, filler_attn, filler_ffn;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    int64_t kv = c.kv_heads(l), ff = c.mlp_width(l);
    if (kv == 0 && l == 0) {
      filler_attn.push_back(static_cast<int32_t>(l));
      kv = 1;
    }
    if (ff == 0 && kv > 0) {
      filler_ffn.push_back(static_cast<int32_t>(l));
      ff = kFillerFfn;
    }
    n_head.push_back(static_cast<int32_t>(kv * g));
    n_head_kv.push_back(static_cast<int32_t>(kv));
    n_ff.push_back(static_cast<int32_t>(ff));
  }

  // Tokenizer (checked before any tensor is encoded).
  GGUFMetadata tok;
  if (!o.tokenizer_source.empty()) tok = gguf_tokenizer_metadata(o.tokenizer_source, c);

  GGUFWriter& W = out.writer;
  W.set("general.architecture", gguf_str(out.architecture));
  if (!o.name.empty()) W.set("general.name", gguf_str(o.name));
  W.set("general.quantization_version", gguf_u32(2));
  W.set(A + "vocab_size", gguf_u32(static_cast<uint32_t>(c.vocab_size)));
  W.set(A + "context_length", gguf_u32(static_cast<uint32_t>(c.max_position_embeddings)));
  W.set(A + "embedding_length", gguf_u32(static_cast<uint32_t>(H)));
  W.set(A + "block_count", gguf_u32(static_cast<uint32_t>(c.num_layers)));
  if (pruned) {
    W.set(A + "feed_forward_length", gguf_i32_array(n_ff));
    W.set(A + "attention.head_count", gguf_i32_array(n_head));
    W.set(A + "attention.head_count_kv", gguf_i32_array(n_head_kv));
  } else {
    W.set(A + "feed_forward_length", gguf_u32(static_cast<uint32_t>(c.intermediate_size)));
    W.set(A + "attention.head_count", gguf_u32(static_cast<uint32_t>(c.num_heads)));
    W.set(A + "attention.head_count_kv", gguf_u32(static_cast<uint32_t>(c.num_kv_heads)));
  }
  W.set(A + "attention.key_length", gguf_u32(static_cast<uint32_t>(hd)));
  W.set(A + "attention.value_length", gguf_u32(static_cast<uint32_t>(hd)));
  W.set(A + "rope.dimension_count", gguf_u32(static_cast<uint32_t>(hd)));
  W.set(A + "rope.freq_base", gguf_f32(static_cast<float>(c.rope_theta)));
  W.set(A + "attention.layer_norm_rms_epsilon", gguf_f32(static_cast<float>(c.rms_norm_eps)));
  if (!filler_attn.empty()) W.set("llmcompress.filler_attention", gguf_i32_array(filler_attn));
  if (!filler_ffn.empty()) W.set("llmcompress.filler_ffn", gguf_i32_array(filler_ffn));
  if (!tok.empty()) {
    for (const auto& [k, v] : tok) W.set(k, v);
  } else {
    if (c.bos_token_id >= 0) W.set("tokenizer.ggml.bos_token_id", gguf_u32(static_cast<uint32_t>(c.bos_token_id)));
    if (c.eos_token_id >= 0) W.set("tokenizer.ggml.eos_token_id", gguf_u32(static_cast<uint32_t>(c.eos_token_id)));
  }

  json tensors = json::array();
  bool exact = true;
  double max_rel = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> ne, Encoded e) {
    json r = {{"name", name}, {"type", ggml_type_info(static_cast<uint32_t>(e.type))->name}};
    r.update(e.rep);
    e.rep = std::move(r);
    if (e.rep.contains("exact")) exact = exact && e.rep["exact"].get<bool>();
    if (e.rep.contains("rel_fro_err")) max_rel = std::max(max_rel, e.rep["rel_fro_err"].get<double>());
    tensors.push_back(e.rep);
    W.add_tensor(name, std::move(ne), e.type, std::move(e.bytes));
  };

  // Embedding and output. Tied with a packed lm_head: the embedding is that table (quantize_model
  // made it so), written once in the lm_head's type; llama.cpp uses token_embd as the output.
  const bool tied = c.tie_word_embeddings;
  if (tied && w.lm_head->is_packed()) {
    add("token_embd.weight", {H, c.vocab_size}, encode_linear(*w.lm_head, {}, o.dense_dtype));
  } else {
    const at::Tensor ref = w.embed.to(at::kFloat).contiguous();
    Encoded e = encode_dense(ref, o.dense_dtype, "embedding");
    add_error(e.rep, ref, e);
    add("token_embd.weight", {H, c.vocab_size}, std::move(e));
  }
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    const std::string p = fmt::format("blk.{}.", l);
    const int64_t kv = c.kv_heads(l), nq = c.q_heads(l), I = c.mlp_width(l);
    if (kv > 0) {
      add(p + "attn_norm.weight", {H}, encode_norm(L.input_norm));
      add(p + "attn_q.weight", {H, nq * hd}, encode_linear(*L.q, rope_gguf_row_order(nq, hd), o.dense_dtype));
      add(p + "attn_k.weight", {H, kv * hd}, encode_linear(*L.k, rope_gguf_row_order(kv, hd), o.dense_dtype));
      add(p + "attn_v.weight", {H, kv * hd}, encode_linear(*L.v, {}, o.dense_dtype));
      add(p + "attn_output.weight", {nq * hd, H}, encode_linear(*L.o, {}, o.dense_dtype));
    } else if (n_head_kv[l] > 0) {  // filler: one zero KV head
      add(p + "attn_norm.weight", {H}, encode_norm(at::ones({H})));
      add(p + "attn_q.weight", {H, g * hd}, encode_zeros(H * g * hd));
      add(p + "attn_k.weight", {H, hd}, encode_zeros(H * hd));
      add(p + "attn_v.weight", {H, hd}, encode_zeros(H * hd));
      add(p + "attn_output.weight", {g * hd, H}, encode_zeros(H * g * hd));
    }
    if (I > 0) {
      add(p + "ffn_norm.weight", {H}, encode_norm(L.post_attn_norm));
      add(p + "ffn_gate.weight", {H, I}, encode_linear(*L.gate, {}, o.dense_dtype));
      add(p + "ffn_up.weight", {H, I}, encode_linear(*L.up, {}, o.dense_dtype));
      add(p + "ffn_down.weight", {I, H}, encode_linear(*L.down, {}, o.dense_dtype));
    } else if (n_ff[l] > 0) {  // filler: a zero FFN
      add(p + "ffn_norm.weight", {H}, encode_norm(at::ones({H})));
      add(p + "ffn_gate.weight", {H, kFillerFfn}, encode_zeros(H * kFillerFfn));
      add(p + "ffn_up.weight", {H, kFillerFfn}, encode_zeros(H * kFillerFfn));
      add(p + "ffn_down.weight", {kFillerFfn, H}, encode_zeros(H * kFillerFfn));
    }
  }
  add("output_norm.weight", {H}, encode_norm(w.final_norm));
  if (!tied) add("output.weight", {H, c.vocab_size}, encode_linear(*w.lm_head, {}, o.dense_dtype));

  json rep;
  rep["architecture"] = out.architecture;
  rep["tokenizer_from"] = o.tokenizer_source;
  for (const auto& [k, v] : tok)
    if (k == "tokenizer.ggml.model") rep["tokenizer_model"] = v.str;
  rep["tokenizer_converted"] = !o.tokenizer_source.empty() && dir_exists(o.tokenizer_source);
  rep["exact"] = exact;
  rep["max_rel_fro_err"] = max_rel;
  rep["filler_attention"] = filler_attn;
  rep["filler_ffn"] = filler_ffn;
  rep["tensor_bytes"] = W.tensor_bytes();
  rep["tensors"] = tensors;
  out.report_json = rep.dump();
  return out;
}

std::string write_gguf(const Llama& model, const std::string& path, const GGUFExportOptions& o) {
  LLMC_CHECK(!path.empty(), "--out: empty path");
  LLMC_CHECK(!dir_exists(path), "{}: is a folder; --format gguf writes a file (use --format both for a folder)", path);
  GGUFExport g = build_gguf(model, o);
  const std::string bytes = g.writer.serialize();
  write_file_atomic(path, bytes);
  json rep = json::parse(g.report_json);
  rep["file"] = path;
  rep["bytes"] = bytes.size();
  spdlog::info("gguf: wrote {} ({}, {} tensors, {} bytes{})", path, g.architecture, g.writer.tensor_count(),
               bytes.size(), rep["exact"].get<bool>() ? ", every tensor exact" : "");
  return rep.dump();
}

}  // namespace llmc
