// Discretization, quantization through the export path, the exported folder format and its
// validation. Tolerances: exported vs fake-quantized logits 1e-4 relative to max |logit| (the
// packed kernel and at::linear sum in different orders, ~1e-6 seen); permutations 1e-5.
#include <ATen/ATen.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llmc_kernels/qgemm.h"
#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/data/calibration.h"
#include "llmc/export/discretize.h"
#include "llmc/export/export.h"
#include "llmc/export/format.h"
#include "llmc/runtime/folder.h"
#include "llmc/runtime/open.h"
#include "llmc/export/quantize_model.h"
#include "llmc/io/safetensors.h"
#include "llmc/quant/quant.h"
#include "synthetic.h"
#include "cli_run.h"

using namespace llmc;
namespace fs = std::filesystem;

namespace {

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}

ModelConfig cfg3() {
  auto c = test::tiny_config();
  c.num_layers = 3;
  return c;
}

at::Tensor some_tokens(int64_t B, int64_t T, int64_t V, uint64_t seed = 3) {
  at::manual_seed(seed);
  return at::randint(0, V, {B, T}, at::kLong);
}

// Mixed widths, bits and orders over cfg3(): layer 0 sliced and permuted, layer 1 without MLP,
// layer 2 without attention.
Arch mixed_arch(const ModelConfig& c) {
  Arch a = uniform_arch(c, 4, 128);
  a.layers[0].kv_heads = 1;
  a.layers[0].mlp_channels = 24;
  a.layers[0].bits = {4, 3, 8, 2, 4, 16, 3};
  a.layers[0].kv_order = {1, 0};
  a.layers[0].mlp_order.resize(c.intermediate_size);
  for (int64_t i = 0; i < c.intermediate_size; ++i) a.layers[0].mlp_order[i] = (i * 7 + 3) % c.intermediate_size;
  a.layers[1].mlp_channels = 0;
  a.layers[1].bits = {16, 4, 4, 8, 4, 4, 4};
  a.layers[2].kv_heads = 0;
  a.layers[2].bits = {4, 4, 4, 4, 2, 3, 8};
  a.validate("mixed");
  return a;
}

struct TempDir {
  std::string path;
  TempDir() {
    path = "/tmp/llmc_export_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter()++);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  static int& counter() {
    static int c = 0;
    return c;
  }
};

std::string stories() { return path_join(shared_root(), "models/stories260K"); }

// Writes the quantized RTN subnet of `arch` to dir.
void export_rtn(const Llama& model, const Arch& arch, const std::string& dir) {
  auto sub = discretize(model, arch);
  QuantizeOptions qo;
  qo.group_size = arch.group_size;
  quantize_model(*sub, arch, qo, {});
  ExportWriteOptions wo;
  wo.group_size = arch.group_size;
  write_export_folder(*sub, dir, wo);
}

}  // namespace

// Full widths with identity orders are the model itself; any permutation with full widths too.
TEST(Discretize, FullWidthPermutationsKeepLogits) {
  auto c = cfg3();
  auto m = test::random_llama(c, 1);
  auto tokens = some_tokens(2, 9, c.vocab_size);
  auto ref = m->forward(tokens);
  Arch a = uniform_arch(c, 16, 128);
  EXPECT_TRUE(at::equal(discretize(*m, a)->forward(tokens), ref));
  a.layers[0].kv_order = {1, 0};
  a.layers[2].kv_order = {1, 0};
  for (auto& l : a.layers) {
    l.mlp_order.resize(c.intermediate_size);
    for (int64_t i = 0; i < c.intermediate_size; ++i) l.mlp_order[i] = c.intermediate_size - 1 - i;
  }
  a.validate("perm");
  EXPECT_LE(rel_diff(discretize(*m, a)->forward(tokens), ref), 1e-5);
}

// Slicing equals the original model with the dropped heads' o columns and the dropped channels'
// down columns zeroed (their contribution removed); 0 heads / 0 channels drop the sub-block.
TEST(Discretize, SlicingEqualsZeroedContributions) {
  auto c = cfg3();
  auto m = test::random_llama(c, 2);
  Arch a = mixed_arch(c);
  for (auto& l : a.layers) l.bits.fill(16);
  auto sub = discretize(*m, a);
  EXPECT_EQ(sub->config().layer_kv_heads, (std::vector<int64_t>{1, 2, 0}));
  EXPECT_EQ(sub->config().layer_intermediate, (std::vector<int64_t>{24, 0, 40}));
  auto ref = test::random_llama(c, 2);
  const int64_t hd = c.head_dim, g = c.num_heads / c.num_kv_heads;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    auto& L = ref->weights().layers[l];
    const auto& la = a.layers[l];
    auto o = L.o->dense_weight().clone(), down = L.down->dense_weight().clone();
    for (int64_t r = la.kv_heads; r < c.num_kv_heads; ++r) {
      const int64_t h = la.kv_order.empty() ? r : la.kv_order[r];
      o.narrow(1, h * g * hd, g * hd).zero_();
    }
    for (int64_t r = la.mlp_channels; r < c.intermediate_size; ++r) {
      const int64_t ch = la.mlp_order.empty() ? r : la.mlp_order[r];
      down.select(1, ch).zero_();
    }
    L.o = std::make_shared<DenseLinear>(o);
    L.down = std::make_shared<DenseLinear>(down);
  }
  auto tokens = some_tokens(2, 11, c.vocab_size);
  EXPECT_LE(rel_diff(sub->forward(tokens), ref->forward(tokens)), 1e-5);
}

// The calibration pass's own layer loop computes what Llama::hidden_states computes.
TEST(Quantize, LayerwisePassMatchesModel) {
  auto c = cfg3();
  auto m = test::random_llama(c, 4);
  auto sub = discretize(*m, mixed_arch(c));
  auto tokens = some_tokens(3, 10, c.vocab_size);
  auto pos = at::arange(10, at::kLong).unsqueeze(0).expand({3, 10});
  auto ref = sub->hidden_states(tokens, pos, at::ones({3, 10}, at::kBool), nullptr);
  EXPECT_LE(rel_diff(layerwise_hidden_states(*sub, tokens), ref), 1e-5);
}

TEST(Export, LogitsEqualFakeQuantizedSubnet) {
  auto c = cfg3();
  auto m = test::random_llama(c, 5);
  Arch a = mixed_arch(c);
  TempDir d;
  const std::string out = d.path + "/exp";
  export_rtn(*m, a, out);
  ASSERT_TRUE(is_exported_folder(out));
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto torch_model = load_exported(out, lo, /*runtime=*/false);
  auto rt_model = load_exported(out, lo, /*runtime=*/true);
  auto fq = fake_quant_subnet(*m, a);
  auto tokens = some_tokens(2, 13, c.vocab_size);
  auto ref = fq->forward(tokens);
  const double e_torch = rel_diff(torch_model->forward(tokens), ref);
  const double e_rt = rel_diff(rt_model->forward(tokens), ref);
  EXPECT_LE(e_torch, 1e-4);
  EXPECT_LE(e_rt, 1e-4);
  RecordProperty("rel_diff_torch", fmt::format("{:.3e}", e_torch));
  RecordProperty("rel_diff_runtime", fmt::format("{:.3e}", e_rt));
  // Per-linear bits and widths survive the round trip.
  EXPECT_EQ(torch_model->config().layer_kv_heads, (std::vector<int64_t>{1, 2, 0}));
  auto* q = dynamic_cast<QuantizedLinear*>(torch_model->weights().layers[0].o.get());
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->bits(), 2);
  EXPECT_NE(dynamic_cast<DenseLinear*>(torch_model->weights().layers[0].up.get()), nullptr);
}

// GPTQ through the export path (layer-by-layer Hessians on calibration activations) has a lower
// layer-wise output error than RTN at 2, 3 and 4 bits, and a lower one on a 4-bit lm_head.
TEST(Export, GptqBeatsRtnLayerwise) {
  std::unique_ptr<Llama> real;
  if (dir_exists(stories())) {
    LoadOptions lo;
    real = load_llama(stories(), lo);
  }
  auto synth = test::random_llama(cfg3(), 6);
  for (Llama* m : {synth.get(), real.get()}) {
    if (!m) continue;
    const auto& c = m->config();
    at::Tensor calib;
    if (m == real.get()) {
      CalibOptions co;
      co.source = "text:" + path_join(shared_root(), "data/tinystories/tinystories_sample.txt");
      co.samples = 16;
      co.seq_len = 64;
      calib = calibration_tokens(*m, co);
    } else {
      calib = some_tokens(16, 32, c.vocab_size, 9);
    }
    for (int bits : {2, 3, 4}) {
      Arch a = uniform_arch(c, bits, 128);
      double err[2], head_err[2];
      int i = 0;
      for (const char* method : {"rtn", "gptq"}) {
        auto sub = discretize(*m, a);
        QuantizeOptions qo;
        qo.method = method;
        qo.lm_head_bits = 4;
        auto rep = quantize_model(*sub, a, qo, calib);
        ASSERT_EQ(static_cast<int64_t>(rep.linears.size()), 7 * c.num_layers);
        ASSERT_TRUE(sub->weights().lm_head->is_packed());
        head_err[i] = rep.lm_head_rel_err;
        err[i++] = rep.mean_rel_err();
      }
      const std::string which = m == real.get() ? "stories" : "synthetic";
      EXPECT_LT(err[1], err[0]) << which << " bits " << bits;
      // The lm_head too (GPTQ on the final-norm outputs of the calibration set).
      EXPECT_GT(head_err[0], 0) << which;
      EXPECT_LT(head_err[1], 0.9 * head_err[0]) << which << " bits " << bits;
      RecordProperty(which + "_bits" + std::to_string(bits) + "_gptq_over_rtn", std::to_string(err[1] / err[0]));
      RecordProperty(which + "_bits" + std::to_string(bits) + "_lm_head4_gptq_over_rtn",
                     std::to_string(head_err[1] / head_err[0]));
    }
  }
}

// model.safetensors holds exactly the bytes the bit accounting predicts.
TEST(Export, SafetensorsSizeMatchesBitAccounting) {
  auto c = cfg3();
  auto m = test::random_llama(c, 7);
  Arch a = mixed_arch(c);
  TempDir d;
  const std::string out = d.path + "/exp";
  auto sub = discretize(*m, a);
  QuantizeOptions qo;
  quantize_model(*sub, a, qo, {});
  ExportWriteOptions wo;
  write_export_folder(*sub, out, wo);
  SafetensorsFile f(out + "/model.safetensors");
  int64_t expect_linear = 0, expect_total = 0;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const auto& la = a.layers[l];
    const int64_t nkv = la.kv_heads, nq = nkv * 2, I = la.mlp_channels, H = c.hidden_size, hd = c.head_dim;
    const int64_t shp[7][2] = {{nq * hd, H}, {nkv * hd, H}, {nkv * hd, H}, {H, nq * hd}, {I, H}, {I, H}, {H, I}};
    static const char* names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                   "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    for (int k = 0; k < 7; ++k) {
      const int64_t N = shp[k][0], K = shp[k][1];
      const std::string p = "model.layers." + std::to_string(l) + "." + names[k];
      if (N == 0 || K == 0) {
        EXPECT_EQ(f.find(p + ".weight"), nullptr);
        EXPECT_EQ(f.find(p + ".qweight"), nullptr);
        continue;
      }
      const int bits = la.bits[k];
      if (bits == 16) {
        const TensorInfo* t = f.find(p + ".weight");
        ASSERT_NE(t, nullptr) << p;
        EXPECT_EQ(static_cast<int64_t>(t->end - t->begin), N * K * 4);
        expect_linear += N * K * 4;
        continue;
      }
      const int g = effective_group(static_cast<int>(K), 128);
      const int64_t Kp = (K + g - 1) / g * g;
      const TensorInfo* q = f.find(p + ".qweight");
      const TensorInfo* s = f.find(p + ".scales");
      const TensorInfo* z = f.find(p + ".zeros");
      ASSERT_TRUE(q && s && z) << p;
      EXPECT_EQ(static_cast<int64_t>(q->end - q->begin), N * Kp * bits / 8) << p;
      EXPECT_EQ(static_cast<int64_t>(s->end - s->begin), N * (Kp / g) * 2) << p;
      EXPECT_EQ(static_cast<int64_t>(z->end - z->begin), N * (Kp / g) * 2) << p;
      expect_linear += N * Kp * bits / 8 + 2 * N * (Kp / g) * 2;
    }
  }
  // embedding, untied dense lm_head, norms
  const int64_t dense = c.vocab_size * c.hidden_size * 4 * (c.tie_word_embeddings ? 1 : 2) +
                        (2 * c.num_layers + 1) * c.hidden_size * 4;
  ASSERT_NE(f.find("lm_head.weight"), nullptr);
  expect_total = expect_linear + dense;
  SizeReport sr = size_report(*sub);
  EXPECT_EQ(sr.linear_bytes, expect_linear);
  EXPECT_EQ(sr.total(), expect_total);
  int64_t data = 0, last_end = 0;
  for (const auto& t : f.tensors()) {
    data += static_cast<int64_t>(t.end - t.begin);
    last_end = std::max<int64_t>(last_end, static_cast<int64_t>(t.end));
  }
  EXPECT_EQ(data, expect_total);
  // File = 8-byte length + JSON header + data section (tensors 8-byte aligned).
  std::ifstream in(out + "/model.safetensors", std::ios::binary);
  uint64_t header = 0;
  in.read(reinterpret_cast<char*>(&header), 8);
  const int64_t fsize = static_cast<int64_t>(fs::file_size(out + "/model.safetensors"));
  EXPECT_EQ(fsize, static_cast<int64_t>(8 + header) + last_end);
  EXPECT_LE(last_end - data, 8 * static_cast<int64_t>(f.tensors().size()));
}

namespace {

class CorruptExport : public ::testing::Test {
 protected:
  void SetUp() override {
    c_ = cfg3();
    auto m = test::random_llama(c_, 8);
    good_ = d_.path + "/good";
    export_rtn(*m, mixed_arch(c_), good_);
  }
  std::string variant(const std::string& name) {
    std::string v = d_.path + "/" + name;
    fs::copy(good_, v, fs::copy_options::recursive);
    return v;
  }
  std::string with_config(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    std::string v = variant(name);
    auto j = nlohmann::json::parse(read_text_file(v + "/config.json"));
    edit(j);
    std::ofstream(v + "/config.json") << j.dump(2);
    return v;
  }
  // Rewrites model.safetensors through `edit` on the list of tensors (name -> dtype, shape, bytes).
  struct Raw {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::string with_tensors(const std::string& name, const std::function<void(std::vector<Raw>&)>& edit) {
    std::string v = variant(name);
    std::vector<Raw> raw;
    {
      SafetensorsFile f(v + "/model.safetensors");
      for (const auto& t : f.tensors())
        raw.push_back({t.name, t.dtype, t.shape, std::vector<uint8_t>(f.data(t), f.data(t) + (t.end - t.begin))});
    }
    edit(raw);
    std::vector<TensorToWrite> w;
    for (auto& r : raw) w.push_back({r.name, r.dtype, r.shape, r.bytes.data()});
    write_safetensors(v + "/model.safetensors", w);
    return v;
  }
  void expect_rejected(const std::string& dir, const std::string& needle) {
    LoadOptions lo;
    lo.need_tokenizer = false;
    try {
      load_exported(dir, lo);
      ADD_FAILURE() << "loaded " << dir;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << "expected '" << needle << "' in: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
  TempDir d_;
  ModelConfig c_;
  std::string good_;
};

}  // namespace

TEST_F(CorruptExport, GoodFolderLoads) {
  LoadOptions lo;
  lo.need_tokenizer = false;
  EXPECT_NO_THROW(load_exported(good_, lo));
  EXPECT_NO_THROW(open_model(good_, lo));  // open_model recognizes the folder
}

TEST_F(CorruptExport, MissingTensor) {
  auto v = with_tensors("missing", [](std::vector<Raw>& r) {
    r.erase(std::remove_if(r.begin(), r.end(), [](const Raw& x) { return x.name == "model.layers.0.mlp.down_proj.scales"; }),
            r.end());
  });
  expect_rejected(v, "missing tensor 'model.layers.0.mlp.down_proj.scales'");
}

TEST_F(CorruptExport, CodeBytesDisagreeWithBits) {
  // config says 3 bits where 4-bit codes are stored
  auto v = with_config("bits", [](nlohmann::json& j) { j["llmc_format"]["layers"][0]["bits"]["q"] = 3; });
  expect_rejected(v, "bytes per row, expected");
}

TEST_F(CorruptExport, TruncatedCodes) {
  auto v = with_tensors("short", [](std::vector<Raw>& r) {
    for (auto& x : r)
      if (x.name == "model.layers.2.mlp.up_proj.qweight") {
        x.shape[1] -= 4;
        x.bytes.resize(static_cast<size_t>(x.shape[0] * x.shape[1]));
      }
  });
  expect_rejected(v, "model.layers.2.mlp.up_proj.qweight' has");
}

TEST_F(CorruptExport, UnsupportedBits) {
  auto v = with_config("bits5", [](nlohmann::json& j) { j["llmc_format"]["layers"][1]["bits"]["k"] = 5; });
  expect_rejected(v, "bits 5 (supported: 2, 3, 4, 8, 16)");
}

TEST_F(CorruptExport, WidthsDisagreeWithConfig) {
  auto v = with_config("widths", [](nlohmann::json& j) { j["llmc_format"]["layers"][0]["kv_heads"] = 2; });
  expect_rejected(v, "kv_heads 2 disagrees with the config's 1");
  auto v2 = with_config("widths2", [](nlohmann::json& j) { j["llmc_layer_intermediate"][0] = 32; });
  expect_rejected(v2, "mlp_channels 24 disagrees");
}

TEST_F(CorruptExport, WrongShapeAndDtype) {
  auto v = with_tensors("scales", [](std::vector<Raw>& r) {
    for (auto& x : r)
      if (x.name == "model.layers.1.self_attn.k_proj.scales") x.dtype = DType::BF16;
  });
  expect_rejected(v, "has dtype BF16, expected F16");
  auto v2 = with_tensors("embed", [](std::vector<Raw>& r) {
    for (auto& x : r)
      if (x.name == "model.norm.weight") {
        x.shape = {16};
        x.bytes.resize(64);
      }
  });
  expect_rejected(v2, "'model.norm.weight' has shape [16], expected [32]");
}

TEST_F(CorruptExport, UnexpectedTensorAndVersion) {
  auto v = with_config("dense", [](nlohmann::json& j) { j["llmc_format"]["layers"][0]["bits"]["up"] = 4; });
  expect_rejected(v, "missing tensor 'model.layers.0.mlp.up_proj.qweight'");
  auto v2 = with_tensors("extra", [](std::vector<Raw>& r) {
    r.push_back({"model.layers.9.extra", DType::F32, {1}, std::vector<uint8_t>(4, 0)});
  });
  expect_rejected(v2, "unexpected tensor 'model.layers.9.extra'");
  auto v3 = with_config("version", [](nlohmann::json& j) { j["llmc_format"]["version"] = 2; });
  expect_rejected(v3, "llmc_format version 2 is not supported");
}

TEST_F(CorruptExport, NonFiniteScale) {
  auto v = with_tensors("nan", [](std::vector<Raw>& r) {
    for (auto& x : r)
      if (x.name == "model.layers.0.self_attn.v_proj.scales") {
        x.bytes[0] = 0x00;
        x.bytes[1] = 0x7e;  // fp16 NaN
      }
  });
  expect_rejected(v, "non-finite");
}

TEST_F(CorruptExport, CliRejectsWithOneLine) {
  auto v = with_config("cli", [](nlohmann::json& j) { j["llmc_format"]["layers"][1]["bits"]["k"] = 7; });
  for (const char* cmd : {"info", "bench"}) {
    CliRun r = run_cli(std::string(cmd) + " --model " + v);
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("bits 7"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("error: "), r.out.rfind("error: ")) << r.out;
  }
  CliRun r = run_cli("export --model " + good_ + " --arch uniform:4 --out " + d_.path + "/again");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("already"), std::string::npos) << r.out;
  r = run_cli("export --model " + good_ + " --arch uniform:5 --out " + d_.path + "/x");
  EXPECT_EQ(r.code, 1) << r.out;
}

// The whole CLI path on a real model: export (GPTQ, generated calibration, a short fine-tune),
// then info / generate / eval / bench accept the folder.
TEST(ExportCli, Stories260KEndToEnd) {
  if (!dir_exists(stories())) GTEST_SKIP() << "no " << stories();
  TempDir d;
  const std::string out = d.path + "/s4";
  CliRun r = run_cli("export --model " + stories() + " --arch uniform:4 --quant gptq --calib-samples 8 --calib-seq-len 64 "
                     "--finetune-steps 3 --lora-rank 4 --distill --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "export_report.json", "arch.json"})
    EXPECT_TRUE(file_exists(out + "/" + f)) << f;
  auto rep = nlohmann::json::parse(read_text_file(out + "/export_report.json"));
  EXPECT_EQ(rep["quant"]["method"], "gptq");
  EXPECT_EQ(rep["finetune"]["losses"].size(), 3u);
  // 1e-4 where the packed GEMM is fp32-exact; 3e-4 where it rounds x to int16 (qgemm.h, AVX2:
  // measured 1.2e-4 on stories260K's 5 layers).
  EXPECT_LE(rep["finetune"]["merge_max_rel_logit_diff"].get<double>(), kernels::qgemm_rounds_x_to_int16() ? 3e-4 : 1e-4);
  EXPECT_EQ(rep["files"]["model.safetensors"].get<int64_t>(), static_cast<int64_t>(fs::file_size(out + "/model.safetensors")));
  r = run_cli("info --json --model " + out);
  EXPECT_EQ(r.code, 0) << r.out;
  r = run_cli("generate --json --max-new-tokens 8 --prompt \"Once upon a time\" --model " + out);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"ids\""), std::string::npos) << r.out;
  r = run_cli("bench --json --prompt-tokens 16 --new-tokens 16 --repeats 1 --warmup 0 --model " + out);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"decode_tokens_per_s\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"runtime\""), std::string::npos) << r.out;
  // An exported folder computes in float32 whatever --dtype says (a warning), and eval's JSON must
  // record the dtype actually used, not the one asked for.
  const std::string text = path_join(shared_root(), "data/tinystories/tinystories_sample.txt");
  if (file_exists(text)) {
    const std::string res = d.path + "/eval.json";
    r = run_cli("eval --dtype bfloat16 --tasks text:" + text + " --limit 1 --output " + res + " --model " + out);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(nlohmann::json::parse(read_text_file(res))["config"]["dtype"], "float32");
  }
}

// An arch that chose its lm_head (search with space.lm_head_bits) is exported with that lm_head,
// whatever --lm-head-bits says; an arch without one takes the flag. The folder's arch.json records it.
TEST(ExportCli, ArchLmHeadBitsOverrideTheFlag) {
  if (!dir_exists(stories())) GTEST_SKIP() << "no " << stories();
  TempDir d;
  Arch a = uniform_arch(load_hf_config(stories() + "/config.json"), 4, 64);
  a.lm_head_bits = 4;
  write_arch(a, d.path + "/arch.json");
  for (const auto& [arch, head] : {std::pair<std::string, int>{d.path + "/arch.json", 4}, {"uniform:4", 8}}) {
    const std::string out = d.path + "/h" + std::to_string(head);
    CliRun r = run_cli("export --model " + stories() + " --arch " + arch + " --quant rtn --lm-head-bits 8 --out " + out);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(nlohmann::json::parse(read_text_file(out + "/config.json"))["llmc_format"]["lm_head_bits"], head);
    EXPECT_EQ(nlohmann::json::parse(read_text_file(out + "/export_report.json"))["quant"]["lm_head_bits"], head);
    EXPECT_EQ(read_arch(out + "/arch.json").lm_head_bits, head);
  }
}

// bench --lut: the LUT's prediction for an exported model next to the measurement (no timing is
// asserted: only that the prediction is made from the folder's arch and a mismatched LUT is refused).
TEST(ExportCli, BenchPrintsLutPrediction) {
  if (!dir_exists(stories())) GTEST_SKIP() << "no " << stories();
  TempDir d;
  const std::string out = d.path + "/s4", space = std::string(LLMC_SOURCE_DIR) + "/configs/space_default.json";
  CliRun r = run_cli("export --model " + stories() + " --arch uniform:4 --quant rtn --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string lut = d.path + "/lut.json", lut8 = d.path + "/lut8.json";
  r = run_cli("--threads 1 lut --model " + stories() + " --space " + space +
              " --tokens 1,16 --context 16 --repeats 20 --out " + lut);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("--threads 1 bench --json --prompt-tokens 16 --new-tokens 8 --repeats 1 --warmup 0 --lut " + lut +
              " --model " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  ASSERT_TRUE(j["predicted"].is_object()) << r.out;
  EXPECT_EQ(j["predicted"]["clock"], "thread cpu time");
  for (const char* k : {"decode_ms", "prefill_ms"}) {
    ASSERT_TRUE(j["predicted"].contains(k)) << k;
    EXPECT_GT(j["predicted"][k]["predicted"].get<double>(), 0.0);
    EXPECT_GT(j["predicted"][k]["measured"].get<double>(), 0.0);
  }
  // 8 decode steps after a 16-token prompt attend over 17..24 positions; the LUT's decode over 16.
  EXPECT_DOUBLE_EQ(j["predicted"]["decode_ms"]["mean_context"].get<double>(), 20.5);
  EXPECT_EQ(j["predicted"]["decode_ms"]["lut_context"], 16);
  // An 8-bit lm_head LUT does not describe this model's dense lm_head.
  r = run_cli("--threads 1 lut --model " + stories() + " --space " + space +
              " --tokens 1 --context 16 --repeats 20 --lm-head-bits 8 --out " + lut8);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("--threads 1 bench --prompt-tokens 16 --new-tokens 8 --repeats 1 --lut " + lut8 + " --model " + out);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("timed a 8-bit lm_head, this model's is 16-bit"), std::string::npos) << r.out;
  // Neither decode nor the prompt length in the LUT.
  r = run_cli("--threads 1 bench --prompt-tokens 32 --new-tokens 8 --repeats 1 --lut " + lut8 + " --model " + out);
  EXPECT_EQ(r.code, 1) << r.out;
}

// generate runs the runtime engine by default for float32 models; both engines give stories260K's
// reference greedy continuation through the CLI.
TEST(ExportCli, GenerateEnginesMatchReferenceGreedy) {
  if (!dir_exists(stories())) GTEST_SKIP() << "no " << stories();
  auto ref = nlohmann::json::parse(read_text_file(stories() + "/reference_greedy.json"));
  const auto& c = ref["cases"][1];
  const auto want = c["generated_ids"].get<std::vector<int>>();
  for (const char* engine : {"auto", "runtime", "torch"}) {
    CliRun r = run_cli(std::string("--threads 1 generate --json --engine ") + engine + " --max-new-tokens " +
                       std::to_string(want.size()) + " --prompt \"" + c["prompt"].get<std::string>() + "\" --model " +
                       stories());
    ASSERT_EQ(r.code, 0) << r.out;
    auto j = nlohmann::json::parse(r.out.substr(r.out.find("{\"ids\"")));
    EXPECT_EQ(j["ids"].get<std::vector<int>>(), want) << engine;
  }
  CliRun r = run_cli("generate --engine runtime --dtype bfloat16 --prompt hi --model " + stories());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("float32"), std::string::npos) << r.out;
}

// Tied embedding + packed lm_head: one table is stored ("embedding": "lm_head"), the in-memory
// quantized model already computes with it, and the reloaded folder gives the same logits.
TEST(Export, TiedEmbeddingSharesThePackedLmHead) {
  auto c = test::tiny_config();
  c.tie_word_embeddings = true;
  auto m = test::random_llama(c, 21);
  Arch a = uniform_arch(c, 4, 32);
  auto sub = discretize(*m, a);
  QuantizeOptions qo;
  qo.group_size = 32;
  qo.lm_head_bits = 8;
  quantize_model(*sub, a, qo, {});
  // The embedding is now the dequantized lm_head table.
  EXPECT_TRUE(at::equal(sub->weights().embed, sub->weights().lm_head->dense_weight()));
  TempDir d;
  const std::string out = d.path + "/tied";
  ExportWriteOptions wo;
  wo.group_size = 32;
  write_export_folder(*sub, out, wo);
  SafetensorsFile f(out + "/model.safetensors");
  EXPECT_EQ(f.find("model.embed_tokens.weight"), nullptr);
  ASSERT_NE(f.find("lm_head.qweight"), nullptr);
  auto cfg = nlohmann::json::parse(read_text_file(out + "/config.json"));
  EXPECT_EQ(cfg["llmc_format"]["embedding"], "lm_head");
  EXPECT_EQ(size_report(*sub).embedding, 0);
  LoadOptions lo;
  lo.need_tokenizer = false;
  auto back = load_exported(out, lo, false);
  at::manual_seed(3);
  auto tokens = at::randint(0, c.vocab_size, {2, 7}, at::kLong);
  auto want = sub->forward(tokens), got = back->forward(tokens);
  EXPECT_LE((got - want).abs().max().item<double>(), 1e-5 * want.abs().max().item<double>());
  // The flag without a packed, tied lm_head is refused.
  auto j = cfg;
  j["llmc_format"]["lm_head_bits"] = 16;
  std::ofstream(out + "/config.json") << j.dump(2);
  try {
    load_exported(out, lo, false);
    ADD_FAILURE() << "loaded an inconsistent folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs tie_word_embeddings and a packed lm_head"), std::string::npos)
        << e.what();
  }
}

// Issue 21 defect 10: a kill between the export's two renames leaves OUT.old-PID (the previous
// export) and .OUT.tmp-PID (the new one); the next export to OUT cleans both and writes OUT. A
// running process's temporaries and other names next to OUT are left alone.
TEST(Export, NextExportCleansWhatAKilledOneLeft) {
  auto c = test::tiny_config();
  auto m = test::random_llama(c, 5);
  const Arch a = uniform_arch(c, 4, 32);
  TempDir d;
  const std::string out = d.path + "/exp";
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  const std::string dead = std::to_string(child), live = std::to_string(::getppid());
  export_rtn(*m, a, d.path + "/exp.old-" + dead);  // a complete earlier export, moved aside
  fs::create_directories(d.path + "/.exp.tmp-" + dead);
  std::ofstream(d.path + "/.exp.tmp-" + dead + "/config.json") << "{";
  fs::create_directories(d.path + "/.exp.tmp-" + live);
  fs::create_directories(d.path + "/exp.old-mine");
  export_rtn(*m, a, out);
  EXPECT_TRUE(is_exported_folder(out));
  EXPECT_FALSE(fs::exists(d.path + "/exp.old-" + dead));
  EXPECT_FALSE(fs::exists(d.path + "/.exp.tmp-" + dead));
  EXPECT_TRUE(fs::exists(d.path + "/.exp.tmp-" + live));
  EXPECT_TRUE(fs::exists(d.path + "/exp.old-mine"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(d.path)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{".exp.tmp-" + live, "exp", "exp.old-mine"}));
}
