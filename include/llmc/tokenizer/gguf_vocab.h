#pragma once
// A Hugging Face folder's tokenizer as the tokenizer.ggml.* metadata llama.cpp reads (GGUF export
// from an HF source), following llama.cpp's convert_hf_to_gguf.py where it matters for loading.
//
// SentencePiece (tokenizer.model, read by spm_model.h; takes precedence over tokenizer.json, as
// our loader does):
//   tokenizer.ggml.model "llama"; tokens / scores / token_type = the pieces, scores and types of the
//   ModelProto; unknown_token_id = trainer_spec.unk_id; bos / eos = config.json's ids (as our
//   loader uses them), else trainer_spec's; add_bos_token = tokenizer_config.json's (default true);
//   add_space_prefix = false only when normalizer_spec.add_dummy_prefix is false (llama.cpp's
//   default is true). Only BPE-type models are converted: llama.cpp's "llama" tokenizer is
//   SentencePiece's BPE, so a UNIGRAM / WORD / CHAR model is refused (it would tokenize otherwise).
//   A BYTE piece must be "<0xXX>" (llama.cpp reads the byte from it); the vocabulary passes the
//   checks of our GGUF reader's tokenizer (spm_native.h) before it is returned.
//   Added tokens (tokenizer_config.json added_tokens_decoder, added_tokens.json) past the pieces
//   are appended (CONTROL when special, else USER_DEFINED; score -1000); one at a piece's id with
//   the piece's text changes nothing; one with other text replaces the piece.
// Byte-level BPE (tokenizer.json, read by bpe.h's read_bpe_tokenizer_json):
//   tokenizer.ggml.model "gpt2"; pre = the llama.cpp pre-tokenizer whose regex list equals the
//   tokenizer.json's (gpt2, smollm, llama-bpe, qwen2; HF's "(?i:'s|...)" spelling counts as
//   llama.cpp's expanded one), any other layout is refused; tokens (byte-level form; added tokens
//   as written), token_type (NORMAL, CONTROL for special added tokens, USER_DEFINED for others),
//   merges "left right"; bos / eos / unk from tokenizer_config.json / the post-processor, else
//   config.json's bos / eos; add_bos_token as our loader decides it; add_space_prefix false.
// Both: ids with no token (and rows of the embedding past the tokenizer) become "[PAD<id>]" of type
// UNUSED (score -10000), so the vocabulary has exactly `vocab_rows` entries; a tokenizer larger
// than the embedding is refused. padding_token_id = tokenizer_config.json's pad_token when it is a
// token, else config.json's pad_token_id, else trainer_spec.pad_id (SentencePiece); absent when
// none. add_eos_token is written when tokenizer_config.json sets it; tokenizer.chat_template when
// it holds a string chat_template. Every failure throws llmc::Error naming the file.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llmc/io/gguf.h"

namespace llmc {

using GGUFMetadata = std::vector<std::pair<std::string, GGUFValue>>;

// dir: the HF folder (tokenizer.model or tokenizer.json; tokenizer_config.json, config.json and
// added_tokens.json optional). vocab_rows: the embedding's rows. config_bos / config_eos: the
// model config's ids (-1 = none).
GGUFMetadata gguf_tokenizer_from_hf(const std::string& dir, int64_t vocab_rows, int config_bos, int config_eos);

// The llama.cpp pre-tokenizer name (tokenizer.ggml.pre) whose regex list is `regexes`, "" when
// none is (bpe_pre_regexes' names; "(?i:'s|'t|'re|'ve|'m|'ll|'d)" is read as its expansion).
std::string bpe_pre_name_of(const std::vector<std::string>& regexes);

}  // namespace llmc
