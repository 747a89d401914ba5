#pragma once
// Documents -> one token stream -> fixed-length sequences -> batches, for training and
// calibration. Each document is encoded without special tokens; how documents are joined is the
// one BOS/EOS rule, chosen explicitly by the caller:
//
//  StartEach        `start` (BOS; EOS when the model has no BOS) in front of every document, as
//                   eval scores a text (perplexity.h: Rolling prefixes each document the same way).
//                   Used by calibration text (calibration.h: GPTQ Hessians, LoRA fine-tuning).
//  TokenizerDefault BOS in front of every document when the tokenizer adds one by default (then the
//                   same stream as StartEach with the tokenizer's BOS); otherwise EOS between
//                   documents, none before the first. Used by the search (nas/search.cpp): its
//                   results and checkpoints were made with it, so it is kept there.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "llmc/data/text_docs.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

enum class DocBoundary { StartEach, TokenizerDefault };

struct TokenStreamOptions {
  DocBoundary boundary = DocBoundary::StartEach;
  int32_t start = -1;      // StartEach: the token in front of every document (>= 0)
  size_t max_tokens = 0;   // stop after the document that brings the stream to this size (0: all)
};

// Appends `docs` to `stream` (which may hold earlier documents: TokenizerDefault's EOS goes
// between them too). Returns true when the stream has reached max_tokens.
bool append_documents(std::vector<int32_t>& stream, const Tokenizer& tok, const std::vector<TextDocument>& docs,
                      const TokenStreamOptions& opts);

// Several sources as one mixture: their documents taken in turn, one from each while it has any
// (one source: its documents in order), so a stream cut short is not all from the first source.
std::vector<TextDocument> interleave_documents(std::vector<std::vector<TextDocument>> sources);

// The first n * seq_len tokens of `stream` as (n, seq_len) int64 sequences; the stream must be long
// enough.
at::Tensor cut_sequences(const std::vector<int32_t>& stream, int64_t n, int64_t seq_len);

// Consecutive rows of `sequences` (n, T) as batches of batch_size rows (the last may be smaller),
// each a contiguous (b, T) tensor of its own.
std::vector<at::Tensor> split_batches(const at::Tensor& sequences, int64_t batch_size);

}  // namespace llmc
