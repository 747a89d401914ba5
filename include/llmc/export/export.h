#pragma once
// The export pipeline (`llmcompress export`): load the source model, discretize it to an Arch
// (a search result or uniform:B), quantize every linear (RTN or GPTQ), optionally LoRA fine-tune
// (QA-LoRA, merged exactly), and write the exported folder (format.h).
#include <string>

#include "llmc/data/calibration.h"
#include "llmc/export/format.h"
#include "llmc/finetune/qalora.h"
#include "llmc/model/arch.h"

namespace llmc {

struct ExportOptions {
  std::string model;               // HF folder, GGUF file or exported folder
  std::string arch = "uniform:4";  // RUN/arch.json | uniform:B
  std::string out;
  // packed: the exported folder OUT | gguf: the GGUF file OUT (report: OUT.report.json) |
  // both: the folder OUT with OUT/model.gguf, from one quantization (gguf_export.h)
  std::string format = "packed";
  std::string quant = "rtn";  // rtn | gptq
  std::string q_range = "zero";  // zero | minmax (QuantizeOptions::range)
  int group_size = 0;         // 0: the arch's (uniform: 128)
  int lm_head_bits = 16;      // 16 = exact dense lm_head; 8 or 4 = packed
  std::string dense_dtype = "float32";
  bool calib_given = false;   // --calib passed: calibrate (error report) even for RTN without fine-tuning
  CalibOptions calib;
  FinetuneOptions finetune;
};

struct ExportResult {
  std::string out;
  std::string report_json;
  SizeReport size;
};

// "uniform:B" -> uniform_arch(config, B, group_size or 128); else read_arch(spec) checked against
// the model (group_size > 0 overrides the file's).
Arch resolve_arch(const std::string& spec, const ModelConfig& config, int group_size);

ExportResult run_export(const ExportOptions& opts);

}  // namespace llmc
