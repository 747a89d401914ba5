#include "llmc/eval/perplexity.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "llmc/core/error.h"
#include "llmc/core/progress.h"

namespace llmc {

std::vector<Window> rolling_windows(const std::vector<int32_t>& ids, int32_t prefix_token, int64_t max_length,
                                    int64_t stride) {
  LLMC_CHECK(max_length >= 1, "perplexity: --max-length must be >= 1");
  LLMC_CHECK(stride >= 1 && stride <= max_length, "perplexity: --stride must be in [1, max-length]");
  std::vector<Window> out;
  const int64_t n = static_cast<int64_t>(ids.size());
  if (n == 0) return out;
  // First window: [prefix] + ids[0 : L-1] predicts ids[0 : L].
  int64_t first = std::min(max_length, n);
  Window w;
  w.input.push_back(prefix_token);
  w.input.insert(w.input.end(), ids.begin(), ids.begin() + first - 1);
  w.score_from = 0;
  w.n_predict = first;
  w.target.assign(ids.begin(), ids.begin() + first);
  out.push_back(std::move(w));
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t len = std::min(n - predicted, stride);
    const int64_t end = predicted + len;                    // predict ids[predicted : end]
    const int64_t start = std::max<int64_t>(0, end - 1 - max_length);  // inputs ids[start : end-1]
    Window x;
    x.input.assign(ids.begin() + start, ids.begin() + end - 1);
    if (start == 0 && static_cast<int64_t>(x.input.size()) < max_length) x.input.insert(x.input.begin(), prefix_token);
    x.n_predict = len;
    x.score_from = static_cast<int64_t>(x.input.size()) - len;  // the last len positions
    x.target.assign(ids.begin() + predicted, ids.begin() + end);
    out.push_back(std::move(x));
    predicted = end;
  }
  return out;
}

std::vector<Window> chunk_windows(const std::vector<int32_t>& ids, int64_t length) {
  LLMC_CHECK(length >= 2, "perplexity: --max-length must be >= 2 (a window's first token is never predicted)");
  // Only full windows, as GPTQ's nsamples = numel // seqlen: the shorter tail is not scored.
  const int64_t n = static_cast<int64_t>(ids.size()) / length;
  std::vector<Window> out(n);
  for (int64_t i = 0; i < n; ++i) {
    Window& w = out[i];
    const auto begin = ids.begin() + i * length;
    // All L tokens go in (transformers feeds the whole window and drops the last logit); the
    // causal model's predictions at 0..L-2 do not see token L-1, which is only a target.
    w.input.assign(begin, begin + length);
    w.score_from = 0;
    w.n_predict = length - 1;
    w.target.assign(begin + 1, begin + length);
  }
  return out;
}

std::vector<Window> llamacpp_windows(const std::vector<int32_t>& ids, int64_t length, bool add_bos, int32_t bos) {
  LLMC_CHECK(length >= 4, "perplexity: --max-length must be >= 4 for the llama.cpp protocol");
  const int64_t n = static_cast<int64_t>(ids.size()) / length;
  const int64_t first = length / 2;
  std::vector<Window> out(n);
  for (int64_t i = 0; i < n; ++i) {
    Window& w = out[i];
    const auto begin = ids.begin() + i * length;
    w.input.assign(begin, begin + length);
    if (add_bos) w.input[0] = bos;
    w.score_from = first;
    w.n_predict = length - 1 - first;
    w.target.assign(begin + first + 1, begin + length);
  }
  return out;
}

PerplexityResult evaluate_perplexity(CausalLM& model, const std::vector<TextDocument>& docs,
                                     const PerplexityOptions& opts) {
  const auto& cfg = model.config();
  const Tokenizer& tok = model.tokenizer();
  const bool llamacpp = opts.protocol == PerplexityProtocol::LlamaCpp;
  const bool chunks = opts.protocol == PerplexityProtocol::Chunks || llamacpp;
  const int64_t L = opts.max_length > 0 ? opts.max_length
                    : chunks            ? std::min<int64_t>(2048, cfg.max_position_embeddings)
                                        : cfg.max_position_embeddings;
  const int64_t S = opts.stride > 0 ? opts.stride : L;
  LLMC_CHECK(L <= cfg.max_position_embeddings || opts.max_length > 0, "perplexity: max length too large");
  const int32_t prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
  LLMC_CHECK(chunks || prefix >= 0, "perplexity: the tokenizer has neither BOS nor EOS to start a document with");

  PerplexityResult r;
  r.window_length = L;
  std::vector<Window> windows;
  int64_t stream_tokens = 0;
  for (const auto& d : docs) {
    std::vector<Window> w;
    if (llamacpp) {
      // llama-perplexity: -f drops one trailing newline; the text is tokenized with BOS when the
      // vocabulary adds one, and it needs at least two chunks.
      std::string_view text = d.text;
      if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
      const bool add_bos = tok.add_bos_default() && tok.bos_id() >= 0;
      auto ids = tok.encode(text, add_bos);
      stream_tokens += static_cast<int64_t>(ids.size());
      LLMC_CHECK(static_cast<int64_t>(ids.size()) >= 2 * L,
                 "{}: the text has {} tokens; llama-perplexity needs at least 2 x {} (lower --max-length)", opts.label,
                 ids.size(), L);
      w = llamacpp_windows(ids, L, add_bos, tok.bos_id());
    } else {
      auto ids = tok.encode(d.text, /*add_bos=*/false);
      stream_tokens += static_cast<int64_t>(ids.size());
      // Chunks: each document is its own token stream (wikitext2_gptq passes the whole file as one).
      w = chunks ? chunk_windows(ids, L) : rolling_windows(ids, prefix, L, S);
    }
    for (auto& x : w) windows.push_back(std::move(x));
    if (!chunks) {
      r.words += count_words(d.original);
      r.bytes += static_cast<int64_t>(d.original.size());
    }
    ++r.documents;
  }
  if (chunks) {
    LLMC_CHECK(!windows.empty(), "{}: the text has {} tokens, fewer than one {}-token window (lower --max-length)",
               opts.label, stream_tokens, L);
    if (opts.max_windows > 0 && static_cast<int64_t>(windows.size()) > opts.max_windows) windows.resize(opts.max_windows);
  }
  r.windows = static_cast<int64_t>(windows.size());
  for (const auto& w : windows) r.tokens += w.n_predict;
  // Longest first so batches hold windows of similar length (little padding).
  std::vector<size_t> order(windows.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return windows[a].input.size() > windows[b].input.size(); });

  std::vector<double> window_ll(windows.size(), 0.0);  // by window index (batches are sorted)
  at::NoGradGuard no_grad;
  auto t0 = std::chrono::steady_clock::now();
  Progress progress(opts.label, r.tokens, "tok");
  const int64_t B = std::max<int64_t>(1, opts.batch_size);
  for (size_t i = 0; i < order.size(); i += B) {
    const size_t nb = std::min<size_t>(B, order.size() - i);
    int64_t T = 0;
    for (size_t j = 0; j < nb; ++j) T = std::max<int64_t>(T, windows[order[i + j]].input.size());
    auto tokens = at::zeros({static_cast<int64_t>(nb), T}, at::kLong);
    auto mask = at::zeros({static_cast<int64_t>(nb), T}, at::kBool);
    auto tacc = tokens.accessor<int64_t, 2>();
    auto macc = mask.accessor<bool, 2>();
    for (size_t j = 0; j < nb; ++j) {  // right padding
      const auto& w = windows[order[i + j]];
      for (size_t t = 0; t < w.input.size(); ++t) {
        tacc[j][t] = w.input[t];
        macc[j][t] = true;
      }
    }
    auto positions = at::arange(T, at::kLong).unsqueeze(0).expand({static_cast<int64_t>(nb), T});
    int64_t done = 0;
    if (opts.logprobs) {
      // Scored positions only: window j's row t is flat row j*T + t.
      std::vector<int64_t> rows, tgt;
      rows.reserve(static_cast<size_t>(nb * T));
      tgt.reserve(static_cast<size_t>(nb * T));
      for (size_t j = 0; j < nb; ++j) {
        const auto& w = windows[order[i + j]];
        for (int64_t t = 0; t < w.n_predict; ++t) {
          rows.push_back(static_cast<int64_t>(j) * T + w.score_from + t);
          tgt.push_back(w.target[t]);
        }
      }
      const std::vector<double> lp = opts.logprobs(tokens, positions, mask, nullptr, rows, tgt, {});
      size_t k = 0;
      for (size_t j = 0; j < nb; ++j) {
        const auto& w = windows[order[i + j]];
        double sum = 0;
        for (int64_t t = 0; t < w.n_predict; ++t) sum += lp[k++];
        window_ll[order[i + j]] = sum;
        done += w.n_predict;
      }
      progress.advance(done);
      continue;
    }
    auto logits = model.forward(tokens, positions, mask, nullptr);  // (nb, T, V)
    for (size_t j = 0; j < nb; ++j) {
      const auto& w = windows[order[i + j]];
      std::vector<int64_t> tgt(w.target.begin(), w.target.end());
      // log_softmax over the scored rows only: no second (nb, T, V) buffer next to the logits.
      auto rows = at::log_softmax(logits[j].narrow(0, w.score_from, w.n_predict), -1);  // (n_predict, V)
      auto picked = rows.gather(1, at::tensor(tgt, at::kLong).unsqueeze(1));
      window_ll[order[i + j]] = picked.to(at::kDouble).sum().item<double>();
      done += w.n_predict;
    }
    progress.advance(done);
  }
  progress.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.tokens_per_second = r.seconds > 0 ? r.tokens / r.seconds : 0;
  for (double ll : window_ll) r.loglikelihood += ll;
  if (llamacpp) {  // llama-perplexity: exp of the mean NLL over every scored token
    for (size_t k = 0; k < windows.size(); ++k)
      r.window_nll.push_back(-window_ll[k] / static_cast<double>(windows[k].n_predict));
    r.token_perplexity = std::exp(-r.loglikelihood / static_cast<double>(std::max<int64_t>(1, r.tokens)));
    return r;
  }
  if (chunks) {
    // GPTQ averages the windows' mean NLLs (each window weighs the same; all have L-1 predictions).
    double sum = 0;
    for (size_t k = 0; k < windows.size(); ++k) {
      r.window_nll.push_back(-window_ll[k] / static_cast<double>(windows[k].n_predict));
      sum += r.window_nll.back();
    }
    r.token_perplexity = std::exp(sum / static_cast<double>(windows.size()));
    return r;
  }
  r.token_perplexity = std::exp(-r.loglikelihood / std::max<int64_t>(1, r.tokens));
  r.word_perplexity = std::exp(-r.loglikelihood / std::max<int64_t>(1, r.words));
  r.byte_perplexity = std::exp(-r.loglikelihood / std::max<int64_t>(1, r.bytes));
  r.bits_per_byte = -r.loglikelihood / std::max<int64_t>(1, r.bytes) / std::log(2.0);
  return r;
}

}  // namespace llmc
