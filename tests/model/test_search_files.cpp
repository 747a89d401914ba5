// search's output folder and --resume (issue 21): a checkpoint of another config or with broken
// fields is refused before any work, the run's own LUT is reused, foreign files are never touched,
// one run per folder, every log write checked and no step logged twice after a resume.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/process.h"
#include "llmc/nas/search.h"
#include "llmc/nas/search_files.h"
#include "search_run.h"

using namespace llmc;
namespace fs = std::filesystem;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const char* kSched = R"("steps":8,"arch_lr":0.1,"lambda":5,"checkpoint_every":2,"lora_rank":2)";

// Runs the config in `out` and stops after `stop_at` steps (a checkpoint is written there).
void run_stopped(const SearchConfig& c, const std::string& out, int64_t stop_at) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = out;
  o.on_step = [stop_at](int64_t step) {
    if (step == stop_at) request_search_stop();
  };
  auto r = run_search(c, o);
  ASSERT_TRUE(r.interrupted);
}

SearchResult resume(const SearchConfig& c, const std::string& out) {
  SearchOptions o;
  o.progress = false;
  o.out_dir = out;
  o.resume = true;
  return run_search(c, o);
}

std::vector<int64_t> logged_steps(const std::string& log) {
  std::vector<int64_t> steps;
  std::istringstream in(read_text_file(log));
  std::string line;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return steps;
}

}  // namespace

// Defect 4: target, distillation, schedule and data changes are refused with the keys named; the
// model by content: the same folder spelled another way resumes, a changed model file is refused
// before it is loaded (the error is the fingerprint's, not the loader's).
TEST_F(SearchRun, ResumeRefusesAChangedConfigBeforeAnyWork) {
  const std::string out = dir() + "/changed";
  const std::string model = dir() + "/changed_model";
  fs::remove_all(model);
  fs::copy(stories(), model, fs::copy_options::recursive);
  auto base = config(kSched);
  base.model = model;
  run_stopped(base, out, 3);

  auto changed = [&](const std::function<void(SearchConfig&)>& edit) {
    SearchConfig c = base;
    edit(c);
    return error_of([&] { resume(c, out); });
  };
  std::string e = changed([](SearchConfig& c) { c.target_fraction = 0.3; });
  EXPECT_NE(e.find("checkpoint was made with a different config (target.fraction differ)"), std::string::npos) << e;
  EXPECT_NE(e.find(out + "/checkpoint/state.json"), std::string::npos) << e;
  e = changed([](SearchConfig& c) { c.target_ms = 0.01; });
  EXPECT_NE(e.find("target.fraction, target.ms differ"), std::string::npos) << e;
  e = changed([](SearchConfig& c) { c.distill = false; });
  EXPECT_NE(e.find("(schedule.distill differ)"), std::string::npos) << e;
  e = changed([](SearchConfig& c) { c.weight_lr = 2e-3; });
  EXPECT_NE(e.find("(schedule.weight_lr differ)"), std::string::npos) << e;
  e = changed([](SearchConfig& c) { c.train_sequences = 4; });
  EXPECT_NE(e.find("(data.train_sequences differ)"), std::string::npos) << e;
  e = changed([](SearchConfig& c) { c.mode = "width-only"; });
  EXPECT_NE(e.find("(mode differ)"), std::string::npos) << e;
  // The data by content: the same text under another name is the same data, other text is not.
  const std::string copy = dir() + "/changed_data.txt";
  write_file_atomic(copy, read_text_file(data_file()) + "\nOne more line.\n");
  e = changed([&](SearchConfig& c) { c.data_sources = {"text:" + copy}; });
  EXPECT_NE(e.find("(data.sources differ)"), std::string::npos) << e;
  // A fewshot:TASK source by what its split says: another data folder with other examples differs.
  const std::string fsd = dir() + "/fewshot-data";
  make_dirs(fsd + "/arc_easy");
  write_file_atomic(fsd + "/arc_easy/ARC-Easy-Dev.jsonl",
                    R"({"question":{"stem":"Q?","choices":[{"text":"a","label":"A"}]},"answerKey":"A"})" "\n");
  SearchConfig with_fewshot = base;
  with_fewshot.data_sources = {"fewshot:arc_easy"};
  with_fewshot.data_dir = fsd;
  const std::string fp = search_fingerprint(with_fewshot, base.lut);
  EXPECT_EQ(search_fingerprint(with_fewshot, base.lut), fp);
  write_file_atomic(fsd + "/arc_easy/ARC-Easy-Dev.jsonl",
                    R"({"question":{"stem":"Q?","choices":[{"text":"b","label":"A"}]},"answerKey":"A"})" "\n");
  EXPECT_NE(search_fingerprint(with_fewshot, base.lut), fp);

  // A changed model is refused before loading it: here it is truncated, which the loader would
  // report as a broken file.
  const std::string st = model + "/model.safetensors";
  const std::string bytes = read_text_file(st);
  write_file_atomic(st, bytes.substr(0, bytes.size() / 2));
  e = changed([](SearchConfig&) {});
  EXPECT_NE(e.find("(model differ)"), std::string::npos) << e;
  write_file_atomic(st, bytes);

  // The same config with the model path spelled differently and the same text in another file
  // resumes and finishes.
  write_file_atomic(copy, read_text_file(data_file()));
  SearchConfig same = base;
  same.model = dir() + "/./changed_model/";
  same.data_sources = {"text:" + copy};
  auto r = resume(same, out);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(r.steps_done, 8);
}

// Defect 4: state.json fields out of range are clear one-line errors naming the file.
TEST_F(SearchRun, ResumeValidatesCheckpointState) {
  const std::string out = dir() + "/state";
  auto c = config(kSched);
  run_stopped(c, out, 2);
  const std::string p = out + "/checkpoint/state.json";
  const std::string good = read_text_file(p);
  auto with = [&](const char* key, const nlohmann::json& v) {
    auto j = nlohmann::ordered_json::parse(good);
    j[key] = v;
    write_file_atomic(p, j.dump(1));
    return error_of([&] { resume(c, out); });
  };
  std::string e = with("step", -5);
  EXPECT_NE(e.find(p + ": corrupt checkpoint, 'step' is -5 (expected an integer in 1..8)"), std::string::npos) << e;
  e = with("step", 99);
  EXPECT_NE(e.find("'step' is 99"), std::string::npos) << e;
  e = with("rng", "garbage");
  EXPECT_NE(e.find(p + ": corrupt checkpoint, 'rng' is not a random generator state"), std::string::npos) << e;
  e = with("phase", 9);
  EXPECT_NE(e.find(p + ": corrupt checkpoint, 'phase' is 9"), std::string::npos) << e;
  e = with("phase", 2);  // joint mode has one phase
  EXPECT_NE(e.find("'phase' is 2"), std::string::npos) << e;
  e = with("adam_arch_t", "x");
  EXPECT_NE(e.find("'adam_arch_t' is \"x\""), std::string::npos) << e;
  e = with("config", "old|fingerprint|string");
  EXPECT_NE(e.find("made by an older llmcompress"), std::string::npos) << e;
  write_file_atomic(p, "{not json");
  e = error_of([&] { resume(c, out); });
  EXPECT_NE(e.find(p + ": corrupt checkpoint, not JSON"), std::string::npos) << e;
  write_file_atomic(p, good);
  EXPECT_EQ(resume(c, out).steps_done, 8);
}

// Defect 9: without a `lut` key the run's own OUT/lut.json is read (never measured again or
// replaced), on a fresh run and on --resume; a resume without it is refused.
TEST_F(SearchRun, ResumeReusesTheRunsOwnLut) {
  const std::string out = dir() + "/ownlut";
  auto c = config(kSched);
  make_dirs(out);
  const std::string own = out + "/lut.json";
  write_file_atomic(own, read_text_file(c.lut));  // synthetic times: a measurement would differ
  const std::string before = read_text_file(own);
  c.lut.clear();
  run_stopped(c, out, 3);
  EXPECT_EQ(read_text_file(own), before) << "the run's own LUT was measured again";
  auto r = resume(c, out);
  EXPECT_EQ(r.steps_done, 8);
  EXPECT_EQ(read_text_file(own), before) << "resume measured the LUT again";

  // A resume whose table is gone would not be exact: refused.
  make_dirs(out + "2");
  write_file_atomic(out + "2/lut.json", before);
  run_stopped(c, out + "2", 3);
  fs::remove(out + "2/lut.json");
  std::string e = error_of([&] { resume(c, out + "2"); });
  EXPECT_NE(e.find(out + "2/lut.json: the latency table this run's checkpoint was made with is missing"),
            std::string::npos)
      << e;
  EXPECT_FALSE(file_exists(out + "2/lut.json"));

  // A fresh run reads an OUT/lut.json left by an earlier one only when this build would measure
  // the same table (kernels, context): otherwise an error, not a silent re-measure.
  auto j = nlohmann::json::parse(before);
  j["kernel_version"] = "runtime-ops-1 avx2";
  make_dirs(out + "3");
  write_file_atomic(out + "3/lut.json", j.dump());
  SearchOptions o;
  o.progress = false;
  o.out_dir = out + "3";
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find(out + "3/lut.json: measured with kernels 'runtime-ops-1 avx2'"), std::string::npos) << e;
  c.lut_context = 256;
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find(out + "3/lut.json: measured with context 512"), std::string::npos) << e;
}

// Defect 2: foreign files in --out are refused (never deleted), --force writes next to top-level
// ones, --out / is refused, and a second run on a folder in use is refused.
TEST_F(SearchRun, OutFolderWithForeignFilesIsRefused) {
  auto c = config(R"("steps":2,"arch_lr":0.1,"lambda":5,"checkpoint_every":1)");
  SearchOptions o;
  o.progress = false;
  o.out_dir = dir() + "/proj";
  make_dirs(o.out_dir + "/checkpoint");
  write_file_atomic(o.out_dir + "/checkpoint/model.pt", "precious");
  std::string e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("checkpoint holds 'model.pt', which search did not write"), std::string::npos) << e;
  o.force = true;  // --force does not make search delete it either
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("model.pt"), std::string::npos) << e;
  EXPECT_EQ(read_text_file(o.out_dir + "/checkpoint/model.pt"), "precious");
  EXPECT_FALSE(file_exists(o.out_dir + "/search_log.jsonl"));

  o.out_dir = dir() + "/notes";
  o.force = false;
  make_dirs(o.out_dir);
  write_file_atomic(o.out_dir + "/notes.txt", "mine");
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("--out " + o.out_dir + ": holds 'notes.txt', which search did not write"), std::string::npos) << e;
  o.force = true;
  auto r = run_search(c, o);
  EXPECT_EQ(r.steps_done, 2);
  EXPECT_EQ(read_text_file(o.out_dir + "/notes.txt"), "mine");
  o.force = false;
  o.out_dir = dir() + "/notes/";  // our own files from the run before are fine
  fs::remove(dir() + "/notes/notes.txt");
  EXPECT_EQ(run_search(c, o).steps_done, 2);

  o.out_dir = "/";
  o.force = true;
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("refusing to write a search into the root folder"), std::string::npos) << e;
  o.out_dir = dir() + "/../../";
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("root folder"), std::string::npos) << e;

  o.out_dir = dir() + "/busy";
  o.force = false;
  make_dirs(o.out_dir);
  auto held = FileLock::try_lock(o.out_dir + "/search.lock");
  ASSERT_NE(held, nullptr);
  e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find("another search is running on this folder"), std::string::npos) << e;
  held.reset();
  EXPECT_EQ(run_search(c, o).steps_done, 2);
}

// Defect 5: rows logged after the checkpoint by a run that was then killed are logged once, by the
// resumed run (the log equals an uninterrupted run's); a log write that fails is an error.
TEST_F(SearchRun, LogHoldsEachStepOnceAfterKillAndResume) {
  auto c = config(kSched);
  SearchOptions full;
  full.progress = false;
  full.out_dir = dir() + "/log_full";
  run_search(c, full);
  const std::string out = dir() + "/log_killed";
  run_stopped(c, out, 4);
  const std::string log = out + "/search_log.jsonl";
  {  // as if killed after logging steps 5 and 6 (checkpoint at 4) and in the middle of a line
    AppendFile f(log, false);
    f.write_line(R"({"step":5,"phase":1,"task_loss":1})");
    f.write_line(R"({"step":6,"phase":1,"task_loss":1})");
  }
  write_file_atomic(log, read_text_file(log) + R"({"step":7,"pha)");
  resume(c, out);
  EXPECT_EQ(logged_steps(log), (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(read_text_file(log), read_text_file(full.out_dir + "/search_log.jsonl"));

  if (!fs::exists("/dev/full")) return;
  SearchOptions o = full;
  o.out_dir = dir() + "/log_full_disk";
  make_dirs(o.out_dir);
  fs::create_symlink("/dev/full", o.out_dir + "/search_log.jsonl");
  const std::string e = error_of([&] { run_search(c, o); });
  EXPECT_NE(e.find(o.out_dir + "/search_log.jsonl: write failed"), std::string::npos) << e;
}

// Defect 7: search config values that became the default or ran with nonsense are errors naming
// the file and the key.
TEST(SearchConfig, RejectsOutOfRangeValues) {
  auto err = [](const std::string& body) {
    return error_of([&] { parse_search_config(R"({"model":"m",)" + body + "}", "c.json", "/"); });
  };
  EXPECT_NE(err(R"("data":{"sources":["fewshot:nope"]})").find("c.json.data.sources: 'fewshot:nope': 'nope' is not a multiple-choice task"),
            std::string::npos);
  EXPECT_NE(err(R"("data":{"sources":["arc_easy"]})").find("c.json.data.sources: 'arc_easy' must look like text:FILE or fewshot:TASK"),
            std::string::npos);
  EXPECT_EQ(parse_search_config(R"({"model":"m","data":{"sources":["fewshot:mmlu","text:a.txt"]}})", "c.json", "/d")
                .data_sources,
            (std::vector<std::string>{"fewshot:mmlu", "text:/d/a.txt"}));
  EXPECT_NE(err(R"("target":{"fraction":-0.5})").find("c.json.target.fraction: -0.5 (expected a fraction"),
            std::string::npos);
  EXPECT_NE(err(R"("target":{"fraction":0})").find("c.json.target.fraction: 0"), std::string::npos);
  EXPECT_NE(err(R"("target":{"fraction":1.5})").find("c.json.target.fraction: 1.5"), std::string::npos);
  EXPECT_NE(err(R"("target":{"ms":-1})").find("c.json.target.ms: -1 (expected > 0)"), std::string::npos);
  EXPECT_NE(err(R"("target":{"ms":0})").find("c.json.target.ms: 0"), std::string::npos);
  EXPECT_NE(err(R"("target":{"tokens":0})").find("c.json.target.tokens: 0"), std::string::npos);
  EXPECT_NE(err(R"("schedule":{"arch_lr":-0.1})").find("c.json.schedule.arch_lr: -0.1"), std::string::npos);
  EXPECT_NE(err(R"("schedule":{"weight_lr":-1e-3})").find("c.json.schedule.weight_lr: -0.001"), std::string::npos);
  EXPECT_NE(err(R"("schedule":{"checkpoint_every":-2})").find("c.json.schedule.checkpoint_every: -2"),
            std::string::npos);
  EXPECT_NE(err(R"("target":{"relative_to":"uniform:5"})").find("c.json.target.relative_to: 'uniform:5' (expected original or uniform:B"),
            std::string::npos);
  EXPECT_NE(err(R"("target":{"relative_to":"fp16"})").find("c.json.target.relative_to: 'fp16'"), std::string::npos);
  EXPECT_NE(err(R"("space":{"bits":[4,8,16]},"target":{"relative_to":"uniform:2"})")
                .find("c.json.target.relative_to: uniform:2 is not one of the space's bits"),
            std::string::npos);
  EXPECT_NE(err(R"("target":{"relative_to":"uniform:4","fraction":4.5})").find("c.json.target.fraction: 4.5 (expected a fraction of the uniform 4-bit latency in (0, 4])"),
            std::string::npos);
  // Relative to a uniform quantization, above 1 is a request (slower than it, more accurate).
  EXPECT_EQ(parse_search_config(R"({"model":"m","target":{"relative_to":"uniform:4","fraction":1.1}})", "c.json", "/")
                .target_relative_bits,
            4);
  EXPECT_NE(err(R"("schedule":{"arch_optimizer":"rmsprop"})").find("c.json.schedule.arch_optimizer: 'rmsprop' is not adam or sgd"),
            std::string::npos);
  EXPECT_EQ(parse_search_config(R"({"model":"m","schedule":{"arch_optimizer":"sgd"}})", "c.json", "/").arch_optimizer, "sgd");
  EXPECT_NE(err(R"("schedule":{"discretize":"knapsack","knapsack_width_weights":[]})")
                .find("c.json.schedule.knapsack_width_weights: empty"),
            std::string::npos);
  EXPECT_NE(err(R"("schedule":{"discretize":"knapsack","knapsack_width_weights":[1,0]})")
                .find("c.json.schedule.knapsack_width_weights: 0 (expected > 0)"),
            std::string::npos);
  EXPECT_NE(err(R"("schedule":{"knapsack_width_weights":[1,4]})")
                .find("c.json.schedule.knapsack_width_weights: needs \"discretize\": \"knapsack\""),
            std::string::npos);
  EXPECT_NE(err(R"("schedule":{"discretize":"knapsack","knapsack_width_weights":"4"})")
                .find("c.json.schedule.knapsack_width_weights: wrong type"),
            std::string::npos);
  EXPECT_NE(err(R"("schedule":{"sensitivity_passes":0})").find("c.json.schedule.sensitivity_passes: 0 (expected >= 1)"),
            std::string::npos);
  EXPECT_NE(err(R"("schedule":{"discretize":"knapsack","sensitivity_passes":2})")
                .find("c.json.schedule.sensitivity_passes: needs \"init\": \"sensitivity\" and \"discretize\": \"knapsack\""),
            std::string::npos);
  EXPECT_EQ(parse_search_config(R"({"model":"m","schedule":{"discretize":"knapsack","knapsack_width_weights":[1,4]}})",
                                "c.json", "/")
                .knapsack_width_weights,
            (std::vector<double>{1, 4}));
  // Still fine: a fraction of 1, ms alone, ms with a fraction (ms wins).
  EXPECT_EQ(err(R"("target":{"fraction":1})"), "");
  auto c = parse_search_config(R"({"model":"m","target":{"ms":2.5,"fraction":0.4}})", "c.json", "/");
  EXPECT_EQ(c.target_ms, 2.5);
}
