// Every input a user can get wrong gives one clear error line and exit code 1 (never a crash).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <limits>

#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/model/load.h"
#include "llmc_kernels/qgemm.h"
#include "synthetic.h"
#include "cli_run.h"

using namespace llmc;

namespace {

class CliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = "/tmp/llmc_cli_" + std::to_string(::getpid());
    ::mkdir(dir_.c_str(), 0755);
    good_ = dir_ + "/good";
    save_hf_folder(*test::random_llama(test::tiny_config()), good_);
  }
  void TearDown() override { std::system(("rm -rf " + dir_).c_str()); }
  // A copy of the good model folder with one file replaced.
  std::string variant(const std::string& name, const std::string& file, const std::string& content) {
    std::string d = dir_ + "/" + name;
    std::system(("cp -r " + good_ + " " + d).c_str());
    std::ofstream(d + "/" + file, std::ios::binary) << content;
    return d;
  }
  void expect_error(const std::string& args, const std::string& needle) {
    CliRun r = run_cli(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find("error: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.out;
    // One line: the error line is the last line and no other error lines precede it.
    EXPECT_EQ(r.out.find("error: "), r.out.rfind("error: ")) << r.out;
  }
  std::string dir_, good_;
};

}  // namespace

TEST_F(CliErrors, GoodSyntheticModelLoads) {
  CliRun r = run_cli("info --json --model " + good_);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"total\""), std::string::npos);
}

TEST_F(CliErrors, MissingFolder) { expect_error("info --model " + dir_ + "/nope", "no such model file or folder"); }

TEST_F(CliErrors, MissingConfigKey) {
  std::string cfg = read_text_file(good_ + "/config.json");
  cfg.replace(cfg.find("\"hidden_size\""), 13, "\"hidden_sizeX\"");
  expect_error("info --model " + variant("nokey", "config.json", cfg), "missing required key 'hidden_size'");
}

TEST_F(CliErrors, UnknownArchitecture) {
  std::string cfg = read_text_file(good_ + "/config.json");
  cfg.replace(cfg.find("\"model_type\": \"llama\""), 21, "\"model_type\": \"gpt_neox\"");
  expect_error("info --model " + variant("arch", "config.json", cfg), "unsupported architecture");
}

TEST_F(CliErrors, HeaderLengthPastEof) {
  std::string st = read_text_file(good_ + "/model.safetensors");
  uint64_t huge = st.size() * 2;
  std::memcpy(st.data(), &huge, 8);
  expect_error("info --model " + variant("hdr", "model.safetensors", st), "runs past end of file");
}

TEST_F(CliErrors, OverlappingOffsets) {
  std::string h = R"({"model.norm.weight":{"dtype":"F32","shape":[32],"data_offsets":[0,128]},)"
                  R"("model.embed_tokens.weight":{"dtype":"F32","shape":[2],"data_offsets":[64,72]}})";
  uint64_t n = h.size();
  std::string st(reinterpret_cast<const char*>(&n), 8);
  st += h + std::string(128, '\0');
  expect_error("info --model " + variant("ovl", "model.safetensors", st), "overlap");
}

TEST_F(CliErrors, OutOfRangeOffsets) {
  std::string h = R"({"model.norm.weight":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}})";
  uint64_t n = h.size();
  std::string st(reinterpret_cast<const char*>(&n), 8);
  st += h + std::string(64, '\0');
  expect_error("info --model " + variant("oor", "model.safetensors", st), "out of range");
}

TEST_F(CliErrors, ShapeMismatchAgainstConfig) {
  std::string cfg = read_text_file(good_ + "/config.json");
  cfg.replace(cfg.find("\"intermediate_size\": 40"), 23, "\"intermediate_size\": 48");
  expect_error("info --model " + variant("shape", "config.json", cfg), "config.json implies");
}

TEST_F(CliErrors, DtypeNotFloat) {
  std::string h = R"({"model.embed_tokens.weight":{"dtype":"I32","shape":[50,32],"data_offsets":[0,6400]}})";
  uint64_t n = h.size();
  std::string st(reinterpret_cast<const char*>(&n), 8);
  st += h + std::string(6400, '\0');
  expect_error("info --model " + variant("dtype", "model.safetensors", st), "expected F32, F16 or BF16");
}

TEST_F(CliErrors, TruncatedSafetensors) {
  std::string st = read_text_file(good_ + "/model.safetensors");
  expect_error("info --model " + variant("trunc", "model.safetensors", st.substr(0, st.size() / 2)), "out of range");
}

TEST_F(CliErrors, NonUtf8Prompt) {
  const std::string stories = shared_root() + "/models/stories260K";
  if (!dir_exists(stories)) GTEST_SKIP() << "shared model not found at " << stories;
  expect_error("generate --model " + stories + " --prompt \"$(printf 'abc\\377')\"", "invalid UTF-8");
  // Overlong, surrogate and past-U+10FFFF forms are refused the same way (issue 21 defect 10).
  expect_error("generate --model " + stories + " --prompt \"$(printf 'abc\\300\\257')\"",
               "invalid UTF-8 at byte offset 3 (byte 0xc0: overlong encoding)");
  expect_error("generate --model " + stories + " --prompt \"$(printf 'abc\\355\\240\\200')\"",
               "invalid UTF-8 at byte offset 3 (byte 0xed: UTF-16 surrogate)");
  expect_error("generate --model " + stories + " --prompt \"$(printf 'abc\\364\\220\\200\\200')\"",
               "invalid UTF-8 at byte offset 3 (byte 0xf4: code point past U+10FFFF)");
}

// Issue 21: a model whose first forward gives non-finite logits is an error naming the file (and
// the first weight tensor holding a NaN or Inf) in generate, eval, bench and export; info still
// describes it.
TEST_F(CliErrors, NonFiniteLogitsAreAnErrorNamingTheFile) {
  auto m = test::random_llama(test::tiny_config());
  m->weights().layers[1].down->dense_weight()[3][5] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan = dir_ + "/nan";
  save_hf_folder(*m, nan);
  const std::string head = nan + ": the model's first forward gives non-finite logits";
  const std::string culprit = "'model.layers.1.mlp.down_proj' holds a NaN or Inf";
  for (const char* engine : {"torch", "runtime"}) {
    const std::string args =
        std::string("bench --prompt-tokens 2 --new-tokens 2 --repeats 1 --warmup 0 --engine ") + engine + " --model ";
    expect_error(args + nan, head);
    expect_error(args + nan, culprit);
    EXPECT_EQ(run_cli(args + good_).code, 0) << engine;
  }
  expect_error("export --arch uniform:4 --model " + nan + " --out " + dir_ + "/exp", head);
  EXPECT_FALSE(dir_exists(dir_ + "/exp"));
  // An infinite embedding row that the check's tokens read.
  auto inf = test::random_llama(test::tiny_config());
  inf->weights().embed[1][0] = std::numeric_limits<float>::infinity();
  save_hf_folder(*inf, dir_ + "/inf");
  expect_error("bench --prompt-tokens 2 --new-tokens 2 --repeats 1 --model " + dir_ + "/inf",
               "'model.embed_tokens.weight' holds a NaN or Inf");
  CliRun r = run_cli("info --model " + nan);
  EXPECT_EQ(r.code, 0) << r.out;

  // generate and eval need a tokenizer: stories260K with one NaN weight.
  const std::string stories = shared_root() + "/models/stories260K";
  if (!dir_exists(stories)) GTEST_SKIP() << "shared model not found at " << stories;
  // A copy of stories260K (weights and tokenizer) with the weight `poison` picks set to NaN.
  auto poisoned = [&](const std::string& name, const std::function<at::Tensor(LlamaWeights&)>& poison) {
    auto m = load_llama(stories);
    poison(m->weights())[0][0] = std::numeric_limits<float>::quiet_NaN();
    const std::string dir = dir_ + "/" + name;
    save_hf_folder(*m, dir);
    for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
      std::filesystem::copy_file(stories + "/" + f, dir + "/" + f);
    return dir;
  };
  const std::string snan = poisoned("stories-nan", [](LlamaWeights& w) { return w.layers[0].up->dense_weight(); });
  std::ofstream(dir_ + "/doc.txt") << "Once upon a time there was a little girl.\n";
  const std::string shead = snan + ": the model's first forward gives non-finite logits";
  expect_error("generate --max-new-tokens 4 --prompt 'Once upon a time' --model " + snan, shead);
  expect_error("eval --tasks text:" + dir_ + "/doc.txt --model " + snan, shead);
  expect_error("eval --tasks text:" + dir_ + "/doc.txt --model " + snan, "'model.layers.0.mlp.up_proj'");
  r = run_cli("generate --max-new-tokens 4 --prompt 'Once upon a time' --model " + stories);
  EXPECT_EQ(r.code, 0) << r.out;

  // One NaN in layer 0's q_proj: every score of that head is NaN. The runtime's attention once took
  // the scores' maximum with std::max (which skips NaN), found none, and wrote 0 as for a padding
  // query, so generate printed plausible text; now the NaN reaches the logits, as in torch.
  const std::string qnan = poisoned("stories-qnan", [](LlamaWeights& w) { return w.layers[0].q->dense_weight(); });
  for (const char* engine : {"runtime", "torch"}) {
    const std::string args = std::string("generate --max-new-tokens 4 --prompt 'Once upon a time' --engine ") + engine;
    expect_error(args + " --model " + qnan, qnan + ": the model's first forward gives non-finite logits");
    expect_error(args + " --model " + qnan, "'model.layers.0.self_attn.q_proj' holds a NaN or Inf");
  }
}

TEST_F(CliErrors, EmptyTextFile) {
  const std::string stories = shared_root() + "/models/stories260K";
  if (!dir_exists(stories)) GTEST_SKIP() << "shared model not found at " << stories;
  std::ofstream(dir_ + "/empty.txt").close();
  expect_error("eval --model " + stories + " --tasks text:" + dir_ + "/empty.txt", "empty text file");
}

// Issue 21: a task file with invalid UTF-8 is one error line naming the file and the line, exit 1
// (before, the tokenizer refused it as "tokenizer input", naming neither).
TEST_F(CliErrors, TaskFileWithInvalidUtf8) {
  const std::string stories = shared_root() + "/models/stories260K";
  if (!dir_exists(stories)) GTEST_SKIP() << "shared model not found at " << stories;
  const std::string file = dir_ + "/data/hellaswag/hellaswag_val_full.txt";
  std::filesystem::create_directories(parent_dir(file));
  std::ofstream(file, std::ios::binary) << "A man walks.\n0\nHe sits\xff.\nHe runs.\nHe jumps.\nHe sleeps.\n";
  expect_error("eval --model " + stories + " --data-dir " + dir_ + "/data --tasks hellaswag",
               file + ":3: invalid UTF-8 at byte offset 22 of the file (byte 0xff: invalid lead byte)");
}

TEST_F(CliErrors, UnknownTask) {
  expect_error("eval --model " + good_ + " --tasks nosuchtask", "unknown task 'nosuchtask'");
}

// Issue 21, defect 7: config.json values that loaded silently, each one line naming the file.
TEST_F(CliErrors, ConfigValuesAgainstTheTensors) {
  auto cfg_with = [&](const std::string& name, const std::string& from, const std::string& to) {
    std::string cfg = read_text_file(good_ + "/config.json");
    const size_t at = cfg.find(from);
    EXPECT_NE(at, std::string::npos) << from << " in " << cfg;
    if (at != std::string::npos) cfg.replace(at, from.size(), to);
    return variant(name, "config.json", cfg);
  };
  const int64_t layers = test::tiny_config().num_layers;
  const std::string n = "\"num_hidden_layers\": " + std::to_string(layers);
  expect_error("info --model " + cfg_with("fewer", n, "\"num_hidden_layers\": " + std::to_string(layers - 1)),
               "config.json: num_hidden_layers is " + std::to_string(layers - 1) + " but the model's tensors hold " +
                   std::to_string(layers) + " layers");
  expect_error("info --model " + cfg_with("frac", n, "\"num_hidden_layers\": 5.5"),
               "config.json: key 'num_hidden_layers' must be an integer (got 5.5)");
  expect_error("info --model " + cfg_with("ctx", "\"max_position_embeddings\": 64", "\"max_position_embeddings\": 0"),
               "config.json: max_position_embeddings must be positive (got 0)");
  expect_error("info --model " + cfg_with("eos", "\"eos_token_id\": 2", "\"eos_token_id\": -5"),
               "config.json: key 'eos_token_id' is -5, not a token id");
}

// --prefill-x-bits: 8 or 16 (a CLI parse error naming the option otherwise); bench reports the width
// its prefill ran with on this CPU: the setting with the int8-x kernel (AVX-512 VNNI), else what the
// CPU's kernels use, and a warning says that 8 was not honoured.
TEST_F(CliErrors, PrefillXBitsIsEightOrSixteen) {
  CliRun r = run_cli("--prefill-x-bits 4 info --model " + good_);
  EXPECT_NE(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("--prefill-x-bits"), std::string::npos) << r.out;
  for (int xb : {8, 16}) {
    llmc::kernels::set_prefill_x_bits(xb);
    const int ran = llmc::kernels::prefill_x_bits_here();
    llmc::kernels::set_prefill_x_bits(16);
    r = run_cli("--prefill-x-bits " + std::to_string(xb) +
                " bench --json --prompt-tokens 2 --new-tokens 2 --repeats 1 --warmup 0 --engine runtime --model " + good_);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("\"prefill_x_bits\": " + std::to_string(ran)), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("has no int8-activation prefill kernel") != std::string::npos, xb == 8 && ran != 8) << r.out;
  }
}
