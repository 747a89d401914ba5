#pragma once
// Documents for perplexity tasks (torch-free).
//  - wikitext: lm-evaluation-harness's `wikitext` task. wiki.test.raw is split into articles the way
//    EleutherAI/wikitext_document_level does (a new page at each top-level heading line " = T = ");
//    the scored text is the page after lm-eval's wikitext_detokenizer; words and bytes are counted
//    on the original page, as lm-eval does.
//  - wikitext2_gptq: the whole wiki.test.raw as one document, as it stands (no detokenization):
//    GPTQ-style perplexity cuts one token stream into fixed windows (perplexity.h, Chunks).
//  - text:FILE: documents separated by lines that are exactly "<|endoftext|>" (a fragment after the
//    last separator is dropped as cut off); a file without separators is one document.
#include <cstdint>
#include <string>
#include <vector>

namespace llmc {

struct TextDocument {
  std::string text;      // what the model scores
  std::string original;  // what words/bytes are counted on
};

std::vector<TextDocument> load_wikitext_docs(const std::string& wiki_test_raw_path);
std::vector<TextDocument> load_wikitext_raw(const std::string& wiki_test_raw_path);
std::vector<TextDocument> load_text_docs(const std::string& path);

// lm-eval tasks/wikitext/preprocess_wikitext.py: wikitext_detokenizer.
std::string wikitext_detokenize(const std::string& page);

// len(re.split(r"\s+", s)) in Python.
int64_t count_words(const std::string& s);

}  // namespace llmc
