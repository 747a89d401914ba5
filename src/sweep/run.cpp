// The sweep's stages: each one a run of the llmcompress binary, recorded in DIR/manifest.json once
// its outputs exist (see sweep.h).
#include <fnmatch.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/json_file.h"
#include "llmc/core/process.h"
#include "llmc/model/arch.h"
#include "llmc/nas/search_config.h"
#include "llmc/sweep/sweep.h"
#include "sweep_internal.h"

namespace llmc {

using json = nlohmann::ordered_json;

namespace sweep {

std::string point_dir(const std::string& out, const std::string& name) { return path_join(out, "points/" + name); }

namespace {
// The stages of a point after its search, in order: the export and the three that read it.
const std::vector<std::string> kExportStages = {"export", "bench", "eval", "ppl"};
}  // namespace

std::vector<Point> baseline_points(const SweepConfig& c) {
  std::vector<Point> out;
  for (const bool ft : {false, true})
    for (const auto& [q, bits] : ft ? c.finetuned_baselines : c.baselines) {
      Point p;
      p.name = fmt::format("uniform-{}{}-b{}", q, ft ? "-ft" : "", bits);
      p.method = "uniform-" + q + (ft ? "-ft" : "");
      p.quant = q;
      p.bits = bits;
      p.finetune = ft;
      out.push_back(p);
    }
  return out;
}

// Target-major: every mode at the first target, then the next, so a partly finished study already
// compares the modes at equal targets.
std::vector<Point> search_points(const SweepConfig& c, const std::vector<double>& targets) {
  // The targets and the extra ones, ascending; one point per name (a target as its name spells it).
  std::vector<double> ts = targets;
  ts.insert(ts.end(), c.extra_targets_ms.begin(), c.extra_targets_ms.end());
  std::sort(ts.begin(), ts.end());
  ts.erase(std::unique(ts.begin(), ts.end(),
                       [](double a, double b) { return fmt::format("{:.3f}", a) == fmt::format("{:.3f}", b); }),
           ts.end());
  std::vector<Point> out;
  for (double t : ts)
    for (const auto& mode : c.modes) {
      Point p;
      p.name = fmt::format("{}-t{:.3f}", mode, t);
      p.method = mode;
      p.mode = mode;
      p.quant = c.quant;
      p.target_ms = t;
      out.push_back(p);
    }
  return out;
}

std::vector<Point> study_points(const SweepConfig& c, const std::vector<double>& targets) {
  std::vector<Point> out = baseline_points(c);
  for (Point& p : search_points(c, targets)) out.push_back(std::move(p));
  return out;
}

std::vector<double> study_targets(const SweepConfig& c, const json& manifest) {
  std::vector<double> t = c.targets_ms;
  if (t.empty() && c.target_count > 0 && manifest.contains("targets_ms"))
    t = manifest["targets_ms"].get<std::vector<double>>();
  if (manifest.contains("uniform_targets_ms"))
    for (int bits : c.target_uniform_bits)
      if (const std::string k = std::to_string(bits); manifest["uniform_targets_ms"].contains(k))
        t.push_back(manifest["uniform_targets_ms"][k].get<double>());
  return t;
}

double bench_predicted_decode_ms(const json& b) {
  return b.contains("predicted") && b["predicted"].is_object() && b["predicted"].contains("decode_ms")
             ? b["predicted"]["decode_ms"].value("predicted", 0.0)
             : 0.0;
}

int point_lm_head_bits(const SweepConfig& c, const std::string& arch) {
  if (arch.rfind("uniform:", 0) == 0 || !file_exists(arch)) return c.lm_head_bits;
  const int chosen = read_arch(arch).lm_head_bits;
  return chosen ? chosen : c.lm_head_bits;
}

// The export command of a point, with `out` as its --out (the report's "recreate" uses "$OUT").
// --lm-head-bits says what export will do: an arch that chose its lm_head overrides the flag anyway.
std::vector<std::string> export_args(const SweepConfig& c, const Point& p, const std::string& arch, int lm_head_bits,
                                     const std::string& out) {
  std::vector<std::string> a = {"--threads", std::to_string(c.threads), "export", "--model", c.model, "--arch", arch,
                                "--out", out, "--quant", p.quant, "--group-size", std::to_string(c.group_size),
                                "--lm-head-bits", std::to_string(lm_head_bits), "--dense-dtype", c.dense_dtype};
  if ((!p.mode.empty() || p.finetune) && c.finetune_steps > 0) {
    a.insert(a.end(), {"--finetune-steps", std::to_string(c.finetune_steps)});
    if (c.distill) a.push_back("--distill");
  }
  return a;
}

std::string arch_copy(const std::string& out, const std::string& name) { return path_join(out, "archs/" + name + ".json"); }

std::string searched_arch(const std::string& out, const std::string& name) {
  const std::string own = path_join(point_dir(out, name), "search/arch.json"), copy = arch_copy(out, name);
  return !file_exists(own) && file_exists(copy) ? copy : own;
}

std::string arch_of(const std::string& out, const Point& p) {
  return p.mode.empty() ? fmt::format("uniform:{}", p.bits) : searched_arch(out, p.name);
}

}  // namespace sweep

namespace {

using namespace sweep;

// The line of a failed search's log saying its target is below the fastest architecture of the
// mode's space ("" when it failed for another reason).
std::string unreachable_reason(const std::string& log) {
  if (!file_exists(log)) return "";
  const std::string text = read_text_file(log);
  const size_t at = text.find("is below the fastest architecture");
  if (at == std::string::npos) return "";
  const size_t b = text.rfind('\n', at), e = text.find('\n', at);
  return text.substr(b == std::string::npos ? 0 : b + 1, e == std::string::npos ? std::string::npos : e - b - 1);
}

// The arguments (after the program) of a bench of the export in `dir`, predicted from `lut`, to
// `out` (bench.json of a point, or one round of --rebench).
std::vector<std::string> bench_args(const SweepConfig& c, const std::string& dir, const std::string& lut,
                                    const std::string& out, const std::string& folder = "export") {
  return {"--threads", std::to_string(c.threads), "bench", "--model", path_join(dir, folder), "--prompt-tokens",
          std::to_string(c.prompt_tokens), "--new-tokens", std::to_string(c.new_tokens), "--repeats",
          std::to_string(c.bench_repeats), "--lut", lut, "--json", "--output", out};
}

// The arguments of the study's latency table (its search space in DIR/space.json) to `out`.
std::vector<std::string> lut_args(const SweepConfig& c, const SearchConfig& sc, const std::string& dir,
                                  const std::string& out) {
  return {"--threads", std::to_string(c.threads), "lut", "--model", c.model, "--space", path_join(dir, "space.json"),
          "--tokens", "1", "--context", std::to_string(sc.lut_context), "--lm-head-bits",
          std::to_string(c.lm_head_bits), "--repeats", std::to_string(sc.lut_repeats), "--out", out};
}

// $LLMC_SWEEP_LOCK held while timed stages run (null when unset).
std::unique_ptr<FileLock> timing_lock() {
  const char* path = std::getenv("LLMC_SWEEP_LOCK");
  if (path == nullptr || *path == '\0') return nullptr;
  spdlog::info("sweep: waiting for the lock {}", path);
  return std::make_unique<FileLock>(path);
}

class Manifest {
 public:
  // allow_search_change: a manifest whose config differs from `c` only in the part the search points
  // depend on (SweepConfig::search_json) is accepted, and search_changed() says so; otherwise any
  // difference is refused.
  Manifest(const SweepConfig& c, const std::string& dir, bool allow_search_change = false)
      : path_(path_join(dir, "manifest.json")) {
    const std::string config = c.canonical_json();
    if (file_exists(path_)) {
      try {
        j_ = json::parse(read_text_file(path_));
      } catch (const json::exception& e) {
        fail("{}: corrupt manifest ({})", path_, e.what());
      }
      if (!j_.is_object() || j_.value("format", "") != "llmcompress-sweep" || !j_.contains("done") ||
          !j_["done"].is_object() || !j_.contains("config") || !j_["config"].is_string())
        fail("{}: not a sweep manifest", path_);
      const std::string old = j_["config"].get<std::string>();
      // Baselines, modes, extra targets and fine-tuned baselines only add or drop points by name: the
      // config is taken as it is (saved with the next finished stage).
      const std::string old_study = old == config ? "" : sweep_study_json(old);
      if (!old_study.empty() && old_study == sweep_study_json(config))
        j_["config"] = config;
      else if (old != config) {
        if (sweep_common_json(old) != c.common_json())
          fail("{}: this folder holds a study of another sweep config (or of another base search config); use "
               "another --out",
               path_);
        if (!allow_search_change)
          fail("{}: the base search config (or the search points' fine-tune) changed since this study started; "
               "pass --restart-searches to move its finished search points to {} and redo them (the baselines "
               "are kept), or use another --out",
               path_, path_join(dir, "stale/"));
        search_changed_ = true;
      }
    } else {
      j_ = {{"format", "llmcompress-sweep"}, {"version", 1}, {"config", config}, {"done", json::object()}};
    }
    config_ = config;
  }
  bool search_changed() const { return search_changed_; }
  // SweepOptions::redo: drops every finished stage matching a pattern (an export: with the bench,
  // eval and ppl stages that read it); returns the dropped stages.
  std::vector<std::string> drop_for_redo(const std::vector<std::string>& patterns) {
    const std::vector<std::string>& kinds = kExportStages;
    for (const std::string& pat : patterns) {
      const auto slash = pat.rfind('/');
      if (slash == std::string::npos || std::find(kinds.begin(), kinds.end(), pat.substr(slash + 1)) == kinds.end())
        fail("sweep --redo '{}': expected POINT/STAGE with STAGE one of export, bench, eval, ppl (POINT may be a "
             "pattern: '*/eval'); a search is redone by --restart-searches, the latency table in another --out",
             pat);
    }
    std::vector<std::string> dropped;
    for (const std::string& stage : stages()) {
      const auto slash = stage.find('/');
      if (slash == std::string::npos) continue;  // lut
      const std::string point = stage.substr(0, slash), kind = stage.substr(slash + 1);
      if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) continue;  // search
      bool hit = false;
      for (const std::string& pat : patterns) {
        const auto ps = pat.rfind('/');
        const std::string pk = pat.substr(ps + 1);
        hit = hit || ((pk == kind || pk == "export") && ::fnmatch(pat.substr(0, ps).c_str(), point.c_str(), 0) == 0);
      }
      if (hit) dropped.push_back(stage);
    }
    // A point that shares a redone point's results (same architecture) shares the new ones: its
    // copies of the dropped stages go too, and the run shares again.
    std::vector<std::string> twins;
    for (const auto& [stage, info] : j_["done"].items()) {
      const auto slash = stage.find('/');
      if (slash == std::string::npos || !info.is_object() || !info.contains("same_arch_as")) continue;
      const std::string from = info["same_arch_as"].get<std::string>() + stage.substr(slash);
      if (std::find(dropped.begin(), dropped.end(), from) != dropped.end() &&
          std::find(dropped.begin(), dropped.end(), stage) == dropped.end())
        twins.push_back(stage);
    }
    dropped.insert(dropped.end(), twins.begin(), twins.end());
    for (const auto& s : dropped) j_["done"].erase(s);
    if (!dropped.empty()) save();
    return dropped;
  }
  // After the stale search points are moved away: the manifest now describes `c`.
  void adopt_config(const std::vector<std::string>& dropped_stages) {
    for (const auto& s : dropped_stages) j_["done"].erase(s);
    j_["config"] = config_;
    search_changed_ = false;
    save();
  }
  std::vector<std::string> stages() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : j_["done"].items()) out.push_back(k);
    return out;
  }
  bool done(const std::string& stage) const { return j_["done"].contains(stage); }
  void mark(const std::string& stage, json info) {
    j_["done"][stage] = std::move(info);
    save();
  }
  const json& get(const char* key) const { return j_.at(key); }
  const json& whole() const { return j_; }
  bool has(const char* key) const { return j_.contains(key); }
  void set(const char* key, json v) {
    j_[key] = std::move(v);
    save();
  }
  void save() const { write_file_atomic(path_, j_.dump(1) + "\n"); }

 private:
  std::string path_, config_;
  json j_;
  bool search_changed_ = false;
};

// The base search config changed (--restart-searches): every finished search point's folder, and the
// shared sensitivity files, move to DIR/stale/<n>/ (never deleted), their stages leave the manifest.
void restart_search_points(const SweepConfig& c, const std::string& out, Manifest& m) {
  // Kept: what does not depend on the search config or the fine-tune (fine-tuned baselines move too).
  std::vector<std::string> baselines = {"lut"};
  for (const auto& p : baseline_points(c))
    if (!p.finetune) baselines.push_back(p.name);
  std::string stale;
  for (int n = 1; stale.empty() || dir_exists(stale); ++n) stale = path_join(out, fmt::format("stale/{}", n));
  std::vector<std::string> dropped, moved;
  for (const std::string& stage : m.stages()) {
    const std::string name = stage.substr(0, stage.find('/'));
    if (std::find(baselines.begin(), baselines.end(), name) != baselines.end()) continue;
    dropped.push_back(stage);
    if (std::find(moved.begin(), moved.end(), name) == moved.end()) moved.push_back(name);
  }
  // Search points started but not finished (a killed search's checkpoint) are stale too.
  if (dir_exists(path_join(out, "points")))
    for (const auto& e : std::filesystem::directory_iterator(path_join(out, "points"))) {
      const std::string name = e.path().filename().string();
      if (std::find(baselines.begin(), baselines.end(), name) == baselines.end() &&
          std::find(moved.begin(), moved.end(), name) == moved.end())
        moved.push_back(name);
    }
  make_dirs(path_join(stale, "points"));
  for (const std::string& name : moved) {
    if (dir_exists(point_dir(out, name))) rename_path(point_dir(out, name), path_join(stale, "points/" + name));
    // The report's copy of its arch goes along (searched_arch() would take it for a new point's).
    if (const std::string copy = arch_copy(out, name); file_exists(copy)) {
      make_dirs(path_join(stale, "archs"));
      rename_path(copy, arch_copy(stale, name));
    }
  }
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("sensitivity-", 0) == 0) rename_path(path_join(out, f), path_join(stale, f));
  }
  m.adopt_config(dropped);
  spdlog::warn("sweep: the search config changed: {} finished search points moved to {}; the baselines are kept",
               moved.size(), stale);
}

class Runner {
 public:
  Runner(const SweepConfig& c, const SweepOptions& o, Manifest& m)
      : c_(c), o_(o), m_(m), exe_(o.exe.empty() ? self_executable() : o.exe) {}

  // Runs `args` (without the program) as stage `stage` unless the manifest has it. A `timed` stage
  // (lut, bench: their numbers are wall-clock times) holds $LLMC_SWEEP_LOCK while it runs, if set.
  // A failed stage throws, unless `on_failure` handles it (returns true; it records the stage).
  void run(const std::string& stage, std::vector<std::string> args, const std::string& log, bool timed = false,
           const std::function<bool(const ProcessResult&)>& on_failure = nullptr) {
    ++count_;
    if (m_.done(stage)) return;
    args.insert(args.begin(), exe_);
    const std::string cmd = shell_quote_command(args);
    if (o_.dry_run) {
      std::printf("%s\n  %s\n", stage.c_str(), cmd.c_str());
      return;
    }
    spdlog::info("sweep: {} (log {})", stage, log);
    make_dirs(parent_dir(log));
    std::unique_ptr<FileLock> lock = timed ? timing_lock() : nullptr;
    const ProcessResult r = run_process(args, log);
    lock.reset();
    if (r.exit_code != 0 && on_failure && on_failure(r)) return;
    if (r.exit_code != 0)
      fail("sweep: stage {} failed (exit {}); its log is {}; run the same command again to continue", stage,
           r.exit_code, log);
    m_.mark(stage, {{"seconds", r.seconds}, {"command", cmd}});
    spdlog::info("sweep: {} done in {:.1f} s", stage, r.seconds);
  }

  // The stages a point goes through after its search, in this study.
  std::vector<std::string> stage_kinds() const {
    std::vector<std::string> kinds = kExportStages;
    if (c_.ppl_task.empty()) kinds.pop_back();  // no perplexity run in this study
    return kinds;
  }

  // A finished search point whose architecture (every layer's widths, bits and channel orders, and
  // the group size) is p's: p's export would be the same file (same settings, same seed), so p
  // shares its results instead of making them again. "" when there is none.
  std::string twin_of(const Point& p) const {
    auto shape = [](const std::string& arch) {
      const json a = read_json_file<json>(arch);
      return json{a.at("layers"), a.at("group_size")}.dump();
    };
    const std::string mine = shape(arch_of(o_.out, p));
    const std::vector<std::string> kinds = stage_kinds();
    for (const std::string& stage : m_.stages()) {
      const auto slash = stage.find('/');
      if (slash == std::string::npos || stage.substr(slash + 1) != "search") continue;
      const std::string name = stage.substr(0, slash);
      if (name == p.name || m_.get("done").at(stage).contains("unreachable")) continue;
      if (!std::all_of(kinds.begin(), kinds.end(), [&](const std::string& k) { return m_.done(name + "/" + k); }))
        continue;
      // Only a point with results of its own: one that shares another's may hold copies older than
      // its twin's (and sharing back to it would link an export to itself).
      if (m_.get("done").at(name + "/export").contains("same_arch_as")) continue;
      const std::string arch = searched_arch(o_.out, name);
      if (file_exists(arch) && shape(arch) == mine) return name;
    }
    return "";
  }

  // p takes twin's results: its export folder is a link to twin's, its bench/eval/ppl files copies.
  void share_results(const Point& p, const std::string& twin) {
    const std::string dir = point_dir(o_.out, p.name), from = point_dir(o_.out, twin);
    spdlog::info("sweep: {} has the architecture of {}: its export, bench and evals are {}'s", p.name, twin, twin);
    if (o_.dry_run) return;
    const std::string exp = path_join(dir, "export");
    std::error_code ec;
    std::filesystem::remove_all(exp, ec);  // a killed export's partial folder
    std::filesystem::create_directory_symlink(path_join("..", twin + "/export"), exp, ec);
    if (ec) fail("sweep: {}: cannot link to {}'s export: {}", exp, twin, ec.message());
    for (const char* f : {"bench.json", "eval.json", "eval-samples.jsonl", "eval-docs.json", "ppl.json"})
      if (file_exists(path_join(from, f))) write_file_atomic(path_join(dir, f), read_text_file(path_join(from, f)));
    for (const std::string& k : kExportStages)
      if (m_.done(twin + "/" + k) && !m_.done(p.name + "/" + k)) m_.mark(p.name + "/" + k, {{"same_arch_as", twin}});
  }

  // export -> bench -> eval of one point.
  void export_bench_eval(const Point& p) {
    const std::string dir = point_dir(o_.out, p.name), exp = path_join(dir, "export");
    if (!p.mode.empty() && !o_.dry_run) {
      // A new point with an evaluated twin shares its results; a point that shared them before
      // and lost some stages to --redo of its twin shares the new ones.
      std::string twin;
      if (!m_.done(p.name + "/export")) {
        twin = twin_of(p);
      } else if (const std::vector<std::string> kinds = stage_kinds();
                 m_.get("done").at(p.name + "/export").contains("same_arch_as") &&
                 !std::all_of(kinds.begin(), kinds.end(), [&](const std::string& k) { return m_.done(p.name + "/" + k); })) {
        twin = m_.get("done").at(p.name + "/export")["same_arch_as"].get<std::string>();
      }
      if (!twin.empty()) return share_results(p, twin);
    }
    const std::string arch = arch_of(o_.out, p);
    run(p.name + "/export", export_args(c_, p, arch, point_lm_head_bits(c_, arch), exp), path_join(dir, "export.log"));
    run(p.name + "/bench", bench_args(c_, dir, lut(), path_join(dir, "bench.json")), path_join(dir, "bench.log"), true);
    run(p.name + "/eval",
        {"--threads", std::to_string(c_.threads), "eval", "--model", exp, "--tasks", c_.eval_tasks, "--limit",
         std::to_string(c_.eval_limit), "--output", path_join(dir, "eval.json"), "--samples",
         path_join(dir, "eval-samples.jsonl")},
        path_join(dir, "eval.log"));
    if (!c_.ppl_task.empty()) {
      std::vector<std::string> a = {"--threads", std::to_string(c_.threads), "eval", "--model", exp, "--tasks",
                                    c_.ppl_task, "--output", path_join(dir, "ppl.json")};
      if (c_.ppl_max_length > 0) a.insert(a.end(), {"--max-length", std::to_string(c_.ppl_max_length)});
      if (c_.ppl_limit > 0) a.insert(a.end(), {"--limit", std::to_string(c_.ppl_limit)});
      run(p.name + "/ppl", a, path_join(dir, "ppl.log"));
    }
  }

  // False when the point's target is below the fastest architecture its mode can reach (e.g.
  // width-only keeps 16-bit weights): recorded as unreachable in the manifest, and the point has no
  // export; the report lists it.
  bool search(const Point& p) {
    const std::string dir = point_dir(o_.out, p.name), sdir = path_join(dir, "search");
    std::vector<std::string> a = {"--threads", std::to_string(c_.threads), "search", "--config", c_.search_config,
                                  "--mode", p.mode, "--target-ms", fmt::format("{}", p.target_ms), "--target-tokens", "1", "--lut",
                                  lut(), "--out", sdir};
    // With schedule.init "sensitivity", the searches of one mode share one KL measurement.
    a.insert(a.end(), {"--sensitivity", path_join(o_.out, "sensitivity-" + p.mode + ".json")});
    // A search killed mid-way continues from its checkpoint.
    if (dir_exists(path_join(sdir, "checkpoint")) || dir_exists(path_join(sdir, "checkpoint.old")))
      a.push_back("--resume");
    const std::string stage = p.name + "/search", log = path_join(dir, "search.log");
    run(stage, a, log, false, [&](const ProcessResult& r) {
      const std::string reason = unreachable_reason(log);
      if (reason.empty()) return false;
      m_.mark(stage, {{"seconds", r.seconds}, {"unreachable", reason}});
      spdlog::warn("sweep: {} is unreachable: {}", p.name, reason);
      return true;
    });
    return o_.dry_run || !m_.get("done").at(stage).contains("unreachable");
  }

  void build_lut(const SearchConfig& sc) {
    if (!c_.lut.empty()) {  // a given table, copied so the study folder holds what it used
      ++count_;
      if (m_.done("lut")) return;
      if (o_.dry_run) {
        std::printf("lut\n  copy %s\n", c_.lut.c_str());
        return;
      }
      write_file_atomic(lut(), read_text_file(c_.lut));
      m_.mark("lut", {{"copied_from", c_.lut}});
      return;
    }
    if (!o_.dry_run) write_file_atomic(path_join(o_.out, "space.json"), sc.space.canonical_json() + "\n");
    run("lut", lut_args(c_, sc, o_.out, lut()), path_join(o_.out, "lut.log"), true);
  }

  std::string lut() const { return path_join(o_.out, "lut.json"); }
  int count() const { return count_; }

 private:
  const SweepConfig& c_;
  const SweepOptions& o_;
  Manifest& m_;
  std::string exe_;
  int count_ = 0;
};

// A benched point's LUT-predicted decode ms (bench --lut's prediction; 0 when its bench.json has none).
double point_predicted_decode_ms(const std::string& out, const std::string& name) {
  return bench_predicted_decode_ms(read_json_file<json>(path_join(point_dir(out, name), "bench.json")));
}

// The same for a finished baseline that targets are placed from: it must have one.
double predicted_decode_ms(const std::string& out, const std::string& name) {
  const double ms = point_predicted_decode_ms(out, name);
  if (!(ms > 0)) fail("{}: no LUT-predicted decode time", path_join(point_dir(out, name), "bench.json"));
  return ms;
}

// The spread targets (without explicit ones): count of them from 0.85 x the fastest uniform baseline to the uniform
// 8-bit one (LUT ms), fixed in the manifest the first time. Which width is fastest depends on the
// machine's kernels (on AVX2, 3 bit decodes slower than 4 bit), so the range starts below the fastest
// one rather than at a fixed width: there no uniform export exists, and only a search can get there.
void place_spread_targets(const SweepConfig& c, const SweepOptions& o, Manifest& m) {
  if (!c.targets_ms.empty() || c.target_count == 0 || m.has("targets_ms") || o.dry_run) return;
  double fastest = 0, hi = 0;
  std::string fastest_name;
  for (const auto& p : baseline_points(c)) {
    if (p.finetune) continue;  // the same latency as its plain twin, which may not be in the study
    const double ms = predicted_decode_ms(o.out, p.name);
    if (fastest_name.empty() || ms < fastest) fastest = ms, fastest_name = p.name;
    if (p.bits == 8 && (hi == 0 || p.quant == c.quant)) hi = ms;
  }
  if (hi == 0) fail("sweep: no uniform 8-bit baseline to place the targets");
  const double lo = std::min(0.85 * fastest, hi);
  std::vector<double> t;
  for (int i = 0; i < c.target_count; ++i)
    t.push_back(c.target_count == 1 ? 0.5 * (lo + hi) : lo + (hi - lo) * i / (c.target_count - 1));
  m.set("targets_ms", t);
  spdlog::info("sweep: targets {} ms (0.85 x {} {:.3f} to uniform 8-bit {:.3f}, LUT decode ms)", fmt::join(t, ", "),
               fastest_name, fastest, hi);
}

// The at_uniform targets: each the LUT-predicted decode ms of a uniform baseline at those bits (the
// config's quant where it has one), to the last bit, fixed in the manifest the first time that
// baseline's bench is there.
void place_uniform_targets(const SweepConfig& c, const SweepOptions& o, Manifest& m) {
  json fixed = m.has("uniform_targets_ms") ? m.get("uniform_targets_ms") : json::object();
  const std::vector<Point> base = baseline_points(c);
  for (int bits : c.target_uniform_bits) {
    const std::string k = std::to_string(bits);
    if (fixed.contains(k)) continue;
    const Point* from = nullptr;
    for (const Point& p : base)
      if (!p.finetune && p.bits == bits && (from == nullptr || p.quant == c.quant)) from = &p;
    if (from == nullptr || !m.done(from->name + "/bench")) continue;  // not benched yet (a dry run)
    fixed[k] = predicted_decode_ms(o.out, from->name);
    m.set("uniform_targets_ms", fixed);
    spdlog::info("sweep: target {:.6f} ms = {}'s LUT decode time", fixed[k].get<double>(), from->name);
  }
}

// The study's targets, those placed from the baselines' LUT times fixed first.
std::vector<double> targets(const SweepConfig& c, const SweepOptions& o, Manifest& m) {
  place_spread_targets(c, o, m);
  place_uniform_targets(c, o, m);
  return study_targets(c, m.whole());
}

}  // namespace

std::vector<std::string> targets_just_below(const std::vector<double>& targets,
                                            const std::vector<std::pair<std::string, double>>& baselines) {
  std::vector<std::string> out;
  for (double t : targets)
    for (const auto& [name, ms] : baselines)
      if (t < ms && t >= ms * (1 - 1e-3)) {
        out.push_back(fmt::format("target {} ms is just below {}'s LUT decode time {:.6f} ms: the search cannot "
                                  "return that architecture; give the target as {:.6f} (or targets.at_uniform) to compare at it",
                                  t, name, ms, ms));
        break;
      }
  return out;
}

void set_stage_environment() { ::setenv("OMP_WAIT_POLICY", "PASSIVE", /*overwrite=*/0); }

int run_sweep(const SweepConfig& c, const SweepOptions& o) {
  LLMC_CHECK(!o.out.empty(), "sweep: --out is required");
  set_stage_environment();
  if (!o.dry_run) make_dirs(o.out);
  Manifest m(c, o.out, o.restart_searches);
  if (m.search_changed()) {
    if (o.dry_run) std::printf("(--restart-searches: the finished search points would move to %s/stale/)\n", o.out.c_str());
    else restart_search_points(c, o.out, m);
  }
  std::vector<std::string> redone;  // points with stages dropped by --redo: run even if --points omits them
  if (!o.redo.empty()) {
    if (o.dry_run) {
      std::printf("(--redo: the matching stages would run again)\n");
    } else {
      const auto dropped = m.drop_for_redo(o.redo);
      spdlog::info("sweep --redo: {} finished stages to run again{}{}", dropped.size(), dropped.empty() ? "" : ": ",
                   fmt::join(dropped, ", "));
      for (const std::string& s : dropped) redone.push_back(s.substr(0, s.find('/')));
    }
  }
  Runner r(c, o, m);
  const SearchConfig sc = load_search_config(c.search_config);
  r.build_lut(sc);
  for (const Point& p : baseline_points(c)) r.export_bench_eval(p);
  const std::vector<double> t = targets(c, o, m);
  std::vector<Point> points = search_points(c, t);
  if (!o.dry_run) {
    std::vector<double> ts;
    for (const Point& p : points)
      if (std::find(ts.begin(), ts.end(), p.target_ms) == ts.end()) ts.push_back(p.target_ms);  // one per target
    std::vector<std::pair<std::string, double>> base;
    for (const Point& p : baseline_points(c))
      if (!p.finetune && m.done(p.name + "/bench"))
        if (const double ms = point_predicted_decode_ms(o.out, p.name); ms > 0) base.emplace_back(p.name, ms);
    for (const std::string& w : targets_just_below(ts, base)) spdlog::warn("sweep: {}", w);
  }
  if (!o.points.empty() && !t.empty()) {
    for (const std::string& name : o.points)
      if (std::none_of(points.begin(), points.end(), [&](const Point& p) { return p.name == name; })) {
        std::vector<std::string> names;
        for (const Point& p : points) names.push_back(p.name);
        fail("sweep --points: no search point '{}' in this study (its points: {})", name, fmt::join(names, ", "));
      }
    points.erase(std::remove_if(points.begin(), points.end(),
                                [&](const Point& p) {
                                  return std::find(o.points.begin(), o.points.end(), p.name) == o.points.end() &&
                                         std::find(redone.begin(), redone.end(), p.name) == redone.end();
                                }),
                 points.end());
  }
  for (const Point& p : points)
    if (r.search(p)) r.export_bench_eval(p);
  if (o.dry_run) {
    // Targets placed from the baselines' measured latencies (spread, at_uniform) are not known yet.
    size_t pending = c.targets_ms.empty() && !m.has("targets_ms") ? static_cast<size_t>(c.target_count) : 0;
    for (int bits : c.target_uniform_bits)
      pending += !(m.has("uniform_targets_ms") && m.get("uniform_targets_ms").contains(std::to_string(bits)));
    if (pending > 0 && !c.modes.empty())
      std::printf("(more search points follow once the baselines' latencies are measured: %zu targets x %zu modes)\n",
                  pending, c.modes.size());
    return 0;
  }
  write_sweep_report(c, o);
  return 0;
}

namespace {

// The points whose bench stage ran (`benched`: their own; `shared`: each with the twin whose results
// it shares, the same architecture).
struct BenchedPoints {
  std::vector<Point> benched;
  std::vector<std::pair<Point, std::string>> shared;
};
BenchedPoints benched_points(const SweepConfig& c, const SweepOptions& o, const Manifest& m) {
  const std::vector<double> targets = study_targets(c, m.whole());
  BenchedPoints b;
  for (const Point& p : study_points(c, targets)) {
    if (!m.done(p.name + "/bench")) continue;
    const json& info = m.get("done").at(p.name + "/bench");
    if (info.contains("same_arch_as")) b.shared.emplace_back(p, info["same_arch_as"].get<std::string>());
    else b.benched.push_back(p);
  }
  LLMC_CHECK(!b.benched.empty(), "{}: no point has been benched yet", o.out);
  return b;
}

// The folder each benched point is timed on: its export, else a timing export. Exported weights stay
// out of git, so a study carried to a fresh clone or machine has its manifest and results but no
// exports. Decode time depends on the architecture and the packed format, not on the weights'
// values, so such a point is timed on a timing export: its own export command with RTN and no
// fine-tune (seconds instead of minutes), in DIR/points/NAME/timing-export, never evaluated (made
// here when missing). `timing_exports` gets the names of the points timed that way.
std::map<std::string, std::string> timing_folders(const SweepConfig& c, const SweepOptions& o,
                                                  const std::vector<Point>& benched, const std::string& exe,
                                                  std::vector<std::string>& timing_exports) {
  std::map<std::string, std::string> folder;
  for (const Point& p : benched) {
    const std::string dir = point_dir(o.out, p.name);
    folder[p.name] = "export";
    if (file_exists(path_join(dir, "export/model.safetensors"))) continue;
    folder[p.name] = "timing-export";
    timing_exports.push_back(p.name);
    const std::string tex = path_join(dir, "timing-export");
    if (file_exists(path_join(tex, "model.safetensors"))) continue;  // made by an earlier run
    Point t = p;
    t.quant = "rtn";
    SweepConfig ct = c;
    ct.finetune_steps = 0;
    const std::string arch = arch_of(o.out, p);
    std::vector<std::string> args = export_args(ct, t, arch, point_lm_head_bits(c, arch), tex);
    args.insert(args.begin(), exe);
    const std::string log = path_join(dir, "timing-export.log");
    spdlog::info("sweep: {} has no export here; timing export (RTN, no fine-tune) to {}", p.name, tex);
    std::error_code ec;
    std::filesystem::remove_all(tex, ec);  // a killed export's partial folder
    const ProcessResult res = run_process(args, log);
    if (res.exit_code != 0)
      fail("sweep: the timing export of {} failed (exit {}); its log is {}", p.name, res.exit_code, log);
  }
  return folder;
}

// The stages' environment, and a study in o.out (`what`: what the caller would do with it).
void require_study(const SweepOptions& o, const char* what) {
  set_stage_environment();
  const std::string mpath = path_join(o.out, "manifest.json");
  LLMC_CHECK(file_exists(mpath), "{}: no study here to {}", mpath, what);
}

}  // namespace

void rebench_sweep(const SweepConfig& c, const SweepOptions& o, int rounds) {
  LLMC_CHECK(rounds >= 1, "sweep --rebench: rounds must be >= 1 (got {})", rounds);
  require_study(o, "bench again");
  Manifest m(c, o.out);
  const BenchedPoints bp = benched_points(c, o, m);
  const std::vector<Point>& benched = bp.benched;
  const auto& shared = bp.shared;  // these take their twin's new bench too
  if (o.dry_run) {
    std::vector<std::string> names;
    for (const Point& p : benched) names.push_back(p.name);
    std::printf("sweep --rebench %d would bench, each round%s: %s\n", rounds,
                c.lut.empty() ? " after a fresh latency table" : "", fmt::format("{}", fmt::join(names, ", ")).c_str());
    return;
  }
  const std::string exe = o.exe.empty() ? self_executable() : o.exe;
  std::vector<std::string> timing_exports;
  const std::map<std::string, std::string> folder = timing_folders(c, o, benched, exe, timing_exports);
  std::unique_ptr<FileLock> lock = timing_lock();
  // A latency table measured at the start of every round too (when the study measured its own), and
  // that round's benches predicted from it: the machine's speed drifts (on the 2-vCPU VM the same
  // LUT entries ran 1.23x slower two hours later, and whole decodes 11% apart within 3 minutes), so
  // predicted and measured times compare only within one short period. DIR/lut.json (the searches'
  // table) stays.
  std::vector<std::string> luts;
  const std::optional<SearchConfig> sc =
      c.lut.empty() ? std::optional(load_search_config(c.search_config)) : std::nullopt;
  auto round_lut = [&](int r) {
    if (!sc) return path_join(o.out, "lut.json");
    const std::string fresh = path_join(o.out, fmt::format("lut-rebench-r{}.json", r + 1));
    const std::string log = path_join(o.out, fmt::format("lut-rebench-r{}.log", r + 1));
    spdlog::info("sweep --rebench: round {}/{}: latency table {}", r + 1, rounds, fresh);
    std::vector<std::string> args = lut_args(c, *sc, o.out, fresh);
    args.insert(args.begin(), exe);
    const ProcessResult res = run_process(args, log);
    if (res.exit_code != 0) fail("sweep --rebench: the latency table failed (exit {}); its log is {}", res.exit_code, log);
    return fresh;
  };
  for (int r = 0; r < rounds; ++r) {
    const std::string lut = round_lut(r);
    luts.push_back(lut);
    for (const Point& p : benched) {
      const std::string dir = point_dir(o.out, p.name), tag = fmt::format("bench-r{}", r + 1);
      std::vector<std::string> args = bench_args(c, dir, lut, path_join(dir, tag + ".json"), folder.at(p.name));
      args.insert(args.begin(), exe);
      spdlog::info("sweep --rebench: round {}/{}: {}", r + 1, rounds, p.name);
      const ProcessResult res = run_process(args, path_join(dir, tag + ".log"));
      if (res.exit_code != 0)
        fail("sweep --rebench: bench of {} failed (exit {}); its log is {}", p.name, res.exit_code,
             path_join(dir, tag + ".log"));
    }
  }
  for (const Point& p : benched) {
    const std::string dir = point_dir(o.out, p.name);
    std::vector<std::pair<double, json>> runs;
    for (int r = 0; r < rounds; ++r) {
      const std::string f = path_join(dir, fmt::format("bench-r{}.json", r + 1));
      json j = json::parse(read_text_file(f));
      runs.emplace_back(j.at("decode_ms_per_token").get<double>(), std::move(j));
    }
    std::vector<double> all;
    for (const auto& [ms, j] : runs) all.push_back(ms);
    std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    json out = runs[(runs.size() - 1) / 2].second;  // the median round (lower median for an even count)
    out["rounds_decode_ms"] = all;
    if (folder.at(p.name) != "export") out["timing_export"] = true;  // the report marks these points
    write_file_atomic(path_join(dir, "bench.json"), out.dump(1) + "\n");
  }
  for (const auto& [p, twin] : shared)
    write_file_atomic(path_join(point_dir(o.out, p.name), "bench.json"),
                      read_text_file(path_join(point_dir(o.out, twin), "bench.json")));
  m.set("rebench", {{"rounds", rounds}, {"points", benched.size()}, {"luts", luts}, {"timing_exports", timing_exports}});
  lock.reset();
  write_sweep_report(c, o);
}

std::vector<std::pair<std::string, std::string>> versus_pairs(const std::vector<VersusPoint>& points) {
  std::vector<std::pair<std::string, std::string>> pairs;  // (joint, baseline)
  for (const VersusPoint& b : points) {
    if (!b.baseline) continue;
    const VersusPoint* nearest = nullptr;
    bool any = false;
    auto off = [](double a, double ref) { return a > 0 && ref > 0 ? std::fabs(a / ref - 1) : 1e300; };
    for (const VersusPoint& j : points) {
      if (j.baseline) continue;
      if (off(j.measured_ms, b.measured_ms) <= 0.25 || off(j.predicted_ms, b.predicted_ms) <= 0.25)
        pairs.emplace_back(j.name, b.name), any = true;
      if (!nearest || off(j.measured_ms, b.measured_ms) < off(nearest->measured_ms, b.measured_ms)) nearest = &j;
    }
    if (!any && nearest) pairs.emplace_back(nearest->name, b.name);
  }
  return pairs;
}

void versus_sweep(const SweepConfig& c, const SweepOptions& o, int repeats) {
  LLMC_CHECK(repeats >= 2, "sweep --versus: repeats must be >= 2 (half with each model loaded first; got {})", repeats);
  require_study(o, "time");
  Manifest m(c, o.out);
  const BenchedPoints bp = benched_points(c, o, m);
  std::vector<VersusPoint> vp;
  std::map<std::string, const Point*> by_name;
  for (const Point& p : bp.benched) {
    const bool baseline = p.method.rfind("uniform-", 0) == 0;
    if (!baseline && p.method != "joint") continue;
    const json b = read_json_file<json>(path_join(point_dir(o.out, p.name), "bench.json"));
    vp.push_back({p.name, baseline, b.at("decode_ms_per_token").get<double>(), bench_predicted_decode_ms(b)});
    by_name[p.name] = &p;
  }
  std::vector<std::pair<const Point*, const Point*>> pairs;  // (joint, baseline)
  for (const auto& [j, b] : versus_pairs(vp)) pairs.emplace_back(by_name.at(j), by_name.at(b));
  LLMC_CHECK(!pairs.empty(), "{}: sweep --versus needs a benched joint point and a benched uniform baseline", o.out);
  // Timing exports only for the points that are timed.
  std::vector<Point> timed;
  for (const Point& p : bp.benched)
    for (const auto& [j, b] : pairs)
      if (j == &p || b == &p) {
        timed.push_back(p);
        break;
      }
  if (o.dry_run) {
    for (const auto& [j, b] : pairs)
      std::printf("sweep --versus %d would time %s against %s\n", repeats, j->name.c_str(), b->name.c_str());
    return;
  }
  const std::string exe = o.exe.empty() ? self_executable() : o.exe;
  // In-turn ratios of an earlier --versus that this run does not time go: their pairs were chosen by
  // other decode times, maybe on another machine (seen: a study re-timed on a new machine kept six
  // pairs from the old one), and the report reads every versus file it finds.
  for (const VersusPoint& v : vp) {
    if (v.baseline) continue;
    const std::string dir = point_dir(o.out, v.name);
    std::vector<std::filesystem::path> stale;
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      const std::string f = e.path().filename().string(), ext = e.path().extension().string();
      if (f.rfind("versus-", 0) != 0 || (ext != ".json" && ext != ".log")) continue;
      const std::string base = f.substr(7, f.size() - 7 - ext.size());
      bool timed_now = false;
      for (const auto& [j, b] : pairs) timed_now |= j->name == v.name && b->name == base;
      if (!timed_now) stale.push_back(e.path());
    }
    for (const auto& f : stale) {
      spdlog::info("sweep --versus: removing {} (a pair this run does not time)", f.string());
      std::filesystem::remove(f);
    }
  }
  std::vector<std::string> timing_exports;
  const std::map<std::string, std::string> folder = timing_folders(c, o, timed, exe, timing_exports);
  std::unique_ptr<FileLock> lock = timing_lock();
  json done = json::array();
  for (const auto& [j, b] : pairs) {
    const std::string dir = point_dir(o.out, j->name), tag = "versus-" + b->name;
    const std::vector<std::string> args = {exe, "--threads", std::to_string(c.threads), "bench", "--model",
                                           path_join(dir, folder.at(j->name)), "--versus",
                                           path_join(point_dir(o.out, b->name), folder.at(b->name)), "--prompt-tokens",
                                           std::to_string(c.prompt_tokens), "--new-tokens", std::to_string(c.new_tokens),
                                           "--repeats", std::to_string(repeats), "--json", "--output",
                                           path_join(dir, tag + ".json")};
    spdlog::info("sweep --versus: {} against {} ({} repeats)", j->name, b->name, repeats);
    const ProcessResult res = run_process(args, path_join(dir, tag + ".log"));
    if (res.exit_code != 0)
      fail("sweep --versus: {} against {} failed (exit {}); its log is {}", j->name, b->name, res.exit_code,
           path_join(dir, tag + ".log"));
    done.push_back({j->name, b->name});
  }
  m.set("versus", {{"repeats", repeats}, {"pairs", done}, {"timing_exports", timing_exports}});
  lock.reset();
  write_sweep_report(c, o);
}

}  // namespace llmc
