#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llmc/export/export.h"

namespace llmc::cli {

Action add_export(CLI::App& app) {
  auto o = std::make_shared<ExportOptions>();
  auto json_out = std::make_shared<bool>(false);
  app.add_option("--model", o->model, "Source model: HF folder or GGUF file")->required();
  app.add_option("--arch", o->arch, "RUN/arch.json from the search, or uniform:B (B in 2,3,4,8,16)")->capture_default_str();
  app.add_option("--out", o->out, "Output folder (--format gguf: the .gguf file), written atomically")->required();
  app.add_option("--format", o->format,
                 "packed (our folder) | gguf (one llama.cpp file; report in OUT.report.json) | both (folder OUT with "
                 "OUT/model.gguf, one quantization)")
      ->capture_default_str()
      ->check(CLI::IsMember({"packed", "gguf", "both"}));
  app.add_option("--quant", o->quant, "rtn | gptq")->capture_default_str();
  app.add_option("--q-range", o->q_range,
                 "RTN group range: zero ([min(0,w), max(0,w)], integer zero points) | minmax (GGUF Q4_1's rule: "
                 "re-quantizing a Q4_1 source at 4 bits, group 32, gives back its codes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"zero", "minmax"}));
  auto* calib = app.add_option("--calib", o->calib.source, "Calibration data: generate (data-free, sampled by the model) | text:FILE")
                    ->capture_default_str();
  app.add_option("--calib-samples", o->calib.samples, "Calibration sequences")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--calib-seq-len", o->calib.seq_len, "Tokens per calibration sequence")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--finetune-steps", o->finetune.steps, "LoRA fine-tuning steps (0 = none)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--lora-rank", o->finetune.rank, "LoRA rank")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--lora-alpha", o->finetune.alpha, "LoRA alpha (scale alpha/rank; 0 = rank)")->capture_default_str()->check(CLI::NonNegativeNumber);
  app.add_option("--lr", o->finetune.lr, "Fine-tuning learning rate (Adam)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--batch-size", o->finetune.batch_size, "Fine-tuning sequences per step")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_flag("--distill", o->finetune.distill, "Fine-tune on KL to the original model's logits (else cross-entropy)");
  app.add_option("--group-size", o->group_size, "Quantization group (32, 64, 128; default: the arch's, uniform 128)");
  app.add_option("--lm-head-bits", o->lm_head_bits, "16 = exact dense lm_head; 8 or 4 = packed (faster decode; --quant gptq: GPTQ on the final-norm outputs). An --arch file with lm_head_bits (a search that chose it) overrides this")->capture_default_str();
  app.add_option("--dense-dtype", o->dense_dtype, "Stored dtype of the embedding and 16-bit linears: float32 | bfloat16")->capture_default_str();
  app.add_option("--seed", o->calib.seed, "Seed for calibration sampling and fine-tuning")->capture_default_str();
  app.add_flag("--json", *json_out, "Print the export report as JSON");
  return [o, json_out, calib] {
    o->calib_given = calib->count() > 0;
    o->finetune.seed = o->calib.seed;
    ExportResult r = run_export(*o);
    if (r.out.empty()) return 0;  // a data-parallel rank other than 0: rank 0 wrote and prints
    if (*json_out) {
      std::fputs(r.report_json.c_str(), stdout);
    } else {
      auto j = nlohmann::json::parse(r.report_json);
      std::printf("exported %s\n", r.out.c_str());
      if (j.contains("gguf"))
        std::printf("  gguf           %s (%s, %s, max relative error %.3g)\n",
                    j["gguf"]["file"].get<std::string>().c_str(), j["gguf"]["architecture"].get<std::string>().c_str(),
                    j["gguf"]["exact"].get<bool>() ? "every tensor exact" : "some tensors requantized",
                    j["gguf"]["max_rel_fro_err"].get<double>());
      std::printf("  weights        %lld bytes (embedding %lld, lm_head %lld, attention %lld, mlp %lld, norms %lld)\n",
                  static_cast<long long>(r.size.total()), static_cast<long long>(r.size.embedding),
                  static_cast<long long>(r.size.lm_head), static_cast<long long>(r.size.attention),
                  static_cast<long long>(r.size.mlp), static_cast<long long>(r.size.norms));
      std::printf("  linears        %.3f bits per weight (codes %.3f + scales/zeros)\n", r.size.avg_bits_per_weight(),
                  r.size.avg_code_bits());
      if (j.contains("files") && j["files"].contains("model.safetensors"))
        std::printf("  model file     %lld bytes\n", static_cast<long long>(j["files"]["model.safetensors"].get<int64_t>()));
      if (j["finetune"]["steps"].get<int64_t>() > 0)
        std::printf("  fine-tune      loss %.4f -> %.4f (mean of first/last 10 steps), merge rel diff %.2e\n",
                    j["finetune"]["loss_first10_mean"].get<double>(), j["finetune"]["loss_last10_mean"].get<double>(),
                    j["finetune"]["merge_max_rel_logit_diff"].get<double>());
    }
    return 0;
  };
}

}  // namespace llmc::cli
