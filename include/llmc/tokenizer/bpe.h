#pragma once
// GPT-2 style byte-level BPE tokenizer (SmolLM2, Llama-3, Qwen2, GPT-2), built from GGUF metadata
// (tokenizer.ggml.model == "gpt2") or from a Hugging Face tokenizer.json; and the factory that
// picks the right tokenizer for a GGUF file.
//
// Encoding, as llama.cpp's llm_tokenizer_bpe and HF tokenizers do it:
//  1. Special tokens written in the text (CONTROL and USER_DEFINED tokens of a GGUF, added_tokens
//     of a tokenizer.json, e.g. "<|im_start|>") are cut out first and emitted as their ids;
//     overlapping candidates resolve leftmost-longest.
//  2. Each remaining stretch is split by the pre-tokenizer regexes, applied in sequence: every
//     regex splits every piece left by the previous one, and both the matches and the text between
//     them become pieces (HF's Split "Isolated" behaviour). The regexes run with PCRE2 in UTF mode
//     with Unicode properties (UCP), so \s, \p{L}, \p{N} are Unicode-aware.
//  3. Each piece is mapped byte by byte to GPT-2's printable "byte-level" characters, then BPE
//     merges the adjacent pair with the lowest merge rank (ties: leftmost) until none applies.
// Input must be valid UTF-8 (no surrogates, overlong forms or code points past U+10FFFF): other
// input throws llmc::Error naming the byte offset; invalid bytes are never guessed at.
//
// Decoding maps byte-level characters back to bytes and returns them as they are: a sequence that
// ends inside a multi-byte character yields invalid UTF-8. CONTROL (special) tokens are dropped,
// USER_DEFINED (added, non-special) tokens are emitted verbatim.
//
// Known deviations: a tokenizer.json "NFC" normalizer is accepted but not applied (llama.cpp does
// not apply it either; ASCII and already-composed text are unaffected); added-token options
// lstrip/rstrip/single_word are ignored.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llmc/io/gguf.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

struct BPEVocab {
  // Token texts by id. NORMAL tokens are in byte-level form ("Ġthe"); CONTROL and USER_DEFINED
  // tokens are raw text ("<|im_start|>"). Empty strings mark ids that no text maps to.
  std::vector<std::string> tokens;
  std::vector<GGUFTokenType> types;  // empty = all NORMAL
  // Merge rules in rank order (rank 0 first), each a pair of byte-level token texts whose
  // concatenation is also a token.
  std::vector<std::pair<std::string, std::string>> merges;
  std::vector<std::string> pre_regexes;  // PCRE2 patterns, applied in order
  int bos = -1, eos = -1, unk = -1;
  bool add_bos = false;
  // Llama-3: a pre-tokenized piece that is itself a token is emitted without running merges.
  bool ignore_merges = false;
  std::string source;  // names the origin in error messages
};

class BPETokenizer final : public Tokenizer {
 public:
  // Compiles the regexes and indexes vocabulary and merges. Throws llmc::Error (naming
  // vocab.source) on an inconsistent vocabulary, a merge naming unknown tokens, or a bad regex.
  explicit BPETokenizer(BPEVocab vocab);
  ~BPETokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int vocab_size() const override;
  int bos_id() const override;
  int eos_id() const override;
  bool add_bos_default() const override;
  std::string type() const override { return "bpe"; }

  // Step 2 alone (no special tokens, no byte mapping): the pieces BPE runs on. For tests.
  std::vector<std::string> pre_tokenize(std::string_view text) const;
  // Id of an exact token text (byte-level form for NORMAL tokens); -1 when absent.
  int token_id(std::string_view text) const;
  const std::string& token_text(int id) const;  // throws on an out-of-range id

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GPT-2's reversible byte <-> printable-character map: bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF
// map to the code point of the same value; the other 68 bytes map to U+0100.. in byte order
// (space -> "Ġ" U+0120, '\n' -> "Ċ" U+010A).
std::string byte_level_encode(std::string_view bytes);
// The inverse; characters outside the map are copied through as their UTF-8.
std::string byte_level_decode(std::string_view text);

// The pre-tokenizer regex list of a llama.cpp pre-tokenizer name (tokenizer.ggml.pre): "gpt2",
// "smollm" (GPT-2's regex after splitting off every digit), "llama-bpe" / "llama3", "qwen2".
// Throws llmc::Error (prefixed with `where`) for other names.
std::vector<std::string> bpe_pre_regexes(const std::string& pre_name, const std::string& where);
// The GPT-2 regex (also HF's ByteLevel pre-tokenizer regex).
extern const char* const kGPT2PreRegex;

// Byte-level BPE from tokenizer.ggml.{tokens,merges,token_type,pre,bos_token_id,eos_token_id,
// unknown_token_id,add_bos_token}. add_bos defaults to true for llama-bpe/llama3 and false
// otherwise (llama.cpp's defaults). Throws llmc::Error when tokenizer.ggml.model is not "gpt2".
std::unique_ptr<Tokenizer> bpe_from_gguf(const GGUFFile& file);

// The tokenizer a GGUF file carries: tokenizer.ggml.model "llama" -> SpmNativeTokenizer
// (spm_native.h), "gpt2" -> BPETokenizer; anything else (or none) -> llmc::Error.
std::unique_ptr<Tokenizer> tokenizer_from_gguf(const GGUFFile& file);

// Byte-level BPE from a Hugging Face tokenizer.json (model.type "BPE"; vocab; merges as "a b"
// strings or [a, b] pairs; added_tokens, special ones dropped by decode). The pre-tokenizer list is
// derived from pre_tokenizer: Sequence / Split (Regex or String pattern, behavior Isolated) /
// Digits / ByteLevel (add_prefix_space false; use_regex adds the GPT-2 regex), which covers the
// Llama-3, Qwen2, SmolLM2 and GPT-2 layouts; other layouts (Metaspace, byte_fallback BPE, ...)
// throw llmc::Error naming the file and the unsupported part. tokenizer_config.json (optional,
// "" for none) supplies add_bos_token, bos_token and eos_token; without it add_bos follows a
// TemplateProcessing post-processor that starts with a special token.
std::unique_ptr<Tokenizer> load_bpe_tokenizer_json(const std::string& tokenizer_json_path,
                                                   const std::string& tokenizer_config_path_or_empty);
// The vocabulary load_bpe_tokenizer_json builds its tokenizer from (ids no text maps to: "" and
// UNUSED), with the same checks; for converting a tokenizer.json to GGUF metadata (gguf_vocab.h).
BPEVocab read_bpe_tokenizer_json(const std::string& tokenizer_json_path,
                                 const std::string& tokenizer_config_path_or_empty);

}  // namespace llmc
