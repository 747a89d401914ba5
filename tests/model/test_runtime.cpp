// The lean runtime engine against the libtorch Llama over the same weights. Tolerance: 1e-4
// relative to max |logit| (fp32 everywhere; only summation orders differ, ~1e-6 seen).
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <unistd.h>

#include <filesystem>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/export/discretize.h"
#include "llmc/export/format.h"
#include "llmc/runtime/folder.h"
#include "llmc/runtime/open.h"
#include "llmc/export/quantize_model.h"
#include "llmc/model/generate.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/tiled_linear.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/weight_memory.h"
#include "synthetic.h"

using namespace llmc;
namespace fs = std::filesystem;

namespace {

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

// A quantized subnet with mixed bits (incl. 16-bit linears and a packed lm_head), loaded back
// from its exported folder as a RuntimeLlama.
std::unique_ptr<Llama> exported_mixed(int lm_head_bits, bool runtime = true) {
  auto c = test::tiny_config();
  c.num_layers = 3;
  auto m = test::random_llama(c, 11);
  Arch a = uniform_arch(c, 4, 128);
  a.layers[0].bits = {4, 3, 8, 2, 16, 4, 3};
  a.layers[1].kv_heads = 1;
  a.layers[1].mlp_channels = 16;
  a.layers[2].kv_heads = 0;
  auto sub = discretize(*m, a);
  QuantizeOptions qo;
  qo.lm_head_bits = lm_head_bits;
  quantize_model(*sub, a, qo, {});
  const std::string dir = "/tmp/llmc_rt_test_" + std::to_string(::getpid()) + "_" + std::to_string(lm_head_bits);
  write_export_folder(*sub, dir, ExportWriteOptions{});
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto out = load_exported(dir, lo, runtime);
  fs::remove_all(dir);
  return out;
}

}  // namespace

TEST(Runtime, MatchesTorchOnExportedWeights) {
  for (int head_bits : {16, 8}) {
    auto m = exported_mixed(head_bits);
    ASSERT_NE(dynamic_cast<RuntimeLlama*>(m.get()), nullptr);
    const int64_t B = 3, T = 9, V = m->config().vocab_size;
    at::manual_seed(5);
    auto tokens = at::randint(0, V, {B, T}, at::kLong);
    // Left padding in row 1 (2 pad slots), positions counting real tokens.
    auto mask = at::ones({B, T}, at::kBool);
    mask[1].narrow(0, 0, 2).fill_(false);
    auto pos = at::arange(T, at::kLong).unsqueeze(0).repeat({B, 1});
    pos[1] = (pos[1] - 2).clamp_min(0);
    auto rt = m->forward(tokens, pos, mask, nullptr);
    auto ref = m->Llama::forward(tokens, pos, mask, nullptr);
    // Padded query slots are garbage in both; compare real ones.
    auto real = mask.unsqueeze(-1).expand_as(ref);
    const double e = rel_diff(rt.masked_select(real), ref.masked_select(real));
    EXPECT_LE(e, 1e-4) << "lm_head bits " << head_bits;
    RecordProperty("rel_diff_lm_head" + std::to_string(head_bits), fmt::format("{:.3e}", e));
  }
}

TEST(Runtime, KVCacheDecodeEqualsFullRecompute) {
  auto m = exported_mixed(16);
  const int64_t T = 12, P = 5, V = m->config().vocab_size;
  at::manual_seed(6);
  auto tokens = at::randint(0, V, {1, T}, at::kLong);
  auto full = m->forward(tokens);  // no cache, all T positions
  auto cache = m->new_cache(1, T);
  auto mask = at::ones({1, T}, at::kBool);
  auto pre = m->forward(tokens.narrow(1, 0, P), at::arange(P, at::kLong).view({1, P}), mask.narrow(1, 0, P), cache.get());
  EXPECT_LE(rel_diff(pre, full.narrow(1, 0, P)), 1e-4);
  auto& eng = dynamic_cast<RuntimeLlama&>(*m).engine();
  for (int64_t t = P; t < T; ++t) {
    const float* lg = eng.decode(tokens[0][t].item<int64_t>(), *cache);
    auto got = at::from_blob(const_cast<float*>(lg), {V}, at::kFloat).clone();
    EXPECT_LE(rel_diff(got, full[0][t]), 1e-4) << "position " << t;
  }
  EXPECT_EQ(cache->len, T);
  // The decode steps above ran the 2/3-bit linears (k, o, down of layer 0) from row-tiled copies
  // where the CPU has that path (AVX-512), and the 4-bit ones where it has theirs (AVX-512 VNNI, AVX2).
  EXPECT_EQ(eng.tiled_bytes() > 0, kernels::tiled_faster(2) || kernels::tiled_faster(4));
  // ...all of them parts of one buffer with copies of the other packed matrices, advised for huge
  // pages where the kernel has THP (and then all of it counted as on huge pages).
  if (std::getenv("LLMC_HUGEPAGES") == nullptr) {
    const bool thp = std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled").good();
    EXPECT_EQ(eng.weights_on_huge_pages(), thp);
    if (thp) EXPECT_GE(eng.huge_page_bytes(), eng.tiled_bytes() + 1);  // + the 8-bit copies
  }
  // prefill() returns the last row of a cached forward.
  auto c2 = m->new_cache(1, T);
  std::vector<int64_t> ids(tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + T);
  const float* last = eng.prefill(ids.data(), T, *c2);
  EXPECT_LE(rel_diff(at::from_blob(const_cast<float*>(last), {V}, at::kFloat).clone(), full[0][T - 1]), 1e-4);
}

// Where the CPU has a tiled path (2/3 bits on AVX-512, 4 bits on AVX-512 VNNI and AVX2) the engine
// computes those products from row-tiled copies, and the runtime model's weights then hold those
// matrices in that layout only (TiledLinear over the engine's copy): the same codes, scales and
// zeros as the canonical matrices, which are gone. The other packed matrices (8-bit; the widths
// without a tiled path) are held as PackedViewLinear over the engine's canonical copy, with the same
// codes, scales and zeros too.
TEST(Runtime, PackedMatricesAreHeldOnceInTheEnginesCopies) {
  auto rt = exported_mixed(16);
  auto ref = exported_mixed(16, false);  // the same weights (same seed), canonical layout
  const LlamaWeights &w = rt->weights(), &r = ref->weights();
  int tiled = 0, packed23 = 0, tileable = 0, viewed = 0;
  for (size_t l = 0; l < w.layers.size(); ++l) {
    for (int k = 0; k < kNumLinears; ++k) {
      const Linear& a = *layer_linear(w.layers[l], k);
      const Linear& b = *layer_linear(r.layers[l], k);
      if (linear_dropped(b)) continue;
      SCOPED_TRACE(fmt::format("layer {} linear {}", l, k));
      ASSERT_EQ(a.bits(), b.bits());
      ASSERT_EQ(a.stored_bytes(4), b.stored_bytes(4));
      const auto* t = dynamic_cast<const TiledLinear*>(&a);
      packed23 += b.bits() == 2 || b.bits() == 3;
      const bool tiles = kernels::tiled_faster(b.bits());
      tileable += tiles;
      EXPECT_EQ(t != nullptr, tiles);
      const auto* v = dynamic_cast<const PackedViewLinear*>(&a);
      EXPECT_EQ(v != nullptr, b.is_packed() && !tiles);
      if (v != nullptr) {
        ++viewed;
        EXPECT_TRUE(at::equal(a.dense_weight(), b.dense_weight()));
        EXPECT_FALSE(v->holds_canonical());
        const kernels::QMatrix* qa = a.packed_matrix();
        ASSERT_NE(qa, nullptr);
        EXPECT_TRUE(v->holds_canonical());
        EXPECT_EQ(qa->codes, b.packed_matrix()->codes);
        EXPECT_EQ(qa->scales, b.packed_matrix()->scales);
        EXPECT_EQ(qa->zeros, b.packed_matrix()->zeros);
        at::manual_seed(static_cast<uint64_t>(10 + k));
        const auto x = at::randn({3, a.in_features()});
        EXPECT_LE(rel_diff(const_cast<Linear&>(a).forward(x), const_cast<Linear&>(b).forward(x)), 1e-6);
      }
      if (t == nullptr) continue;
      ++tiled;
      EXPECT_FALSE(t->holds_canonical());
      EXPECT_TRUE(at::equal(a.dense_weight(), b.dense_weight()));
      EXPECT_FALSE(t->holds_canonical());  // dense_weight() untiles into a temporary
      const kernels::QMatrix* qa = a.packed_matrix();  // rebuilt on demand (export reads it)
      const kernels::QMatrix* qb = b.packed_matrix();
      ASSERT_NE(qa, nullptr);
      EXPECT_TRUE(t->holds_canonical());
      EXPECT_EQ(qa->codes, qb->codes);
      EXPECT_EQ(qa->scales, qb->scales);
      EXPECT_EQ(qa->zeros, qb->zeros);
    }
  }
  EXPECT_GT(packed23, 0);
  EXPECT_GE(viewed, 1);  // layer 0's 8-bit v at least
  if (tileable == 0) GTEST_SKIP() << "no tiled path on this CPU: the engine keeps the canonical layout (checked above)";
  EXPECT_EQ(tiled, tileable);
  if (kernels::tiled_faster(2)) EXPECT_GE(tileable, packed23);  // AVX-512; AVX2 tiles 4 bits only
  // Prefill-sized products (M >= 16) read the tiled copies too: a 20-row forward agrees with the
  // libtorch forward over the canonical weights.
  at::manual_seed(9);
  auto tokens = at::randint(0, rt->config().vocab_size, {2, 10}, at::kLong);
  EXPECT_LE(rel_diff(rt->forward(tokens), ref->forward(tokens)), 1e-4);
}

// A dense model's fp32 weights (here the tied lm_head, 6 MiB) get their whole 2 MiB pages collapsed
// to huge pages where Linux can (MADV_COLLAPSE, 6.1+ with THP).
TEST(Runtime, DenseWeightsAreCollapsedToHugePages) {
  {
    std::vector<uint8_t> probe(4 * kernels::kHugePageBytes, 1);
    if (kernels::collapse_to_huge_pages(probe.data(), probe.size()) == 0)
      GTEST_SKIP() << "this kernel collapses nothing (no THP, Linux < 6.1 or LLMC_HUGEPAGES=0)";
  }
  auto c = test::tiny_config();
  c.vocab_size = 3 * static_cast<int64_t>(kernels::kHugePageBytes) / (4 * c.hidden_size);  // 6 MiB of fp32
  auto m = test::random_llama(c, 13);
  auto rt = make_runtime(*m, 1);
  EXPECT_GE(rt->engine().huge_page_bytes(), static_cast<int64_t>(kernels::kHugePageBytes));
  EXPECT_EQ(rt->engine().huge_page_bytes() % static_cast<int64_t>(kernels::kHugePageBytes), 0);
  at::manual_seed(3);
  auto tokens = at::randint(0, c.vocab_size, {1, 6}, at::kLong);
  EXPECT_LE(rel_diff(rt->forward(tokens), m->forward(tokens)), 1e-4);  // the bytes are unchanged
}

TEST(Runtime, DenseModelAndGenerateMatchTorch) {
  auto c = test::tiny_config();
  auto m = test::random_llama(c, 12);
  auto rt = make_runtime(*m, 2);
  at::manual_seed(7);
  auto tokens = at::randint(0, c.vocab_size, {2, 10}, at::kLong);
  EXPECT_LE(rel_diff(rt->forward(tokens), m->forward(tokens)), 1e-4);  // 20 rows: threaded GEMV
  auto longer = at::randint(0, c.vocab_size, {3, 30}, at::kLong);     // 90 rows: BLAS
  EXPECT_LE(rel_diff(rt->forward(longer), m->forward(longer)), 1e-4);
  // Greedy generation with the KV cache picks the same tokens (through CausalLM::forward).
  GenerateOptions g;
  g.max_new_tokens = 12;
  g.stop_at_eos = false;
  std::vector<int32_t> prompt = {1, 5, 9, 13};
  // generate() needs a tokenizer only for EOS when the config has none; tiny_config has eos 2.
  EXPECT_EQ(generate(*rt, prompt, g), generate(*m, prompt, g));
}

TEST(Runtime, Stories260KExportedGreedyMatchesTorch) {
  const std::string path = path_join(shared_root(), "models/stories260K");
  if (!dir_exists(path)) GTEST_SKIP() << "no " << path;
  auto m = load_llama(path, LoadOptions{});
  Arch a = uniform_arch(m->config(), 4, 128);
  auto sub = discretize(*m, a);
  QuantizeOptions qo;
  quantize_model(*sub, a, qo, {});
  const std::string dir = "/tmp/llmc_rt_stories_" + std::to_string(::getpid());
  ExportWriteOptions wo;
  wo.tokenizer_source = path;
  write_export_folder(*sub, dir, wo);
  auto e = open_model(dir, LoadOptions{});
  fs::remove_all(dir);
  auto* rt = dynamic_cast<RuntimeLlama*>(e.get());
  ASSERT_NE(rt, nullptr);
  auto prompt = e->tokenizer().encode("Once upon a time", true);
  GenerateOptions g;
  g.max_new_tokens = 40;
  auto ids_rt = generate(*e, prompt, g);
  auto ids_torch = generate(*sub, prompt, g);
  EXPECT_EQ(ids_rt, ids_torch);
  std::vector<int64_t> p64(prompt.begin(), prompt.end());
  auto t = at::tensor(p64, at::kLong).view({1, -1});
  EXPECT_LE(rel_diff(e->forward(t), sub->forward(t)), 1e-4);
}
