// Fuzz target: the task files eval reads (eval/tasks.h readers, data/text_docs.h). The first byte
// picks the layout, the rest is the file (PIQA: JSONL, a line "#####", then the labels); documents
// that read become lm-eval requests (build_instances, with few-shot examples from the same file)
// and are tokenized with a small SentencePiece-style vocabulary.
#include <algorithm>

#include "fuzz_common.h"
#include "llmc/data/text_docs.h"
#include "llmc/eval/tasks.h"
#include "llmc/tokenizer/spm_native.h"

namespace {

const llmc::Tokenizer& tokenizer() {
  static const llmc::SpmNativeTokenizer tok = [] {
    llmc::SpmVocab v;
    v.source = "fuzz vocabulary";
    const std::string sp = "\xE2\x96\x81";
    v.pieces = {"<unk>", "<s>", "</s>", sp, "a", "e", "t", sp + "t", "he", sp + "the", "<0x0A>", "<0x20>"};
    v.scores = {0, 0, 0, -1, -2, -2, -2, -3, -3, -4, 0, 0};
    using T = llmc::GGUFTokenType;
    v.types = {T::UNKNOWN, T::CONTROL, T::CONTROL, T::NORMAL, T::NORMAL, T::NORMAL,
               T::NORMAL,  T::NORMAL,  T::NORMAL,  T::NORMAL, T::BYTE,   T::BYTE};
    v.bos = 1;
    v.eos = 2;
    v.unk = 0;
    return llmc::SpmNativeTokenizer(v);
  }();
  return tok;
}

void requests(const char* task, const std::vector<llmc::McDoc>& docs) {
  const llmc::TaskDef* def = llmc::find_task(task);
  if (!def) llmc::fuzz::bug(std::string("no task ") + task);
  const int shots = static_cast<int>(std::min<size_t>(2, docs.size() > 1 ? docs.size() - 1 : 0));
  const auto inst = llmc::build_instances(*def, docs, docs, shots);
  for (const auto& i : inst) {
    if (i.gold < 0 || i.gold >= static_cast<int>(i.requests.size()))
      llmc::fuzz::bug(std::string("a gold index outside the requests in ") + task);
  }
  llmc::tokenize_instances(tokenizer(), inst);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int kind = data[0] % 10;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
  llmc::fuzz::run([&] {
    using namespace llmc;
    switch (kind) {
      case 0: requests("arc_easy", read_arc_jsonl(fuzz::scratch_file("t/arc.jsonl", body))); break;
      case 1: requests("boolq", read_boolq_jsonl(fuzz::scratch_file("t/val.jsonl", body))); break;
      case 2: {
        const std::string sep = "#####\n";
        const size_t cut = body.find(sep);
        fuzz::scratch_file("t/valid-labels.lst", cut == std::string::npos ? "" : body.substr(cut + sep.size()));
        requests("piqa", read_piqa(fuzz::scratch_file("t/valid.jsonl", body.substr(0, cut))));
        break;
      }
      case 3: requests("hellaswag", read_hellaswag_txt(fuzz::scratch_file("t/hellaswag.txt", body))); break;
      case 4: requests("winogrande", read_winogrande_jsonl(fuzz::scratch_file("t/wino.jsonl", body))); break;
      case 5: requests("openbookqa", read_openbookqa(fuzz::scratch_file("t/test.tsv", body))); break;
      case 6: requests("openbookqa", read_openbookqa(fuzz::scratch_file("t/test.jsonl", body))); break;
      case 7: {
        std::filesystem::remove_all(fuzz::scratch_dir() + "/mmlu");
        fuzz::scratch_file("mmlu/abstract_algebra_test.csv", body);
        requests("mmlu", read_mmlu_dir(fuzz::scratch_dir() + "/mmlu"));
        break;
      }
      case 8:
        for (const auto& d : load_text_docs(fuzz::scratch_file("t/docs.txt", body))) {
          count_words(d.original);
          tokenizer().encode(d.text, true);
        }
        break;
      default:
        for (const auto& d : load_wikitext_docs(fuzz::scratch_file("t/wiki.test.raw", body))) {
          count_words(d.original);
          tokenizer().encode(d.text, true);
        }
        break;
    }
  });
  return 0;
}
