// Latency lookup table: enumeration, build, load, check, predict, and every way a LUT file can be bad.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/latency/lut.h"
#include "llmc/quant/quant.h"
#include "synthetic.h"
#include "cli_run.h"

using namespace llmc;
using json = nlohmann::json;

namespace {

LutOptions fast_options() { return test::fast_lut_options(); }

// A space with a per-layer override, so layers differ.
SearchSpace test_space() {
  return parse_search_space(R"({"kv_group_fractions": [1.0, 0.5], "mlp_width_fractions": [1.0, 0.5],
                                "bits": [2, 3, 4, 8, 16], "group_size": 64, "width_multiple": 8,
                                "layers": {"1": {"bits": [4, 16], "mlp_width_fractions": [0.75]}}})",
                            "test space");
}

using test::error_of;

// The shared LUT of the tiny model (built once: timing is the slow part).
const std::string& tiny_lut() {
  static const std::string text = build_lut_json(test::tiny_config(), test_space(), fast_options());
  return text;
}

using Tuple = std::tuple<int64_t, int64_t, int, int, int64_t>;  // N, K, bits, group, M

}  // namespace

// Every shape the space produces, enumerated here independently of lut_linear_shapes: by slicing
// the arch's linears layer by layer as the model would.
TEST(Lut, HasEveryShapeOfTheSpace) {
  const ModelConfig m = test::tiny_config();  // H 32, I 40, 4 heads, 2 KV heads, hd 8
  const SearchSpace s = test_space();
  std::set<Tuple> expect;
  for (int64_t l = 0; l < m.num_layers; ++l) {
    const std::vector<int64_t> kv = {2, 1};                                   // fractions 1, 0.5 of 2
    const std::vector<int64_t> mlp = l == 1 ? std::vector<int64_t>{32} : std::vector<int64_t>{40, 24};  // 0.75*40=30 -> 32; 0.5*40 -> 24 (x8)
    const std::vector<int> bits = l == 1 ? std::vector<int>{4, 16} : std::vector<int>{2, 3, 4, 8, 16};
    for (int b : bits)
      for (int64_t M : {1, 4}) {
        auto add = [&](int64_t N, int64_t K) { expect.insert({N, K, b, b == 16 ? 0 : effective_group(static_cast<int>(K), 64), M}); };
        for (int64_t h : kv) {
          add(h * 2 * 8, 32);          // q: 2 query heads per KV head
          add(h * 8, 32);              // k, v
          add(h * 2 * 8 + 2 * h * 8, 32);  // q|k|v stacked
          add(32, h * 2 * 8);          // o
        }
        for (int64_t w : mlp) {
          add(w, 32);
          add(2 * w, 32);  // gate|up stacked
          add(32, w);
        }
      }
  }
  std::set<Tuple> got;
  for (const auto& e : lut_linear_shapes(m, s, {4, 1})) got.insert({e.N, e.K, e.bits, e.group, e.M});
  EXPECT_EQ(got, expect);

  const LatencyTable t = LatencyTable::parse(tiny_lut(), "tiny.lut");
  EXPECT_EQ(t.num_linears(), expect.size());
  json j = json::parse(tiny_lut());
  std::set<Tuple> in_file;
  for (const auto& e : j["linears"])
    in_file.insert({e["N"].get<int64_t>(), e["K"].get<int64_t>(), e["bits"].get<int>(), e["group"].get<int>(),
                    e["M"].get<int64_t>()});
  EXPECT_EQ(in_file, expect);
  for (const auto& [N, K, b, g, M] : expect) EXPECT_GT(t.linear_us(N, K, b, M), 0.0);
  for (int64_t h : {1, 2})
    for (int64_t M : {1, 4}) EXPECT_GT(t.attention_us(h, M), 0.0);
  for (int64_t M : {1, 4}) {
    EXPECT_GT(t.layer_fixed_us(M), 0.0);
    EXPECT_NEAR(t.layer_fixed_us(M), t.layer_fixed_attn_us(M) + t.layer_fixed_mlp_us(M), 1e-9);
    EXPECT_GT(t.model_fixed_us(M), 0.0);
  }
  EXPECT_EQ(j["format"], "llmcompress-lut");
  EXPECT_EQ(j["version"], 3);
  EXPECT_EQ(j["lm_head_bits"], 16);
  EXPECT_EQ(j["shapes_hash"], shapes_hash(m, s));
  EXPECT_EQ(j["tokens"], json::parse("[1, 4]"));
  EXPECT_EQ(j["context"], 16);
  EXPECT_EQ(j["space"].dump(), json::parse(s.canonical_json()).dump());
  EXPECT_EQ(j["device"].get<std::string>().rfind("cpu (", 0), 0u);
  EXPECT_GE(j["threads"].get<int>(), 1);
  EXPECT_EQ(j["kernel_version"].get<std::string>().rfind(kLutKernelVersion, 0), 0u);
}

TEST(Lut, LoadsBackFromFileAndLooksUp) {
  const std::string path = "/tmp/llmc_lut_" + std::to_string(::getpid()) + ".json";
  write_file_atomic(path, tiny_lut());
  const LatencyTable t = LatencyTable::load(path);
  std::remove(path.c_str());
  const ModelConfig m = test::tiny_config();
  EXPECT_NO_THROW(t.check(m, test_space(), "search"));
  EXPECT_EQ(t.hash(), shapes_hash(m, test_space()));
  EXPECT_EQ(t.tokens(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ(t.model().hidden_size, 32);
  ASSERT_NE(t.find_linear_us(16, 32, 4, 1), nullptr);
  EXPECT_EQ(*t.find_linear_us(16, 32, 4, 1), t.linear_us(16, 32, 4, 1));
  EXPECT_EQ(t.find_linear_us(16, 32, 4, 2), nullptr);
  // Absent shapes name themselves and the file.
  std::string e = error_of([&] { t.linear_us(17, 32, 4, 1); });
  EXPECT_NE(e.find("N=17 K=32 bits=4 M=1"), std::string::npos) << e;
  EXPECT_NE(e.find(path), std::string::npos) << e;
  e = error_of([&] { t.attention_us(3, 1); });
  EXPECT_NE(e.find("kv_heads=3 M=1"), std::string::npos) << e;
  e = error_of([&] { t.model_fixed_us(7); });
  EXPECT_NE(e.find("M=7"), std::string::npos) << e;

  // predict_ms is the sum of its parts; q/k/v and gate/up at equal bits as their stacked matrix.
  Arch a = uniform_arch(m, 4, 64);
  a.layers[1].bits = {4, 4, 4, 4, 4, 4, 4};
  a.layers[1].mlp_channels = 32;
  // Both layers: q|k|v (64, 32), o (32, 32); layer 0 gate|up (80, 32), down (32, 40); layer 1 MLP 32 wide.
  const double attn = t.linear_us(64, 32, 4, 1) + t.linear_us(32, 32, 4, 1) + t.attention_us(2, 1) +
                      t.layer_fixed_attn_us(1);
  double us = t.model_fixed_us(1) + 2 * attn;
  us += t.linear_us(80, 32, 4, 1) + t.linear_us(32, 40, 4, 1) + t.layer_fixed_mlp_us(1);
  us += t.linear_us(64, 32, 4, 1) + t.linear_us(32, 32, 4, 1) + t.layer_fixed_mlp_us(1);
  EXPECT_NEAR(t.predict_ms(a, 1), us / 1000, 1e-9);
  // Different bits within q/k/v (gate/up): each linear separately.
  Arch mixed = a;
  mixed.layers[0].bits = {4, 8, 4, 4, 2, 4, 4};
  double us_mixed = us - t.linear_us(64, 32, 4, 1) - t.linear_us(80, 32, 4, 1);
  us_mixed += t.linear_us(32, 32, 4, 1) + t.linear_us(16, 32, 8, 1) + t.linear_us(16, 32, 4, 1);
  us_mixed += t.linear_us(40, 32, 2, 1) + t.linear_us(40, 32, 4, 1);
  EXPECT_NEAR(t.predict_ms(mixed, 1), us_mixed / 1000, 1e-9);
  // A layer with no KV heads / no channels skips those parts.
  Arch z = a;
  z.layers[0].kv_heads = 0;
  z.layers[0].mlp_channels = 0;
  EXPECT_LT(t.predict_ms(z, 1), t.predict_ms(a, 1));
  // Shapes outside the space, and archs for another group size, are errors.
  Arch odd = a;  // 36 channels: no layer can choose that width
  odd.layers[0].mlp_channels = 36;
  EXPECT_NE(error_of([&] { t.predict_ms(odd, 1); }).find("N=72 K=32 bits=4 M=1"), std::string::npos);  // gate|up
  EXPECT_NE(error_of([&] { t.predict_ms(uniform_arch(m, 4, 128), 1); }).find("group size"), std::string::npos);
}

// At M = 1 the linears stream their weights: 4-bit reads 1/7 of fp32's bytes.
TEST(Lut, Predict16BitSlowerThan4Bit) {
  ModelConfig m = test::tiny_config();
  m.hidden_size = 512;
  m.intermediate_size = 1536;
  m.num_heads = 8;
  m.num_kv_heads = 4;
  m.head_dim = 64;
  m.vocab_size = 256;
  const SearchSpace s =
      parse_search_space(R"({"kv_group_fractions": [1.0], "mlp_width_fractions": [1.0], "bits": [4, 16]})", "s");
  LutOptions o = fast_options();
  o.tokens = {1};
  o.repeats = 5;
  o.max_buffer_mib = 64;
  const LatencyTable t = LatencyTable::parse(build_lut_json(m, s, o), "mid.lut");
  const double p16 = t.predict_ms(uniform_arch(m, 16, 128), 1), p4 = t.predict_ms(uniform_arch(m, 4, 128), 1);
  EXPECT_GT(p16, p4) << "16-bit " << p16 << " ms vs 4-bit " << p4 << " ms";
  EXPECT_GT(t.linear_us(1536, 512, 16, 1), t.linear_us(1536, 512, 4, 1));
  // Sizes: fp32 = 4 bytes per weight; 4-bit = QLayout bytes.
  const Arch a16 = uniform_arch(m, 16, 128), a4 = uniform_arch(m, 4, 128);
  const int64_t lin = 2 * (512 * 512 + 512 * 256 * 2 + 512 * 512 + 3 * 1536 * 512);
  const int64_t rest = 256 * 512 * 4 * 2 + 512 * 4 + 2 * 2 * 512 * 4;  // untied embed + lm_head, norms
  EXPECT_EQ(t.weight_bytes(a16), lin * 4 + rest);
  auto qb = [](int N, int K) { return static_cast<int64_t>(kernels::QLayout::of(4, 128, N, K).total_bytes()); };
  const int64_t q4 = 2 * (qb(512, 512) + 2 * qb(256, 512) + qb(512, 512) + 2 * qb(1536, 512) + qb(512, 1536));
  EXPECT_EQ(t.weight_bytes(a4), q4 + rest);
  EXPECT_EQ(arch_weight_bytes(a4), q4 + rest);
}

// space.lm_head_bits: one linear entry per lm_head width (M 1 whatever the token counts); an arch
// with another lm_head than the table's is priced by the difference of the two entries.
TEST(Lut, PricesTheLmHeadChoices) {
  const ModelConfig m = test::tiny_config();  // vocab 50, hidden 32
  SearchSpace s = parse_search_space(R"({"kv_group_fractions": [1.0], "mlp_width_fractions": [1.0], "bits": [4, 8],
                                         "group_size": 32, "lm_head_bits": [4, 8]})",
                                     "head space");
  int heads = 0;
  for (const auto& e : lut_linear_shapes(m, s, {1, 4}))
    if (e.N == 50 && e.K == 32) {
      EXPECT_EQ(e.M, 1);
      EXPECT_EQ(e.group, 32);
      ++heads;
    }
  EXPECT_EQ(heads, 2);
  LutOptions o = fast_options();
  o.lm_head_bits = 8;
  const std::string text = build_lut_json(m, s, o);
  const LatencyTable t = LatencyTable::parse(text, "head.lut");
  EXPECT_TRUE(t.times_lm_head(4));
  EXPECT_TRUE(t.times_lm_head(8));
  EXPECT_FALSE(t.times_lm_head(16));
  Arch a = uniform_arch(m, 4, 32);
  const double own = t.predict_ms(a, 1);  // lm_head_bits 0: the table's 8-bit head
  a.lm_head_bits = 8;
  EXPECT_EQ(t.predict_ms(a, 1), own);
  a.lm_head_bits = 4;
  EXPECT_NEAR(t.predict_ms(a, 4) - t.predict_ms(uniform_arch(m, 4, 32), 4),
              (t.linear_us(50, 32, 4, 1) - t.linear_us(50, 32, 8, 1)) / 1000, 1e-12);
  a.lm_head_bits = 16;
  EXPECT_NE(error_of([&] { t.predict_ms(a, 1); }).find("16-bit lm_head; this LUT times lm_head_bits 8 and [4, 8]"),
            std::string::npos);
  // The table's own lm_head must be one of the choices, when building and when reading.
  o.lm_head_bits = 16;
  EXPECT_NE(error_of([&] { build_lut_json(m, s, o); }).find("--lm-head-bits 16 is not one of the space's"),
            std::string::npos);
  json j = json::parse(text);
  j["lm_head_bits"] = 16;
  EXPECT_NE(error_of([&] { LatencyTable::parse(j.dump(), "edited.lut"); })
                .find("edited.lut: lm_head_bits 16 is not one of space.lm_head_bits [4, 8]"),
            std::string::npos);
}

// The timing schedule: by default one sample of every entry per pass (each sample meets the machine
// in another state), and every sample lasts at least min_sample_us, however short the call.
TEST(Lut, OneSamplePerPassAndLongEnoughSamples) {
  LutOptions o = fast_options();
  o.threads = 1;  // one thread takes exactly `repeats` samples (more threads resample preempted ones)
  o.repeats = 4;
  o.min_sample_us = 300;
  const json j = json::parse(build_lut_json(test::tiny_config(), test_space(), o));
  const json& b = j["build"];
  const size_t entries = j["linears"].size() + j["attention"].size() + 2 * j["layer_fixed"].size() +
                         j["model_fixed"].size();
  EXPECT_EQ(b["passes"], 4);
  EXPECT_EQ(b["samples"].get<size_t>(), 4 * entries);
  // The tiny model's smallest linear (N = 8, K = 32) takes well under 0.1 us: a 300 us sample needs
  // thousands of calls (the old cap of 256 calls timed it over ~10 us, i.e. clock noise).
  EXPECT_GT(b["calls_per_sample"]["max"].get<int>(), 256) << b.dump();
  EXPECT_GE(b["calls_per_sample"]["min"].get<int>(), 1);

  EXPECT_EQ(b["statistic"], "median");
  EXPECT_EQ(b["clock"], "thread cpu time");

  o.passes = 2;
  const json j2 = json::parse(build_lut_json(test::tiny_config(), test_space(), o));
  EXPECT_EQ(j2["build"]["passes"], 2);
  EXPECT_EQ(j2["build"]["samples"].get<size_t>(), 4 * entries);

  // Several threads: wall time, 10th percentile (at least `repeats` samples; more when preempted).
  o.threads = 2;
  const json j3 = json::parse(build_lut_json(test::tiny_config(), test_space(), o));
  EXPECT_EQ(j3["build"]["statistic"], "p10");
  EXPECT_EQ(j3["build"]["clock"], "wall time");
  EXPECT_GE(j3["build"]["samples"].get<size_t>(), 4 * entries);
  o.statistic = "median";
  EXPECT_EQ(json::parse(build_lut_json(test::tiny_config(), test_space(), o))["build"]["statistic"], "median wall");
  o.statistic = "p50";
  EXPECT_THROW(build_lut_json(test::tiny_config(), test_space(), o), Error);
}

// An entry's time from its samples: 1 thread the median CPU time; more the 10th percentile of the
// wall times, or their median.
TEST(Lut, EntryStatistic) {
  std::vector<double> wall, cpu;
  for (int i = 1; i <= 11; ++i) wall.push_back(10.0 * i), cpu.push_back(i);  // wall 10..110, cpu 1..11
  EXPECT_DOUBLE_EQ(lut_entry_us(wall, cpu, 1, "auto"), 6.0);
  EXPECT_DOUBLE_EQ(lut_entry_us(wall, cpu, 1, "median"), 6.0);  // one thread: always CPU time
  EXPECT_DOUBLE_EQ(lut_entry_us(wall, cpu, 2, "auto"), 20.0);    // 10th percentile of 11: index 1
  EXPECT_DOUBLE_EQ(lut_entry_us(wall, cpu, 2, "median"), 60.0);
}

// Where the entries' calls read weights: one span per window, disjoint where the buffer holds them
// all; calls of any entry of a window take the next region of its span (kLutRegionGap apart, never
// adjacent), so a byte is read again only after the window's traffic.
TEST(Lut, SpansKeepWindowsApartAndTheReuseDistance) {
  const size_t MiB = size_t{1} << 20;
  // SmolLM2-like windows: 4-bit 90 MiB (largest entry 1 MiB), 8-bit 143 MiB (2 MiB).
  std::map<size_t, LutSpan> sp = lut_spans({{90 * MiB, 1 * MiB}, {143 * MiB, 2 * MiB}}, 1024 * MiB);
  ASSERT_EQ(sp.size(), 2u);
  EXPECT_EQ(sp[90 * MiB].base, 0u);
  EXPECT_EQ(sp[90 * MiB].size, 90 * MiB + kLutRegionGap);
  EXPECT_EQ(sp[143 * MiB].base, 90 * MiB + kLutRegionGap);  // after the first: disjoint
  EXPECT_EQ(sp[143 * MiB].size, 143 * MiB + kLutRegionGap);
  // Two entries of one window share the cursor: each call after the previous one's, gap apart.
  LutSpan& s8 = sp[143 * MiB];
  const size_t a = lut_next_region(s8, 187 * 1024), b = lut_next_region(s8, 2 * MiB), c = lut_next_region(s8, 187 * 1024);
  EXPECT_EQ(a, s8.base);
  EXPECT_EQ(b, a + 187 * 1024 + kLutRegionGap);
  EXPECT_EQ(c, b + 2 * MiB + kLutRegionGap);
  // Every region inside the span; a byte comes back only after ~the window of calls.
  size_t first_again = 0, calls = 3;
  for (; calls < 100000; ++calls) {
    const size_t off = lut_next_region(s8, 2 * MiB);
    ASSERT_GE(off, s8.base);
    ASSERT_LE(off + 2 * MiB, s8.base + s8.size);
    if (off == s8.base) {
      first_again = calls;
      break;
    }
  }
  EXPECT_GE(first_again * (2 * MiB + kLutRegionGap), 143 * MiB - 2 * MiB);
  // A buffer too small for both: the one that does not fit starts at 0 (overlapping); sizes round
  // up to 64 and never exceed the buffer.
  std::map<size_t, LutSpan> small = lut_spans({{90 * MiB, MiB}, {143 * MiB, 2 * MiB}}, 200 * MiB);
  EXPECT_EQ(small[90 * MiB].base, 0u);
  EXPECT_EQ(small[143 * MiB].base, 0u);
  EXPECT_EQ(lut_spans({{1, 1}}, 100 * MiB)[1].size, 64 + kLutRegionGap);
  EXPECT_EQ(lut_spans({{1000 * MiB, MiB}}, 100 * MiB)[1000 * MiB].size, 100 * MiB);
}

// The decode entries scaled per bit width so the table predicts a whole-model decode of the uniform
// model of that width: the factor, which entries it scales, and what a build records.
TEST(Lut, DecodeEntriesCalibratedToWholeModelDecodes) {
  EXPECT_DOUBLE_EQ(lut_calibration_scale(150, 200, 100), 0.5);  // 100 us not linears; linears take 50
  EXPECT_DOUBLE_EQ(lut_calibration_scale(300, 200, 100), 2.0);
  EXPECT_DOUBLE_EQ(lut_calibration_scale(10, 200, 100), 0.25);  // clamped
  EXPECT_DOUBLE_EQ(lut_calibration_scale(2000, 200, 100), 4.0);
  EXPECT_NE(error_of([] { lut_calibration_scale(1, 1, 0); }), "");
  nlohmann::ordered_json lin = nlohmann::ordered_json::parse(R"([
      {"N": 8, "K": 32, "bits": 4, "M": 1, "us": 10.0}, {"N": 8, "K": 32, "bits": 4, "M": 4, "us": 20.0},
      {"N": 8, "K": 32, "bits": 8, "M": 1, "us": 30.0}, {"N": 50, "K": 32, "bits": 4, "M": 1, "us": 40.0}])");
  scale_decode_entries(lin, 4, 50, 0.5);
  EXPECT_DOUBLE_EQ(lin[0]["us"].get<double>(), 5.0);   // 4-bit decode: scaled
  EXPECT_DOUBLE_EQ(lin[1]["us"].get<double>(), 20.0);  // M = 4: not a decode
  EXPECT_DOUBLE_EQ(lin[2]["us"].get<double>(), 30.0);  // another width
  EXPECT_DOUBLE_EQ(lin[3]["us"].get<double>(), 40.0);  // the lm_head (N = vocab)

  // The runs alternate the widths, each round one place further: every width once a round, and in
  // each place of a round once over as many rounds as widths.
  EXPECT_EQ(calibration_schedule(3, 4), (std::vector<size_t>{0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2}));
  EXPECT_EQ(calibration_schedule(1, 3), (std::vector<size_t>{0, 0, 0}));
  EXPECT_TRUE(calibration_schedule(4, 0).empty());

  // The tiny table: layer 1 allows 4 and 16 bits only, so 4 is the one width a uniform model can take
  // (16 is left as timed).
  const json cal = json::parse(tiny_lut())["build"]["calibration"];
  ASSERT_EQ(cal.size(), 1u) << cal.dump();
  EXPECT_EQ(cal[0]["bits"], 4);
  EXPECT_GT(cal[0]["measured_ms"].get<double>(), 0.0);
  EXPECT_GT(cal[0]["predicted_ms"].get<double>(), 0.0);
  EXPECT_EQ(cal[0]["runs_ms"].size(), 5u);  // one run per alternated round
  EXPECT_GE(cal[0]["scale"].get<double>(), 0.25);
  EXPECT_LE(cal[0]["scale"].get<double>(), 4.0);
  LutOptions o = fast_options();
  o.calibrate = false;
  EXPECT_FALSE(json::parse(build_lut_json(test::tiny_config(), test_space(), o))["build"].contains("calibration"));
}

// What an attention entry times: a decode step at the LUT's context, a prompt from an empty cache.
TEST(Lut, AttentionSpanIsDecodeAtContextOrPromptFromEmpty) {
  EXPECT_EQ(lut_attention_span(1, 192).positions, 192);
  EXPECT_EQ(lut_attention_span(1, 192).past, 191);
  EXPECT_EQ(lut_attention_span(1, 1).past, 0);
  for (int64_t ctx : {16, 128, 192, 4096}) {  // a prompt's cost does not depend on the decode context
    EXPECT_EQ(lut_attention_span(128, ctx).positions, 128) << ctx;
    EXPECT_EQ(lut_attention_span(128, ctx).past, 0) << ctx;
  }
  EXPECT_THROW(lut_attention_span(0, 16), Error);
  EXPECT_THROW(lut_attention_span(4, 0), Error);
}

TEST(Lut, CheckRefusesAnotherModelOrSpace) {
  const LatencyTable t = LatencyTable::parse(tiny_lut(), "tiny.lut");
  ModelConfig other = test::tiny_config();
  other.intermediate_size = 48;
  const std::string mine = shapes_hash(test::tiny_config(), test_space());
  const std::string theirs = shapes_hash(other, test_space());
  std::string e = error_of([&] { t.check(other, test_space(), "search config"); });
  EXPECT_EQ(e.rfind("search config: LUT tiny.lut was built for shapes hash " + mine, 0), 0u) << e;
  EXPECT_NE(e.find(theirs), std::string::npos) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;

  const SearchSpace s2 = parse_search_space(R"({"group_size": 128})", "s2");
  e = error_of([&] { t.check(test::tiny_config(), s2, "search config"); });
  EXPECT_NE(e.find(shapes_hash(test::tiny_config(), s2)), std::string::npos) << e;
  EXPECT_NE(e.find("another search space"), std::string::npos) << e;
}

TEST(Lut, BadFilesGiveClearErrors) {
  const std::string good = tiny_lut();
  auto parse_error = [](const std::string& text) {
    return error_of([&] { LatencyTable::parse(text, "bad.lut"); });
  };
  auto edited = [&](const std::function<void(json&)>& f) {
    json j = json::parse(good);
    f(j);
    return parse_error(j.dump());
  };
  auto expect_has = [](const std::string& e, const std::string& needle) {
    EXPECT_NE(e.find(needle), std::string::npos) << "expected '" << needle << "' in: " << e;
    EXPECT_EQ(e.rfind("bad.lut", 0), 0u) << e;
  };
  expect_has(parse_error(good.substr(0, good.size() / 2)), "not a LUT: not valid JSON");
  expect_has(parse_error("[1, 2]"), "not a LUT");
  expect_has(edited([](json& j) { j["format"] = "llmcompress-arch"; }), "not a LUT");
  expect_has(edited([](json& j) { j["version"] = 1; }), "LUT version 1 is not supported");
  expect_has(edited([](json& j) { j.erase("linears"); }), "missing field 'linears'");
  expect_has(edited([](json& j) { j["model"].erase("head_dim"); }), "bad.lut.model: missing field 'head_dim'");
  expect_has(edited([](json& j) { j["linears"][0]["us"] = -1; }), "bad.lut.linears[0].us: -1 is not a positive time");
  expect_has(edited([](json& j) { j["linears"][1].erase("bits"); }), "bad.lut.linears[1]: missing field 'bits'");
  expect_has(edited([](json& j) { j["attention"][0]["M"] = "one"; }), "bad.lut.attention[0].M: expected an integer");
  expect_has(edited([](json& j) { j["model"]["num_layers"] = 3; }), "does not match the file's own model and space");
  expect_has(edited([](json& j) { j["space"]["bits"] = {4, 5}; }), "5 is not one of 2, 3, 4, 8, 16");
  expect_has(edited([](json& j) { j["model_fixed"] = json::array(); }), "model_fixed: no entry for M = 1");
  EXPECT_NE(error_of([] { LatencyTable::load("/nonexistent/lut.json"); }).find("LUT file not found"), std::string::npos);
}

TEST(Lut, ModelSpecs) {
  const ModelConfig b = lut_model_config("synthetic:1b");
  EXPECT_EQ(b.hidden_size, 2048);
  EXPECT_EQ(b.intermediate_size, 8192);
  EXPECT_EQ(b.num_layers, 16);
  EXPECT_EQ(b.num_heads, 32);
  EXPECT_EQ(b.num_kv_heads, 8);
  EXPECT_EQ(b.head_dim, 64);
  EXPECT_EQ(b.vocab_size, 128256);
  EXPECT_NE(error_of([] { lut_model_config("synthetic:7b"); }).find("unknown synthetic model"), std::string::npos);
  // The 1B default space, every layer alike: q/k/v N in {2048, 1536, 1024, 512, 384, 256, 128} (K 2048; q at 2 KV
  // groups and k/v at 8 are both 512 x 2048), o adds 3 (K 1536, 1024, 512), gate/up 5, down 5 -> 20 shapes; the
  // stacked q|k|v (384 h: 3072, 2304, 768 new; 1536 is q at 6 groups) and gate|up (2w: 4 new) -> 27 shapes x 5 bits.
  EXPECT_EQ(lut_linear_shapes(b, parse_search_space("{}", "d"), {1}).size(), 27u * 5);
  const std::string s260 = shared_root() + "/models/stories260K";
  if (!dir_exists(s260)) GTEST_SKIP() << "no " << s260;
  const ModelConfig s = lut_model_config(s260);
  EXPECT_EQ(s.hidden_size, 64);
  EXPECT_EQ(s.intermediate_size, 172);
}

// ---- CLI ----

namespace {
}  // namespace

TEST(LutCli, BuildsAndRefusesBadArguments) {
  const std::string dir = "/tmp/llmc_lutcli_" + std::to_string(::getpid());
  std::system(("mkdir -p " + dir).c_str());
  const std::string space = dir + "/space.json";
  write_file_atomic(space, R"({"kv_group_fractions": [1.0, 0.5], "bits": [4, 16]})");
  const std::string base = "--threads 1 lut --model synthetic:tiny --space " + space + " --max-buffer-mib 32 ";
  CliRun r = run_cli(base + "--tokens 1,3 --context 8 --out " + dir + "/lut.json");
  ASSERT_EQ(r.code, 0) << r.out;
  const LatencyTable t = LatencyTable::load(dir + "/lut.json");
  EXPECT_NO_THROW(t.check(lut_model_config("synthetic:tiny"), load_search_space(space), "test"));
  EXPECT_EQ(t.tokens(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(t.context(), 8);

  auto expect_error = [&](const std::string& args, const std::string& needle) {
    CliRun e = run_cli(args);
    EXPECT_EQ(e.code, 1) << args << "\n" << e.out;
    EXPECT_NE(e.out.find("error: "), std::string::npos) << e.out;
    EXPECT_NE(e.out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << e.out;
  };
  expect_error(base + "--device cuda --out " + dir + "/x.json", "no CUDA device");
  expect_error(base + "--tokens 1,0 --out " + dir + "/x.json", "--tokens: '0' is not a token count");
  expect_error(base + "--out " + dir + "/nope/x.json", "does not exist");
  expect_error("lut --model synthetic:tiny --space " + dir + "/missing.json --out " + dir + "/x.json",
               "search space file not found");
  std::system(("rm -rf " + dir).c_str());
}
