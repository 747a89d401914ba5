#include "llmc/data/token_stream.h"

#include <ATen/ops/empty.h>

#include <algorithm>

#include "llmc/core/error.h"

namespace llmc {

bool append_documents(std::vector<int32_t>& stream, const Tokenizer& tok, const std::vector<TextDocument>& docs,
                      const TokenStreamOptions& o) {
  const bool each = o.boundary == DocBoundary::StartEach;
  LLMC_CHECK(!each || o.start >= 0, "token stream: no start token (the model has neither BOS nor EOS)");
  const bool bos = !each && tok.add_bos_default();
  auto full = [&] { return o.max_tokens > 0 && stream.size() >= o.max_tokens; };
  if (full()) return true;
  for (const auto& d : docs) {
    if (each) stream.push_back(o.start);
    else if (bos && tok.bos_id() >= 0) stream.push_back(tok.bos_id());
    else if (!bos && tok.eos_id() >= 0 && !stream.empty()) stream.push_back(tok.eos_id());
    const auto ids = tok.encode(d.text, /*add_bos=*/false);
    stream.insert(stream.end(), ids.begin(), ids.end());
    if (full()) return true;
  }
  return false;
}

std::vector<TextDocument> interleave_documents(std::vector<std::vector<TextDocument>> sources) {
  size_t most = 0;
  for (const auto& s : sources) most = std::max(most, s.size());
  std::vector<TextDocument> out;
  for (size_t i = 0; i < most; ++i)
    for (auto& s : sources)
      if (i < s.size()) out.push_back(std::move(s[i]));
  return out;
}

at::Tensor cut_sequences(const std::vector<int32_t>& stream, int64_t n, int64_t seq_len) {
  LLMC_CHECK(n >= 0 && seq_len >= 1 && static_cast<int64_t>(stream.size()) >= n * seq_len,
             "token stream: {} tokens, fewer than {} sequences of {}", stream.size(), n, seq_len);
  auto t = at::empty({n, seq_len}, at::kLong);
  std::copy(stream.begin(), stream.begin() + n * seq_len, t.data_ptr<int64_t>());
  return t;
}

std::vector<at::Tensor> split_batches(const at::Tensor& sequences, int64_t batch_size) {
  LLMC_CHECK(batch_size >= 1, "batch size must be >= 1");
  std::vector<at::Tensor> out;
  const int64_t n = sequences.size(0);
  for (int64_t s = 0; s < n; s += batch_size)
    out.push_back(sequences.narrow(0, s, std::min(batch_size, n - s)).clone(at::MemoryFormat::Contiguous));
  return out;
}

}  // namespace llmc
