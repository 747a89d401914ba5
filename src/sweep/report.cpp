// The sweep's report: report.json (points with measured and predicted latency, accuracy, ppl,
// bytes), report.md (a table per method and the two comparisons the study is for), pareto.svg
// (+ pareto.png where rsvg-convert is installed).
//
// report.json:
// {"model", "machine", "threads", "date", "config": {...sweep settings...},
//  "points": [{"name", "method", "bits" | "target_ms", "arch", "recreate", "decode_ms", "predicted_decode_ms",
//              "prefill_tok_s", "acc_avg", "acc_stderr", "tasks": {task: {"acc", "acc_norm", "n"}},
//              "wikitext2_ppl", "bytes", "lm_head_bits", "samples" (the eval's per-document file, else eval-docs.json, or null),
//              "same_arch_as" (only where the sweep shared another point's results: same architecture),
//              "timing_export": true (only where sweep --rebench timed a stand-in export: see run.cpp)}],
//  "rebench": {"rounds", "points", "luts", "timing_exports"}     // only after sweep --rebench
//  "unreachable": [{"name", "method", "target_ms", "reason"}],   // targets below the mode's fastest arch
//  "comparisons": [...]}                                          // sweep_comparisons (sweep.h)
// acc_avg is the unweighted mean of the multiple-choice tasks' acc; acc_stderr its standard error
// (sqrt(sum stderr_i^2) / n, tasks independent).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/json_file.h"
#include "llmc/core/process.h"
#include "llmc/eval/tasks.h"
#include "llmc/latency/lut.h"
#include "llmc/sweep/sweep.h"
#include "sweep_internal.h"

namespace llmc {

using json = nlohmann::ordered_json;
using namespace sweep;

namespace {

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&t));
  return buf;
}

// Per task, the acc of each document in file order (doc 0, 1, ...): from an eval --samples file
// (eval-samples.jsonl, kept out of git: megabytes, with every choice's log-likelihood) or from the
// point's eval-docs.json ({"format": "llmcompress-eval-docs", "version": 1, "acc": {task: [0, 1, ...]}},
// a few KB, committed), which the report writes from the former so that paired comparisons survive
// a fresh clone. Empty when neither is there or the documents are not numbered 0..n-1 per task.
using DocAcc = std::map<std::string, std::vector<double>>;  // task -> acc of each document

DocAcc doc_acc(const json& samples) {
  DocAcc out;
  if (!samples.is_string() || !file_exists(samples.get<std::string>())) return out;
  const std::string path = samples.get<std::string>();
  if (path.size() < 6 || path.substr(path.size() - 6) != ".jsonl") {
    const json j = read_json_file<json>(path);
    if (j.value("format", "") != "llmcompress-eval-docs" || !j.contains("acc") || !j["acc"].is_object())
      fail("{}: not an llmcompress-eval-docs file", path);
    for (const auto& [task, v] : j["acc"].items()) out[task] = v.get<std::vector<double>>();
    return out;
  }
  std::istringstream in(read_text_file(path));
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      fail("{}:{}: not valid JSON", path, line_no);
    }
    if (!j.contains("task") || !j.contains("doc") || !j.contains("acc")) fail("{}:{}: no task, doc or acc", path, line_no);
    auto& v = out[j["task"].get<std::string>()];
    if (j["doc"].get<int64_t>() != static_cast<int64_t>(v.size())) return {};
    v.push_back(j["acc"].get<double>());
  }
  return out;
}

// sweep --versus: a point's timings in turn against baselines (DIR/versus-BASELINE.json) as
// {BASELINE: {"decode_ratio", "decode_ratios"}}; empty when none.
json versus_of(const std::string& dir) {
  json out = json::object();
  if (!dir_exists(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("versus-", 0) != 0 || e.path().extension() != ".json") continue;
    const json v = read_json_file<json>(e.path().string());
    out[f.substr(7, f.size() - 12)] = {{"decode_ratio", v.at("decode_ratio")}, {"decode_ratios", v.at("decode_ratios")}};
  }
  return out;
}

// One finished point as report.json holds it; null when its eval is not done yet.
json point_json(const SweepConfig& c, const SweepOptions& o, const Point& p) {
  const std::string dir = point_dir(o.out, p.name);
  const std::string bench = path_join(dir, "bench.json"), eval = path_join(dir, "eval.json");
  const std::string ppl = path_join(dir, "ppl.json");
  if (!file_exists(bench) || !file_exists(eval) || (!c.ppl_task.empty() && !file_exists(ppl))) return nullptr;
  const json b = read_json_file<json>(bench), e = read_json_file<json>(eval);
  json r;
  r["name"] = p.name;
  r["method"] = p.method;
  std::string arch = arch_of(o.out, p);
  if (p.mode.empty()) {
    r["bits"] = p.bits;
  } else {
    r["target_ms"] = p.target_ms;
    // A small copy of the arch next to the report, so the report can be committed without the runs.
    const std::string copy = arch_copy(o.out, p.name);
    make_dirs(parent_dir(copy));
    if (arch != copy) write_file_atomic(copy, read_text_file(arch));
    arch = copy;
  }
  r["arch"] = arch;
  const int lm_head_bits = point_lm_head_bits(c, arch);
  r["lm_head_bits"] = lm_head_bits;
  std::vector<std::string> cmd = export_args(c, p, arch, lm_head_bits, "$OUT");
  cmd.insert(cmd.begin(), "llmcompress");
  std::string rec = shell_quote_command(cmd);
  const auto at = rec.find("'$OUT'");  // the placeholder stays unquoted for the shell to expand
  if (at != std::string::npos) rec.replace(at, 6, "$OUT");
  r["recreate"] = rec;
  r["decode_ms"] = b.value("decode_ms_per_token", 0.0);
  r["predicted_decode_ms"] = bench_predicted_decode_ms(b);
  r["prefill_tok_s"] = b.value("prefill_tokens_per_s", 0.0);
  if (b.value("timing_export", false)) r["timing_export"] = true;  // sweep --rebench timed a stand-in export
  if (b.contains("rounds_decode_ms")) r["rounds_decode_ms"] = b["rounds_decode_ms"];  // per --rebench round
  json tasks = json::object();
  double sum = 0, var = 0;
  int n = 0;
  for (const auto& [task, res] : e.at("results").items()) {
    if (!res.contains("acc")) continue;
    json t = {{"acc", res["acc"]}, {"n", res.value("n", 0)}};
    if (res.contains("acc_norm")) t["acc_norm"] = res["acc_norm"];
    tasks[task] = t;
    sum += res["acc"].get<double>();
    const double se = res.value("acc_stderr", 0.0);
    var += se * se;
    ++n;
  }
  r["acc_avg"] = n ? sum / n : 0.0;
  r["acc_stderr"] = n ? std::sqrt(var) / n : 0.0;
  r["tasks"] = tasks;
  // WikiText-2 (GPTQ protocol) token perplexity, from the perplexity run or the main eval.
  r["wikitext2_ppl"] = nullptr;
  for (const json& src : {c.ppl_task.empty() ? json(nullptr) : read_json_file<json>(ppl), e})
    if (src.is_object() && src["results"].contains("wikitext2_gptq") && r["wikitext2_ppl"].is_null())
      r["wikitext2_ppl"] = src["results"]["wikitext2_gptq"].value("token_perplexity", 0.0);
  r["bytes"] = b.value("model_file_bytes", 0);
  const std::string samples = path_join(dir, "eval-samples.jsonl"), docs = path_join(dir, "eval-docs.json");
  std::error_code ec;
  if (file_exists(samples) && (!file_exists(docs) || std::filesystem::last_write_time(docs, ec) <
                                                         std::filesystem::last_write_time(samples, ec))) {
    // Written once per samples file (the report is rewritten after every stage; the samples run to MBs).
    const DocAcc acc = doc_acc(json(samples));
    if (!acc.empty()) {
      json d = {{"format", "llmcompress-eval-docs"}, {"version", 1}, {"acc", json::object()}};
      for (const auto& [task, v] : acc) d["acc"][task] = v;
      write_file_atomic(docs, d.dump() + "\n");
    }
  }
  r["samples"] = file_exists(samples) ? json(samples) : file_exists(docs) ? json(docs) : json(nullptr);
  return r;
}

// a - b in average accuracy with its standard error: paired over documents when both points have
// the same documents' scores (da, db: doc_acc of each), else from the two points' own stderrs.
json acc_delta(const json& a, const json& b, const DocAcc& da, const DocAcc& db) {
  json r;
  r["delta_acc"] = a["acc_avg"].get<double>() - b["acc_avg"].get<double>();
  r["stderr"] = std::hypot(a["acc_stderr"].get<double>(), b["acc_stderr"].get<double>());
  r["paired"] = false;
  r["docs"] = 0;
  if (da.empty() || da.size() != db.size() || da.size() != a["tasks"].size()) return r;
  double d = 0, var = 0;
  int64_t docs = 0;
  json per_task = json::object();  // where an average's difference comes from (one task can carry it)
  for (const auto& [task, xa] : da) {
    const auto it = db.find(task);
    if (it == db.end() || it->second.size() != xa.size() || xa.size() < 2) return r;
    std::vector<double> diff(xa.size());
    double mu = 0;
    for (size_t i = 0; i < xa.size(); ++i) mu += diff[i] = xa[i] - it->second[i];
    const double se = mean_stderr(diff);  // lm-eval's sample stderr of the mean
    mu /= static_cast<double>(diff.size());
    per_task[task] = {{"delta", mu}, {"stderr", se}};
    d += mu;
    var += se * se;
    docs += static_cast<int64_t>(diff.size());
  }
  const double tasks = static_cast<double>(da.size());
  r["delta_acc"] = d / tasks;
  r["stderr"] = std::sqrt(var) / tasks;
  r["paired"] = true;
  r["docs"] = docs;
  r["tasks"] = per_task;
  return r;
}

// a's decode time over b's. Where both points were timed in the same `sweep --rebench` rounds (one
// time per round each, a minute or so apart within a round), the median over rounds of the
// per-round ratio: the VM's slow phases last minutes and move both times of a round together, so
// the paired ratio is steadier than the ratio of the two medians (Zen 4 VM: a point's six rounds
// spanned 10-70%). Sets decode_ratio, and with rounds decode_ratio_rounds (each round's ratio).
void decode_ratio(const json& a, const json& b, json& r) {
  const std::string bn = b["name"].get<std::string>();
  if (a.contains("versus") && a["versus"].contains(bn)) {  // sweep --versus: the two timed in turn
    r["decode_ratio"] = a["versus"][bn]["decode_ratio"];
    r["decode_ratio_versus"] = a["versus"][bn]["decode_ratios"];
    return;
  }
  const std::vector<double> ra = a.value("rounds_decode_ms", std::vector<double>{}),
                            rb = b.value("rounds_decode_ms", std::vector<double>{});
  if (ra.size() >= 3 && ra.size() == rb.size()) {
    std::vector<double> q;
    for (size_t i = 0; i < ra.size(); ++i) q.push_back(ra[i] / rb[i]);
    r["decode_ratio_rounds"] = q;
    std::sort(q.begin(), q.end());
    const size_t n = q.size();
    r["decode_ratio"] = n % 2 ? q[n / 2] : (q[n / 2 - 1] + q[n / 2]) / 2;
    return;
  }
  r["decode_ratio"] = a["decode_ms"].get<double>() / b["decode_ms"].get<double>();
}

json comparison(const char* kind, const json& a, const json& b, const DocAcc& da, const DocAcc& db) {
  json r = {{"kind", kind},
            {"a", a["name"]},
            {"b", b["name"]},
            {"a_decode_ms", a["decode_ms"]},
            {"b_decode_ms", b["decode_ms"]}};
  decode_ratio(a, b, r);
  if (a.contains("target_ms") && b.contains("target_ms")) r["target_ms"] = a["target_ms"];
  r.update(acc_delta(a, b, da, db));
  r["same_arch"] = a.value("same_arch_as", "") == b["name"] || b.value("same_arch_as", "") == a["name"];
  r["delta_ppl_pct"] = a["wikitext2_ppl"].is_number() && b["wikitext2_ppl"].is_number()
                           ? json(100.0 * (a["wikitext2_ppl"].get<double>() / b["wikitext2_ppl"].get<double>() - 1))
                           : json(nullptr);
  return r;
}

std::string fmt_ms(double v) { return fmt::format("{:.3f}", v); }

std::string verdict(const std::string& criterion) {
  if (criterion == "equal_latency") return "met (within 5%)";
  if (criterion == "faster") return "met (faster)";
  return "**not met**";
}

std::string markdown(const json& rep) {
  std::string s = fmt::format("# Sweep: {}\n\nMachine: {}; threads {}; date {}.\n\n", rep["model"].get<std::string>(),
                              rep["machine"].get<std::string>(), rep["threads"].get<int>(),
                              rep["date"].get<std::string>());
  if (rep.contains("rebench")) {
    const json& r = rep["rebench"];
    // Fresh tables per round only where the study measured its own (a config's `lut` is used as is).
    const std::vector<std::string> luts = r.value("luts", std::vector<std::string>{});
    const bool fresh = std::any_of(luts.begin(), luts.end(),
                                   [](const std::string& l) { return l.find("lut-rebench-r") != std::string::npos; });
    s += fmt::format("Decode times: the median of {} rounds of `sweep --rebench`, {}.", r.value("rounds", 0),
                     fresh ? "each round with a fresh latency table"
                           : "each round predicted from the study's latency table (the config's `lut`)");
    const std::vector<std::string> t = r.value("timing_exports", std::vector<std::string>{});
    if (!t.empty())
      s += fmt::format(" Timed on a timing export (the point's architecture and packed format, RTN weights without"
                       " fine-tune: its export was not on this machine): {}.",
                       fmt::join(t, ", "));
    s += "\n\n";
  }
  std::map<std::string, std::vector<json>> by_method;
  std::vector<std::string> order;
  for (const auto& p : rep["points"]) {
    const std::string m = p["method"];
    if (!by_method.count(m)) order.push_back(m);
    by_method[m].push_back(p);
  }
  std::vector<std::string> task_names;
  if (!rep["points"].empty())
    for (const auto& [t, v] : rep["points"][0]["tasks"].items()) task_names.push_back(t);
  for (const auto& m : order) {
    s += fmt::format("## {}\n\n| point | target ms | decode ms (measured) | LUT ms | measured / LUT | prefill tok/s |"
                     " acc avg ± stderr |",
                     m);
    for (const auto& t : task_names) s += " " + t + " |";
    s += " WikiText-2 ppl | MB |\n|---|---:|---:|---:|---:|---:|---:|";
    for (size_t i = 0; i < task_names.size(); ++i) s += "---:|";
    s += "---:|---:|\n";
    for (const auto& p : by_method[m]) {
      const double meas = p["decode_ms"], pred = p["predicted_decode_ms"];
      s += fmt::format("| {} | {} | {} | {} | {} | {:.0f} | {:.4f} ± {:.4f} |", p["name"].get<std::string>(),
                       p.contains("target_ms") ? fmt_ms(p["target_ms"]) : "-", fmt_ms(meas), fmt_ms(pred),
                       pred > 0 ? fmt::format("{:.2f}", meas / pred) : "-", p["prefill_tok_s"].get<double>(),
                       p["acc_avg"].get<double>(), p["acc_stderr"].get<double>());
      for (const auto& t : task_names)
        s += p["tasks"].contains(t) ? fmt::format(" {:.4f} |", p["tasks"][t]["acc"].get<double>()) : " - |";
      s += fmt::format(" {} | {:.2f} |\n", p["wikitext2_ppl"].is_number() ? fmt::format("{:.3f}", p["wikitext2_ppl"].get<double>()) : "-",
                       p["bytes"].get<double>() / 1e6);
    }
    s += "\n";
  }
  // The study's two questions, from rep["comparisons"] (sweep_comparisons).
  auto fmt_delta = [](const json& c) {
    if (c.value("same_arch", false)) return std::string("0 (the same architecture)");
    return fmt::format("{:+.4f} ± {:.4f}{}", c["delta_acc"].get<double>(), c["stderr"].get<double>(),
                       c["paired"].get<bool>() ? fmt::format(" (paired, {} docs)", c["docs"].get<int64_t>()) : "");
  };
  auto fmt_ratio = [](const json& c) {
    std::string t = fmt::format("{:+.1f}%", 100 * (c["decode_ratio"].get<double>() - 1));
    for (const char* k : {"decode_ratio_versus", "decode_ratio_rounds"}) {
      if (!c.contains(k)) continue;
      const auto q = c[k].get<std::vector<double>>();
      const auto [lo, hi] = std::minmax_element(q.begin(), q.end());
      t += fmt::format(" ({:+.1f}..{:+.1f}%, {} {})", 100 * (*lo - 1), 100 * (*hi - 1), q.size(),
                       std::string(k) == "decode_ratio_versus" ? "repeats in turn" : "rounds");
    }
    return t;
  };
  auto fmt_dppl = [](const json& c) {
    return c["delta_ppl_pct"].is_number() ? fmt::format("{:+.1f}%", c["delta_ppl_pct"].get<double>()) : "-";
  };
  std::string base_rows, mode_rows;
  for (const auto& c : rep.value("comparisons", json::array())) {
    if (c["kind"] == "baseline")
      base_rows += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} |\n", c["b"].get<std::string>(),
                               fmt_ms(c["b_decode_ms"]), c["a"].get<std::string>(), fmt_ms(c["a_decode_ms"]),
                               fmt_ratio(c), fmt_delta(c), fmt_dppl(c), verdict(c.value("criterion", "")));
    else
      mode_rows += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", fmt_ms(c["target_ms"]), c["b"].get<std::string>(),
                               fmt_ms(c["a_decode_ms"]), fmt_ms(c["b_decode_ms"]), fmt_delta(c), fmt_dppl(c),
                               c["a"].get<std::string>());
  }
  if (!base_rows.empty())
    s += "## Joint vs the uniform baselines\n\n"
         "Per baseline, the joint point that meets the criterion with the largest accuracy gain: within 5% of "
         "the baseline's measured decode, or faster; and at least as accurate: Δ acc >= 0 and WikiText-2 at most 2% "
         "higher. Where none does, the joint point nearest in measured decode. Δ decode: where `sweep --versus` timed the two "
         "in turn (`bench --versus`), the median of its repeats' ratios; else where both were timed in the same "
         "`--rebench` rounds, the median of the per-round ratios (the range in brackets); else the ratio of the "
         "two times.\n\n"
         "| baseline | decode ms | joint point | decode ms | Δ decode | Δ acc ± stderr | Δ ppl | criterion |\n"
         "|---|---:|---|---:|---:|---:|---:|---|\n" + base_rows + "\n";
  if (!mode_rows.empty())
    s += "## Joint vs the other search modes at equal targets\n\n"
         "| target ms | other point | joint decode ms | other decode ms | Δ acc (joint - other) ± stderr | Δ ppl | joint point |\n"
         "|---:|---|---:|---:|---:|---:|---|\n" + mode_rows + "\n";
  if (!base_rows.empty() || !mode_rows.empty())
    s += "Paired: both points' per-document scores (`eval --samples`) on the same documents, the stderr of "
         "their differences; otherwise sqrt(se_a² + se_b²).\n\n";
  // Per task, for the paired comparisons: an average's difference can come from one task alone.
  std::string task_rows;
  for (const auto& c : rep.value("comparisons", json::array())) {
    if (!c.contains("tasks") || c.value("same_arch", false)) continue;
    task_rows += fmt::format("| {} | {} |", c["a"].get<std::string>(), c["b"].get<std::string>());
    for (const auto& t : task_names)
      task_rows += c["tasks"].contains(t) ? fmt::format(" {:+.3f} ± {:.3f} |", c["tasks"][t]["delta"].get<double>(),
                                                        c["tasks"][t]["stderr"].get<double>())
                                          : " - |";
    task_rows += "\n";
  }
  if (!task_rows.empty()) {
    s += "## Per task (paired: a - b, accuracy ± stderr)\n\n| a | b |";
    for (const auto& t : task_names) s += " " + t + " |";
    s += "\n|---|---|";
    for (size_t i = 0; i < task_names.size(); ++i) s += "---:|";
    s += "\n" + task_rows + "\n";
  }
  if (rep.contains("unreachable") && !rep["unreachable"].empty()) {
    s += "## Unreachable targets\n\nThe mode's fastest architecture (LUT) is slower than the target; no export.\n\n"
         "| point | target ms | search's message |\n|---|---:|---|\n";
    for (const auto& u : rep["unreachable"])
      s += fmt::format("| {} | {} | {} |\n", u["name"].get<std::string>(), fmt_ms(u["target_ms"]),
                       u["reason"].get<std::string>());
    s += "\n";
  }
  s += "Accuracy vs measured decode latency: `pareto.svg`.\n";
  return s;
}

}  // namespace

json sweep_comparisons(const json& points) {
  std::vector<const json*> joint, baselines, others;
  for (const auto& p : points) {
    const std::string m = p["method"];
    (m == "joint" ? joint : m.rfind("uniform-", 0) == 0 ? baselines : others).push_back(&p);
  }
  json out = json::array();
  if (joint.empty()) return out;
  std::map<std::string, DocAcc> acc;  // each point's samples file read once
  for (const auto& p : points) acc[p["name"].get<std::string>()] = doc_acc(p.value("samples", json()));
  auto compare = [&](const char* kind, const json& a, const json& b) {
    return comparison(kind, a, b, acc[a["name"].get<std::string>()], acc[b["name"].get<std::string>()]);
  };
  for (const json* b : baselines) {
    // The joint point that meets the criterion (sweep.h) with the largest accuracy gain; none: the
    // nearest in measured decode ms, marked not met.
    json best, nearest;
    for (const json* j : joint) {
      json c = compare("baseline", *j, *b);
      const double ratio = c["decode_ratio"].get<double>();
      const bool acc_ok = c["delta_acc"].get<double>() >= 0;
      const bool ppl_ok = c["delta_ppl_pct"].is_number() && c["delta_ppl_pct"].get<double>() <= 2.0;
      // "As accurate" is both numbers in both clauses: reasoning average and WikiText-2.
      c["criterion"] = !acc_ok || !ppl_ok              ? "not_met"
                       : std::fabs(ratio - 1) <= 0.05 ? "equal_latency"
                       : ratio < 1                    ? "faster"
                                                      : "not_met";
      if (c["criterion"] != "not_met" && (best.is_null() || c["delta_acc"].get<double>() > best["delta_acc"].get<double>()))
        best = c;
      if (nearest.is_null() || std::fabs(ratio - 1) < std::fabs(nearest["decode_ratio"].get<double>() - 1)) nearest = c;
    }
    if (best.is_null()) {
      best = nearest;
      best["criterion"] = "not_met";
    }
    out.push_back(best);
  }
  for (const json* j : joint)
    for (const json* q : others)
      if (std::fabs((*j)["target_ms"].get<double>() - (*q)["target_ms"].get<double>()) < 1e-9)
        out.push_back(compare("mode", *j, *q));
  return out;
}

void write_sweep_report(const SweepConfig& c, const SweepOptions& o) {
  json rep;
  rep["model"] = c.model;
  rep["machine"] = o.machine.empty() ? cpu_device_name() : o.machine;
  rep["threads"] = c.threads;
  rep["date"] = today();
  rep["config"] = json::parse(c.canonical_json());
  rep["config"].erase("search");
  rep["config"]["search"] = c.search_config;
  const std::string manifest = path_join(o.out, "manifest.json");
  const json m = file_exists(manifest) ? read_json_file<json>(manifest) : json::object();
  const std::vector<double> targets = study_targets(c, m);
  rep["points"] = json::array();
  std::vector<PlotPoint> plot;
  rep["unreachable"] = json::array();  // search points whose target the mode cannot reach
  for (const Point& p : study_points(c, targets)) {
    if (!p.mode.empty() && m.contains("done") && m["done"].contains(p.name + "/search") &&
        m["done"][p.name + "/search"].contains("unreachable")) {
      rep["unreachable"].push_back({{"name", p.name}, {"method", p.method}, {"target_ms", p.target_ms},
                                    {"reason", m["done"][p.name + "/search"]["unreachable"]}});
      continue;
    }
    json pj = point_json(c, o, p);
    if (pj.is_null()) continue;
    const std::string exp_stage = p.name + "/export";
    if (m.contains("done") && m["done"].contains(exp_stage) && m["done"][exp_stage].contains("same_arch_as"))
      pj["same_arch_as"] = m["done"][exp_stage]["same_arch_as"];  // the sweep shared that point's results
    // A point sharing its twin's results shares its timings in turn too (one export, timed once).
    const json v = versus_of(point_dir(o.out, pj.contains("same_arch_as") ? pj["same_arch_as"].get<std::string>() : p.name));
    if (!v.empty()) pj["versus"] = v;
    plot.push_back({p.method, p.name, pj["decode_ms"].get<double>(), pj["acc_avg"].get<double>(),
                    pj["acc_stderr"].get<double>()});
    rep["points"].push_back(std::move(pj));
  }
  rep["comparisons"] = sweep_comparisons(rep["points"]);
  if (m.contains("rebench")) rep["rebench"] = m["rebench"];
  write_file_atomic(path_join(o.out, "report.json"), rep.dump(1) + "\n");
  write_file_atomic(path_join(o.out, "report.md"), markdown(rep));
  const std::string svg = path_join(o.out, "pareto.svg");
  write_file_atomic(svg, pareto_svg(plot, fmt::format("{} ({} threads)", std::filesystem::path(c.model).filename().string(), c.threads),
                                    "measured decode latency (ms / token)", "reasoning accuracy (average)"));
  // A PNG too where librsvg's converter is installed (Debian: librsvg2-bin); the SVG is the report.
  const std::string rsvg = "/usr/bin/rsvg-convert";
  if (file_exists(rsvg)) {
    const std::string png = path_join(o.out, "pareto.png");
    const ProcessResult r = run_process({rsvg, "-o", png + ".tmp", svg}, "");
    if (r.exit_code == 0) rename_path(png + ".tmp", png);
  }
  spdlog::info("sweep: report in {}/report.md ({} points)", o.out, rep["points"].size());
}

std::string pareto_svg(const std::vector<PlotPoint>& points, const std::string& title, const std::string& x_label,
                       const std::string& y_label) {
  const double W = 760, H = 480, L = 80, R = 200, T = 50, B = 60;  // size and margins (legend on the right)
  double x0 = 1e300, x1 = -1e300, y0 = 1e300, y1 = -1e300;
  for (const auto& p : points) {
    x0 = std::min(x0, p.x);
    x1 = std::max(x1, p.x);
    y0 = std::min(y0, p.y - p.y_err);
    y1 = std::max(y1, p.y + p.y_err);
  }
  if (points.empty()) x0 = y0 = 0, x1 = y1 = 1;
  auto pad = [](double& a, double& b) {
    const double d = b > a ? (b - a) * 0.08 : std::max(1e-3, std::fabs(a) * 0.05);
    a -= d;
    b += d;
  };
  pad(x0, x1);
  pad(y0, y1);
  auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto Y = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  auto esc = [](std::string s) {
    std::string o;
    for (char c : s) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
    return o;
  };
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"};
  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"24\" font-size=\"15\" text-anchor=\"middle\">{3}</text>\n",
      W, H, (L + W - R) / 2, esc(title));
  // Axes, ticks and grid.
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", L, T,
                   W - L - R, H - T - B);
  // Ticks at round values: a step of 1, 2 or 5 x 10^k giving 4 to 10 ticks, labels with the
  // decimals that step needs.
  auto ticks = [](double a, double b) {
    const double raw = (b - a) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double f : {1.0, 2.0, 5.0, 10.0})
      if (f * mag >= raw * 0.75) {
        step = f * mag;
        break;
      }
    const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
    std::vector<std::pair<double, std::string>> out;
    for (double v = std::ceil(a / step) * step; v <= b + 1e-9 * step; v += step)
      out.emplace_back(v, fmt::format("{:.{}f}", v, decimals));
    return out;
  };
  for (const auto& [xv, text] : ticks(x0, x1))
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#ddd\"/>"
                     "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                     X(xv), T, H - B, H - B + 18, text);
  for (const auto& [yv, text] : ticks(y0, y1))
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#ddd\"/>"
                     "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5}</text>\n",
                     L, Y(yv), W - R, L - 6, Y(yv) + 4, text);
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2, H - 16, esc(x_label));
  s += fmt::format("<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n", (T + H - B) / 2,
                   esc(y_label));
  // Series: searched methods as lines through their points (by latency), baselines as points.
  std::vector<std::string> methods;
  for (const auto& p : points)
    if (std::find(methods.begin(), methods.end(), p.method) == methods.end()) methods.push_back(p.method);
  for (size_t m = 0; m < methods.size(); ++m) {
    const char* col = colors[m % 8];
    std::vector<PlotPoint> ps;
    for (const auto& p : points)
      if (p.method == methods[m]) ps.push_back(p);
    std::sort(ps.begin(), ps.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
    const bool baseline = methods[m].rfind("uniform-", 0) == 0;
    if (!baseline && ps.size() > 1) {
      std::string pts;
      for (const auto& p : ps) pts += fmt::format("{:.1f},{:.1f} ", X(p.x), Y(p.y));
      s += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>\n", pts, col);
    }
    for (const auto& p : ps) {
      if (p.y_err > 0)  // accuracy +- its standard error
        s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"{3}\" "
                         "stroke-opacity=\"0.45\"/>\n",
                         X(p.x), Y(p.y - p.y_err), Y(p.y + p.y_err), col);
      if (baseline)
        s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"9\" height=\"9\" fill=\"{}\"><title>{}</title></rect>\n",
                         X(p.x) - 4.5, Y(p.y) - 4.5, col, esc(p.label));
      else
        s += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"4.5\" fill=\"{}\"><title>{}</title></circle>\n", X(p.x),
                         Y(p.y), col, esc(p.label));
      // Every point named by what follows its method: b4, t6.110.
      s += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"10\">{}</text>\n", X(p.x) + 7, Y(p.y) - 6,
                       esc(p.label.substr(p.label.rfind('-') + 1)));
    }
    const double ly = T + 14 + 20.0 * m;
    s += baseline ? fmt::format("<rect x=\"{}\" y=\"{}\" width=\"9\" height=\"9\" fill=\"{}\"/>", W - R + 16, ly - 8, col)
                  : fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"/>",
                                W - R + 12, ly - 4, W - R + 28, ly - 4, col);
    s += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", W - R + 34, ly, esc(methods[m]));
  }
  if (std::any_of(points.begin(), points.end(), [](const PlotPoint& p) { return p.y_err > 0; }))
    s += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"10\">bars: ± 1 standard error</text>\n", W - R + 12,
                     T + 14 + 20.0 * methods.size() + 6);
  s += "</svg>\n";
  return s;
}

}  // namespace llmc
