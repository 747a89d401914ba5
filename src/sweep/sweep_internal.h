#pragma once
// Shared between the sweep's runner and its report: the points of a study and where they live.
#include <string>
#include <vector>

#include "llmc/sweep/sweep.h"

namespace llmc::sweep {

struct Point {
  std::string name;    // folder under DIR/points/: uniform-rtn-b4, uniform-gptq-ft-b4, joint-t4.215
  std::string method;  // uniform-rtn | uniform-gptq | uniform-<q>-ft | joint | sequential | width-only | bits-only
  std::string quant;   // rtn | gptq
  std::string mode;    // search mode ("" for a uniform baseline)
  int bits = 0;        // uniform points
  bool finetune = false;  // a uniform point fine-tuned like the search points (finetuned_baselines)
  double target_ms = 0;  // search points
};

std::string point_dir(const std::string& out, const std::string& name);
// The uniform points: the plain ones, then the fine-tuned ones.
std::vector<Point> baseline_points(const SweepConfig& c);
std::vector<Point> search_points(const SweepConfig& c, const std::vector<double>& targets);
// Every point of the study: the baselines, then the search points at `targets`.
std::vector<Point> study_points(const SweepConfig& c, const std::vector<double>& targets);
// The export command of a point, `lm_head_bits`: point_lm_head_bits(c, arch).
std::vector<std::string> export_args(const SweepConfig& c, const Point& p, const std::string& arch, int lm_head_bits,
                                     const std::string& out);
// A search point's arch: its search's arch.json, or where that is absent (a clone of a committed
// study: git keeps only the report's copy) the copy the report made, out/archs/<name>.json.
std::string searched_arch(const std::string& out, const std::string& name);
std::string arch_copy(const std::string& out, const std::string& name);  // out/archs/<name>.json
std::string arch_of(const std::string& out, const Point& p);  // uniform:B or searched_arch()
// The lm_head's bits of a point's export: the arch's choice (space.lm_head_bits) or export.lm_head_bits.
int point_lm_head_bits(const SweepConfig& c, const std::string& arch);
// The targets of a study beside the extra ones: the config's explicit ones, else the spread ones the
// manifest fixed (`targets_ms`); plus the at_uniform ones it fixed (`uniform_targets_ms`, by bits).
// manifest: the study's manifest.json (an empty object before the first run).
std::vector<double> study_targets(const SweepConfig& c, const nlohmann::ordered_json& manifest);
// A bench.json's LUT-predicted decode ms (bench --lut), 0 when it has none.
double bench_predicted_decode_ms(const nlohmann::ordered_json& bench);

}  // namespace llmc::sweep
