#include "llmc/model/generate.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "llmc/core/error.h"
#include "llmc/core/log.h"

namespace llmc {

int32_t sample_token(const float* logits, int64_t vocab, double temperature, double top_p, uint64_t* rng_state) {
  if (temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  // Softmax at temperature, then keep the smallest set of tokens whose mass reaches top_p.
  const float mx = *std::max_element(logits, logits + vocab);
  std::vector<std::pair<double, int32_t>> p(vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    double e = std::exp((logits[i] - mx) / temperature);
    p[i] = {e, static_cast<int32_t>(i)};
    sum += e;
  }
  std::sort(p.begin(), p.end(), [](auto& a, auto& b) { return a.first > b.first; });
  double keep_mass = 0;
  size_t keep = 0;
  while (keep < p.size()) {
    keep_mass += p[keep].first / sum;
    ++keep;
    if (keep_mass >= top_p) break;
  }
  std::mt19937_64 rng(*rng_state);
  double r = std::uniform_real_distribution<double>(0.0, keep_mass * sum)(rng);
  *rng_state = rng();
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i].first;
    if (r < acc) return p[i].second;
  }
  return p[keep - 1].second;
}

std::vector<int32_t> generate(CausalLM& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opts,
                              const std::function<void(int32_t)>& on_token, GenerateStats* stats) {
  LLMC_CHECK(!prompt_ids.empty(), "generate: empty prompt (no tokens and no BOS)");
  LLMC_CHECK(opts.max_new_tokens >= 0, "generate: --max-new-tokens must be >= 0");
  LLMC_CHECK(opts.temperature >= 0, "generate: --temperature must be >= 0");
  LLMC_CHECK(opts.top_p > 0 && opts.top_p <= 1, "generate: --top-p must be in (0, 1]");
  const int64_t vocab = model.config().vocab_size;
  for (int32_t id : prompt_ids) LLMC_CHECK(id >= 0 && id < vocab, "generate: prompt token id {} out of range", id);
  const int64_t T = static_cast<int64_t>(prompt_ids.size());
  const int64_t ctx = model.config().max_position_embeddings;
  if (T > ctx && !opts.allow_past_context)
    fail("generate: the prompt has {} tokens, more than the model's context of {} (allow_past_context / "
         "--allow-past-context to run past it anyway)",
         T, ctx);
  int64_t max_new = opts.max_new_tokens;
  bool capped = false;
  if (T + max_new > ctx && !opts.allow_past_context) {
    spdlog::warn("generate: the model's context is {} tokens: stopping after {} new tokens instead of {} "
                 "(--allow-past-context to go on)",
                 ctx, ctx - T, max_new);
    max_new = ctx - T;
    capped = true;
  }
  const int64_t max_len = T + max_new;
  auto cache = model.new_cache(1, max_len);
  const int eos = model.config().eos_token_id >= 0 ? model.config().eos_token_id : model.tokenizer().eos_id();
  uint64_t rng_state = opts.seed;
  std::vector<int32_t> out;
  at::NoGradGuard no_grad;

  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  std::vector<int64_t> ids64(prompt_ids.begin(), prompt_ids.end());
  auto tokens = at::tensor(ids64, at::kLong).view({1, T});
  auto positions = at::arange(T, at::kLong).view({1, T});
  auto full_mask = at::ones({1, max_len}, at::kBool);
  auto logits = model.forward(tokens, positions, full_mask.narrow(1, 0, T), cache.get());  // (1, T, V)
  auto last = logits.select(1, T - 1).contiguous();
  auto t1 = clock::now();
  for (int64_t step = 0; step < max_new; ++step) {
    int32_t next = sample_token(last.data_ptr<float>(), vocab, opts.temperature, opts.top_p, &rng_state);
    out.push_back(next);
    if (on_token) on_token(next);
    if (opts.stop_at_eos && next == eos) break;
    if (step + 1 == max_new) break;
    const int64_t pos = cache->len;
    auto tok = at::full({1, 1}, static_cast<int64_t>(next), at::kLong);
    auto p = at::full({1, 1}, pos, at::kLong);
    logits = model.forward(tok, p, full_mask.narrow(1, 0, pos + 1), cache.get());
    last = logits.select(1, 0).contiguous();
  }
  auto t2 = clock::now();
  if (stats) {
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = std::chrono::duration<double>(t2 - t1).count();
    stats->prompt_tokens = T;
    stats->new_tokens = static_cast<int64_t>(out.size());
    stats->stopped_at_context = capped && static_cast<int64_t>(out.size()) == max_new &&
                                !(opts.stop_at_eos && !out.empty() && out.back() == eos);
  }
  return out;
}

std::string decode_continuation(const Tokenizer& tok, const std::vector<int32_t>& prompt_ids,
                                const std::vector<int32_t>& ids) {
  std::vector<int32_t> all = prompt_ids;
  all.insert(all.end(), ids.begin(), ids.end());
  const std::string prompt = tok.decode(prompt_ids), whole = tok.decode(all);
  if (whole.size() >= prompt.size() && whole.compare(0, prompt.size(), prompt) == 0) return whole.substr(prompt.size());
  return tok.decode(ids);
}

}  // namespace llmc
