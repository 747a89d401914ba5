// Request tokenization and metrics, after lm-evaluation-harness 0.4:
//   api/model.py TemplateLM.loglikelihood / _encode_pair
//   api/task.py ConfigurableTask.process_results (output_type multiple_choice)
//   api/metrics.py mean_stderr (sample_stddev, ddof=1) and pooled_sample_stderr
#include <algorithm>
#include <cmath>
#include <map>
#include <limits>
#include <unordered_map>

#include "llmc/core/error.h"
#include "llmc/eval/tasks.h"

namespace llmc {

namespace {

using ContextCache = std::unordered_map<std::string, std::vector<int32_t>>;

TokenizedRequest encode_pair_impl(const Tokenizer& tok, const std::string& context, const std::string& continuation,
                                  ContextCache* cache) {
  TokenizedRequest r;
  if (context.empty()) {
    // lm-eval: [prefix_token_id] (BOS, else EOS) as the context; the continuation encoded alone.
    const int prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
    if (prefix < 0) fail("loglikelihood: empty context and the tokenizer has neither BOS nor EOS");
    r.context = {prefix};
    r.continuation = tok.encode(continuation, /*add_bos=*/false);
    return r;
  }
  // _encode_pair: trailing whitespace of the context goes to the continuation, then the whole
  // string is encoded and split at the length of the encoded context. No special tokens
  // (lm-eval's HF model encodes with add_special_tokens = add_bos_token = False).
  const std::string ctx = py_rstrip(context);
  const std::string cont = context.substr(ctx.size()) + continuation;
  if (cache) {
    auto it = cache->find(ctx);
    if (it == cache->end()) it = cache->emplace(ctx, tok.encode(ctx, false)).first;
    r.context = it->second;
  } else {
    r.context = tok.encode(ctx, false);
  }
  auto whole = tok.encode(ctx + cont, false);
  const size_t n = std::min(r.context.size(), whole.size());
  r.continuation.assign(whole.begin() + n, whole.end());
  return r;
}

}  // namespace

TokenizedRequest encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation) {
  return encode_pair_impl(tok, context, continuation, nullptr);
}

std::vector<TokenizedRequest> tokenize_instances(const Tokenizer& tok, const std::vector<McInstance>& instances) {
  std::vector<TokenizedRequest> out;
  for (const auto& in : instances) {
    ContextCache cache;  // the choices of a document usually share one context: encode it once
    for (const auto& rq : in.requests) {
      TokenizedRequest r = encode_pair_impl(tok, rq.context, rq.continuation, &cache);
      if (r.continuation.empty())
        fail("{}: the continuation '{}' encodes to no tokens after its context", in.where, rq.continuation);
      out.push_back(std::move(r));
    }
  }
  return out;
}

int np_argmax(const std::vector<double>& v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best]) best = static_cast<int>(i);
  return best;
}

DocScore score_doc(const McInstance& inst, const std::vector<double>& ll) {
  LLMC_CHECK(ll.size() == inst.choices.size(), "{}: {} log-likelihoods for {} choices", inst.where, ll.size(),
             inst.choices.size());
  DocScore s;
  s.pred = np_argmax(ll);
  // lm-eval: completion_len = [float(len(i)) for i in choices], choices = doc_to_choice(doc), i.e.
  // the choice strings without the target delimiter, len = Python len (code points), not tokens.
  std::vector<double> norm(ll.size());
  for (size_t i = 0; i < ll.size(); ++i) norm[i] = ll[i] / static_cast<double>(count_code_points(inst.choices[i]));
  s.pred_norm = np_argmax(norm);
  s.acc = s.pred == inst.gold ? 1.0 : 0.0;
  s.acc_norm = s.pred_norm == inst.gold ? 1.0 : 0.0;
  return s;
}

double mean_stderr(const std::vector<double>& xs) {
  const size_t n = xs.size();
  if (n < 2) return std::numeric_limits<double>::quiet_NaN();  // lm-eval reports "N/A"
  double mu = 0;
  for (double x : xs) mu += x;
  mu /= static_cast<double>(n);
  double ss = 0;
  for (double x : xs) ss += (x - mu) * (x - mu);
  return std::sqrt(ss / static_cast<double>(n - 1)) / std::sqrt(static_cast<double>(n));
}

McMetrics aggregate(const std::vector<DocScore>& docs, bool has_acc_norm) {
  McMetrics m;
  m.n = static_cast<int64_t>(docs.size());
  m.has_acc_norm = has_acc_norm;
  std::vector<double> a, b;
  for (const auto& d : docs) {
    a.push_back(d.acc);
    b.push_back(d.acc_norm);
  }
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return v.empty() ? std::numeric_limits<double>::quiet_NaN() : s / static_cast<double>(v.size());
  };
  m.acc = mean(a);
  m.acc_stderr = mean_stderr(a);
  m.acc_norm = has_acc_norm ? mean(b) : std::numeric_limits<double>::quiet_NaN();
  m.acc_norm_stderr = has_acc_norm ? mean_stderr(b) : std::numeric_limits<double>::quiet_NaN();
  return m;
}

double answer_share_chance(const std::vector<int>& gold, const std::vector<int>& pred) {
  LLMC_CHECK(gold.size() == pred.size(), "answer_share_chance: {} golds, {} predictions", gold.size(), pred.size());
  if (gold.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::map<int, double> g, p;  // choice index -> documents
  for (size_t i = 0; i < gold.size(); ++i) {
    g[gold[i]] += 1;
    if (pred[i] >= 0) p[pred[i]] += 1;
  }
  double c = 0;
  for (const auto& [k, n] : p) c += n * (g.count(k) ? g[k] : 0.0);
  const double docs = static_cast<double>(gold.size());
  return c / (docs * docs);
}

double pooled_sample_stderr(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes) {
  LLMC_CHECK(stderrs.size() == sizes.size() && !sizes.empty(), "pooled_sample_stderr: bad arguments");
  double num = 0, total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const double n = static_cast<double>(sizes[i]);
    num += (n - 1) * stderrs[i] * stderrs[i] * n;
    total += n;
  }
  return std::sqrt(num / (total - static_cast<double>(sizes.size())) / total);
}

McMetrics aggregate_group(const std::vector<McMetrics>& parts) {
  McMetrics g;
  g.has_acc_norm = !parts.empty();
  std::vector<double> se, se_norm;
  std::vector<int64_t> sizes;
  double acc = 0, acc_norm = 0;
  bool na = false, na_norm = false;
  for (const auto& p : parts) {
    g.n += p.n;
    acc += p.acc * static_cast<double>(p.n);
    acc_norm += p.acc_norm * static_cast<double>(p.n);
    g.has_acc_norm = g.has_acc_norm && p.has_acc_norm;
    se.push_back(p.acc_stderr);
    se_norm.push_back(p.acc_norm_stderr);
    sizes.push_back(p.n);
    na = na || std::isnan(p.acc_stderr);  // lm-eval: any "N/A" part makes the group stderr "N/A"
    na_norm = na_norm || std::isnan(p.acc_norm_stderr);
  }
  const double nan = std::numeric_limits<double>::quiet_NaN();
  g.acc = g.n > 0 ? acc / static_cast<double>(g.n) : nan;
  g.acc_stderr = na || parts.empty() ? nan : pooled_sample_stderr(se, sizes);
  g.acc_norm = g.has_acc_norm && g.n > 0 ? acc_norm / static_cast<double>(g.n) : nan;
  g.acc_norm_stderr = !g.has_acc_norm || na_norm ? nan : pooled_sample_stderr(se_norm, sizes);
  return g;
}

std::string mmlu_category(const std::string& subject) {
  // lm-eval tasks/mmlu/default/mmlu_<subject>.yaml "group" (mmlu_stem, mmlu_other, ...).
  static const std::unordered_map<std::string, std::string> cat = {
      {"abstract_algebra", "stem"},
      {"anatomy", "stem"},
      {"astronomy", "stem"},
      {"college_biology", "stem"},
      {"college_chemistry", "stem"},
      {"college_computer_science", "stem"},
      {"college_mathematics", "stem"},
      {"college_physics", "stem"},
      {"computer_security", "stem"},
      {"conceptual_physics", "stem"},
      {"electrical_engineering", "stem"},
      {"elementary_mathematics", "stem"},
      {"high_school_biology", "stem"},
      {"high_school_chemistry", "stem"},
      {"high_school_computer_science", "stem"},
      {"high_school_mathematics", "stem"},
      {"high_school_physics", "stem"},
      {"high_school_statistics", "stem"},
      {"machine_learning", "stem"},
      {"business_ethics", "other"},
      {"clinical_knowledge", "other"},
      {"college_medicine", "other"},
      {"global_facts", "other"},
      {"human_aging", "other"},
      {"management", "other"},
      {"marketing", "other"},
      {"medical_genetics", "other"},
      {"miscellaneous", "other"},
      {"nutrition", "other"},
      {"professional_accounting", "other"},
      {"professional_medicine", "other"},
      {"virology", "other"},
      {"econometrics", "social_sciences"},
      {"high_school_geography", "social_sciences"},
      {"high_school_government_and_politics", "social_sciences"},
      {"high_school_macroeconomics", "social_sciences"},
      {"high_school_microeconomics", "social_sciences"},
      {"high_school_psychology", "social_sciences"},
      {"human_sexuality", "social_sciences"},
      {"professional_psychology", "social_sciences"},
      {"public_relations", "social_sciences"},
      {"security_studies", "social_sciences"},
      {"sociology", "social_sciences"},
      {"us_foreign_policy", "social_sciences"},
      {"formal_logic", "humanities"},
      {"high_school_european_history", "humanities"},
      {"high_school_us_history", "humanities"},
      {"high_school_world_history", "humanities"},
      {"international_law", "humanities"},
      {"jurisprudence", "humanities"},
      {"logical_fallacies", "humanities"},
      {"moral_disputes", "humanities"},
      {"moral_scenarios", "humanities"},
      {"philosophy", "humanities"},
      {"prehistory", "humanities"},
      {"professional_law", "humanities"},
      {"world_religions", "humanities"},
  };
  auto it = cat.find(subject);
  return it == cat.end() ? "" : it->second;
}

}  // namespace llmc
