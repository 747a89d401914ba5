// The task table and request construction, after lm-evaluation-harness 0.4's task YAMLs:
//   arc_easy / arc_challenge  tasks/arc/arc_easy.yaml: "Question: {{question}}\nAnswer:", choices.text
//   boolq                     tasks/super_glue/boolq/default.yaml: "{{passage}}\nQuestion: {{question}}?\nAnswer:", ["no","yes"]
//   hellaswag                 tasks/hellaswag/hellaswag.yaml + utils.py: "{{query}}", preprocessed endings
//   piqa                      tasks/piqa/piqa.yaml: "Question: {{goal}}\nAnswer:", [sol1, sol2]
//   winogrande                tasks/winogrande/default.yaml + preprocess_winogrande.py (multiple inputs)
//   openbookqa                tasks/openbookqa/openbookqa.yaml: question_stem, choices.text
//   mmlu                      tasks/mmlu/default/_default_template_yaml + per-subject description
#include <algorithm>
#include <set>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/eval/tasks.h"

namespace llmc {

namespace {

std::vector<TaskDef> make_table() {
  std::vector<TaskDef> t;
  {
    TaskDef d;
    d.name = "arc_easy";
    d.test_files = {"arc_easy/ARC-Easy-Test.jsonl"};
    d.fewshot_files = {"arc_easy/ARC-Easy-Train.jsonl", "arc_easy/ARC-Easy-Dev.jsonl"};
    d.lmeval_fewshot_split = "train";
    d.read = read_arc_jsonl;
    d.doc_to_text = "Question: {question}\nAnswer:";
    t.push_back(d);
    d.name = "arc_challenge";
    d.test_files = {"arc_challenge/ARC-Challenge-Test.jsonl"};
    d.fewshot_files = {"arc_challenge/ARC-Challenge-Train.jsonl", "arc_challenge/ARC-Challenge-Dev.jsonl"};
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "boolq";
    d.test_files = {"boolq/val.jsonl"};
    d.fewshot_files = {"boolq/train.jsonl"};
    d.lmeval_fewshot_split = "train";
    d.read = read_boolq_jsonl;
    d.doc_to_text = "{passage}\nQuestion: {question}?\nAnswer:";
    d.fixed_choices = {"no", "yes"};
    d.reports_acc_norm = false;  // metric_list: acc only
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "hellaswag";
    // The raw rowanz JSONL when present (bit-identical to lm-eval), else the shared text extraction.
    d.test_files = {"hellaswag/hellaswag_val.jsonl", "hellaswag/hellaswag_val_full.txt"};
    d.fewshot_files = {"hellaswag/hellaswag_train.jsonl", "hellaswag/hellaswag_train_full.txt"};
    d.lmeval_fewshot_split = "train";
    d.read = read_hellaswag_txt;
    d.doc_to_text = "{query}";
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "piqa";
    d.test_files = {"piqa/valid.jsonl"};
    d.fewshot_files = {"piqa/train.jsonl"};
    d.lmeval_fewshot_split = "train";
    d.read = read_piqa;
    d.doc_to_text = "Question: {goal}\nAnswer:";
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "winogrande";
    d.test_files = {"winogrande/winogrande.jsonl", "winogrande/dev.jsonl"};
    d.fewshot_files = {"winogrande/train_xl.jsonl", "winogrande/train.jsonl"};
    d.lmeval_fewshot_split = "train (winogrande_xl)";
    d.read = read_winogrande_jsonl;
    d.multiple_input = true;
    d.target_field = "target";
    d.reports_acc_norm = false;  // metric_list: acc only
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "openbookqa";
    d.test_files = {"openbookqa/test.jsonl", "openbookqa/test.tsv", "openbookqa/Main/test.jsonl",
                    "openbookqa/Main/test.tsv"};
    d.fewshot_files = {"openbookqa/train.jsonl", "openbookqa/train.tsv", "openbookqa/Main/train.jsonl",
                       "openbookqa/Main/train.tsv"};
    d.lmeval_fewshot_split = "train";
    d.read = read_openbookqa;
    d.doc_to_text = "{question}";
    t.push_back(d);
  }
  {
    TaskDef d;
    d.name = "mmlu";
    d.test_files = {"mmlu/test"};
    d.fewshot_files = {"mmlu/dev"};
    d.lmeval_fewshot_split = "dev";
    d.read = read_mmlu_dir;
    d.doc_to_text = "{question|strip}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:";
    d.fixed_choices = {"A", "B", "C", "D"};
    d.description = "The following are multiple choice questions (with answers) about {subject_words}.\n\n";
    d.group_field = "subject";
    d.default_fewshot = 5;
    d.reports_acc_norm = false;  // metric_list: acc only
    t.push_back(d);
  }
  return t;
}

std::string find_existing(const std::string& data_dir, const std::vector<std::string>& candidates) {
  for (const auto& c : candidates) {
    const std::string p = path_join(data_dir, c);
    if (file_exists(p) || dir_exists(p)) return p;
  }
  return "";
}

std::string list_paths(const std::string& data_dir, const std::vector<std::string>& candidates) {
  std::string s;
  for (const auto& c : candidates) s += (s.empty() ? "" : ", ") + path_join(data_dir, c);
  return s;
}

const std::vector<std::string>& choices_of(const TaskDef& task, const McDoc& doc) {
  return task.fixed_choices.empty() ? doc.choices : task.fixed_choices;
}

// One solved example as lm-eval's sampler writes it (without the trailing fewshot delimiter).
std::string fewshot_example(const TaskDef& task, const McDoc& ex) {
  const auto& ch = choices_of(task, ex);
  if (ex.gold < 0 || ex.gold >= static_cast<int>(ch.size()))
    fail("{}: gold index {} out of range for {} choices", ex.where, ex.gold, ch.size());
  if (task.multiple_input)  // doc_to_text is the gold index: choices[gold] + delimiter + target
    return ch[ex.gold] + task.target_delimiter + ex.fields.at(task.target_field);
  return render_template(task.doc_to_text, ex) + task.target_delimiter + ch[ex.gold];
}

}  // namespace

const std::vector<TaskDef>& task_table() {
  static const std::vector<TaskDef> table = make_table();
  return table;
}

const TaskDef* find_task(const std::string& name) {
  for (const auto& t : task_table())
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<std::string> expand_task_group(const std::string& name) {
  if (name == "reasoning7")
    return {"arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande", "openbookqa"};
  return {name};
}

std::string render_template(const std::string& tmpl, const McDoc& doc) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    size_t open = tmpl.find('{', i);
    if (open == std::string::npos) {
      out.append(tmpl, i, std::string::npos);
      break;
    }
    out.append(tmpl, i, open - i);
    size_t close = tmpl.find('}', open);
    if (close == std::string::npos) fail("task template '{}': unclosed '{{'", tmpl);
    std::string key = tmpl.substr(open + 1, close - open - 1);
    bool strip = false;
    if (key.size() > 6 && key.compare(key.size() - 6, 6, "|strip") == 0) {
      strip = true;
      key.resize(key.size() - 6);
    }
    auto it = doc.fields.find(key);
    if (it == doc.fields.end()) fail("{}: the document has no field '{}' (task template '{}')", doc.where, key, tmpl);
    out += strip ? py_strip(it->second) : it->second;
    i = close + 1;
  }
  return out;
}

std::vector<McInstance> build_instances(const TaskDef& task, const std::vector<McDoc>& docs,
                                        const std::vector<McDoc>& fewshot, int num_fewshot) {
  std::vector<McInstance> out;
  out.reserve(docs.size());
  // The few-shot block depends only on the group (MMLU subject), so build it once per group.
  std::map<std::string, std::string> block_of_group;
  for (const auto& doc : docs) {
    McInstance in;
    in.where = doc.where;
    in.group = task.group_field.empty() ? "" : doc.fields.at(task.group_field);
    in.choices = choices_of(task, doc);
    in.gold = doc.gold;
    if (in.gold < 0 || in.gold >= static_cast<int>(in.choices.size()))
      fail("{}: gold index {} out of range for {} choices", doc.where, in.gold, in.choices.size());
    auto it = block_of_group.find(in.group);
    if (it == block_of_group.end()) {
      std::string block;
      int k = 0;
      for (const auto& ex : fewshot) {
        if (k >= num_fewshot) break;
        if (!task.group_field.empty() && ex.fields.at(task.group_field) != in.group) continue;
        block += fewshot_example(task, ex) + task.fewshot_delimiter;
        ++k;
      }
      if (k < num_fewshot)
        fail("{}: only {} few-shot example(s){} in the few-shot split, but --num-fewshot is {}", task.name, k,
             in.group.empty() ? "" : " for " + task.group_field + " '" + in.group + "'", num_fewshot);
      it = block_of_group.emplace(in.group, std::move(block)).first;
    }
    // lm-eval: description (rendered per doc) + few-shot examples, then the doc.
    const std::string prefix = render_template(task.description, doc) + it->second;
    if (task.multiple_input) {
      const std::string cont = task.target_delimiter + doc.fields.at(task.target_field);
      for (const auto& c : in.choices) in.requests.push_back({prefix + c, cont});
    } else {
      const std::string ctx = prefix + render_template(task.doc_to_text, doc);
      for (const auto& c : in.choices) in.requests.push_back({ctx, task.target_delimiter + c});
    }
    out.push_back(std::move(in));
  }
  return out;
}

std::vector<std::string> fewshot_split_texts(const std::string& name, const std::string& data_dir) {
  const TaskDef* def = find_task(name);
  if (!def) fail("unknown multiple-choice task '{}'", name);
  const std::string path = find_existing(data_dir, def->fewshot_files);
  if (path.empty())
    fail("{}: no few-shot split found (looked for {}; lm-eval draws few-shot examples from the {} split)", name,
         list_paths(data_dir, def->fewshot_files), def->lmeval_fewshot_split);
  std::vector<std::string> out;
  for (const McDoc& ex : def->read(path)) out.push_back(fewshot_example(*def, ex));
  if (out.empty()) fail("{}: no documents in the file", path);
  return out;
}

LoadedTask load_task(const std::string& name, const std::string& data_dir, int num_fewshot, int64_t limit) {
  const TaskDef* def = find_task(name);
  if (!def) fail("unknown multiple-choice task '{}'", name);
  LoadedTask lt;
  lt.def = def;
  lt.num_fewshot = num_fewshot < 0 ? def->default_fewshot : num_fewshot;
  lt.test_path = find_existing(data_dir, def->test_files);
  if (lt.test_path.empty())
    fail("{}: data file not found; looked for {} (set --data-dir)", name, list_paths(data_dir, def->test_files));
  std::vector<McDoc> docs = def->read(lt.test_path);
  if (docs.empty()) fail("{}: no documents in the file", lt.test_path);
  if (limit > 0) {
    if (def->group_field.empty()) {
      if (static_cast<int64_t>(docs.size()) > limit) docs.resize(limit);
    } else {  // lm-eval applies --limit to each subtask (MMLU subject)
      std::map<std::string, int64_t> seen;
      std::vector<McDoc> kept;
      for (auto& d : docs)
        if (++seen[d.fields.at(def->group_field)] <= limit) kept.push_back(std::move(d));
      docs = std::move(kept);
    }
  }
  std::vector<McDoc> shots;
  if (lt.num_fewshot > 0) {
    lt.fewshot_path = find_existing(data_dir, def->fewshot_files);
    if (lt.fewshot_path.empty())
      fail("{}: --num-fewshot {} needs solved examples from a train/dev split, but none was found (looked for {}; "
           "lm-eval draws them from the {} split)",
           name, lt.num_fewshot, list_paths(data_dir, def->fewshot_files), def->lmeval_fewshot_split);
    shots = def->read(lt.fewshot_path);
  }
  lt.instances = build_instances(*def, docs, shots, lt.num_fewshot);
  return lt;
}

}  // namespace llmc
