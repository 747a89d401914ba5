// Request construction for the multiple-choice tasks: the context and continuation strings we build
// for real records of the shared data must equal the strings lm-evaluation-harness 0.4 builds. The
// expected strings below are written out by hand from lm-eval's task definitions (doc_to_text,
// doc_to_choice, target_delimiter " ", fewshot_delimiter "\n\n", description), not produced by our code.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>

#include <fstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/paths.h"
#include "llmc/eval/tasks.h"
#include "llmc/tokenizer/sentencepiece.h"
#include "../byte_tokenizer.h"

using namespace llmc;

namespace {

std::string data_dir() { return shared_root() + "/data"; }

#define NEED_DATA(rel)                                                                                   \
  do {                                                                                                   \
    if (!file_exists(data_dir() + "/" rel) && !dir_exists(data_dir() + "/" rel))                        \
      GTEST_SKIP() << "shared data not found at " << data_dir() << "/" rel << " (set LLMC_SHARED)"; \
  } while (0)

void expect_requests(const McInstance& in, const std::string& context, const std::vector<std::string>& conts,
                     int gold) {
  ASSERT_EQ(in.requests.size(), conts.size()) << in.where;
  for (size_t i = 0; i < conts.size(); ++i) {
    EXPECT_EQ(in.requests[i].context, context) << in.where << " choice " << i;
    EXPECT_EQ(in.requests[i].continuation, conts[i]) << in.where << " choice " << i;
    // acc_norm divides by the doc_to_choice string: the continuation without the delimiter.
    EXPECT_EQ(" " + in.choices[i], conts[i]) << in.where;
  }
  EXPECT_EQ(in.gold, gold) << in.where;
}

// The n-th instance (0-based, file order) of an MMLU subject.
const McInstance& mmlu_row(const LoadedTask& t, const std::string& subject, size_t n) {
  size_t k = 0;
  for (const auto& in : t.instances)
    if (in.group == subject && k++ == n) return in;
  throw std::runtime_error("no such row");
}

class TmpDir {
 public:
  TmpDir() {
    path_ = "/tmp/llmc_tasks_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++);
    std::system(("mkdir -p " + path_).c_str());
  }
  ~TmpDir() { std::system(("rm -rf " + path_).c_str()); }
  std::string write(const std::string& rel, const std::string& content) const {
    const std::string p = path_ + "/" + rel;
    std::system(("mkdir -p " + parent_dir(p)).c_str());
    std::ofstream(p, std::ios::binary) << content;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  static inline int counter_ = 0;
};

// Expects `fn` to throw llmc::Error whose message contains every needle.
template <typename F>
void expect_error(F fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

}  // namespace

// ---------------------------------------------------------------- requests from real records

TEST(TaskRequests, ArcEasy) {
  NEED_DATA("arc_easy/ARC-Easy-Test.jsonl");
  auto t = load_task("arc_easy", data_dir(), -1, 0);
  EXPECT_EQ(t.instances.size(), 2376u);
  EXPECT_EQ(t.num_fewshot, 0);
  // lm-eval arc_easy.yaml: "Question: {{question}}\nAnswer:", choices.text, gold = choices.label.index(answerKey).
  expect_requests(t.instances[0],
                  "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\n"
                  "Answer:",
                  {" Sunlight is the source of energy for nearly all ecosystems.",
                   " Most ecosystems are found on land instead of in water.",
                   " Carbon dioxide is more available than other gases.", " The producers in all ecosystems are plants."},
                  0);
  // Numeric labels "1".."4": answerKey "2" is the second label.
  expect_requests(t.instances[14], "Question: All living and nonliving material is composed of\nAnswer:",
                  {" air", " elements", " water", " soil"}, 1);
  // Three choices.
  expect_requests(t.instances[93],
                  "Question: When a rock is placed in a graduated cylinder containing water, the height of the water "
                  "will\nAnswer:",
                  {" decrease", " increase", " remain the same"}, 1);
}

TEST(TaskRequests, ArcChallengeAndFewshot) {
  NEED_DATA("arc_challenge/ARC-Challenge-Test.jsonl");
  auto t = load_task("arc_challenge", data_dir(), 0, 3);
  ASSERT_EQ(t.instances.size(), 3u);
  expect_requests(t.instances[0],
                  "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the "
                  "most likely effect of this increase in rotation?\nAnswer:",
                  {" Planetary density will decrease.", " Planetary years will become longer.",
                   " Planetary days will become shorter.", " Planetary gravity will become stronger."},
                  2);
  // One shot (lm-eval: fewshot example = doc_to_text + " " + gold choice, then "\n\n"). The shared
  // data has no ARC train split, so the examples come from the dev split, first first.
  NEED_DATA("arc_easy/ARC-Easy-Dev.jsonl");
  auto e = load_task("arc_easy", data_dir(), 1, 1);
  EXPECT_NE(e.fewshot_path.find("ARC-Easy-Dev.jsonl"), std::string::npos);
  EXPECT_EQ(e.instances[0].requests[0].context,
            "Question: Which technology was developed most recently?\nAnswer: cellular telephone\n\n"
            "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:");
}

TEST(TaskRequests, BoolQ) {
  NEED_DATA("boolq/val.jsonl");
  auto t = load_task("boolq", data_dir(), -1, 2);
  ASSERT_EQ(t.instances.size(), 2u);
  EXPECT_FALSE(t.def->reports_acc_norm);  // lm-eval boolq: metric_list acc only
  // "{{passage}}\nQuestion: {{question}}?\nAnswer:", choices ["no", "yes"], label "false" -> 0.
  const std::string passage0 =
      "Ethanol fuel -- All biomass goes through at least some of these steps: it needs to be grown, collected, "
      "dried, fermented, distilled, and burned. All of these steps require resources and an infrastructure. The "
      "total amount of energy input into the process compared to the energy released by burning the resulting "
      "ethanol fuel is known as the energy balance (or ``energy returned on energy invested''). Figures compiled "
      "in a 2007 report by National Geographic Magazine point to modest results for corn ethanol produced in the "
      "US: one unit of fossil-fuel energy is required to create 1.3 energy units from the resulting ethanol. The "
      "energy balance for sugarcane ethanol produced in Brazil is more favorable, with one unit of fossil-fuel "
      "energy required to create 8 from the ethanol. Energy balance estimates are not easily produced, thus "
      "numerous such reports have been generated that are contradictory. For instance, a separate survey reports "
      "that production of ethanol from sugarcane, which requires a tropical climate to grow productively, returns "
      "from 8 to 9 units of energy for each unit expended, as compared to corn, which only returns about 1.34 "
      "units of fuel energy for each unit of energy expended. A 2006 University of California Berkeley study, "
      "after analyzing six separate studies, concluded that producing ethanol from corn uses much less petroleum "
      "than producing gasoline.";
  expect_requests(t.instances[0],
                  passage0 + "\nQuestion: does ethanol take more energy make that produces?\nAnswer:", {" no", " yes"},
                  0);
  const auto& c1 = t.instances[1].requests[0].context;
  EXPECT_EQ(c1.rfind("Property tax -- Property tax or 'house tax' is a local tax on buildings,", 0), 0u);
  const std::string tail = "in the first two brackets.\nQuestion: is house tax and property tax are same?\nAnswer:";
  EXPECT_TRUE(c1.size() > tail.size() && c1.compare(c1.size() - tail.size(), tail.size(), tail) == 0) << c1;
  EXPECT_EQ(t.instances[1].gold, 1);  // "true"
}

TEST(TaskRequests, Piqa) {
  NEED_DATA("piqa/valid.jsonl");
  auto t = load_task("piqa", data_dir(), -1, 0);
  EXPECT_EQ(t.instances.size(), 1838u);
  // "Question: {{goal}}\nAnswer:", choices [sol1, sol2], label from valid-labels.lst.
  expect_requests(t.instances[0], "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
                  {" Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, "
                   "you will also need to supply it with a water bottle and a food dish.",
                   " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans "
                   "material, you will also need to supply it with a water bottle and a food dish."},
                  0);
  // Trailing and doubled spaces in the solutions are kept, as lm-eval keeps them.
  expect_requests(t.instances[1], "Question: dresser\nAnswer:",
                  {" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin "}, 1);
}

TEST(TaskRequests, HellaSwag) {
  NEED_DATA("hellaswag/hellaswag_val_full.txt");
  auto t = load_task("hellaswag", data_dir(), -1, 0);
  EXPECT_EQ(t.instances.size(), 10042u);
  // "{{query}}" with the context line as it stands (lm-eval's raw-data preprocessing would read
  // "... on a roof. He"); endings after a space.
  expect_requests(t.instances[0], "Roof shingle removal: A man is sitting on a roof. he",
                  {" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
                   " is holding a rubik's cube.", " starts pulling up roofing on a roof."},
                  3);
  expect_requests(t.instances[1], "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. the lady",
                  {" swings and lands in her arms.", " pulls the barbell forward.",
                   " pulls a rope attached to the barbell.", " stands and lifts the weight over her head."},
                  3);
  // lm-eval's preprocess removes every [bracketed] span and then one of each double space.
  EXPECT_EQ(t.instances[3505].requests[0].context,
            "Family Life: How to entertain a toddler. Ask the toddler what he or she would like to do instead of doing "
            "what you would like to do.. Visit a site like to find loads of creative activities for toddlers and "
            "preschoolers.. Choose small, simple games like candy land or chutes and ladders.");
  EXPECT_EQ(t.instances[3505].gold, 1);
}

TEST(TaskRequests, WinoGrandePartialScoring) {
  NEED_DATA("winogrande/winogrande.jsonl");
  auto t = load_task("winogrande", data_dir(), -1, 0);
  EXPECT_EQ(t.instances.size(), 1267u);
  // lm-eval multiple_inputs: one context per option (sentence[:blank] + option), one continuation
  // " " + sentence[blank+1:].strip(); gold from the answer.
  const auto& a = t.instances[0];
  ASSERT_EQ(a.requests.size(), 2u);
  EXPECT_EQ(a.requests[0].context, "Sarah was a much better surgeon than Maria so Sarah");
  EXPECT_EQ(a.requests[1].context, "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(a.requests[0].continuation, " always got the easier cases.");
  EXPECT_EQ(a.requests[1].continuation, " always got the easier cases.");
  EXPECT_EQ(a.gold, 1);
  const auto& c = t.instances[2];
  EXPECT_EQ(c.requests[0].context, "They were worried the wine would ruin the bed and the blanket, but the blanket");
  EXPECT_EQ(c.requests[1].context, "They were worried the wine would ruin the bed and the blanket, but the bed");
  EXPECT_EQ(c.requests[1].continuation, " was't ruined.");
  EXPECT_EQ(c.gold, 1);
}

TEST(TaskRequests, WinoGrandeOriginalLayoutAndFewshot) {
  TmpDir d;
  // The original AI2 layout gives the same requests as the partial-scoring form.
  d.write("winogrande/winogrande.jsonl",
          R"({"qID": "x1", "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.", "option1": "Sarah", "option2": "Maria", "answer": "2"})"
          "\n");
  d.write("winogrande/train_xl.jsonl",
          R"({"qID": "t1", "sentence": "The cup fell on the floor but _ did not break.", "option1": "the floor", "option2": "the cup", "answer": "2"})"
          "\n");
  auto t = load_task("winogrande", d.path(), 1, 0);
  ASSERT_EQ(t.instances.size(), 1u);
  // fewshot example: choices[gold] + " " + target, then "\n\n"; the choice goes in the context.
  const std::string shot = "The cup fell on the floor but the cup did not break.\n\n";
  EXPECT_EQ(t.instances[0].requests[0].context, shot + "Sarah was a much better surgeon than Maria so Sarah");
  EXPECT_EQ(t.instances[0].requests[1].context, shot + "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(t.instances[0].requests[0].continuation, " always got the easier cases.");
  EXPECT_EQ(t.instances[0].gold, 1);
}

TEST(TaskRequests, MmluFiveShot) {
  NEED_DATA("mmlu/test");
  auto t = load_task("mmlu", data_dir(), -1, 20);  // default: 5 shots from dev, first_n sampler
  EXPECT_EQ(t.num_fewshot, 5);
  // --limit 20 applies per subject, as lm-eval limits each mmlu_<subject> subtask.
  EXPECT_EQ(t.instances.size(), 57u * 20u);
  const std::string ctx =
      "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
      "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
      "Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K are "
      "subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\nD. False, "
      "True\nAnswer: B\n\n"
      "Statement 1 | Every element of a group generates a cyclic subgroup of the group. Statement 2 | The symmetric "
      "group S_10 has 10 elements.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: C\n\n"
      "Statement 1| Every function from a finite set onto itself must be one to one. Statement 2 | Every subgroup "
      "of an abelian group is abelian.\nA. True, True\nB. False, False\nC. True, False\nD. False, True\nAnswer: A\n\n"
      "Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\n"
      "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. "
      "6\nAnswer:";
  expect_requests(mmlu_row(t, "abstract_algebra", 0), ctx, {" A", " B", " C", " D"}, 1);
}

TEST(TaskRequests, MmluStripAndSpacesZeroShot) {
  NEED_DATA("mmlu/test");
  auto t = load_task("mmlu", data_dir(), 0, 20);
  // question.strip(); the choices keep their spaces (" Both (a) and (b)." gives "D.  Both").
  expect_requests(mmlu_row(t, "business_ethics", 3),
                  "The following are multiple choice questions (with answers) about business ethics.\n\n"
                  "______ is an employee's preferred ratio between work-related and non-work-related activities "
                  "which, due to intensification of work and technological shifts, has become a hotly contested issue "
                  "in recent years.\nA. Presenteeism\nB. Absenteeism\nC. Work-play balance\nD. Work-life "
                  "balance\nAnswer:",
                  {" A", " B", " C", " D"}, 3);
  expect_requests(mmlu_row(t, "college_mathematics", 9),
                  "The following are multiple choice questions (with answers) about college mathematics.\n\n"
                  "Which of the following is true?\nA. Every compact space is complete\nB. Every complete space is "
                  "compact\nC. Neither (a) nor (b).\nD.  Both (a) and (b).\nAnswer:",
                  {" A", " B", " C", " D"}, 0);
  // A quoted CSV field spanning lines.
  expect_requests(mmlu_row(t, "college_biology", 13),
                  "The following are multiple choice questions (with answers) about college biology.\n\n"
                  "A cell nucleus contains which of the following?\nI. DNA\nII. Protein\nIII. RNA\nA. I only\nB. II "
                  "only\nC. III only\nD. I, II, and III\nAnswer:",
                  {" A", " B", " C", " D"}, 3);
}

TEST(TaskRequests, OpenBookQaBothLayouts) {
  // lm-eval openbookqa.yaml: doc_to_text question_stem, choices.text, gold = label index of answerKey.lstrip().
  const std::vector<std::string> sun = {" puppies learning new tricks", " children growing up and getting old",
                                        " flowers wilting in a vase", " plants sprouting, blooming and wilting"};
  {
    TmpDir d;
    d.write("openbookqa/test.tsv",
            "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
            "7-980\tThe sun is responsible for\t(A) puppies learning new tricks (B) children growing up and getting "
            "old (C) flowers wilting in a vase (D) plants sprouting, blooming and wilting\tThe sun is responsible for "
            "plants sprouting, blooming and wilting\tD\n"
            "8-376\tPredators eat\t(A) lions (B) humans (C) bunnies (D) grass\tPredators eat bunnies\tC\n");
    auto t = load_task("openbookqa", d.path(), -1, 0);
    ASSERT_EQ(t.instances.size(), 2u);
    expect_requests(t.instances[0], "The sun is responsible for", sun, 3);
    expect_requests(t.instances[1], "Predators eat", {" lions", " humans", " bunnies", " grass"}, 2);
  }
  {
    TmpDir d;
    d.write("openbookqa/test.jsonl",
            R"({"query": "The sun is responsible for", "choices": ["puppies learning new tricks", "children growing up and getting old", "flowers wilting in a vase", "plants sprouting, blooming and wilting"], "gold": 3})"
            "\n"
            R"({"id": "8-376", "question": {"stem": "Predators eat", "choices": [{"text": "lions", "label": "A"}, {"text": "humans", "label": "B"}, {"text": "bunnies", "label": "C"}, {"text": "grass", "label": "D"}]}, "answerKey": " C"})"
            "\n");
    d.write("openbookqa/train.jsonl", R"({"query": "Owls are likely to hunt at", "choices": ["3pm", "2am", "6pm", "7am"], "gold": 1})" "\n");
    auto t = load_task("openbookqa", d.path(), -1, 0);
    ASSERT_EQ(t.instances.size(), 2u);
    expect_requests(t.instances[0], "The sun is responsible for", sun, 3);
    expect_requests(t.instances[1], "Predators eat", {" lions", " humans", " bunnies", " grass"}, 2);
    auto f = load_task("openbookqa", d.path(), 1, 1);
    EXPECT_EQ(f.instances[0].requests[0].context, "Owls are likely to hunt at 2am\n\nThe sun is responsible for");
  }
}

// ---------------------------------------------------------------- bad data files

TEST(TaskData, MissingFilesAndEmptyFiles) {
  TmpDir d;
  expect_error([&] { load_task("arc_easy", d.path(), -1, 0); },
               {"arc_easy: data file not found", "arc_easy/ARC-Easy-Test.jsonl", "--data-dir"});
  d.write("arc_easy/ARC-Easy-Test.jsonl", "\n  \n");
  expect_error([&] { load_task("arc_easy", d.path(), -1, 0); }, {"ARC-Easy-Test.jsonl: empty file", "expected"});
  d.write("hellaswag/hellaswag_val_full.txt", "");
  expect_error([&] { load_task("hellaswag", d.path(), -1, 0); }, {"hellaswag_val_full.txt: empty file", "6 lines"});
  d.write("mmlu/test/anatomy_test.csv", "");
  expect_error([&] { load_task("mmlu", d.path(), 0, 0); }, {"anatomy_test.csv: empty file", "question, A, B, C, D"});
  ::mkdir((d.path() + "/boolq").c_str(), 0755);
  expect_error([&] { load_task("boolq", d.path(), -1, 0); }, {"boolq: data file not found", "boolq/val.jsonl"});
}

TEST(TaskData, MissingFields) {
  TmpDir d;
  const std::string arc = d.write("a.jsonl",
                                  R"({"question": {"stem": "Q1", "choices": [{"text": "x", "label": "A"}]}, "answerKey": "A"})"
                                  "\n"
                                  R"({"question": {"stem": "Q2", "choices": [{"text": "x", "label": "A"}]}})"
                                  "\n");
  expect_error([&] { read_arc_jsonl(arc); }, {arc + ":2:", "missing field 'answerKey'", "expected"});
  const std::string bq = d.write("b.jsonl", R"({"question": "q", "label": "true"})" "\n");
  expect_error([&] { read_boolq_jsonl(bq); }, {bq + ":1:", "missing field 'passage'"});
  const std::string pq = d.write("p.jsonl", R"({"goal": "g", "sol1": "a"})" "\n");
  d.write("p-labels.lst", "0\n");
  expect_error([&] { read_piqa(pq); }, {pq + ":1:", "missing field 'sol2'"});
  const std::string wg = d.write("w.jsonl", R"({"context_options": ["a", "b"], "gold": 0})" "\n");
  expect_error([&] { read_winogrande_jsonl(wg); }, {wg + ":1:", "missing field 'continuation'"});
  const std::string ob = d.write("o.jsonl", R"({"query": "q", "gold": 0})" "\n");
  expect_error([&] { read_openbookqa(ob); }, {ob + ":1:", "missing field 'choices'"});
  const std::string bad = d.write("j.jsonl", "{\"question\": \n");
  expect_error([&] { read_boolq_jsonl(bad); }, {bad + ":1:", "invalid JSON"});
  const std::string mm = d.write("m/x_test.csv", "What?,a,b,c,d,A\nOnly,three,columns\n");
  expect_error([&] { read_mmlu_dir(d.path() + "/m"); }, {"x_test.csv:2:", "3 columns, expected 6"});
  const std::string tsv = d.write("o.tsv", "ID\tQuestion Stem\tAnswer Key\n1\tq\tA\n");
  expect_error([&] { read_openbookqa(tsv); }, {tsv + ":1:", "'Choices'"});
  const std::string hs = d.write("h.txt", "ctx\n0\na\nb\nc\nd\nctx2\n1\na\n");
  expect_error([&] { read_hellaswag_txt(hs); }, {hs + ":7:", "incomplete item", "6 lines"});
}

TEST(TaskData, LabelsOutOfRange) {
  TmpDir d;
  const std::string arc = d.write("a.jsonl",
                                  R"({"question": {"stem": "Q", "choices": [{"text": "x", "label": "A"}, {"text": "y", "label": "B"}]}, "answerKey": "E"})"
                                  "\n");
  expect_error([&] { read_arc_jsonl(arc); }, {arc + ":1:", "answerKey 'E' is not one of the choice labels [A, B]"});
  const std::string bq = d.write("b.jsonl", R"({"question": "q", "passage": "p", "label": "maybe"})" "\n");
  expect_error([&] { read_boolq_jsonl(bq); }, {bq + ":1:", "out of range", "\"true\"/\"false\""});
  const std::string pq = d.write("p.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b"})" "\n" R"({"goal": "g", "sol1": "a", "sol2": "b"})" "\n");
  const std::string pl = d.write("p-labels.lst", "0\n2\n");
  expect_error([&] { read_piqa(pq); }, {pl + ":2:", "label '2' out of range", "0 or 1"});
  d.write("p-labels.lst", "0\n");
  expect_error([&] { read_piqa(pq); }, {"1 labels for 2 records"});
  const std::string wg = d.write("w.jsonl", R"({"context_options": ["a", "b"], "continuation": "c", "gold": 2})" "\n");
  expect_error([&] { read_winogrande_jsonl(wg); }, {wg + ":1:", "label 2 out of range", "[0, 1]"});
  const std::string ob = d.write("o.jsonl", R"({"query": "q", "choices": ["a", "b", "c", "d"], "gold": 4})" "\n");
  expect_error([&] { read_openbookqa(ob); }, {ob + ":1:", "label 4 out of range", "[0, 3]"});
  const std::string tsv = d.write("o.tsv", "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
                                           "1\tq\t(A) a (B) b (C) c (D) d\tq a\tF\n");
  expect_error([&] { read_openbookqa(tsv); }, {tsv + ":2:", "answer key 'F' out of range", "A-D"});
  const std::string hs = d.write("h.txt", "ctx\n7\na\nb\nc\nd\n");
  expect_error([&] { read_hellaswag_txt(hs); }, {hs + ":2:", "label '7' out of range", "0-3"});
  d.write("m/x_test.csv", "What?,a,b,c,d,A\n\"Why,\nnot\",a,b,c,d,E\n");
  expect_error([&] { read_mmlu_dir(d.path() + "/m"); }, {"x_test.csv:2:", "answer 'E' out of range", "A-D"});
}

// Issue 21: a task file with invalid UTF-8 is refused when it is read, naming the file and the line
// (before, CSV and text layouts got as far as the tokenizer, whose error named neither), and an
// unreadable or malformed one is an llmc::Error naming the file, never an abort.
TEST(TaskData, InvalidUtf8AndUnreadableFilesNameTheFile) {
  TmpDir d;
  const std::string arc_ok = R"({"question": {"stem": "Q", "choices": [{"text": "x", "label": "A"}]}, "answerKey": "A"})";
  const std::string arc = d.write("a.jsonl", arc_ok + "\n" + arc_ok + "\xff\n");
  expect_error([&] { read_arc_jsonl(arc); }, {arc + ":2: invalid UTF-8 at byte offset", "(byte 0xff"});
  // Inside a JSON string: the same message, not the JSON parser's.
  const std::string bq = d.write("b.jsonl", "{\"question\": \"q\xc0\xaf\", \"passage\": \"p\", \"label\": true}\n");
  expect_error([&] { read_boolq_jsonl(bq); }, {bq + ":1: invalid UTF-8 at byte offset 15 of the file (byte 0xc0: overlong encoding)"});
  const std::string hs = d.write("h.txt", "ctx\n0\na\xed\xa0\x80\nb\nc\nd\n");
  expect_error([&] { read_hellaswag_txt(hs); }, {hs + ":3:", "(byte 0xed: UTF-16 surrogate)"});
  const std::string pq = d.write("p.jsonl", R"({"goal": "g", "sol1": "a", "sol2": "b"})" "\n");
  const std::string pl = d.write("p-labels.lst", "\xf4\x90\x80\x80\n");
  expect_error([&] { read_piqa(pq); }, {pl + ":1:", "code point past U+10FFFF"});
  const std::string tsv = d.write("o.tsv", "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key\n"
                                           "1\tq\t(A) a (B) b (C) c (D) \xe2\x82\tq a\tA\n");
  expect_error([&] { read_openbookqa(tsv); }, {tsv + ":2:", "invalid UTF-8"});
  // A quoted CSV field spanning lines: the line is the one holding the bad byte.
  d.write("m/x_test.csv", "What?,a,b,c,d,A\n\"Why,\nnot\x80\",a,b,c,d,B\n");
  expect_error([&] { read_mmlu_dir(d.path() + "/m"); }, {"m/x_test.csv:3:", "(byte 0x80"});
  // Through load_task (what eval calls) as well.
  d.write("hellaswag/hellaswag_val_full.txt", "ctx\xfe\n0\na\nb\nc\nd\n");
  expect_error([&] { load_task("hellaswag", d.path(), -1, 0); }, {"hellaswag_val_full.txt:1: invalid UTF-8"});

  // Unreadable: a folder where the file should be, a file without read permission.
  ::mkdir((d.path() + "/w.jsonl").c_str(), 0755);
  expect_error([&] { read_winogrande_jsonl(d.path() + "/w.jsonl"); }, {d.path() + "/w.jsonl: is a directory"});
  ::mkdir((d.path() + "/m2").c_str(), 0755);
  ::mkdir((d.path() + "/m2/y_test.csv").c_str(), 0755);
  expect_error([&] { read_mmlu_dir(d.path() + "/m2"); }, {"m2/y_test.csv: is a directory"});
  if (::geteuid() != 0) {  // root reads any file
    const std::string locked = d.write("locked.jsonl", arc_ok + "\n");
    ::chmod(locked.c_str(), 0);
    expect_error([&] { read_arc_jsonl(locked); }, {locked + ": cannot open"});
  }
  // Malformed: a label with more digits than std::stoll takes.
  const std::string wg = d.write("w2.jsonl", R"({"context_options": ["a", "b"], "continuation": "c", "gold": "99999999999999999999"})" "\n");
  expect_error([&] { read_winogrande_jsonl(wg); }, {wg + ":1:", "out of range", "[0, 1]"});
}

TEST(TaskData, FewshotNeedsASplit) {
  NEED_DATA("piqa/valid.jsonl");
  // The shared data has no PIQA train split: a clear error, not a silent zero-shot run.
  expect_error([&] { load_task("piqa", data_dir(), 2, 0); },
               {"piqa: --num-fewshot 2 needs solved examples", "piqa/train.jsonl", "train split"});
  TmpDir d;
  d.write("mmlu/test/anatomy_test.csv", "Q?,a,b,c,d,A\n");
  d.write("mmlu/dev/anatomy_dev.csv", "Q1?,a,b,c,d,A\n");
  expect_error([&] { load_task("mmlu", d.path(), -1, 0); }, {"only 1 few-shot example(s) for subject 'anatomy'", "5"});
}

// The few-shot split as text (search scoring / calibration held out from the eval): each solved
// example exactly as lm-eval writes it into a few-shot prompt; one-line errors otherwise.
TEST(TaskData, FewshotSplitTexts) {
  TmpDir d;
  d.write("arc_easy/ARC-Easy-Dev.jsonl",
          R"({"id":"a","question":{"stem":"Which is a gas?","choices":[{"text":"ice","label":"A"},{"text":"steam","label":"B"}]},"answerKey":"B"})"
          "\n"
          R"({"id":"b","question":{"stem":"What melts?","choices":[{"text":"snow","label":"1"},{"text":"rock","label":"2"}]},"answerKey":"1"})"
          "\n");
  EXPECT_EQ(fewshot_split_texts("arc_easy", d.path()),
            (std::vector<std::string>{"Question: Which is a gas?\nAnswer: steam", "Question: What melts?\nAnswer: snow"}));
  d.write("mmlu/dev/anatomy_dev.csv", "Q1?,a,b,c,d,C\n");
  EXPECT_EQ(fewshot_split_texts("mmlu", d.path()),
            (std::vector<std::string>{"Q1?\nA. a\nB. b\nC. c\nD. d\nAnswer: C"}));
  d.write("winogrande/train_xl.jsonl",
          R"({"sentence": "The cup fell because _ was slippery.", "option1": "it", "option2": "he", "answer": "1"})" "\n");
  const auto wg = fewshot_split_texts("winogrande", d.path());
  ASSERT_EQ(wg.size(), 1u);
  EXPECT_EQ(wg[0], "The cup fell because it was slippery.");
  expect_error([&] { fewshot_split_texts("boolq", d.path()); },
               {"boolq: no few-shot split found", "boolq/train.jsonl", "train split"});
  expect_error([&] { fewshot_split_texts("nope", d.path()); }, {"unknown multiple-choice task 'nope'"});
}

TEST(TaskData, TaskTableAndGroups) {
  EXPECT_EQ(expand_task_group("reasoning7"),
            (std::vector<std::string>{"arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande",
                                      "openbookqa"}));
  for (const char* n : {"arc_easy", "arc_challenge", "boolq", "hellaswag", "piqa", "winogrande", "openbookqa", "mmlu"})
    EXPECT_NE(find_task(n), nullptr) << n;
  EXPECT_EQ(find_task("wikitext"), nullptr);
  // acc_norm exactly where lm-eval's metric_list has it.
  EXPECT_TRUE(find_task("arc_easy")->reports_acc_norm);
  EXPECT_TRUE(find_task("hellaswag")->reports_acc_norm);
  EXPECT_TRUE(find_task("piqa")->reports_acc_norm);
  EXPECT_TRUE(find_task("openbookqa")->reports_acc_norm);
  EXPECT_FALSE(find_task("winogrande")->reports_acc_norm);
  EXPECT_FALSE(find_task("mmlu")->reports_acc_norm);
  int n = 0;
  for (const char* s : {"abstract_algebra", "anatomy", "world_religions", "us_foreign_policy", "virology"})
    n += !mmlu_category(s).empty();
  EXPECT_EQ(n, 5);
  EXPECT_EQ(mmlu_category("high_school_psychology"), "social_sciences");
  EXPECT_EQ(mmlu_category("professional_law"), "humanities");
  EXPECT_EQ(mmlu_category("global_facts"), "other");
}

// ---------------------------------------------------------------- helpers

TEST(TaskText, PythonCsv) {
  auto rows = parse_csv("a,b,\n\n\"x,\"\"y\"\"\nz\",2\r\nq\"uote,\"\"\n", "t.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"a", "b", ""}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"x,\"y\"\nz", "2"}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"q\"uote", ""}));
  std::vector<int64_t> lines;
  parse_csv("a\n\"b\nc\"\nd", "t.csv", &lines);
  EXPECT_EQ(lines, (std::vector<int64_t>{1, 2, 4}));
  expect_error([] { parse_csv("a\n\"open,b\n", "t.csv"); }, {"t.csv:2:", "unterminated"});
}

TEST(TaskText, HellaswagPreprocessAndPythonStrings) {
  EXPECT_EQ(hellaswag_preprocess("  A [title] B [step] c  d   e "), "A. B c d  e");
  EXPECT_EQ(hellaswag_preprocess("x [a [b] c] y"), "x c] y");
  EXPECT_EQ(hellaswag_preprocess("no [close"), "no [close");
  EXPECT_EQ(py_strip("\xc2\xa0 a b\t\n"), "a b");  // U+00A0 is whitespace for Python
  EXPECT_EQ(py_rstrip("Answer: \n"), "Answer:");
  EXPECT_EQ(count_code_points("caf\xc3\xa9"), 4);
}

TEST(TaskTokens, EncodePairMovesTrailingSpaces) {
  test::ByteTokenizer tok;
  auto a = encode_pair(tok, "Answer:", " yes");
  EXPECT_EQ(a.context, tok.encode("Answer:", false));
  EXPECT_EQ(a.continuation, tok.encode(" yes", false));
  auto b = encode_pair(tok, "Answer: \n", "yes");  // lm-eval: context.rstrip(), spaces go to the continuation
  EXPECT_EQ(b.context, tok.encode("Answer:", false));
  EXPECT_EQ(b.continuation, tok.encode(" \nyes", false));
  auto c = encode_pair(tok, "", "abc");  // empty context: [BOS]
  EXPECT_EQ(c.context, (std::vector<int32_t>{1}));
  EXPECT_EQ(c.continuation, tok.encode("abc", false));
}

TEST(TaskTokens, EncodePairWithSentencePiece) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sentencepiece shim is not loaded under ASan (RTLD_DEEPBIND)";
#endif
  const std::string p = shared_root() + "/models/stories260K/tokenizer.model";
  if (!file_exists(p)) GTEST_SKIP() << "shared tokenizer not found at " << p;
  if (find_spm_shim().empty()) GTEST_SKIP() << "sentencepiece shim not built";
  auto tok = load_sentencepiece(p, SpecialIds{});
  // lm-eval _encode_pair: context_enc = encode(context), continuation_enc =
  // encode(context + continuation)[len(context_enc):], both without special tokens (no BOS).
  const std::string ctx = "Question: Which gas do plants take in?\nAnswer:", cont = " carbon dioxide";
  auto r = encode_pair(*tok, ctx, cont);
  EXPECT_EQ(r.context, tok->encode(ctx, false));
  auto joined = r.context;
  joined.insert(joined.end(), r.continuation.begin(), r.continuation.end());
  EXPECT_EQ(joined, tok->encode(ctx + cont, false));
  EXPECT_FALSE(r.continuation.empty());
  EXPECT_NE(r.context.front(), tok->bos_id());
  // A trailing space of the context is scored as part of the continuation.
  auto s = encode_pair(*tok, ctx + " ", "carbon dioxide");
  EXPECT_EQ(s.context, r.context);
  EXPECT_EQ(s.continuation, r.continuation);
}

// ---------------------------------------------------------------- metrics

TEST(TaskMetrics, AccAndAccNormByHand) {
  McInstance in;
  in.choices = {"a", "bbbb"};
  in.gold = 1;
  auto s = score_doc(in, {-2.0, -4.0});  // acc: -2 > -4 -> 0; acc_norm: -2/1 < -4/4 -> 1
  EXPECT_EQ(s.pred, 0);
  EXPECT_EQ(s.pred_norm, 1);
  EXPECT_EQ(s.acc, 0.0);
  EXPECT_EQ(s.acc_norm, 1.0);
  // Lengths are code points: "é" is 1 (2 bytes). -1.5/1 < -2.5/2 -> choice 1; by bytes it would be 0.
  in.choices = {"\xc3\xa9", "ab"};
  EXPECT_EQ(score_doc(in, {-1.5, -2.5}).pred_norm, 1);
  EXPECT_EQ(np_argmax({1.0, 3.0, 3.0}), 1);  // ties: the first, as numpy
}

TEST(TaskMetrics, StderrAsLmEval) {
  // sqrt(var(ddof=1)/n): [1,0,1,1] -> mean .75, var .25 -> sqrt(.25/4) = .25
  EXPECT_DOUBLE_EQ(mean_stderr({1, 0, 1, 1}), 0.25);
  EXPECT_TRUE(std::isnan(mean_stderr({1})));
  std::vector<DocScore> docs(4);
  docs[0].acc = 1, docs[2].acc = 1, docs[3].acc = 1;
  docs[1].acc_norm = 1;
  auto m = aggregate(docs, true);
  EXPECT_EQ(m.n, 4);
  EXPECT_DOUBLE_EQ(m.acc, 0.75);
  EXPECT_DOUBLE_EQ(m.acc_stderr, 0.25);
  EXPECT_DOUBLE_EQ(m.acc_norm, 0.25);
  EXPECT_DOUBLE_EQ(m.acc_norm_stderr, 0.25);
  // pooled: sqrt(((9 * .01 * 10) + (29 * .04 * 30)) / (40 - 2) / 40)
  EXPECT_NEAR(pooled_sample_stderr({0.1, 0.2}, {10, 30}), std::sqrt((0.9 + 34.8) / 38.0 / 40.0), 1e-15);
  McMetrics p1, p2;
  p1.n = 10, p1.acc = 0.5, p1.acc_stderr = 0.1;
  p2.n = 30, p2.acc = 0.9, p2.acc_stderr = 0.2;
  auto g = aggregate_group({p1, p2});
  EXPECT_EQ(g.n, 40);
  EXPECT_DOUBLE_EQ(g.acc, 0.8);  // micro: (5 + 27) / 40
  EXPECT_NEAR(g.acc_stderr, std::sqrt((0.9 + 34.8) / 38.0 / 40.0), 1e-15);
  EXPECT_FALSE(g.has_acc_norm);
}

// The answer-share chance, worked by hand: gold shares 3/5 for index 1, 2/5 for 0.
TEST(TaskMetrics, AnswerShareChance) {
  const std::vector<int> gold = {1, 1, 1, 0, 0};
  // Always "0" (a model that answers no to everything): 1 x 2/5.
  EXPECT_DOUBLE_EQ(answer_share_chance(gold, {0, 0, 0, 0, 0}), 0.4);
  // Index 1 for 2 of 5 documents, whichever: 2/5 x 3/5 + 3/5 x 2/5 = 12/25, whatever the documents.
  EXPECT_DOUBLE_EQ(answer_share_chance(gold, {1, 1, 0, 0, 0}), 0.48);
  EXPECT_DOUBLE_EQ(answer_share_chance(gold, {0, 0, 0, 1, 1}), 0.48);
  // An index no gold has adds nothing; no answer (-1) counts as no index.
  EXPECT_DOUBLE_EQ(answer_share_chance(gold, {2, 2, -1, 1, 1}), 2.0 / 5 * 3.0 / 5);
  EXPECT_TRUE(std::isnan(answer_share_chance({}, {})));
  EXPECT_THROW(answer_share_chance(gold, {0}), std::exception);
}
