// run_bench (latency/bench.h) on a tiny synthetic model: both engines, the LUT comparison, the JSON.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/timing.h"
#include "llmc/latency/bench.h"
#include "llmc/latency/lut.h"
#include "llmc_kernels/qgemm.h"
#include "llmc/runtime/engine.h"
#include "llmc/runtime/profile.h"
#include "synthetic.h"

using namespace llmc;
using json = nlohmann::ordered_json;

namespace {

BenchOptions tiny_options() {
  BenchOptions o;
  o.prompt_tokens = 4;
  o.new_tokens = 3;
  o.repeats = 3;
  o.warmup = 1;
  return o;
}

// What holds for either engine.
void check_common(const BenchResult& r, const BenchOptions& o) {
  EXPECT_EQ(r.prompt_tokens, o.prompt_tokens);
  EXPECT_EQ(r.new_tokens, o.new_tokens);
  EXPECT_EQ(r.repeats, o.repeats);
  EXPECT_GE(r.threads, 1);
  EXPECT_FALSE(r.isa.empty());
  ASSERT_EQ(r.prefill_s.size(), static_cast<size_t>(o.repeats));  // warmup not recorded
  ASSERT_EQ(r.decode_s.size(), static_cast<size_t>(o.repeats));
  for (double s : r.prefill_s) EXPECT_GT(s, 0);
  for (double s : r.decode_s) EXPECT_GT(s, 0);
  EXPECT_DOUBLE_EQ(r.prefill_tokens_per_s, o.prompt_tokens / median(r.prefill_s));
  EXPECT_DOUBLE_EQ(r.decode_tokens_per_s, o.new_tokens / median(r.decode_s));
  EXPECT_DOUBLE_EQ(r.decode_ms_per_token, 1000.0 * median(r.decode_s) / o.new_tokens);
}

using test::error_of;

// The tiny model's search space for the LUT tests: full widths, 4 or 16 bits.
SearchSpace tiny_space() {
  return parse_search_space(
      R"({"kv_group_fractions": [1.0], "mlp_width_fractions": [1.0], "bits": [4, 16], "group_size": 64,
          "width_multiple": 8})",
      "bench space");
}

// A LUT of the tiny model over tiny_space(), written to /tmp/llmc_test_bench_<tag>_<pid>.json.
std::string tiny_lut(const std::string& tag, const LutOptions& lo = test::fast_lut_options()) {
  const std::string path = "/tmp/llmc_test_bench_" + tag + "_" + std::to_string(::getpid()) + ".json";
  write_file_atomic(path, build_lut_json(test::tiny_config(), tiny_space(), lo));
  return path;
}

}  // namespace

TEST(Bench, TorchEngine) {
  auto model = test::random_llama(test::tiny_config());
  // A folder with one .safetensors file: model_file_bytes sums those.
  const std::string dir = "/tmp/llmc_test_bench_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  write_file_atomic(path_join(dir, "model.safetensors"), std::string(1000, 'x'));
  write_file_atomic(path_join(dir, "other.bin"), std::string(77, 'x'));
  BenchOptions o = tiny_options();
  o.model_path = dir;
  const BenchResult r = run_bench(*model, o);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(r.engine, "torch");
  EXPECT_EQ(r.model, dir);
  EXPECT_EQ(r.model_file_bytes, 1000);
  check_common(r, o);
  EXPECT_FALSE(r.predicted.has_value());

  // The JSON `bench --json` prints (scripts read these keys, in this order).
  const json j = json::parse(bench_to_json(r));
  std::vector<std::string> keys;
  for (const auto& [k, v] : j.items()) keys.push_back(k);
  const std::vector<std::string> want{"model",         "engine",         "threads",          "isa",
                                      "prefill_x_bits", "prompt_tokens", "new_tokens",     "repeats",          "prefill_tokens_per_s",
                                      "decode_tokens_per_s", "decode_ms_per_token", "prefill_s", "decode_s",
                                      "model_file_bytes", "loadavg_1min", "rss_bytes", "peak_rss_bytes",
                                      "predicted"};
  EXPECT_EQ(keys, want);
  EXPECT_TRUE(j["predicted"].is_null());
  EXPECT_EQ(j["prefill_x_bits"].get<int>(), kernels::prefill_x_bits_here());
  EXPECT_EQ(j["prompt_tokens"].get<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(j["decode_tokens_per_s"].get<double>(), r.decode_tokens_per_s);
  EXPECT_EQ(bench_to_text(r).rfind("model     " + dir + " (torch engine, ", 0), 0u);
}

TEST(Bench, RuntimeEngine) {
  auto base = test::random_llama(test::tiny_config());
  auto rt = make_runtime(*base);
  BenchOptions o = tiny_options();
  const BenchResult r = run_bench(*rt, o);
  EXPECT_EQ(r.engine, "runtime");
  check_common(r, o);
  EXPECT_EQ(r.weight_bytes_per_token, rt->engine().bytes_per_token());
  EXPECT_GT(r.weight_bytes_per_token, 0);
  EXPECT_EQ(r.tiled_copy_bytes, rt->engine().tiled_bytes());
  EXPECT_EQ(r.huge_page_bytes, rt->engine().huge_page_bytes());
  EXPECT_GE(r.huge_page_bytes, rt->engine().weights_on_huge_pages() ? r.tiled_copy_bytes : 0);
  // Resident memory (Linux /proc): the process holds at least the model's fp32 embedding, and its
  // peak is at least what it holds now.
  if (std::filesystem::exists("/proc/self/status")) {
    EXPECT_GT(r.rss_bytes, base->config().vocab_size * base->config().hidden_size * 4);
    EXPECT_GE(r.peak_rss_bytes, r.rss_bytes);
  }
  ASSERT_EQ(r.prefill_cpu_s.size(), static_cast<size_t>(o.repeats));
  for (double s : r.prefill_cpu_s) EXPECT_GE(s, 0);
  const json j = json::parse(bench_to_json(r));
  EXPECT_EQ(j["weight_bytes_per_token"].get<int64_t>(), rt->engine().bytes_per_token());
  EXPECT_EQ(j.contains("prefill_cpu_s"), r.threads == 1);
  // Same seed, same prompt: the decode is deterministic, only the timing differs.
  const BenchResult r2 = run_bench(*rt, o);
  EXPECT_EQ(r2.weight_bytes_per_token, r.weight_bytes_per_token);
}

TEST(Bench, LutComparison) {
  const auto cfg = test::tiny_config();
  const LutOptions lo = test::fast_lut_options();
  const std::string lut = tiny_lut("lut", lo);

  auto base = test::random_llama(cfg);
  BenchOptions o = tiny_options();  // 4 prompt tokens: the LUT has both decode and prefill
  o.lut_path = lut;
  // The LUT times the runtime engine: refused on the torch path, before measuring.
  EXPECT_NE(error_of([&] { run_bench(*base, o); }).find("--lut: the LUT times the runtime engine"), std::string::npos);

  auto rt = make_runtime(*base);
  const BenchResult r = run_bench(*rt, o);
  ASSERT_TRUE(r.predicted.has_value());
  const auto& p = *r.predicted;
  EXPECT_EQ(p.lut, lut);
  ASSERT_TRUE(p.decode_ms && p.prefill_ms);
  EXPECT_GT(p.decode_ms->predicted, 0);
  EXPECT_GT(p.prefill_ms->predicted, 0);
  EXPECT_DOUBLE_EQ(p.decode_ms->measured_over_predicted, p.decode_ms->measured / p.decode_ms->predicted);
  EXPECT_DOUBLE_EQ(*p.decode_ms->mean_context, 4 + (3 + 1) / 2.0);
  EXPECT_EQ(*p.decode_ms->lut_context, 16);
  const json j = json::parse(bench_to_json(r));
  EXPECT_EQ(j["predicted"]["lut_threads"].get<int>(), *p.lut_threads);
  EXPECT_EQ(j["predicted"]["decode_ms"]["lut_context"].get<int64_t>(), 16);
  EXPECT_NE(bench_to_text(r).find("LUT       prefill: predicted "), std::string::npos);
  // The prediction by part (the tiny model at 16 bits: every linear dense) adds up to it; the rest
  // of the measured time is "not in the LUT".
  for (const BenchComparison* c : {&*p.decode_ms, &*p.prefill_ms}) {
    ASSERT_EQ(c->parts_us.size(), 5u);
    EXPECT_EQ(c->parts_us[0].first, "linears 16-bit (dense)");
    EXPECT_EQ(c->parts_us.back().first, "not in the LUT");
    double sum = 0;
    for (size_t i = 0; i + 1 < c->parts_us.size(); ++i) {
      EXPECT_GT(c->parts_us[i].second, 0) << c->parts_us[i].first;
      sum += c->parts_us[i].second;
    }
    EXPECT_NEAR(sum, 1000.0 * c->predicted, 1e-9 * sum);
    EXPECT_NEAR(c->parts_us.back().second, 1000.0 * (c->measured - c->predicted), 1e-9 * sum);
  }
  EXPECT_EQ(j["predicted"]["decode_ms"]["parts_us"].size(), 5u);
  EXPECT_NE(bench_to_text(r).find("decode by part, of the measured time: linears 16-bit (dense) "), std::string::npos);

  // Neither decode (1) nor the prompt length in the LUT.
  o.prompt_tokens = 5;
  write_file_atomic(lut, build_lut_json(cfg, tiny_space(), [&] {
                      LutOptions l = lo;
                      l.tokens = {4};
                      return l;
                    }()));
  EXPECT_NE(error_of([&] { run_bench(*rt, o); }).find("neither 1 (decode) nor --prompt-tokens 5"), std::string::npos);
  std::filesystem::remove(lut);
}

// bench --profile: one more decode with every op timed. The tiny model at 16 bits runs, per layer,
// q|k|v (one stacked matrix), o, gate|up (stacked), down; five small ops (two norms, SwiGLU, two
// residual adds) and one attention; per token the embedding row and the head.
TEST(Bench, ProfileSplitsTheDecodeByOp) {
  const auto cfg = test::tiny_config();
  const std::string lut = tiny_lut("prof");
  auto base = test::random_llama(cfg);
  auto rt = make_runtime(*base);
  BenchOptions o = tiny_options();
  o.profile = true;
  EXPECT_NE(error_of([&] { run_bench(*base, o); }).find("bench --profile: times the runtime engine's ops"),
            std::string::npos);
  o.lut_path = lut;
  const BenchResult r = run_bench(*rt, o);
  const int64_t L = cfg.num_layers, H = cfg.hidden_size, I = cfg.intermediate_size;
  const int64_t qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * cfg.head_dim;
  const LatencyTable table = LatencyTable::load(lut);
  // A profile's rows by op; each layer linear called once a layer, next to the LUT's M-token entry.
  auto linear_rows = [&](const std::vector<ProfileRow>& profile, int64_t M) {
    std::map<std::string, const ProfileRow*> by_op;
    for (const ProfileRow& p : profile) by_op[p.op] = &p;
    for (const auto& [N, K] : std::vector<std::pair<int64_t, int64_t>>{{qkv, H}, {H, H}, {2 * I, H}, {H, I}}) {
      const std::string op = fmt::format("linear N={} K={} dense", N, K);
      EXPECT_TRUE(by_op.count(op)) << op;
      if (!by_op.count(op)) continue;
      EXPECT_DOUBLE_EQ(by_op[op]->calls, static_cast<double>(L)) << op;
      EXPECT_TRUE(by_op[op]->lut_us.has_value()) << op;
      if (by_op[op]->lut_us) EXPECT_DOUBLE_EQ(*by_op[op]->lut_us, table.linear_us(N, K, 16, M) * L) << op;
      EXPECT_EQ(by_op[op]->gbps.has_value(), M == 1) << op;  // weight GB/s: decode rows only
    }
    return by_op;
  };
  std::map<std::string, const ProfileRow*> rows = linear_rows(r.profile, 1);
  const LatencyParts parts = table.predict_parts(uniform_arch(cfg, 16, 64), 1);
  EXPECT_DOUBLE_EQ(rows.at("attention")->calls, static_cast<double>(L));
  EXPECT_DOUBLE_EQ(*rows.at("attention")->lut_us, parts.attention_us);
  EXPECT_DOUBLE_EQ(rows.at("norms, SwiGLU, residuals")->calls, 5.0 * L);
  EXPECT_DOUBLE_EQ(*rows.at("norms, SwiGLU, residuals")->lut_us, parts.layer_fixed_us);
  EXPECT_DOUBLE_EQ(rows.at("embedding, final norm, lm_head")->calls, 2.0);
  EXPECT_DOUBLE_EQ(*rows.at("embedding, final norm, lm_head")->lut_us, parts.model_fixed_us);
  ASSERT_EQ(r.profile.size(), 4u + 3u + 1u);
  EXPECT_EQ(r.profile.back().op, "outside the ops");
  // The rows add up to the profiled decode's wall time; linears come by decreasing time.
  double sum = 0;
  for (const ProfileRow& p : r.profile) sum += p.us;
  EXPECT_NEAR(sum, 1000.0 * r.profile_decode_ms, 1e-6 * sum);
  for (size_t i = 1; i < 4; ++i) EXPECT_GE(r.profile[i - 1].us, r.profile[i].us);
  // Each linear's read rate: its weight bytes (fp32 here) per token over its time.
  const std::string o_op = fmt::format("linear N={} K={} dense", H, H);
  ASSERT_TRUE(rows[o_op]->gbps.has_value());
  EXPECT_NEAR(*rows[o_op]->gbps, 4.0 * H * H * L / rows[o_op]->us / 1e3, 1e-9 * *rows[o_op]->gbps);
  EXPECT_FALSE(rows.at("attention")->gbps.has_value());
  const json j = json::parse(bench_to_json(r));
  EXPECT_EQ(j["profile"]["per_token"].size(), r.profile.size());
  EXPECT_EQ(j["profile"]["per_token"][0].contains("lut_us"), true);
  EXPECT_NE(bench_to_text(r).find("profile   one more decode, every op timed"), std::string::npos);
  // The prefill's profile (the median of five): the same ops, once per prefill of the 4-token
  // prompt, next to the LUT's 4-token entries (it has them), adding up to that prefill's wall time.
  ASSERT_EQ(r.prefill_profile.size(), r.profile.size());
  std::map<std::string, const ProfileRow*> prows = linear_rows(r.prefill_profile, 4);
  const LatencyParts pparts = table.predict_parts(uniform_arch(cfg, 16, 64), 4);
  EXPECT_DOUBLE_EQ(prows.at("attention")->calls, static_cast<double>(L));
  EXPECT_DOUBLE_EQ(*prows.at("attention")->lut_us, pparts.attention_us);
  EXPECT_DOUBLE_EQ(prows.at("norms, SwiGLU, residuals")->calls, 5.0 * L);
  EXPECT_DOUBLE_EQ(prows.at("embedding, final norm, lm_head")->calls, 2.0);
  double psum = 0;
  for (const ProfileRow& p : r.prefill_profile) psum += p.us;
  EXPECT_GT(r.profile_prefill_ms, 0.0);
  EXPECT_NEAR(psum, 1000.0 * r.profile_prefill_ms, 1e-6 * psum);
  EXPECT_EQ(j["profile"]["per_prefill"].size(), r.prefill_profile.size());
  EXPECT_DOUBLE_EQ(j["profile"]["prefill_ms"].get<double>(), r.profile_prefill_ms);
  EXPECT_NE(bench_to_text(r).find("profile   prefills of 4 tokens, every op timed, the median of 5"), std::string::npos);
  // A prompt length the LUT has no entries for: the prefill rows without LUT times, decode's kept.
  o.prompt_tokens = 3;
  const BenchResult r3 = run_bench(*rt, o);
  for (const ProfileRow& p : r3.prefill_profile) EXPECT_FALSE(p.lut_us.has_value()) << p.op;
  EXPECT_TRUE(r3.profile[0].lut_us.has_value());
  o.prompt_tokens = 4;
  // Timing changes nothing the engine computes, and without a profile no time is kept.
  auto& eng = rt->engine();
  auto c1 = eng.new_cache(1, 8), c2 = eng.new_cache(1, 8);
  const float* first = eng.decode(3, *c1);
  const std::vector<float> plain(first, first + cfg.vocab_size);
  rt::OpProfile prof;
  eng.set_profile(&prof);
  const float* timed = eng.decode(3, *c2);
  EXPECT_EQ(std::vector<float>(timed, timed + cfg.vocab_size), plain);
  eng.set_profile(nullptr);
  EXPECT_EQ(prof.groups.at("attention").calls, L);
  (void)eng.decode(4, *c2);
  EXPECT_EQ(prof.groups.at("attention").calls, L);
  std::filesystem::remove(lut);
}

// bench --bandwidth: the read-only probe at the run's threads and the decode's weight reads as % of it.
TEST(Bench, BandwidthProbe) {
  auto base = test::random_llama(test::tiny_config());
  auto rt = make_runtime(*base);
  BenchOptions o = tiny_options();
  o.bandwidth = true;
  const BenchResult r = run_bench(*rt, o);
  ASSERT_TRUE(r.bandwidth.has_value());
  const BenchBandwidth& b = *r.bandwidth;
  EXPECT_GE(b.probe_bytes, int64_t{256} << 20);  // past any last-level cache
  EXPECT_GE(b.probe_bytes, 4 * last_level_cache_bytes());
  EXPECT_GT(b.read_gbps, 0);
  EXPECT_GE(b.read_gbps, b.read_median_gbps);
  EXPECT_DOUBLE_EQ(b.decode_weight_gbps, r.weight_bytes_per_token * r.decode_tokens_per_s / 1e9);
  EXPECT_DOUBLE_EQ(b.decode_pct_of_read, 100.0 * b.decode_weight_gbps / b.read_gbps);
  const json j = json::parse(bench_to_json(r));
  EXPECT_DOUBLE_EQ(j["bandwidth"]["read_gbps"].get<double>(), b.read_gbps);
  EXPECT_NE(bench_to_text(r).find("memory    read-only probe "), std::string::npos);
  EXPECT_FALSE(json::parse(bench_to_json(run_bench(*rt, tiny_options()))).contains("bandwidth"));
}

// bench --versus: two runtime models timed in turn; each repeat's ratio is a / b of its own sums.
TEST(Bench, VersusTimesTwoModelsInTurn) {
  auto base = test::random_llama(test::tiny_config());
  auto a = make_runtime(*base);
  auto b = make_runtime(*base);
  BenchOptions o = tiny_options();
  o.model_path = "A";
  const BenchVersusResult r = run_bench_versus(*a, *b, "B", o);
  EXPECT_EQ(r.a, "A");
  EXPECT_EQ(r.b, "B");
  ASSERT_EQ(r.decode_ratios.size(), static_cast<size_t>(o.repeats));  // warmup not recorded
  ASSERT_EQ(r.a_decode_s.size(), static_cast<size_t>(o.repeats));
  for (int i = 0; i < o.repeats; ++i) {
    EXPECT_GT(r.a_decode_s[i], 0);
    EXPECT_GT(r.b_decode_s[i], 0);
    EXPECT_DOUBLE_EQ(r.decode_ratios[i], r.a_decode_s[i] / r.b_decode_s[i]);
    EXPECT_DOUBLE_EQ(r.prefill_ratios[i], r.a_prefill_s[i] / r.b_prefill_s[i]);
  }
  EXPECT_DOUBLE_EQ(r.decode_ratio, median(r.decode_ratios));
  EXPECT_DOUBLE_EQ(r.a_decode_ms_per_token, 1000.0 * median(r.a_decode_s) / o.new_tokens);
  const json j = json::parse(bench_versus_to_json(r));
  EXPECT_EQ(j["decode_ratios"].size(), static_cast<size_t>(o.repeats));
  EXPECT_DOUBLE_EQ(j["decode_ratio"].get<double>(), r.decode_ratio);
  EXPECT_NE(bench_versus_to_text(r).find("a / b"), std::string::npos);
  // Only runtime models, and none of the one-model options.
  EXPECT_NE(error_of([&] { run_bench_versus(*base, *b, "B", o); }).find("A runs on the torch engine"), std::string::npos);
  o.profile = true;
  EXPECT_NE(error_of([&] { run_bench_versus(*a, *b, "B", o); }).find("--profile"), std::string::npos);
}

// The second load order's repeats join with the sides swapped and the ratios inverted.
TEST(Bench, VersusMergesBothLoadOrders) {
  BenchVersusResult ab, ba;
  ab.a = ba.b = "A";
  ab.b = ba.a = "B";
  ab.prompt_tokens = ba.prompt_tokens = 4;
  ab.new_tokens = ba.new_tokens = 2;
  ab.repeats = 2, ba.repeats = 1;
  ab.a_decode_s = {2.0, 3.0}, ab.b_decode_s = {1.0, 1.0};
  ab.a_prefill_s = {1.0, 1.0}, ab.b_prefill_s = {2.0, 2.0};
  ba.a_decode_s = {1.0}, ba.b_decode_s = {4.0};  // b (= A) 4.0, a (= B) 1.0
  ba.a_prefill_s = {3.0}, ba.b_prefill_s = {1.0};
  const BenchVersusResult r = merge_load_orders(ab, ba);
  EXPECT_EQ(r.a, "A");
  EXPECT_EQ(r.repeats, 3);
  EXPECT_EQ(r.a_decode_s, (std::vector<double>{2.0, 3.0, 4.0}));
  EXPECT_EQ(r.b_decode_s, (std::vector<double>{1.0, 1.0, 1.0}));
  EXPECT_EQ(r.decode_ratios, (std::vector<double>{2.0, 3.0, 4.0}));
  EXPECT_DOUBLE_EQ(r.decode_ratio, 3.0);
  EXPECT_EQ(r.prefill_ratios, (std::vector<double>{0.5, 0.5, 1.0 / 3.0}));
  EXPECT_DOUBLE_EQ(r.a_decode_ms_per_token, 1000.0 * 3.0 / 2);
  ba.new_tokens = 3;
  EXPECT_NE(error_of([&] { merge_load_orders(ab, ba); }).find("same models"), std::string::npos);
}
