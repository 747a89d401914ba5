#include "llmc/eval/harness.h"

#include <ATen/Parallel.h>

#include <nlohmann/json.hpp>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/log.h"
#include "llmc/core/paths.h"
#include "llmc/eval/perplexity.h"

namespace llmc {

using ojson = nlohmann::ordered_json;

std::vector<std::string> parse_task_list(const std::string& list) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    std::string t = list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? list.size() + 1 : comma + 1;
    if (t.empty()) continue;
    if (t == "wikitext" || t.rfind("text:", 0) == 0) {
      if (t.rfind("text:", 0) == 0 && t.size() == 5) fail("--tasks: 'text:' needs a file path (text:FILE)");
      out.push_back(t);
    } else {
      fail("--tasks: unknown task '{}' (known: wikitext, text:FILE)", t);
    }
  }
  if (out.empty()) fail("--tasks: no task given");
  return out;
}

std::string run_eval(CausalLM& model, const EvalOptions& opts) {
  const std::string data_dir = opts.data_dir.empty() ? path_join(shared_root(), "data") : opts.data_dir;
  ojson result;
  result["model"] = opts.model_path;
  result["config"] = {{"tasks", opts.tasks},          {"data_dir", data_dir},
                      {"max_length", opts.max_length}, {"stride", opts.stride},
                      {"batch_size", opts.batch_size}, {"limit", opts.limit},
                      {"threads", at::get_num_threads()}};
  result["results"] = ojson::object();
  for (const auto& task : opts.tasks) {
    std::vector<TextDocument> docs;
    if (task == "wikitext") {
      docs = load_wikitext_docs(path_join(data_dir, "wikitext2/wiki.test.raw"));
    } else {
      docs = load_text_docs(task.substr(5));
    }
    if (opts.limit > 0 && static_cast<int64_t>(docs.size()) > opts.limit) docs.resize(opts.limit);
    PerplexityOptions po;
    po.max_length = opts.max_length;
    po.stride = opts.stride;
    po.batch_size = opts.batch_size;
    po.label = task;
    spdlog::info("{}: {} documents", task, docs.size());
    auto r = evaluate_perplexity(model, docs, po);
    result["results"][task] = {{"token_perplexity", r.token_perplexity},
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
  return s;
}

}  // namespace llmc
