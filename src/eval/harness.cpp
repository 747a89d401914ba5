#include "llmc/eval/harness.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/paths.h"
#include "llmc/eval/loglikelihood.h"
#include "llmc/eval/perplexity.h"
#include "llmc/eval/tasks.h"
#include "llmc/model/load.h"

namespace llmc {

using ojson = nlohmann::ordered_json;

namespace {

bool is_perplexity_task(const std::string& t) {
  return t == "wikitext" || t == "wikitext2_gptq" || t == "wikitext2_llamacpp" || t.rfind("text:", 0) == 0;
}

std::string known_tasks() {
  std::string s = "wikitext, wikitext2_gptq, wikitext2_llamacpp, text:FILE";
  for (const auto& t : task_table()) s += ", " + t.name;
  return s + ", reasoning7";
}

// NaN (lm-eval "N/A") -> null.
ojson num(double x) { return std::isnan(x) ? ojson(nullptr) : ojson(x); }

ojson metrics_json(const McMetrics& m) {
  ojson j;
  j["acc"] = num(m.acc);
  j["acc_stderr"] = num(m.acc_stderr);
  j["acc_norm"] = m.has_acc_norm ? num(m.acc_norm) : ojson(nullptr);
  j["acc_norm_stderr"] = m.has_acc_norm ? num(m.acc_norm_stderr) : ojson(nullptr);
  j["n"] = m.n;
  return j;
}

struct Prepared {
  std::string name;
  std::vector<TextDocument> docs;  // perplexity tasks
  LoadedTask mc;                   // multiple-choice tasks
};

// samples: when not null, one JSON line per document is appended (EvalOptions::samples_path).
ojson run_multiple_choice(CausalLM& model, const Prepared& p, const EvalOptions& opts, std::string* samples) {
  const LoadedTask& lt = p.mc;
  const TaskDef& def = *lt.def;
  auto requests = tokenize_instances(model.tokenizer(), lt.instances);
  spdlog::info("{}: {} documents, {} requests, {}-shot", p.name, lt.instances.size(), requests.size(),
               lt.num_fewshot);
  LoglikelihoodOptions lo;
  // The fast path's rows hold a context with all its choices (score_branches): 16 requests a forward
  // ran 1.0-1.15x faster than 32 there (SmolLM2 4-bit, 2 threads, five tasks: docs/measurements.md).
  lo.batch_size = opts.batch_size > 0 ? opts.batch_size : (opts.logprobs ? 16 : 32);
  lo.max_length = opts.max_length;
  lo.label = p.name;
  lo.logprobs = opts.logprobs;
  LoglikelihoodStats st;
  std::vector<double> ll = opts.scorer == "naive" ? loglikelihoods_naive(model, requests, lo, &st)
                                                   : loglikelihoods(model, requests, lo, &st);
  std::vector<DocScore> scores;
  scores.reserve(lt.instances.size());
  size_t k = 0;
  for (const auto& inst : lt.instances) {
    std::vector<double> l(ll.begin() + k, ll.begin() + k + inst.requests.size());
    k += inst.requests.size();
    scores.push_back(score_doc(inst, l));
    if (samples) {
      const DocScore& d = scores.back();
      ojson line = {{"task", p.name}, {"doc", scores.size() - 1}};
      if (!inst.group.empty()) line["group"] = inst.group;
      line["gold"] = inst.gold;
      line["pred"] = d.pred;
      line["acc"] = d.acc;
      if (def.reports_acc_norm) line["acc_norm"] = d.acc_norm;
      line["ll"] = l;
      *samples += line.dump() + "\n";
    }
  }
  ojson r;
  if (def.group_field.empty()) {
    r = metrics_json(aggregate(scores, def.reports_acc_norm));
  } else {
    // MMLU as lm-eval 0.4 groups it: subjects -> categories -> mmlu, each level a size-weighted
    // mean (weight_by_size: the micro average over questions) with pooled standard errors.
    std::map<std::string, std::vector<DocScore>> by_subject;
    for (size_t i = 0; i < scores.size(); ++i) by_subject[lt.instances[i].group].push_back(scores[i]);
    std::map<std::string, std::vector<McMetrics>> by_category;
    ojson subjects = ojson::object();
    for (const auto& [subject, s] : by_subject) {
      McMetrics m = aggregate(s, def.reports_acc_norm);
      std::string cat = mmlu_category(subject);
      by_category[cat.empty() ? "other" : cat].push_back(m);
      subjects[subject] = metrics_json(m);
    }
    std::vector<McMetrics> cats;
    ojson categories = ojson::object();
    for (const auto& [cat, parts] : by_category) {
      McMetrics m = aggregate_group(parts);
      cats.push_back(m);
      categories[cat] = metrics_json(m);
    }
    r = metrics_json(aggregate_group(cats));
    r["aggregation"] = "micro average over questions (lm-eval 0.4 group, weight_by_size), pooled stderr";
    r["categories"] = categories;
    r["subjects"] = subjects;
  }
  {
    std::vector<int> gold, pred;
    for (size_t i = 0; i < scores.size(); ++i) gold.push_back(lt.instances[i].gold), pred.push_back(scores[i].pred);
    r["acc_chance"] = num(answer_share_chance(gold, pred));  // the answer bias's share of acc (tasks.h)
  }
  r["num_fewshot"] = lt.num_fewshot;
  r["batch_size"] = lo.batch_size;
  r["data"] = lt.test_path;
  if (!lt.fewshot_path.empty()) r["fewshot_data"] = lt.fewshot_path;
  r["requests"] = st.requests;
  r["tokens"] = st.tokens;
  r["seconds"] = st.seconds;
  r["requests_per_second"] = st.seconds > 0 ? st.requests / st.seconds : 0.0;
  r["tokens_per_second"] = st.seconds > 0 ? st.tokens / st.seconds : 0.0;
  // Each task's result as soon as it is known (a long multi-task run shows progress in its log).
  auto v = [](const ojson& x) { return x.is_null() ? NAN : x.get<double>(); };
  spdlog::info("{}: acc {:.4f} ± {:.4f}{} (n {}, {:.0f} s, {:.1f} req/s)", p.name, v(r["acc"]), v(r["acc_stderr"]),
               r["acc_norm"].is_null()
                   ? std::string()
                   : fmt::format(", acc_norm {:.4f} ± {:.4f}", v(r["acc_norm"]), v(r["acc_norm_stderr"])),
               r["n"].get<int64_t>(), st.seconds, r["requests_per_second"].get<double>());
  return r;
}

std::string fmt_metric(const ojson& v, const ojson& se) {
  if (v.is_null()) return "—";
  std::string s = fmt::format("{:.4f}", v.get<double>());
  return s + " ± " + (se.is_null() ? std::string("N/A") : fmt::format("{:.4f}", se.get<double>()));
}

// The result of a fixed-window protocol (wikitext2_gptq, wikitext2_llamacpp): ppl = exp(mean of the
// window NLLs), so mean_window_nll is its log.
ojson window_result(const char* protocol, const PerplexityResult& r) {
  return {{"protocol", protocol},
          {"token_perplexity", r.token_perplexity},
          {"mean_window_nll", std::log(r.token_perplexity)},
          {"loglikelihood", r.loglikelihood},
          {"windows", r.windows},
          {"window_length", r.window_length},
          {"tokens", r.tokens},
          {"seconds", r.seconds},
          {"tokens_per_second", r.tokens_per_second},
          {"window_nll", r.window_nll}};
}

}  // namespace

std::vector<std::string> parse_task_list(const std::string& list) {
  std::vector<std::string> out;
  auto add = [&](const std::string& t) {
    if (std::find(out.begin(), out.end(), t) == out.end()) out.push_back(t);
  };
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string t = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (t.empty()) continue;
    if (is_perplexity_task(t)) {
      if (t.rfind("text:", 0) == 0 && t.size() == 5) fail("--tasks: 'text:' needs a file path (text:FILE)");
      add(t);
      continue;
    }
    for (const auto& name : expand_task_group(t)) {
      if (!find_task(name)) fail("--tasks: unknown task '{}' (known: {})", name, known_tasks());
      add(name);
    }
  }
  if (out.empty()) fail("--tasks: no task given");
  return out;
}

std::string run_eval(CausalLM& model, const EvalOptions& opts) {
  const std::string data_dir = opts.data_dir.empty() ? path_join(shared_root(), "data") : opts.data_dir;
  LLMC_CHECK(opts.scorer == "batched" || opts.scorer == "naive", "--scorer: expected batched or naive, got '{}'",
             opts.scorer);
  ojson result;
  result["model"] = opts.model_path;
  result["config"] = {{"tasks", opts.tasks},
                      {"data_dir", data_dir},
                      {"max_length", opts.max_length},
                      {"stride", opts.stride},
                      {"batch_size", opts.batch_size},
                      {"limit", opts.limit},
                      {"num_fewshot", opts.num_fewshot},
                      {"scorer", opts.scorer},
                      // "logprobs": the model's fast path (eval/scoring.h); "forward": full logits.
                      {"scoring", opts.logprobs ? "logprobs" : "forward"},
                      {"dtype", dtype_option_name(model.dtype())},  // results depend on it
                      {"threads", at::get_num_threads()}};
  result["results"] = ojson::object();

  // Read and check every task's data before the model runs, so a bad file fails fast.
  std::vector<Prepared> prepared;
  for (const auto& task : opts.tasks) {
    Prepared p;
    p.name = task;
    if (task == "wikitext") {
      p.docs = load_wikitext_docs(path_join(data_dir, "wikitext2/wiki.test.raw"));
    } else if (task == "wikitext2_gptq" || task == "wikitext2_llamacpp") {
      p.docs = load_wikitext_raw(path_join(data_dir, "wikitext2/wiki.test.raw"));
    } else if (task.rfind("text:", 0) == 0) {
      p.docs = load_text_docs(task.substr(5));
    } else {
      p.mc = load_task(task, data_dir, opts.num_fewshot, opts.limit);
    }
    if (opts.limit > 0 && static_cast<int64_t>(p.docs.size()) > opts.limit) p.docs.resize(opts.limit);
    prepared.push_back(std::move(p));
  }

  std::vector<std::string> mc_tasks, norm_tasks;
  double acc_sum = 0, norm_sum = 0;
  std::string samples;
  for (const auto& p : prepared) {
    if (p.mc.def) {
      ojson r = run_multiple_choice(model, p, opts, opts.samples_path.empty() ? nullptr : &samples);
      mc_tasks.push_back(p.name);
      acc_sum += r["acc"].is_null() ? NAN : r["acc"].get<double>();
      if (!r["acc_norm"].is_null()) {
        norm_tasks.push_back(p.name);
        norm_sum += r["acc_norm"].get<double>();
      }
      result["results"][p.name] = std::move(r);
      continue;
    }
    PerplexityOptions po;
    po.max_length = opts.max_length;
    po.stride = opts.stride;
    po.batch_size = opts.batch_size > 0 ? opts.batch_size : 8;
    po.label = p.name;
    po.logprobs = opts.logprobs;
    if (p.name == "wikitext2_llamacpp") {
      // llama-perplexity's protocol; --limit counts chunks (its --chunks).
      po.protocol = PerplexityProtocol::LlamaCpp;
      if (opts.stride > 0) spdlog::warn("{}: --stride is ignored (its chunks never overlap)", p.name);
      if (opts.max_length == 0) po.max_length = std::min<int64_t>(512, model.config().max_position_embeddings);
      po.max_windows = opts.limit;
      auto r = evaluate_perplexity(model, p.docs, po);
      result["results"][p.name] = window_result(
          "llama.cpp llama-perplexity: whole text tokenized (BOS if the vocab adds it), chunks of max_length with "
          "BOS as first token if added, second half of each chunk scored, ppl = exp(mean NLL)",
          r);
      continue;
    }
    if (p.name == "wikitext2_gptq") {
      // One token stream in fixed windows; --limit counts windows here (the file is one document).
      po.protocol = PerplexityProtocol::Chunks;
      if (opts.stride > 0) spdlog::warn("{}: --stride is ignored (its windows never overlap)", p.name);
      po.max_windows = opts.limit;
      auto r = evaluate_perplexity(model, p.docs, po);
      result["results"][p.name] = window_result(
          "GPTQ: non-overlapping full windows, each scored alone (no BOS), ppl = exp(mean of window mean NLLs)", r);
      continue;
    }
    spdlog::info("{}: {} documents", p.name, p.docs.size());
    auto r = evaluate_perplexity(model, p.docs, po);
    result["results"][p.name] = {{"token_perplexity", r.token_perplexity},
                                 {"word_perplexity", r.word_perplexity},
                                 {"byte_perplexity", r.byte_perplexity},
                                 {"bits_per_byte", r.bits_per_byte},
                                 {"loglikelihood", r.loglikelihood},
                                 {"documents", r.documents},
                                 {"tokens", r.tokens},
                                 {"words", r.words},
                                 {"bytes", r.bytes},
                                 {"seconds", r.seconds},
                                 {"tokens_per_second", r.tokens_per_second}};
  }
  // Unweighted mean over the multiple-choice tasks (each task counts once, whatever its size);
  // acc_norm over the tasks whose lm-eval definition reports it.
  ojson avg = ojson::object();
  if (!mc_tasks.empty()) {
    avg["acc"] = num(acc_sum / static_cast<double>(mc_tasks.size()));
    avg["tasks"] = mc_tasks;
    avg["acc_norm"] = norm_tasks.empty() ? ojson(nullptr) : num(norm_sum / static_cast<double>(norm_tasks.size()));
    avg["acc_norm_tasks"] = norm_tasks;
  }
  result["average"] = avg;
  if (!opts.samples_path.empty()) write_file_atomic(opts.samples_path, samples);
  return result.dump(2);
}

std::string eval_table(const std::string& result_json) {
  auto j = ojson::parse(result_json);
  std::string s;
  bool header = false;
  for (auto& [task, r] : j["results"].items()) {
    if (r.contains("word_perplexity")) {
      if (!header) {
        s += "| task | docs | tokens | token_ppl | word_ppl | byte_ppl | bits_per_byte | tok/s |\n";
        s += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
        header = true;
      }
      s += fmt::format("| {} | {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} | {:.0f} |\n", task,
                       r["documents"].get<int64_t>(), r["tokens"].get<int64_t>(), r["token_perplexity"].get<double>(),
                       r["word_perplexity"].get<double>(), r["byte_perplexity"].get<double>(),
                       r["bits_per_byte"].get<double>(), r["tokens_per_second"].get<double>());
    }
  }
  bool chunk_header = false;
  for (auto& [task, r] : j["results"].items()) {
    if (!r.contains("window_nll")) continue;
    if (!chunk_header) {
      if (!s.empty()) s += "\n";
      s += "| task | windows × length | tokens predicted | token_ppl | mean window NLL | tok/s |\n";
      s += "|---|---:|---:|---:|---:|---:|\n";
      chunk_header = true;
    }
    s += fmt::format("| {} | {} × {} | {} | {:.4f} | {:.6f} | {:.0f} |\n", task, r["windows"].get<int64_t>(),
                     r["window_length"].get<int64_t>(), r["tokens"].get<int64_t>(), r["token_perplexity"].get<double>(),
                     r["mean_window_nll"].get<double>(), r["tokens_per_second"].get<double>());
  }
  bool mc_header = false;
  for (auto& [task, r] : j["results"].items()) {
    if (!r.contains("acc")) continue;
    if (!mc_header) {
      if (!s.empty()) s += "\n";
      s += "| task | n | shots | acc ± stderr | acc_norm ± stderr | answer-share chance | req/s |\n";
      s += "|---|---:|---:|---|---|---:|---:|\n";
      mc_header = true;
    }
    std::string name = task;
    if (r.contains("categories")) name += " (micro avg)";
    const ojson chance = r.value("acc_chance", ojson(nullptr));
    s += fmt::format("| {} | {} | {} | {} | {} | {} | {:.1f} |\n", name, r["n"].get<int64_t>(),
                     r["num_fewshot"].get<int>(), fmt_metric(r["acc"], r["acc_stderr"]),
                     fmt_metric(r["acc_norm"], r["acc_norm_stderr"]),
                     chance.is_null() ? "—" : fmt::format("{:.4f}", chance.get<double>()),
                     r["requests_per_second"].get<double>());
    if (r.contains("categories"))
      for (auto& [cat, c] : r["categories"].items())
        s += fmt::format("| - {} | {} | | {} | {} | | |\n", cat, c["n"].get<int64_t>(), fmt_metric(c["acc"], c["acc_stderr"]),
                         fmt_metric(c["acc_norm"], c["acc_norm_stderr"]));
  }
  if (mc_header && j["average"].contains("acc")) {
    const auto& a = j["average"];
    std::string norm = a["acc_norm"].is_null()
                           ? "—"
                           : fmt::format("{:.4f} ({} tasks)", a["acc_norm"].get<double>(), a["acc_norm_tasks"].size());
    s += fmt::format("| average ({} tasks, unweighted) | | | {} | {} | | |\n", a["tasks"].size(),
                     a["acc"].is_null() ? "—" : fmt::format("{:.4f}", a["acc"].get<double>()), norm);
  }
  return s;
}

}  // namespace llmc
