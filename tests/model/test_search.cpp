#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/latency/lut.h"
#include "llmc/nas/importance.h"
#include "llmc/nas/search.h"
#include "llmc/nas/supernet.h"
#include "llmc/quant/quant.h"
#include "search_run.h"
#include "synthetic.h"

using namespace llmc;

namespace {

// The sliced, fake-quantized subnet of a permuted dense model at the given choices.
std::unique_ptr<Llama> sliced_subnet(const Llama& dense, const std::vector<LayerChoices>& ch,
                                     const std::vector<ChoiceIndex>& idx, int group) {
  ModelConfig c = dense.config();
  const int64_t g = c.num_heads / c.num_kv_heads, hd = c.head_dim;
  c.layer_kv_heads.clear();
  c.layer_intermediate.clear();
  for (size_t l = 0; l < idx.size(); ++l) {
    c.layer_kv_heads.push_back(ch[l].kv[idx[l].kv]);
    c.layer_intermediate.push_back(ch[l].mlp[idx[l].mlp]);
  }
  auto src = [&](const std::string& name) -> at::Tensor {
    const auto& w = dense.weights();
    if (name == "model.embed_tokens.weight") return w.embed;
    if (name == "model.norm.weight") return w.final_norm;
    if (name == "lm_head.weight") return w.lm_head->dense_weight();
    const int64_t l = std::stoll(name.substr(13));
    const auto& L = w.layers[l];
    if (name.find("input_layernorm") != std::string::npos) return L.input_norm;
    if (name.find("post_attention_layernorm") != std::string::npos) return L.post_attn_norm;
    const int64_t kv = c.layer_kv_heads[l], I = c.layer_intermediate[l];
    auto fq = [&](at::Tensor t, int j) {
      const int b = ch[l].bits[idx[l].bits[j]];
      return fake_quantize(t.contiguous(), b, effective_group(static_cast<int>(t.size(1)), group));
    };
    if (name.find("q_proj") != std::string::npos) return fq(L.q->dense_weight().narrow(0, 0, kv * g * hd), kQ);
    if (name.find("k_proj") != std::string::npos) return fq(L.k->dense_weight().narrow(0, 0, kv * hd), kK);
    if (name.find("v_proj") != std::string::npos) return fq(L.v->dense_weight().narrow(0, 0, kv * hd), kV);
    if (name.find("o_proj") != std::string::npos) return fq(L.o->dense_weight().narrow(1, 0, kv * g * hd), kO);
    if (name.find("gate_proj") != std::string::npos) return fq(L.gate->dense_weight().narrow(0, 0, I), kGate);
    if (name.find("up_proj") != std::string::npos) return fq(L.up->dense_weight().narrow(0, 0, I), kUp);
    return fq(L.down->dense_weight().narrow(1, 0, I), kDown);
  };
  return build_llama(c, src, nullptr, at::kFloat, "subnet");
}

ModelConfig wide_tiny() {
  auto c = test::tiny_config();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  return c;
}

SearchSpace tiny_space() {
  return parse_search_space(
      R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.75,0.5],"bits":[2,3,4,8,16],
          "group_size":32,"width_multiple":16})",
      "space");
}

}  // namespace

// At one-hot choices the masked supernet's logits equal the sliced, fake-quantized subnet's.
TEST(Supernet, OneHotEqualsSlicedFakeQuantSubnet) {
  auto cfg = wide_tiny();
  auto model = test::random_llama(cfg, 11);
  auto reference = test::random_llama(cfg, 11);
  // A non-trivial importance order, applied to both.
  Importance imp;
  std::mt19937_64 rng(3);
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    std::vector<int64_t> kv(cfg.num_kv_heads), mlp(cfg.intermediate_size);
    std::iota(kv.begin(), kv.end(), 0);
    std::iota(mlp.begin(), mlp.end(), 0);
    std::shuffle(kv.begin(), kv.end(), rng);
    std::shuffle(mlp.begin(), mlp.end(), rng);
    imp.kv_order.push_back(kv);
    imp.mlp_order.push_back(mlp);
  }
  auto x = at::tensor(std::vector<int64_t>{1, 7, 3, 9, 22, 41, 5, 8}, at::kLong).unsqueeze(0);
  auto before = model->forward(x);
  permute_model(*model, imp);
  permute_model(*reference, imp);
  // Permuting heads and channels only reorders float32 sums: allow ~10 ulp of the largest logit
  // (|logit| <= 22 here, so 2.2e-5); a wrong permutation moves logits by O(1).
  const float tol = 1e-6f * before.abs().max().item<float>();
  EXPECT_LE((model->forward(x) - before).abs().max().item<float>(), tol) << "permutation changed the function";

  auto ch = make_choices(cfg, tiny_space(), true, true);
  Supernet net(*model, ch, test::monotone_lookup(), 32, 0, 0);
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<ChoiceIndex> idx;
    for (const auto& c : ch) {
      ChoiceIndex i;
      i.kv = rng() % c.kv.size();
      i.mlp = rng() % c.mlp.size();
      for (auto& b : i.bits) b = rng() % c.bits.size();
      idx.push_back(i);
    }
    if (trial == 0) idx = net.widest();
    net.set_fixed(idx);
    auto sub = sliced_subnet(*reference, ch, idx, 32);
    at::NoGradGuard ng;
    float diff = (model->forward(x) - sub->forward(x)).abs().max().item<float>();
    EXPECT_LE(diff, tol) << "trial " << trial;
    if (trial == 0) EXPECT_LE((model->forward(x) - before).abs().max().item<float>(), tol);
  }
}

// d(expected latency)/d(alpha) matches central finite differences.
TEST(Supernet, ExpectedLatencyGradientMatchesFiniteDifferences) {
  auto cfg = wide_tiny();
  auto model = test::random_llama(cfg, 2);
  Supernet net(*model, make_choices(cfg, tiny_space(), true, true), test::monotone_lookup(), 32, 0, 0);
  auto params = net.arch_parameters();
  {
    at::NoGradGuard ng;
    for (auto& p : params) p.copy_(at::randn(p.sizes()));
  }
  auto e = net.expected_latency_ms();
  e.backward();
  for (size_t i = 0; i < params.size(); i += 3) {
    for (int64_t k = 0; k < params[i].numel(); ++k) {
      const double h = 1e-2;
      double ep, em;
      {
        at::NoGradGuard ng;
        params[i][k] += h;
        ep = net.expected_latency_ms().item<double>();
        params[i][k] -= 2 * h;
        em = net.expected_latency_ms().item<double>();
        params[i][k] += h;
      }
      const double fd = (ep - em) / (2 * h), g = params[i].grad()[k].item<double>();
      EXPECT_NEAR(g, fd, 1e-3 * std::max(1.0, std::abs(fd)) + 1e-5) << "param " << i << " entry " << k;
    }
  }
  // The exact latency of a discrete arch equals the expectation at a one-hot distribution.
  auto idx = net.fastest();
  EXPECT_LT(net.latency_ms(idx), net.latency_ms(net.widest()));
}

// ---- Whole-search tests on stories260K (skipped without the shared folder): search_run.h --------

std::vector<ChoiceIndex> indices_of(const Arch& a, const std::vector<LayerChoices>& ch) {
  std::vector<ChoiceIndex> out;
  for (size_t l = 0; l < ch.size(); ++l) {
    ChoiceIndex c;
    c.kv = std::find(ch[l].kv.begin(), ch[l].kv.end(), a.layers[l].kv_heads) - ch[l].kv.begin();
    c.mlp = std::find(ch[l].mlp.begin(), ch[l].mlp.end(), a.layers[l].mlp_channels) - ch[l].mlp.begin();
    for (int j = 0; j < kNumLinears; ++j)
      c.bits[j] = std::find(ch[l].bits.begin(), ch[l].bits.end(), a.layers[l].bits[j]) - ch[l].bits.begin();
    out.push_back(c);
  }
  return out;
}

TEST_F(SearchRun, HugeLambdaEndsAtFastestArchitecture) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/fast";
  auto c = config(R"("steps":30,"arch_lr":0.3,"lambda":1e4,"distill":true)", R"({"fraction":0.2})");
  auto r = run_search(c, o);
  ASSERT_FALSE(r.interrupted);
  // Every layer at the narrowest widths and the fewest bits (strictly cheapest in this LUT).
  for (const auto& l : r.arch.layers) {
    EXPECT_EQ(l.kv_heads, 2);
    EXPECT_EQ(l.mlp_channels, 96);
    for (int b : l.bits) EXPECT_EQ(b, 2);
  }
  EXPECT_NEAR(r.predicted_ms, r.fastest_ms, 1e-6 * r.fastest_ms);  // float32 latency tables
  EXPECT_TRUE(file_exists(o.out_dir + "/arch.json"));
  EXPECT_TRUE(file_exists(o.out_dir + "/search_log.jsonl"));
}

TEST_F(SearchRun, ZeroLambdaEndsAtWidest16Bit) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/wide";
  auto r = run_search(
      config(R"("steps":150,"arch_lr":0.5,"lambda":0,"distill":true,"tau_start":1.0,"tau_end":1.0,"fit_target":false)"), o);
  EXPECT_EQ(r.fit_changes, 0);
  for (size_t i = 0; i < r.arch.layers.size(); ++i) {
    const auto& l = r.arch.layers[i];
    EXPECT_EQ(l.kv_heads, 4);
    EXPECT_EQ(l.mlp_channels, 172);
    for (int j = 0; j < kNumLinears; ++j) EXPECT_EQ(l.bits[j], 16) << "layer " << i << " " << kLinearNames[j] << " " << r.arch.alphas_json.substr(0, 0);
  }
  if (HasFailure()) std::cerr << r.arch.alphas_json << "\n";
  EXPECT_NEAR(r.valid_ppl, r.original_valid_ppl, 1e-4 * r.original_valid_ppl);  // the original function
}

// The same run with fit_target: the widest argmax misses the 0.5 target; the greedy repair brings
// the LUT prediction under it.
TEST_F(SearchRun, FitTargetRepairsAnArgmaxThatMissesTheTarget) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/fit";
  auto r = run_search(config(R"("steps":40,"arch_lr":0.5,"lambda":0,"distill":true,"tau_start":1.0,"tau_end":1.0)"), o);
  EXPECT_GT(r.argmax_predicted_ms, r.target_ms);
  EXPECT_GT(r.fit_changes, 0);
  EXPECT_LE(r.predicted_ms, r.target_ms);
  auto s = nlohmann::json::parse(read_text_file(o.out_dir + "/summary.json"));
  EXPECT_EQ(s["fit_target_changes"].get<int>(), r.fit_changes);
  EXPECT_NEAR(s["argmax_predicted_ms"].get<double>(), r.argmax_predicted_ms, 1e-9);
}

// The same distributions discretized by the knapsack (its optimality: test_knapsack.cpp) instead
// of argmax + repair: another architecture, within the target, in joint and in sequential mode
// (whose phase-1 widths are fixed the same way).
TEST_F(SearchRun, KnapsackDiscretizationMeetsTheTarget) {
  const std::string sched = R"("steps":40,"arch_lr":0.5,"lambda":0,"distill":true,"tau_start":1.0,"tau_end":1.0)";
  SearchOptions a;
  a.progress = false;
  a.out_dir = dir() + "/repair";
  const auto repaired = run_search(config(sched), a);
  SearchOptions b = a;
  b.out_dir = dir() + "/knapsack";
  auto ck = config(sched);
  ck.discretize = "knapsack";
  const auto k = run_search(ck, b);
  EXPECT_LE(k.predicted_ms, k.target_ms);
  EXPECT_GT(k.fit_changes, 0);  // the widest argmax misses the 0.5 target
  auto s = nlohmann::json::parse(read_text_file(b.out_dir + "/summary.json"));
  EXPECT_EQ(s["discretize"], "knapsack");
  // Same seed and steps: the same distributions; only the discretization differs.
  EXPECT_EQ(k.arch.alphas_json, repaired.arch.alphas_json);
  EXPECT_NE(arch_to_json(k.arch), arch_to_json(repaired.arch));

  SearchOptions c = a;
  c.out_dir = dir() + "/knapsack-seq";
  auto cs = config(R"("steps":10,"arch_lr":0.2,"lambda":5)");
  cs.mode = "sequential";
  cs.discretize = "knapsack";
  const auto r = run_search(cs, c);
  EXPECT_LE(r.predicted_ms, r.target_ms);
}

// target.relative_to uniform:B: the target is a fraction of uniform B-bit's LUT latency (the plain
// quantization a searched model should beat at equal latency), not of the original's.
TEST_F(SearchRun, TargetRelativeToUniformBits) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/relative";
  auto c = config(R"("steps":1,"arch_lr":0,"distill":true)", R"({"relative_to":"uniform:4","fraction":0.9})");
  c.discretize = "knapsack";
  const auto r = run_search(c, o);
  const LatencyTable lut = LatencyTable::load(c.lut);
  const ModelConfig base = load_hf_config(stories() + "/config.json");
  const double u4 = lut.predict_ms(uniform_arch(base, 4, 32), 1);
  EXPECT_NEAR(r.target_ms, 0.9 * u4, 1e-9 * u4);
  EXPECT_LT(r.target_ms, 0.9 * r.original_ms);  // not the original's fraction
  EXPECT_LE(r.predicted_ms, r.target_ms);
}

// space.lm_head_bits: the lm_head's bits are a choice. One knapsack per lm_head width at the target
// less that head's LUT cost; each candidate scored with its head fake-quantized. A target only a
// 4-bit lm_head reaches gets one (and meets it); a loose one keeps the lowest valid perplexity.
TEST_F(SearchRun, LmHeadBitsAreAChoice) {
  const std::string space =
      R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.5],"bits":[2,4,16],"group_size":32,
          "lm_head_bits":[4,16]})";
  const std::string sched = R"("steps":0,"distill":true,"init":"sensitivity","discretize":"knapsack")";
  const ModelConfig base = load_hf_config(stories() + "/config.json");
  const LatencyTable lut = LatencyTable::load(config(sched, R"({"fraction":0.5})", space).lut);
  // The fastest architecture (half widths, 2 bits) with each lm_head.
  Arch fastest = uniform_arch(base, 2, 32);
  const SearchSpace sp = parse_search_space(space, "s");
  for (size_t l = 0; l < fastest.layers.size(); ++l)
    fastest.layers[l].kv_heads = sp.kv_choices(base, l).back(), fastest.layers[l].mlp_channels = sp.mlp_choices(base, l).back();
  fastest.lm_head_bits = 16;
  const double f16 = lut.predict_ms(fastest, 1);
  fastest.lm_head_bits = 4;
  const double f4 = lut.predict_ms(fastest, 1);
  ASSERT_LT(f4, f16);
  // predict_ms prices the 4-bit head by its own entry, in place of the table's 16-bit one.
  EXPECT_NEAR(f16 - f4, (lut.linear_us(512, 64, 16, 1) - lut.linear_us(512, 64, 4, 1)) / 1000, 1e-9);

  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/head-tight";
  const double tight = 0.5 * (f4 + f16);
  const auto r = run_search(config(sched, fmt::format(R"({{"ms":{}}})", tight), space), o);
  EXPECT_EQ(r.arch.lm_head_bits, 4);
  EXPECT_LE(r.predicted_ms, tight * (1 + 1e-12));
  EXPECT_NEAR(r.predicted_ms, lut.predict_ms(r.arch, 1), 1e-9);
  for (const auto& k : r.candidates) EXPECT_EQ(k.lm_head_bits, 4) << "a 16-bit head cannot meet the target";
  EXPECT_EQ(read_arch(o.out_dir + "/arch.json").lm_head_bits, 4);
  EXPECT_EQ(nlohmann::json::parse(read_text_file(o.out_dir + "/summary.json"))["lm_head_bits"], 4);

  o.out_dir = dir() + "/head-loose";
  const auto q = run_search(config(sched, R"({"fraction":0.9})", space), o);
  std::set<int> heads;
  double best = 1e300;
  for (const auto& k : q.candidates) heads.insert(k.lm_head_bits), best = std::min(best, k.valid_ppl);
  EXPECT_EQ(heads, (std::set<int>{4, 16}));
  for (const auto& k : q.candidates)
    if (k.chosen) {
      EXPECT_EQ(k.valid_ppl, best);
      EXPECT_EQ(k.lm_head_bits, q.arch.lm_head_bits);
      EXPECT_EQ(k.valid_ppl, q.valid_ppl);
    }
  EXPECT_LE(q.predicted_ms, q.target_ms * (1 + 1e-12));

  // Without the LUT's own lm_head among the choices, or without the knapsack: one-line errors.
  auto parse_error = [](const std::string& lut_settings, const std::string& schedule) {
    return test::error_of([&] {
      parse_search_config(R"({"model":"m","space":{"lm_head_bits":[4,16]},"lut_settings":)" + lut_settings +
                              R"(,"schedule":)" + schedule + "}",
                          "c.json", "/");
    });
  };
  EXPECT_EQ(parse_error(R"({"lm_head_bits":16})", R"({"discretize":"knapsack"})"), "");
  EXPECT_NE(parse_error(R"({"lm_head_bits":8})", R"({"discretize":"knapsack"})")
                .find("c.json.lut_settings.lm_head_bits: 8 is not one of space.lm_head_bits [4, 16]"),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"lm_head_bits":16})", R"({"discretize":"argmax"})").find("needs \"discretize\""),
            std::string::npos);
  EXPECT_NE(parse_error(R"({"lm_head_bits":16,"repeats":5})", R"({"discretize":"knapsack"})")
                .find("c.json.lut_settings.repeats: 5 (expected 20 to 100000"),
            std::string::npos);
}

// A search without a table measures its own (OUT/lut.json) with lut_settings, repeats included.
TEST_F(SearchRun, OwnTableTakesTheConfiguredRepeats) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/own-lut";
  SearchConfig c = config(R"("steps":0)", R"({"fraction":0.9})");
  c.lut.clear();
  c.lut_context = 16;
  c.lut_repeats = 21;
  run_search(c, o);
  const auto lut = nlohmann::json::parse(read_text_file(o.out_dir + "/lut.json"));
  EXPECT_EQ(lut["build"]["repeats"].get<int>(), 21);
  EXPECT_EQ(lut["context"].get<int>(), 16);
  EXPECT_EQ(parse_search_config(R"({"model":"m","lut_settings":{"repeats":200}})", "c.json", "/").lut_repeats, 200);
}

// The uniform-bits architectures that meet the target are scored beside the knapsack's answers, so the
// search never returns an architecture its own score puts below plain uniform quantization. At
// uniform 4-bit's table time: uniform 2- and 4-bit are candidates (priced as the table prices them),
// uniform 16-bit is not (it misses), and the answer scores no worse than uniform 4-bit.
TEST_F(SearchRun, UniformArchitecturesAreScoredCandidates) {
  const std::string space = R"({"kv_group_fractions":[1.0,0.5],"mlp_width_fractions":[1.0,0.5],"bits":[2,4,16],"group_size":32})";
  const std::string sched =
      R"("steps":0,"distill":true,"init":"sensitivity","discretize":"knapsack","knapsack_width_weights":[1,1e6])";
  const ModelConfig base = load_hf_config(stories() + "/config.json");
  const LatencyTable lut = LatencyTable::load(config(sched, R"({"fraction":0.5})", space).lut);
  const double u4 = lut.predict_ms(uniform_arch(base, 4, 32), 1), u2 = lut.predict_ms(uniform_arch(base, 2, 32), 1);
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/uniform-candidates";
  const auto r = run_search(config(sched, fmt::format(R"({{"ms":{}}})", u4 * (1 + 1e-9)), space), o);
  std::map<int, SearchResult::Candidate> uniform;
  for (const auto& k : r.candidates) {
    if (!k.uniform_bits) continue;
    EXPECT_EQ(uniform.count(k.uniform_bits), 0u) << "an architecture is scored once (lm_head not searched)";
    uniform[k.uniform_bits] = k;
  }
  ASSERT_EQ(uniform.size(), 2u) << "uniform 2- and 4-bit meet the target, 16-bit does not";
  EXPECT_NEAR(uniform[4].predicted_ms, u4, 1e-6 * u4);
  EXPECT_NEAR(uniform[2].predicted_ms, u2, 1e-6 * u2);
  EXPECT_EQ(uniform[4].width_cuts, 0);
  EXPECT_GT(uniform[4].valid_ppl, 0);
  EXPECT_LE(r.valid_ppl, uniform[4].valid_ppl);
  EXPECT_LE(r.valid_ppl, uniform[2].valid_ppl);
  EXPECT_LE(r.predicted_ms, r.target_ms);
  const auto s = nlohmann::json::parse(read_text_file(o.out_dir + "/summary.json"));
  int listed = 0;
  for (const auto& k : s["knapsack_candidates"]) listed += k["uniform_bits"].get<int>() != 0;
  EXPECT_EQ(listed, 2);
  // An added one has width weight 0; a knapsack answer that is uniform keeps its weight.
  for (const auto& [b, k] : uniform) EXPECT_TRUE(k.width_weight == 0 || k.width_weight == 1 || k.width_weight == 1e6) << b;
  EXPECT_EQ(uniform[2].width_weight, 0);  // no knapsack answer near the target is uniform 2-bit
  // The chosen uniform candidate is exported as that uniform architecture.
  if (uniform[4].chosen)
    for (const auto& l : r.arch.layers)
      for (int b : l.bits) EXPECT_EQ(b, 4);
}

// data.sources fewshot:TASK: the task's few-shot split (here a synthetic ARC-Easy Dev file) is
// text the search scores on, mixed with a text source; a missing split is one line naming the task.
TEST_F(SearchRun, FewshotSourcesFeedTheSearch) {
  const std::string data = dir() + "/fewshot-data";
  make_dirs(data + "/arc_easy");
  std::string dev;
  for (int i = 0; i < 80; ++i)
    dev += fmt::format(R"({{"question":{{"stem":"Which number comes after {}?","choices":[{{"text":"{}","label":"A"}},{{"text":"{}","label":"B"}}]}},"answerKey":"{}"}})",
                       i, i + 1, i + 2, "A") + "\n";
  write_file_atomic(data + "/arc_easy/ARC-Easy-Dev.jsonl", dev);
  const auto [o, c] = prior_knapsack("fewshot-text", "0.6");
  const auto plain = run_search(c, o);
  SearchOptions of = o;
  of.out_dir = dir() + "/fewshot-mixed";
  SearchConfig cf = c;
  cf.data_sources.insert(cf.data_sources.begin(), "fewshot:arc_easy");
  cf.data_dir = data;
  const auto mixed = run_search(cf, of);
  EXPECT_LE(mixed.predicted_ms, mixed.target_ms);
  EXPECT_GT(mixed.original_valid_ppl, 0);
  EXPECT_NE(mixed.original_valid_ppl, plain.original_valid_ppl) << "the few-shot examples are in the data";
  cf.data_dir = dir() + "/no-such-data";
  of.out_dir = dir() + "/fewshot-missing";
  EXPECT_NE(test::error_of([&] { run_search(cf, of); }).find("arc_easy: no few-shot split found"), std::string::npos);
}

// schedule.steps 0: no gradient step; the knapsack runs on the sensitivity prior as it is, which is
// what one step at arch_lr 0 gives too.
TEST_F(SearchRun, ZeroStepsDiscretizesTheInitialLogits) {
  const auto [o, c] = prior_knapsack("zero-steps", "0.6");
  const auto r = run_search(c, o);
  EXPECT_EQ(r.steps_done, 0);
  EXPECT_LE(r.predicted_ms, r.target_ms);
  EXPECT_EQ(read_text_file(o.out_dir + "/search_log.jsonl"), "");
  SearchOptions o1 = o;
  o1.out_dir = dir() + "/one-step-lr0";
  o1.sensitivity_cache = o.out_dir + "/sensitivity.json";  // the same measurement
  auto c1 = config(R"("steps":1,"arch_lr":0,"distill":true,"init":"sensitivity")", R"({"fraction":0.6})");
  c1.discretize = "knapsack";
  const auto r1 = run_search(c1, o1);
  EXPECT_EQ(arch_to_json(r.arch), arch_to_json(r1.arch));
}

// schedule.knapsack_width_weights: one knapsack per weight, each distinct answer scored on the
// valid split, the lowest perplexity kept. The chosen candidate is what a run with its weight alone
// returns (same architecture, same valid perplexity), and every candidate meets the target.
TEST_F(SearchRun, KnapsackCandidatesKeepTheBestValidPerplexity) {
  auto [o, c] = prior_knapsack("candidates", "0.5");
  c.knapsack_width_weights = {1.0, 0.001, 1e6};  // the best first: a "keep the last" bug fails
  const auto r = run_search(c, o);
  ASSERT_GE(r.candidates.size(), 2u) << "the test needs a target where the weights disagree; cuts "
                                      << r.candidates[0].width_cuts << " ms " << r.candidates[0].predicted_ms;
  size_t chosen = 0, n_chosen = 0;
  for (size_t i = 0; i < r.candidates.size(); ++i) {
    const auto& k = r.candidates[i];
    EXPECT_LE(k.predicted_ms, r.target_ms * (1 + 1e-12));
    EXPECT_GT(k.valid_ppl, 0);
    if (k.chosen) chosen = i, ++n_chosen;
  }
  ASSERT_EQ(n_chosen, 1u);
  for (const auto& k : r.candidates) EXPECT_LE(r.candidates[chosen].valid_ppl, k.valid_ppl);
  EXPECT_DOUBLE_EQ(r.valid_ppl, r.candidates[chosen].valid_ppl);
  EXPECT_NEAR(r.predicted_ms, r.candidates[chosen].predicted_ms, 1e-9);
  // Width weight 0.001 makes cuts nearly free: it cuts more than the plain knapsack.
  EXPECT_GT(r.candidates[1].width_cuts, r.candidates[0].width_cuts);
  auto s = nlohmann::json::parse(read_text_file(o.out_dir + "/summary.json"));
  ASSERT_EQ(s["knapsack_candidates"].size(), r.candidates.size());
  EXPECT_TRUE(s["knapsack_candidates"][chosen]["chosen"].get<bool>());

  SearchOptions o1 = o;
  o1.out_dir = dir() + "/candidate-alone";
  o1.sensitivity_cache = o.out_dir + "/sensitivity.json";
  auto c1 = c;
  c1.knapsack_width_weights = {r.candidates[chosen].width_weight};
  const auto r1 = run_search(c1, o1);
  EXPECT_EQ(arch_to_json(r1.arch), arch_to_json(r.arch));
  EXPECT_NEAR(r1.valid_ppl, r.valid_ppl, 1e-9 * r.valid_ppl);
}

// schedule.sensitivity_passes 2: the KL measured again around the first answer; the second answer
// is kept only when its valid perplexity is lower, so the result is never worse than one pass's.
TEST_F(SearchRun, SensitivityPassesNeverWorsenTheValidPerplexity) {
  auto [o, c] = prior_knapsack("one-pass", "0.5");
  const auto r1 = run_search(c, o);
  SearchOptions o2 = o;
  o2.out_dir = dir() + "/two-passes";
  o2.sensitivity_cache = o.out_dir + "/sensitivity.json";
  c.sensitivity_passes = 2;
  const auto r2 = run_search(c, o2);
  ASSERT_EQ(r2.passes.size(), 1u);
  EXPECT_EQ(r2.passes[0].pass, 2);
  EXPECT_LE(r2.valid_ppl, r1.valid_ppl * (1 + 1e-12));
  EXPECT_LE(r2.predicted_ms, r2.target_ms);
  if (r2.passes[0].kept) {
    EXPECT_LT(r2.valid_ppl, r1.valid_ppl);
    EXPECT_NE(arch_to_json(r2.arch), arch_to_json(r1.arch));
  } else {
    EXPECT_EQ(arch_to_json(r2.arch).substr(0, 200), arch_to_json(r1.arch).substr(0, 200));
    EXPECT_DOUBLE_EQ(r2.valid_ppl, r1.valid_ppl);
  }
  EXPECT_TRUE(file_exists(o2.out_dir + "/sensitivity-pass2.json"));
  auto s = nlohmann::json::parse(read_text_file(o2.out_dir + "/summary.json"));
  EXPECT_EQ(s["sensitivity_passes"].size(), 1u);
  // Around an architecture, its own options get its KL (not 0): the first pass's file has zeros there.
  const auto k2 = nlohmann::json::parse(read_text_file(o2.out_dir + "/sensitivity-pass2.json"));
  EXPECT_GT(k2["layers"][0]["bits_q"]["kl"][2].get<double>(), 0.0) << k2["layers"][0].dump();
}

// schedule.seed seeds the Gumbel draws: with text data and frozen weights nothing else depends on it,
// so two seeds end at different logits and one seed twice at the same ones.
TEST_F(SearchRun, SeedSeedsTheGumbelDraws) {
  auto run = [&](uint64_t seed, const std::string& name) {
    SearchOptions o;
    o.progress = false;
    o.out_dir = dir() + "/" + name;
    auto c = config(R"("steps":4,"arch_lr":0.1,"distill":true)");
    c.seed = seed;
    return run_search(c, o).arch.alphas_json;
  };
  const std::string a = run(0, "seed0"), b = run(7, "seed7"), a2 = run(0, "seed0-again");
  EXPECT_EQ(a, a2);
  EXPECT_NE(a, b);
}

// A run stopped at a random step and resumed ends exactly like an uninterrupted run.
TEST_F(SearchRun, ResumeAfterStopIsIdentical) {
  const std::string sched = R"("steps":16,"arch_lr":0.1,"lambda":5,"checkpoint_every":5,"lora_rank":2,"hard":true)";
  SearchOptions a;
  a.progress = false;
  a.out_dir = dir() + "/uninterrupted";
  auto full = run_search(config(sched), a);
  std::mt19937_64 rng(::getpid());
  const int64_t stop_at = 1 + rng() % 14;
  SearchOptions b = a;
  b.out_dir = dir() + "/interrupted";
  b.on_step = [stop_at](int64_t step) {
    if (step == stop_at) request_search_stop();
  };
  auto part = run_search(config(sched), b);
  ASSERT_TRUE(part.interrupted) << "stop at " << stop_at;
  EXPECT_EQ(part.steps_done, stop_at);
  b.on_step = nullptr;
  b.resume = true;
  auto rest = run_search(config(sched), b);
  ASSERT_FALSE(rest.interrupted);
  EXPECT_EQ(arch_to_json(rest.arch), arch_to_json(full.arch)) << "stopped at step " << stop_at;
  EXPECT_EQ(read_text_file(b.out_dir + "/arch.json"), read_text_file(a.out_dir + "/arch.json"));
}

TEST_F(SearchRun, SequentialModeRunsBothPhases) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/seq";
  auto c = config(R"("steps":10,"arch_lr":0.2,"lambda":5)");
  c.mode = "sequential";
  auto r = run_search(c, o);
  EXPECT_EQ(r.steps_done, 10);
  auto log = read_text_file(o.out_dir + "/search_log.jsonl");
  EXPECT_NE(log.find("\"phase\":1"), std::string::npos);
  EXPECT_NE(log.find("\"phase\":2"), std::string::npos);
}

// Data-free calibration (no sources): the model samples its own text on the runtime engine,
// seeded, so two runs see the same data and log the same steps.
TEST_F(SearchRun, DataFreeCalibrationIsSeededAndRuns) {
  std::string logs[2];
  for (int i = 0; i < 2; ++i) {
    SearchOptions o;
    o.progress = false;
    o.out_dir = dir() + "/datafree" + std::to_string(i);
    auto c = config(R"("steps":3,"arch_lr":0.2,"lambda":5)");
    c.data_sources.clear();
    auto r = run_search(c, o);
    EXPECT_EQ(r.steps_done, 3);
    EXPECT_TRUE(std::isfinite(r.valid_ppl));
    logs[i] = read_text_file(o.out_dir + "/search_log.jsonl");
  }
  EXPECT_FALSE(logs[0].empty());
  EXPECT_EQ(logs[0], logs[1]);
}

TEST_F(SearchRun, BadConfigsGiveOneClearError) {
  auto err = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(err([] { parse_search_config(R"({"model":"m","shedule":{}})", "c.json", "/"); }).find("unknown key 'shedule'"),
            std::string::npos);
  EXPECT_NE(err([] { parse_search_config(R"({"model":"m","schedule":{"steps":"ten"}})", "c.json", "/"); })
                .find("schedule.steps: wrong type"),
            std::string::npos);
  EXPECT_NE(err([] { parse_search_config(R"({"model":"m","mode":"both"})", "c.json", "/"); }).find("mode"),
            std::string::npos);
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/bad";
  EXPECT_NE(err([&] { run_search(config(R"("steps":2)", R"({"ms":1e-6})"), o); }).find("below the fastest"),
            std::string::npos);
  // A LUT made for another model.
  auto other = test::tiny_config();
  LutOptions lo;
  lo.tokens = {1};
  lo.repeats = 1;
  lo.progress = false;
  lo.min_sample_us = 0;
  auto c = config(R"("steps":2)");
  write_file_atomic(dir() + "/other_lut.json", build_lut_json(other, c.space, lo));
  c.lut = dir() + "/other_lut.json";
  EXPECT_NE(err([&] { run_search(c, o); }).find("hash"), std::string::npos);
}

// schedule.init "sensitivity": the logits start from each option's KL alone; with no steps that
// move them (arch_lr 0) the argmax is the widest 16-bit architecture (every other option has a
// positive KL, so a lower start), and OUT/sensitivity.json holds the measured values.
TEST_F(SearchRun, SensitivityInitStartsFromTheKlOfEachOption) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/sens";
  auto r = run_search(
      config(R"("steps":2,"arch_lr":0,"lambda":0,"distill":true,"fit_target":false,"init":"sensitivity","init_scale":0.5)"), o);
  for (const auto& l : r.arch.layers) {
    EXPECT_EQ(l.kv_heads, 4);
    EXPECT_EQ(l.mlp_channels, 172);
    for (int j = 0; j < kNumLinears; ++j) EXPECT_EQ(l.bits[j], 16);
  }
  const auto s = nlohmann::json::parse(read_text_file(o.out_dir + "/sensitivity.json"));
  ASSERT_EQ(s["layers"].size(), r.arch.layers.size());
  for (const auto& l : s["layers"]) {
    const auto kl = l["bits_down"]["kl"].get<std::vector<double>>();  // bits 2, 4, 16
    EXPECT_GT(kl[0], kl[1]);
    EXPECT_GT(kl[1], 0.0);
    EXPECT_EQ(kl[2], 0.0);
  }
  // The logits are -KL / (0.5 T): 2-bit options start far below 4-bit ones.
  const auto a = nlohmann::json::parse(r.arch.alphas_json);
  const auto p = a[0]["bits_down"]["p"].get<std::vector<double>>();
  EXPECT_LT(p[0], p[1]);
  EXPECT_LT(p[1], p[2]);
  EXPECT_THROW(config(R"("init":"magic")"), Error);
  EXPECT_THROW(config(R"("init_scale":0)"), Error);
}

// --sensitivity FILE: the first search measures and writes it, the next reads it (same logits),
// a file of other choices is measured anew, a corrupt one is an error naming it.
TEST_F(SearchRun, SensitivityCacheIsSharedBetweenSearches) {
  const std::string cache = dir() + "/shared_sensitivity.json";
  auto run = [&](const std::string& out, const std::string& extra = "") {
    SearchOptions o;
    o.progress = false;
    o.out_dir = dir() + "/" + out;
    o.sensitivity_cache = cache;
    return run_search(config(R"("steps":2,"arch_lr":0,"distill":true,"init":"sensitivity")" + extra), o);
  };
  const auto a = run("cache_a");
  ASSERT_TRUE(file_exists(cache));
  const std::string first = read_text_file(cache);
  const auto b = run("cache_b", R"(,"seed":7)");  // other data sampling order: the cache still applies
  EXPECT_EQ(read_text_file(cache), first);
  EXPECT_EQ(read_text_file(dir() + "/cache_b/sensitivity.json"), first);
  EXPECT_EQ(a.arch.alphas_json, b.arch.alphas_json);
  write_file_atomic(cache, "{not json");
  EXPECT_THROW(run("cache_c"), Error);
}
