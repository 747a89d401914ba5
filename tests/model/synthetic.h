#pragma once
// A tiny random Llama for unit tests (no files needed).
#include <ATen/ATen.h>

#include <functional>
#include <string>

#include "llmc/core/error.h"
#include "llmc/latency/lut.h"
#include "llmc/model/llama.h"
#include "llmc/model/load.h"
#include "llmc/nas/supernet.h"

namespace llmc::test {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 50;
  c.max_position_embeddings = 64;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  return c;
}

// `tokenizer` may stay null for tests that feed token ids directly.
inline std::unique_ptr<Llama> random_llama(const ModelConfig& c, uint64_t seed = 0,
                                           std::shared_ptr<const Tokenizer> tokenizer = nullptr) {
  at::manual_seed(seed);
  auto src = [&](const std::string& name) -> at::Tensor {
    const int64_t H = c.hidden_size, hd = c.head_dim;
    if (name.find("norm") != std::string::npos) return 1.0 + 0.1 * at::randn({H});
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") return at::randn({c.vocab_size, H});
    int64_t l = std::stoll(name.substr(std::string("model.layers.").size()));
    const int64_t nq = c.q_heads(l), nkv = c.kv_heads(l), I = c.mlp_width(l);
    auto r = [](int64_t o, int64_t i) { return at::randn({o, i}) / std::sqrt(static_cast<double>(i)); };
    if (name.find("q_proj") != std::string::npos) return r(nq * hd, H);
    if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos) return r(nkv * hd, H);
    if (name.find("o_proj") != std::string::npos) return r(H, nq * hd);
    if (name.find("down_proj") != std::string::npos) return r(H, I);
    return r(I, H);
  };
  return build_llama(c, src, std::move(tokenizer), at::kFloat, "synthetic");
}

// LUT options that time a tiny model in milliseconds (tests check what a LUT holds, not its speed).
inline LutOptions fast_lut_options() {
  LutOptions o;
  o.tokens = {1, 4};
  o.repeats = 3;
  o.min_sample_us = 20;
  o.max_buffer_mib = 32;
  o.context = 16;
  o.progress = false;
  return o;
}

// The llmc::Error message f throws, "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Monotone synthetic latencies (us): cost grows with width and bits, so "fastest" and "widest" are
// unambiguous.
inline LatencyLookup monotone_lookup() {
  LatencyLookup l;
  l.linear_us = [](int64_t N, int64_t K, int bits) { return 1e-3 * N * K * (bits + 1); };
  l.attention_us = [](int64_t h) { return 2.0 * h; };
  l.layer_fixed_us = 1.0;
  l.model_fixed_us = 5.0;
  return l;
}

}  // namespace llmc::test
