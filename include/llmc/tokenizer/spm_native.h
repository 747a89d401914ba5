#pragma once
// SentencePiece-style BPE tokenizer built from GGUF metadata (tokenizer.ggml.model == "llama"),
// with no libsentencepiece: the algorithm of llama.cpp's llm_tokenizer_spm.
//
// Encoding: the text gets a dummy-prefix space (tokenizer.ggml.add_space_prefix, default true;
// empty text stays empty), every ' ' becomes U+2581 "▁", the text is split into UTF-8 characters,
// then the adjacent pair whose concatenation is a vocabulary piece with the highest score is merged
// (ties: leftmost) until no pair is a piece. A remaining symbol that is not a piece is emitted as
// its bytes' <0xXX> byte-fallback tokens (or <unk> when the vocabulary has no byte pieces).
// Like llama.cpp (and unlike SentencePiece's remove_extra_whitespaces), whitespace runs are kept.
// Special tokens written in the text are not parsed (SentencePiece does not either).
//
// Decoding (SentencePiece's rules): control pieces (<s>, </s>) are dropped, "▁" becomes ' ',
// <0xXX> pieces become raw bytes (no U+FFFD replacement, so a sequence may stop mid-character),
// <unk> becomes " ⁇ ", and the "▁" that starts the first piece (the dummy prefix) is removed once
// (SentencePiece with remove_extra_whitespaces off), so decode(encode(s)) == s for every s.
#include <memory>
#include <string>
#include <vector>

#include "llmc/io/gguf.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

struct SpmVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;            // merge priority: higher merges first
  std::vector<GGUFTokenType> types;     // NORMAL, CONTROL, BYTE, ...
  int bos = -1, eos = -1, unk = -1;
  bool add_bos = true;                  // tokenizer.ggml.add_bos_token
  bool add_space_prefix = true;         // tokenizer.ggml.add_space_prefix
  std::string source;                   // names the origin in error messages
};

class SpmNativeTokenizer final : public Tokenizer {
 public:
  // Throws llmc::Error (naming vocab.source) when the vocabulary is inconsistent.
  explicit SpmNativeTokenizer(SpmVocab vocab);
  ~SpmNativeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int vocab_size() const override;
  int bos_id() const override;
  int eos_id() const override;
  bool add_bos_default() const override;
  std::string type() const override { return "sentencepiece"; }

  const std::string& piece(int id) const;  // throws on an out-of-range id

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Builds the tokenizer from tokenizer.ggml.{tokens,scores,token_type,bos_token_id,eos_token_id,
// unknown_token_id,add_bos_token,add_space_prefix}. Throws llmc::Error when tokenizer.ggml.model is
// not "llama" or the metadata is inconsistent.
std::unique_ptr<Tokenizer> spm_native_from_gguf(const GGUFFile& file);

}  // namespace llmc
