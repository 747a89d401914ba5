#include "llmc/export/export.h"
#include "llmc/finetune/dist.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/export/discretize.h"
#include "llmc/export/gguf_export.h"
#include "llmc/export/quantize_model.h"
#include "llmc/runtime/open.h"
#include "llmc/quant/quant.h"
#include "llmc/runtime/engine.h"
#include "llmc/model/load.h"

namespace llmc {

using json = nlohmann::ordered_json;

Arch resolve_arch(const std::string& spec, const ModelConfig& config, int group_size) {
  LLMC_CHECK(group_size == 0 || group_size == 32 || group_size == 64 || group_size == 128,
             "--group-size {} is not supported (32, 64 or 128)", group_size);
  if (spec.rfind("uniform:", 0) == 0) {
    int bits = 0;
    try {
      size_t used = 0;
      bits = std::stoi(spec.substr(8), &used);
      if (used != spec.size() - 8) bits = 0;
    } catch (const std::exception&) {
      bits = 0;
    }
    LLMC_CHECK(valid_weight_bits(bits),
               "--arch {}: uniform bits must be 2, 3, 4, 8 or 16", spec);
    return uniform_arch(config, bits, group_size ? group_size : 128);
  }
  Arch a = read_arch(spec);
  check_arch_matches(a, config, spec);
  if (group_size) a.group_size = group_size;
  return a;
}

ExportResult run_export(const ExportOptions& o) {
  LLMC_CHECK(!o.out.empty(), "export: --out is required");
  LLMC_CHECK(o.quant == "rtn" || o.quant == "gptq", "--quant: unknown method '{}' (rtn or gptq)", o.quant);
  LLMC_CHECK(o.format == "packed" || o.format == "gguf" || o.format == "both",
             "--format: '{}' is not packed, gguf or both", o.format);
  const bool gguf = o.format != "packed";
  const auto t0 = std::chrono::steady_clock::now();
  LoadOptions lo;
  lo.dtype = "float32";
  lo.need_tokenizer = false;
  auto model = open_model(o.model, lo, EngineChoice::kTorch);  // an exported folder is refused below
  LLMC_CHECK(model->config().layer_kv_heads.empty() && model->config().layer_intermediate.empty(),
             "{}: the model is already compressed (per-layer widths); export from the original model", o.model);
  for (const auto& L : model->weights().layers)
    for (int k = 0; k < kNumLinears; ++k)
      LLMC_CHECK(!layer_linear(L, k)->is_packed(),
                 "{}: the model's linears are already packed; export from the original model", o.model);
  // Before minutes of quantization: the GGUF's tokenizer (copied from a GGUF source, converted from
  // a Hugging Face folder's tokenizer.model / tokenizer.json) must be writable.
  if (gguf) (void)gguf_tokenizer_metadata(o.model, model->config());
  Arch arch = resolve_arch(o.arch, model->config(), o.group_size);
  // A searched arch may have chosen the lm_head's bits (space.lm_head_bits): its choice wins.
  if (arch.lm_head_bits && arch.lm_head_bits != o.lm_head_bits)
    spdlog::info("export: lm_head at {} bits as {} chose (not --lm-head-bits {})", arch.lm_head_bits, o.arch,
                 o.lm_head_bits);
  if (!arch.lm_head_bits) arch.lm_head_bits = o.lm_head_bits;  // the folder's arch.json records it
  spdlog::info("export: {} -> {} (arch {}, {} , group {})", o.model, o.out, o.arch, o.quant, arch.group_size);

  auto sub = discretize(*model, arch);
  const bool need_calib = o.quant == "gptq" || o.finetune.steps > 0 || o.calib_given;
  at::Tensor calib;
  json calib_j = nullptr;
  if (need_calib) {
    auto tc = std::chrono::steady_clock::now();
    // Sampling runs on the runtime engine (the libtorch path pays per-op dispatch at every step).
    auto sampler = make_runtime(*model);
    calib = calibration_tokens(*sampler, o.calib);
    calib_j = {{"source", o.calib.source}, {"samples", calib.size(0)}, {"seq_len", calib.size(1)},
               {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - tc).count()}};
    spdlog::info("calibration: {} sequences x {} tokens from {}", calib.size(0), calib.size(1), o.calib.source);
  }

  QuantizeOptions qo;
  qo.method = o.quant;
  qo.group_size = arch.group_size;
  qo.lm_head_bits = arch.lm_head_bits;
  qo.fp16_offsets = gguf;  // 2/3/4-bit groups map bit-exactly to GGUF Q4_1, 8-bit ones to Q8_0
  qo.range = o.q_range;
  QuantizeReport qr = quantize_model(*sub, arch, qo, calib);
  spdlog::info("quantize: {} in {:.1f} s", o.quant, qr.seconds);

  json ft = {{"steps", 0}};
  if (o.finetune.steps > 0) {
    FinetuneResult fr = finetune_lora(*sub, model.get(), calib, o.finetune);
    const size_t n = fr.losses.size(), w = std::min<size_t>(n, 10);
    double first = 0, last = 0;
    for (size_t i = 0; i < w; ++i) {
      first += fr.losses[i] / w;
      last += fr.losses[n - w + i] / w;
    }
    ft = {{"steps", o.finetune.steps},
          {"rank", o.finetune.rank},
          {"lr", o.finetune.lr},
          {"batch_size", o.finetune.batch_size},
          {"loss", o.finetune.distill ? "kl_to_original" : "cross_entropy"},
          {"loss_first10_mean", first},
          {"loss_last10_mean", last},
          {"losses", fr.losses},
          {"seconds", fr.seconds},
          {"merge", fr.merge_mode},
          {"merged_quantized", fr.merge.quantized},
          {"merged_dense", fr.merge.dense},
          {"merge_max_rel_logit_diff", fr.merge_rel_diff},
          {"max_zero_point_fp16_rounding_steps", fr.merge.max_zero_rounding}};
  }
  // Data parallel (finetune/dist.h): the ranks shared the fine-tune; rank 0 alone writes.
  if (!DataParallel::get().is_root()) {
    spdlog::info("export: rank {} done (rank 0 writes {})", DataParallel::get().rank(), o.out);
    return ExportResult{};
  }

  SizeReport sz = size_report(*sub, o.dense_dtype);
  json rep;
  rep["format"] = "llmcompress-export-report";
  rep["version"] = 1;
  rep["source"] = o.model;
  rep["arch"] = o.arch;
  rep["quant"] = {{"method", o.quant},
                  {"group_size", arch.group_size},
                  {"range", o.q_range},
                  {"lm_head_bits", arch.lm_head_bits},
                  {"dense_dtype", o.dense_dtype},
                  {"seconds", qr.seconds}};
  if (!qr.linears.empty()) {
    json per = json::array();
    for (const auto& s : qr.linears)
      per.push_back({{"layer", s.layer}, {"linear", kLinearNames[s.kind]}, {"bits", s.bits}, {"rel_err", s.rel_err}});
    rep["quant"]["mean_rel_output_error"] = qr.mean_rel_err();
    rep["quant"]["linears"] = per;
  }
  if (qr.lm_head_rel_err >= 0) rep["quant"]["lm_head_rel_output_error"] = qr.lm_head_rel_err;
  rep["calibration"] = calib_j;
  rep["size"] = json::parse(sz.to_json());
  json modules = json::object();
  {
    const auto& c = sub->config();
    json layers = json::array();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      json m = json::object();
      for (int k = 0; k < kNumLinears; ++k) {
        const auto& lin = layer_linear(sub->weights().layers[l], k);
        if (linear_dropped(*lin)) continue;
        m[kLinearNames[k]] = {{"bits", lin->bits()},
                              {"shape", {lin->out_features(), lin->in_features()}},
                              {"bytes", lin->stored_bytes(o.dense_dtype == "bfloat16" ? 2 : 4)}};
      }
      layers.push_back(m);
    }
    modules["layers"] = layers;
  }
  rep["modules"] = modules;
  if (arch.predicted_latency_ms >= 0)
    rep["predicted"] = {{"latency_ms", arch.predicted_latency_ms},
                        {"tokens", arch.predicted_tokens},
                        {"size_bytes", arch.predicted_size_bytes}};
  else
    rep["predicted"] = nullptr;
  rep["finetune"] = ft;
  rep["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  GGUFExportOptions go;
  go.tokenizer_source = o.model;
  go.dense_dtype = o.dense_dtype;
  if (gguf && looks_like_gguf(o.model)) {
    GGUFFile src(o.model);
    go.name = src.get_string_or("general.name", "");
  } else if (gguf) {  // a Hugging Face folder: its name, as llama.cpp's converter takes it
    std::filesystem::path p(o.model);
    if (!p.has_filename()) p = p.parent_path();
    go.name = p.filename().string();
  }
  if (o.format == "gguf") {
    json g = json::parse(write_gguf(*sub, o.out, go));
    rep["gguf"] = g;
    rep["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string report_path = o.out + ".report.json";
    write_file_atomic(report_path, rep.dump(2) + "\n");
    ExportResult res;
    res.out = o.out;
    res.report_json = rep.dump(2) + "\n";
    res.size = sz;
    spdlog::info("export: wrote {} and {} in {:.1f} s", o.out, report_path, rep["seconds"].get<double>());
    return res;
  }
  std::unique_ptr<GGUFExport> gg;
  if (o.format == "both") {
    gg = std::make_unique<GGUFExport>(build_gguf(*sub, go));
    json g = json::parse(gg->report_json);
    g["file"] = "model.gguf";
    rep["gguf"] = g;
  }

  ExportWriteOptions wo;
  if (gg)
    wo.extra_files = [&](const std::string& dir) {
      const std::string p = path_join(dir, "model.gguf");
      gg->writer.write(p);
      spdlog::info("gguf: {} ({}, {} tensors)", p, gg->architecture, gg->writer.tensor_count());
    };
  wo.group_size = arch.group_size;
  wo.dense_dtype = o.dense_dtype;
  wo.tokenizer_source = o.model;
  wo.report_json = rep.dump();
  wo.arch_json = arch_to_json(arch);
  write_export_folder(*sub, o.out, wo);
  ExportResult res;
  res.out = o.out;
  res.report_json = read_text_file(path_join(o.out, "export_report.json"));
  res.size = sz;
  spdlog::info("export: wrote {} ({} bytes of weights, {:.3f} bits per linear weight) in {:.1f} s", o.out, sz.total(),
               sz.avg_bits_per_weight(), rep["seconds"].get<double>());
  return res;
}

}  // namespace llmc
