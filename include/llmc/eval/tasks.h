#pragma once
// Multiple-choice tasks, defined and scored as lm-evaluation-harness 0.4 does (torch-free part).
//
// A task is data, not a loop: a TaskDef row says where the documents are, how to read them, and
// lm-eval's doc_to_text / doc_to_choice / target delimiter / few-shot rules. build_instances turns
// documents into (context, continuation) strings exactly as lm-eval's ConfigurableTask builds them:
//
//   context      = description + fewshot_1 + "\n\n" + ... + fewshot_k + "\n\n" + doc_to_text(doc)
//   continuation = " " + choice                                   (one request per choice)
//   fewshot_i    = doc_to_text(ex) + " " + doc_to_choice(ex)[gold(ex)]
//
// and for WinoGrande (lm-eval `multiple_inputs`, "partial scoring"): one context per option,
// context_i = prefix + sentence[:blank] + option_i, and a shared continuation " " + sentence[blank+1:].strip().
//
// encode_pair reproduces lm-eval's TemplateLM._encode_pair (the tokenization of a request), and
// score_doc / aggregate reproduce its multiple_choice process_results and mean/stderr aggregation.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

// One document after reading (lm-eval's doc after process_docs).
struct McDoc {
  std::map<std::string, std::string> fields;  // named texts the templates refer to
  std::vector<std::string> choices;           // the doc's choices (unused when the task has fixed ones)
  int gold = -1;                              // index into the choices
  std::string where;                          // "FILE:LINE", for messages
};

// Reads all documents of one split; throws llmc::Error naming the file, the line and what was
// expected when the file is missing or malformed.
using DocReader = std::vector<McDoc> (*)(const std::string& path);

struct TaskDef {
  std::string name;
  std::vector<std::string> test_files;     // candidates relative to the data dir; the first that exists
  std::vector<std::string> fewshot_files;  // candidates for the few-shot split; none: zero-shot only
  std::string lmeval_fewshot_split;        // where lm-eval draws few-shot examples from (for messages)
  DocReader read = nullptr;
  std::string doc_to_text;                 // template: "{field}" or "{field|strip}" (Python str.strip)
  std::vector<std::string> fixed_choices;  // lm-eval's literal doc_to_choice list; empty: the doc's choices
  bool multiple_input = false;             // WinoGrande partial scoring (choices are contexts)
  std::string target_field;                // multiple_input: the field holding the shared continuation
  std::string description;                 // template put before the few-shot examples (MMLU header)
  std::string group_field;                 // MMLU: few-shot examples and --limit are per subject
  int default_fewshot = 0;
  bool reports_acc_norm = true;            // acc_norm is in lm-eval's metric_list for this task
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
};

// The task table (arc_easy, arc_challenge, boolq, hellaswag, piqa, winogrande, openbookqa, mmlu).
const std::vector<TaskDef>& task_table();
// nullptr when `name` is not a multiple-choice task.
const TaskDef* find_task(const std::string& name);
// Task groups: "reasoning7" -> its members; any other name -> {name}.
std::vector<std::string> expand_task_group(const std::string& name);

// ---- readers (one per data layout; see ../shared/data/README.md) ----
std::vector<McDoc> read_arc_jsonl(const std::string& path);         // AI2 ARC / OpenBookQA release JSONL
std::vector<McDoc> read_boolq_jsonl(const std::string& path);       // SuperGLUE BoolQ JSONL
std::vector<McDoc> read_piqa(const std::string& path);              // X.jsonl + X-labels.lst
std::vector<McDoc> read_hellaswag_txt(const std::string& path);     // 6 lines per item
std::vector<McDoc> read_winogrande_jsonl(const std::string& path);  // partial-scoring or original layout
std::vector<McDoc> read_openbookqa(const std::string& path);        // release TSV, or JSONL (structured or release)
std::vector<McDoc> read_mmlu_dir(const std::string& dir);           // every SUBJECT_<split>.csv in a folder

// Python csv.reader (default dialect) over a whole file; rows of fields. `path` names errors;
// row_lines (optional) receives the line each row starts on.
std::vector<std::vector<std::string>> parse_csv(const std::string& text, const std::string& path,
                                               std::vector<int64_t>* row_lines = nullptr);
// lm-eval tasks/hellaswag/utils.py preprocess().
std::string hellaswag_preprocess(const std::string& text);
// Python str.strip() / str.rstrip() (Unicode whitespace).
std::string py_strip(const std::string& s);
std::string py_rstrip(const std::string& s);
// Python len() of a UTF-8 string (code points).
int64_t count_code_points(const std::string& s);

// ---- requests ----
struct McRequest {
  std::string context, continuation;
};

struct McInstance {
  std::vector<McRequest> requests;   // one per choice
  std::vector<std::string> choices;  // lm-eval doc_to_choice strings: acc_norm divides by their length
  int gold = -1;
  std::string group;                 // MMLU subject ("" otherwise)
  std::string where;
};

std::string render_template(const std::string& tmpl, const McDoc& doc);

// The requests of each document. `fewshot` holds the few-shot split (may be empty when num_fewshot
// is 0); lm-eval's `first_n` sampler: the first num_fewshot examples (of the same group when the
// task has a group_field).
std::vector<McInstance> build_instances(const TaskDef& task, const std::vector<McDoc>& docs,
                                        const std::vector<McDoc>& fewshot, int num_fewshot);

struct LoadedTask {
  const TaskDef* def = nullptr;
  std::vector<McInstance> instances;
  int num_fewshot = 0;
  std::string test_path, fewshot_path;
};

// Finds and reads the task's files under data_dir, applies --limit (the first `limit` documents;
// per group for MMLU, as lm-eval limits each subtask), and builds the requests.
// num_fewshot < 0: the task's default.
LoadedTask load_task(const std::string& name, const std::string& data_dir, int num_fewshot, int64_t limit);

// The solved examples of the task's few-shot split (its train/dev file: where lm-eval draws few-shot
// examples from, never a scored document), each written as lm-eval writes a few-shot example
// (doc_to_text + target delimiter + the gold choice). Text for calibration and search scoring that
// is held out from the eval. Fails with one line when the task is unknown or the split is missing.
std::vector<std::string> fewshot_split_texts(const std::string& name, const std::string& data_dir);

// ---- tokenization (lm-eval TemplateLM.loglikelihood / _encode_pair) ----
struct TokenizedRequest {
  std::vector<int32_t> context, continuation;
};

// Trailing whitespace of the context moves to the continuation; context_enc = encode(context),
// continuation_enc = encode(context + continuation)[len(context_enc):]; no special tokens. An empty
// context becomes [BOS] (EOS when there is no BOS) and the continuation is encoded alone.
TokenizedRequest encode_pair(const Tokenizer& tok, const std::string& context, const std::string& continuation);

// All requests of all instances, in order (instance 0's choices, then instance 1's ...). Contexts
// shared by several choices are encoded once.
std::vector<TokenizedRequest> tokenize_instances(const Tokenizer& tok, const std::vector<McInstance>& instances);

// ---- metrics (lm-eval api/task.py process_results for multiple_choice, api/metrics.py) ----
struct DocScore {
  int pred = -1, pred_norm = -1;
  double acc = 0, acc_norm = 0;
};

struct McMetrics {
  int64_t n = 0;
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;  // stderr NaN when n < 2 ("N/A")
  bool has_acc_norm = false;
};

// numpy.argmax: the first maximum.
int np_argmax(const std::vector<double>& v);
// acc: argmax of the summed log-likelihoods; acc_norm: argmax of ll / len(choice), len in Unicode
// code points of the doc_to_choice string (without the target delimiter).
DocScore score_doc(const McInstance& inst, const std::vector<double>& ll);
// Mean and the sample standard error of the mean (ddof = 1) over documents.
McMetrics aggregate(const std::vector<DocScore>& docs, bool has_acc_norm);
// What a guess blind to the documents would score in expectation if it answered choice index k as
// often as the model did: sum over k of (share of docs the model answered k) x (share whose gold is
// k); NaN without documents. Not an lm-eval metric: a task whose acc sits near it measures the
// model's answer bias rather than its reading (BoolQ on SmolLM2-135M:
// docs/results/smollm2-135m-xeon-head/README.md). pred[i] < 0 (no answer) counts as no index.
double answer_share_chance(const std::vector<int>& gold, const std::vector<int>& pred);
// sqrt(var(xs, ddof=1) / n); NaN when n < 2.
double mean_stderr(const std::vector<double>& xs);
// lm-eval pooled_sample_stderr: the stderr of a size-weighted group mean.
double pooled_sample_stderr(const std::vector<double>& stderrs, const std::vector<int64_t>& sizes);
// A size-weighted group of parts (lm-eval 0.4 groups with weight_by_size: the micro average).
McMetrics aggregate_group(const std::vector<McMetrics>& parts);

// MMLU subject -> lm-eval category: "stem", "humanities", "social_sciences" or "other"; "" if unknown.
std::string mmlu_category(const std::string& subject);

}  // namespace llmc
