// Tokenizers from GGUF metadata: byte-level BPE ("gpt2") and the dispatch between it and the
// SentencePiece-style tokenizer ("llama").
#include "llmc/core/error.h"
#include "llmc/tokenizer/bpe.h"
#include "llmc/tokenizer/spm_native.h"

namespace llmc {

namespace {

int token_id_or_none(const GGUFFile& f, const char* key, size_t vocab) {
  if (!f.has(key)) return -1;
  const uint32_t id = f.get_u32(key);
  if (id == 0xffffffffu) return -1;
  if (id >= vocab) fail("{}: metadata '{}' = {} is outside the vocabulary ({} tokens)", f.path(), key, id, vocab);
  return static_cast<int>(id);
}

}  // namespace

std::unique_ptr<Tokenizer> bpe_from_gguf(const GGUFFile& f) {
  const std::string model = f.get_string_or("tokenizer.ggml.model", "");
  if (model != "gpt2") fail("{}: tokenizer.ggml.model is '{}', not 'gpt2' (byte-level BPE)", f.path(), model);
  BPEVocab v;
  v.source = f.path();
  v.tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.token_type")) {
    for (int32_t t : f.get_i32_array("tokenizer.ggml.token_type")) {
      if (t < 0 || t > static_cast<int32_t>(GGUFTokenType::BYTE))
        fail("{}: tokenizer.ggml.token_type holds unknown type {}", f.path(), t);
      v.types.push_back(static_cast<GGUFTokenType>(t));
    }
    if (v.types.size() != v.tokens.size())
      fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), v.types.size(), v.tokens.size());
  }
  const auto merges = f.get_string_array("tokenizer.ggml.merges");
  v.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    // "left right": byte-level texts never contain a raw space (it maps to "Ġ").
    const size_t sp = merges[r].find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= merges[r].size() || merges[r].find(' ', sp + 1) != std::string::npos)
      fail("{}: tokenizer.ggml.merges entry {} '{}' is not of the form 'left right'", f.path(), r, merges[r]);
    v.merges.emplace_back(merges[r].substr(0, sp), merges[r].substr(sp + 1));
  }
  if (!f.has("tokenizer.ggml.pre"))
    fail("{}: tokenizer.ggml.pre is missing, so the pre-tokenizer is unknown (re-convert with a recent llama.cpp)",
         f.path());
  const std::string pre = f.get_string("tokenizer.ggml.pre");
  v.pre_regexes = bpe_pre_regexes(pre, f.path());
  const bool llama3 = pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
  v.ignore_merges = llama3;  // as llama.cpp sets it for the Llama-3 pre-tokenizer
  v.add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", llama3);
  v.bos = token_id_or_none(f, "tokenizer.ggml.bos_token_id", v.tokens.size());
  v.eos = token_id_or_none(f, "tokenizer.ggml.eos_token_id", v.tokens.size());
  v.unk = token_id_or_none(f, "tokenizer.ggml.unknown_token_id", v.tokens.size());
  return std::make_unique<BPETokenizer>(std::move(v));
}

std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GGUFFile& f) {
  if (!f.has("tokenizer.ggml.model")) fail("{}: the file carries no tokenizer (tokenizer.ggml.model is missing)", f.path());
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") return spm_native_from_gguf(f);
  if (model == "gpt2") return bpe_from_gguf(f);
  fail("{}: tokenizer.ggml.model '{}' is not supported (supported: llama, gpt2)", f.path(), model);
}

}  // namespace llmc
