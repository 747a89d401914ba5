// The eval fast path on the runtime engine (eval/scoring.h, RuntimeEngine::token_logprobs, linears
// in row blocks) against the path before it (forward() logits + ATen log_softmax, one GEMM call per
// linear) on tiny exported models: the same logits bit for bit (packed lm_head), log-probabilities
// within fp32 log-sum-exp rounding, and the scorers' results (multiple choice, perplexity) equal.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/eval/loglikelihood.h"
#include "llmc/eval/perplexity.h"
#include "llmc/export/discretize.h"
#include "llmc/export/format.h"
#include "llmc/export/quantize_model.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/folder.h"
#include "llmc/runtime/open.h"
#include "synthetic.h"
#include "../byte_tokenizer.h"

using namespace llmc;
namespace fs = std::filesystem;

namespace {

using test::ByteTokenizer;

// A mixed-precision export (2/3/4/8-bit and 16-bit linears, lm_head at `lm_head_bits`) of a tiny
// random Llama with `vocab` tokens, loaded back on the runtime engine with a byte tokenizer.
// any_m_same_bits: 4/8-bit linears only, whose rows come out the same bits in any call of >= 16
// rows (2/3-bit ones: fp32 x from 16 rows up, int16 below; 16-bit ones: our GEMV up to 64 rows,
// BLAS above; ~1e-4 apart on this model).
std::unique_ptr<RuntimeLlama> exported_tiny(int lm_head_bits, int64_t vocab = 300, int64_t max_pos = 256,
                                            bool any_m_same_bits = false) {
  auto c = test::tiny_config();
  c.num_layers = 3;
  c.vocab_size = vocab;
  c.max_position_embeddings = max_pos;
  auto m = test::random_llama(c, 21);
  Arch a = uniform_arch(c, 4, 32);
  if (any_m_same_bits) a.layers[0].bits = {4, 8, 8, 4, 8, 4, 8};
  else a.layers[0].bits = {4, 3, 8, 2, 16, 4, 3};
  a.layers[1].kv_heads = 1;
  auto sub = discretize(*m, a);
  QuantizeOptions qo;
  qo.lm_head_bits = lm_head_bits;
  quantize_model(*sub, a, qo, {});
  const std::string dir = "/tmp/llmc_evalfast_" + std::to_string(::getpid()) + "_" + std::to_string(lm_head_bits) +
                          (any_m_same_bits ? "_m" : "");
  write_export_folder(*sub, dir, ExportWriteOptions{});
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto loaded = load_exported(dir, lo, true);
  fs::remove_all(dir);
  return std::make_unique<RuntimeLlama>(loaded->config(), loaded->weights(), std::make_shared<ByteTokenizer>(), 2);
}

TokenLogprobsFn fast_of(RuntimeLlama& m) {
  return [&m](const at::Tensor& t, const at::Tensor& p, const at::Tensor& k, KVCache* c, const std::vector<int64_t>& r,
              const std::vector<int64_t>& g, const at::Tensor& s) { return m.token_logprobs(t, p, k, c, r, g, s); };
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace

TEST(EvalFast, RowBlocksKeepLogitsBitForBit) {
  auto m = exported_tiny(8);
  auto& eng = m->engine();
  const int64_t B = 5, T = 60;  // 300 rows: two blocks of 150 at the default 256, more below
  at::manual_seed(3);
  auto tokens = at::randint(0, m->config().vocab_size, {B, T}, at::kLong);
  eng.set_row_block(0);
  auto ref = m->forward(tokens);
  for (int64_t block : {256, 40, 17}) {
    eng.set_row_block(block);
    auto got = m->forward(tokens);
    EXPECT_TRUE(at::equal(got, ref)) << "row block " << block;
  }
}

TEST(EvalFast, TokenLogprobsEqualForwardLogSoftmax) {
  for (int head_bits : {8, 16}) {
    auto m = exported_tiny(head_bits);
    const int64_t B = 3, T = 40, V = m->config().vocab_size;
    at::manual_seed(4);
    auto tokens = at::randint(0, V, {B, T}, at::kLong);
    auto mask = at::ones({B, T}, at::kBool);
    mask[1].narrow(0, 0, 5).fill_(false);  // left padding in row 1
    auto pos = at::arange(T, at::kLong).unsqueeze(0).repeat({B, 1});
    pos[1] = (pos[1] - 5).clamp_min(0);
    // Reference: forward()'s logits, log_softmax in fp64.
    auto ref = at::log_softmax(m->forward(tokens, pos, mask, nullptr).to(at::kDouble), -1).view({B * T, V});
    std::mt19937 rng(9);
    for (int64_t block : {0, 256, 24}) {
      m->engine().set_row_block(block);
      for (int n : {1, 5, 60}) {  // 1 and 5 distinct rows: the lm_head still runs on 16
        std::vector<int64_t> rows, tgt;
        for (int i = 0; i < n; ++i) {
          rows.push_back(static_cast<int64_t>(rng() % (B * T)));
          tgt.push_back(static_cast<int64_t>(rng() % V));
        }
        rows.push_back(rows[0]);  // a repeated row with another target
        tgt.push_back((tgt[0] + 1) % V);
        auto got = m->token_logprobs(tokens, pos, mask, nullptr, rows, tgt);
        ASSERT_EQ(got.size(), rows.size());
        for (size_t i = 0; i < rows.size(); ++i)
          EXPECT_NEAR(got[i], ref[rows[i]][tgt[i]].item<double>(), 1e-5)
              << "head bits " << head_bits << " block " << block << " row " << rows[i];
      }
    }
  }
}

TEST(EvalFast, TokenLogprobsWithCacheEqualForward) {
  auto m = exported_tiny(8);
  // Both parts >= 16 rows: the engine's small-M path (M < 16) rounds activations otherwise and
  // differs from the panel path by ~1e-4, before and after the fast path alike.
  const int64_t T = 40, P = 16, V = m->config().vocab_size;
  at::manual_seed(5);
  auto tokens = at::randint(0, V, {1, T}, at::kLong);
  auto full = at::log_softmax(m->forward(tokens).to(at::kDouble), -1)[0];  // (T, V)
  auto cache = m->new_cache(1, T);
  auto mask = at::ones({1, T}, at::kBool);
  // A prefill that scores nothing (cache only), then the rest with every row scored.
  auto none = m->token_logprobs(tokens.narrow(1, 0, P), at::arange(P, at::kLong).view({1, P}),
                                mask.narrow(1, 0, P), cache.get(), {}, {});
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(cache->len, P);
  std::vector<int64_t> rows, tgt;
  for (int64_t t = 0; t + 1 < T - P; ++t) {
    rows.push_back(t);
    tgt.push_back(tokens[0][P + t + 1].item<int64_t>());
  }
  auto got = m->token_logprobs(tokens.narrow(1, P, T - P), at::arange(P, T, at::kLong).view({1, T - P}), mask,
                               cache.get(), rows, tgt);
  EXPECT_EQ(cache->len, T);
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_NEAR(got[i], full[P + rows[i]][tgt[i]].item<double>(), 1e-5);
  // Bad rows and targets are errors, not reads out of bounds.
  auto c2 = m->new_cache(1, T);
  EXPECT_FALSE(test::error_of([&] { m->token_logprobs(tokens, at::arange(T).view({1, T}), mask, c2.get(), {T}, {0}); })
                   .empty());
  EXPECT_FALSE(test::error_of([&] { m->token_logprobs(tokens, at::arange(T).view({1, T}), mask, nullptr, {0}, {V}); })
                   .empty());
}

// The multiple-choice scorer through both paths (and the naive reference) on requests with
// shared prefixes (unit and batch prefixes), multi-token continuations and truncation. The fast path
// runs each context with its continuations as branches of one row (one forward a batch), the legacy
// one a forward per chunk of continuations from copies of the context's cache.
TEST(EvalFast, LoglikelihoodsFastEqualLegacy) {
  std::mt19937 rng(5);
  auto rand_ids = [&](int n) {
    std::vector<int32_t> v(n);
    for (auto& x : v) x = static_cast<int32_t>(3 + rng() % 250);
    return v;
  };
  std::vector<TokenizedRequest> reqs;
  const auto prefix = rand_ids(90);
  for (int d = 0; d < 6; ++d) {
    auto ctx = prefix;
    auto tail = rand_ids(3 + d * 4);
    ctx.insert(ctx.end(), tail.begin(), tail.end());
    for (int c = 0; c < 3; ++c) reqs.push_back({ctx, rand_ids(1 + (d + c) % 6)});
  }
  for (int d = 0; d < 9; ++d) {
    auto ctx = rand_ids(2 + (d * 7) % 30);
    if (d % 3 == 0) ctx.insert(ctx.begin(), prefix.begin(), prefix.begin() + 10);
    for (int c = 0; c < 2 + d % 3; ++c) reqs.push_back({ctx, rand_ids(1 + (c * 3 + d) % 7)});
  }
  reqs.push_back({rand_ids(120), rand_ids(5)});
  reqs.push_back({rand_ids(120), rand_ids(1)});
  auto m = exported_tiny(8);
  {
    for (int64_t max_length : {0, 40}) {
      LoglikelihoodOptions o;
      o.max_length = max_length;
      auto naive = loglikelihoods_naive(*m, reqs, o);
      for (int64_t bs : {1, 8, 64}) {
        o.batch_size = bs;
        o.logprobs = nullptr;
        m->engine().set_row_block(0);
        m->engine().set_zero_caches(true);
        LoglikelihoodStats sl, sf;
        auto legacy = loglikelihoods(*m, reqs, o, &sl);
        o.logprobs = fast_of(*m);
        m->engine().set_row_block(rt::kLinearRowBlock);
        m->engine().set_zero_caches(false);
        auto fast = loglikelihoods(*m, reqs, o, &sf);
        const std::string where = "max_length " + std::to_string(max_length) + " batch " + std::to_string(bs);
        // The legacy path's small chunks (< 16 rows) take other kernels (int16 x for 2/3 bits, the
        // x-table kernel for 4 bits, our GEMV instead of BLAS for 16 bits): ~1e-3 apart in a
        // request's sum on this model. (Branches that saw each other moved them by ~16.)
        EXPECT_LE(max_abs_diff(fast, legacy), 5e-3) << where;
        // One unpadded request per forward (naive) vs. batched, left-padded rows: already ~1e-3 apart
        // on the engine before the fast path (AVX2's int16 activations, other padding), so a loose check.
        EXPECT_LE(max_abs_diff(fast, naive), 5e-3) << where;
        // The same tokens through the model, in fewer forwards (one per batch and prefix).
        EXPECT_EQ(sf.model_tokens, sl.model_tokens) << where;
        EXPECT_LT(sf.forwards, sl.forwards) << where;
      }
    }
  }
}

// A context with three continuations as branches of one row (segments). Against the same row with
// the other branches hidden by the key mask (the same keys in the same slots): bit for bit. Against
// each continuation in a row of its own (left-padded): other slots, so other fp32 summation orders
// in the softmax, which the int16 rounding of the next linears' activations can turn into whole
// steps: within 5e-3. And a branch must not see another: without the segments the later
// continuations' scores move by far more (2.5 on this model).
TEST(EvalFast, TokenLogprobsBranchesEqualSeparateRows) {
  auto m = exported_tiny(8, 300, 256, /*any_m_same_bits=*/true);
  const int64_t V = m->config().vocab_size, C = 14;
  const std::vector<int64_t> lens = {6, 1, 9};  // branch tokens (a continuation but its last token)
  at::manual_seed(6);
  auto ctx = at::randint(0, V, {C}, at::kLong);
  std::vector<at::Tensor> br;
  for (int64_t n : lens) br.push_back(at::randint(0, V, {n}, at::kLong));
  const int64_t T1 = C + 6 + 1 + 9, Tn = C + 9;
  // One row: the context (segment 0), then branch j (segment j + 1).
  auto tok1 = at::zeros({1, T1}, at::kLong), pos1 = at::zeros({1, T1}, at::kLong), seg1 = at::zeros({1, T1}, at::kInt);
  // Three rows: the context, then branch j, left-padded to Tn.
  auto tokn = at::zeros({3, Tn}, at::kLong), posn = at::zeros({3, Tn}, at::kLong);
  auto maskn = at::zeros({3, Tn}, at::kBool);
  tok1[0].narrow(0, 0, C).copy_(ctx);
  pos1[0].narrow(0, 0, C).copy_(at::arange(C, at::kLong));
  std::vector<int64_t> rows1, rowsn, tgt, branch;  // branch: the continuation a scored row belongs to
  int64_t at1 = C;
  for (int64_t j = 0; j < 3; ++j) {
    const int64_t n = lens[j], off = Tn - C - n;
    tok1[0].narrow(0, at1, n).copy_(br[j]);
    pos1[0].narrow(0, at1, n).copy_(at::arange(C, C + n, at::kLong));
    seg1[0].narrow(0, at1, n).fill_(static_cast<int>(j + 1));
    tokn[j].narrow(0, off, C).copy_(ctx);
    tokn[j].narrow(0, off + C, n).copy_(br[j]);
    posn[j].narrow(0, off, C + n).copy_(at::arange(C + n, at::kLong));
    maskn[j].narrow(0, off, C + n).fill_(true);
    // The context's last slot and every branch slot, each scoring some target.
    rows1.push_back(C - 1);
    rowsn.push_back(j * Tn + off + C - 1);
    tgt.push_back((7 * j + 1) % V);
    branch.push_back(j);
    for (int64_t t = 0; t < n; ++t) {
      rows1.push_back(at1 + t);
      rowsn.push_back(j * Tn + off + C + t);
      tgt.push_back((11 * t + 3 * j + 5) % V);
      branch.push_back(j);
    }
    at1 += n;
  }
  ASSERT_EQ(at1, T1);
  auto mask1 = at::ones({1, T1}, at::kBool);
  auto cache = m->new_cache(1, T1);
  const auto got = m->token_logprobs(tok1, pos1, mask1, cache.get(), rows1, tgt, seg1);
  EXPECT_EQ(cache->len, T1);
  // Branch j with the others hidden by the key mask.
  for (int64_t j = 0; j < 3; ++j) {
    auto mj = at::ones({1, T1}, at::kBool);
    for (int64_t i = 0, s0 = C; i < 3; s0 += lens[i++])
      if (i != j) mj[0].narrow(0, s0, lens[i]).fill_(false);
    const auto one = m->token_logprobs(tok1, pos1, mj, nullptr, rows1, tgt);
    for (size_t i = 0; i < got.size(); ++i)
      if (branch[i] == j) EXPECT_EQ(got[i], one[i]) << "branch " << j << " row " << rows1[i];
  }
  const auto ref = m->token_logprobs(tokn, posn, maskn, nullptr, rowsn, tgt);
  ASSERT_EQ(got.size(), ref.size());
  EXPECT_LE(max_abs_diff(got, ref), 5e-3);
  // Without segments the later branches attend to the earlier ones: their scores move.
  const auto mixed = m->token_logprobs(tok1, pos1, mask1, nullptr, rows1, tgt);
  EXPECT_GT(max_abs_diff(mixed, ref), 0.5);
  // Segments must have the tokens' shape and be >= 0.
  EXPECT_FALSE(test::error_of([&] { m->token_logprobs(tok1, pos1, mask1, nullptr, rows1, tgt, seg1.narrow(1, 0, 5)); })
                   .empty());
  EXPECT_FALSE(test::error_of([&] { m->token_logprobs(tok1, pos1, mask1, nullptr, rows1, tgt, seg1 - 1); }).empty());
}

TEST(EvalFast, PerplexityFastEqualLegacy) {
  auto m = exported_tiny(8, 300, 128);
  std::vector<TextDocument> docs;
  std::mt19937 rng(8);
  for (int d = 0; d < 7; ++d) {
    std::string s;
    const int n = 20 + static_cast<int>(rng() % 200);  // some longer than a window
    for (int i = 0; i < n; ++i) s += static_cast<char>('a' + rng() % 26);
    docs.push_back({s, s});
  }
  struct Case {
    PerplexityProtocol p;
    int64_t len, stride;
  };
  for (const Case& c : {Case{PerplexityProtocol::Rolling, 64, 0}, Case{PerplexityProtocol::Rolling, 64, 24},
                        Case{PerplexityProtocol::Chunks, 48, 0}, Case{PerplexityProtocol::LlamaCpp, 32, 0}}) {
    PerplexityOptions o;
    o.protocol = c.p;
    o.max_length = c.len;
    o.stride = c.stride;
    o.batch_size = 3;
    std::vector<TextDocument> in = docs;
    if (c.p != PerplexityProtocol::Rolling) {  // one stream, as wikitext2_gptq passes the file
      std::string all;
      for (const auto& d : docs) all += d.text;
      in = {{all, all}};
    }
    m->engine().set_row_block(0);
    auto legacy = evaluate_perplexity(*m, in, o);
    o.logprobs = fast_of(*m);
    m->engine().set_row_block(40);
    auto fast = evaluate_perplexity(*m, in, o);
    EXPECT_EQ(fast.tokens, legacy.tokens);
    EXPECT_GT(fast.tokens, 0);
    EXPECT_NEAR(fast.loglikelihood, legacy.loglikelihood, 1e-6 * fast.tokens) << static_cast<int>(c.p);
    EXPECT_NEAR(fast.token_perplexity / legacy.token_perplexity, 1.0, 1e-6) << static_cast<int>(c.p);
    ASSERT_EQ(fast.window_nll.size(), legacy.window_nll.size());
    for (size_t i = 0; i < fast.window_nll.size(); ++i) EXPECT_NEAR(fast.window_nll[i], legacy.window_nll[i], 1e-6);
  }
}
