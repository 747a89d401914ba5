#include "llmc/data/calibration.h"

#include <ATen/ATen.h>

#include "llmc/core/error.h"
#include "llmc/core/log.h"
#include "llmc/core/progress.h"
#include "llmc/data/text_docs.h"
#include "llmc/data/token_stream.h"
#include "llmc/model/generate.h"

namespace llmc {

namespace {

int32_t start_token(CausalLM& model) {
  int bos = model.config().bos_token_id;
  if (bos < 0) bos = model.tokenizer().bos_id();
  if (bos < 0) bos = model.config().eos_token_id >= 0 ? model.config().eos_token_id : model.tokenizer().eos_id();
  LLMC_CHECK(bos >= 0, "calibration: the model has neither BOS nor EOS to start a sequence with");
  return bos;
}

at::Tensor from_text(CausalLM& model, const std::string& path, const CalibOptions& o) {
  std::vector<int32_t> stream;
  TokenStreamOptions so;
  so.boundary = DocBoundary::StartEach;
  so.start = start_token(model);
  so.max_tokens = static_cast<size_t>(o.samples * o.seq_len);
  append_documents(stream, model.tokenizer(), load_text_docs(path), so);
  const int64_t n = std::min<int64_t>(o.samples, static_cast<int64_t>(stream.size()) / o.seq_len);
  LLMC_CHECK(n >= 1, "{}: calibration text has {} tokens, fewer than one sequence of {}", path, stream.size(),
             o.seq_len);
  if (n < o.samples) spdlog::warn("calibration: {} holds only {} sequences of {} tokens", path, n, o.seq_len);
  return cut_sequences(stream, n, o.seq_len);
}

// All sequences sampled together (one batched forward per position) with a KV cache.
at::Tensor generated(CausalLM& model, const CalibOptions& o) {
  at::NoGradGuard ng;
  const int64_t B = o.samples, T = o.seq_len, V = model.config().vocab_size;
  auto tokens = at::empty({B, T}, at::kLong);
  auto acc = tokens.accessor<int64_t, 2>();
  const int32_t first = start_token(model);
  for (int64_t b = 0; b < B; ++b) acc[b][0] = first;
  auto cache = model.new_cache(B, T);
  auto mask = at::ones({B, T}, at::kBool);
  Progress prog("calibration: sampling", T - 1, "tok");
  for (int64_t t = 0; t + 1 < T; ++t) {
    auto step = tokens.narrow(1, t, 1);
    auto pos = at::full({B, 1}, t, at::kLong);
    auto logits = model.forward(step, pos, mask.narrow(1, 0, t + 1), cache.get()).select(1, 0).contiguous();
    const float* lp = logits.data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      uint64_t rng = o.seed * 1000003ULL + static_cast<uint64_t>(b) * 7919ULL + static_cast<uint64_t>(t) * 104729ULL + 1;
      acc[b][t + 1] = sample_token(lp + b * V, V, 1.0, 1.0, &rng);
    }
    prog.advance();
  }
  prog.finish();
  return tokens;
}

}  // namespace

at::Tensor calibration_tokens(CausalLM& model, const CalibOptions& o) {
  LLMC_CHECK(o.samples >= 1, "calibration: --calib-samples must be >= 1");
  LLMC_CHECK(o.seq_len >= 2, "calibration: --calib-seq-len must be >= 2");
  LLMC_CHECK(o.seq_len <= model.config().max_position_embeddings,
             "calibration: --calib-seq-len {} exceeds the model context {}", o.seq_len,
             model.config().max_position_embeddings);
  if (o.source.rfind("text:", 0) == 0) return from_text(model, o.source.substr(5), o);
  if (o.source == "generate" || o.source.empty()) return generated(model, o);
  fail("--calib: unknown source '{}' (generate or text:FILE)", o.source);
}

}  // namespace llmc
