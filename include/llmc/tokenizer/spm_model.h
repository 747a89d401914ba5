#pragma once
// A SentencePiece tokenizer.model (the ModelProto protobuf of sentencepiece_model.proto) read
// without libsentencepiece or libprotobuf: the pieces with their scores and types, and the few
// trainer / normalizer settings a GGUF vocabulary needs (GGUF export from a Hugging Face folder).
//
// Wire format read (proto2; unknown fields of any wire type but groups are skipped):
//   ModelProto     1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
//   SentencePiece  1: piece (string)   2: score (float, default 0)   3: type (enum, default NORMAL)
//                  type: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE
//                  (the numbering of GGUF's tokenizer.ggml.token_type)
//   TrainerSpec    3: model_type (1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR)   35: byte_fallback
//                  40: unk_id (default 0)   41: bos_id (1)   42: eos_id (2)   43: pad_id (-1)
//   NormalizerSpec 1: name   3: add_dummy_prefix (default true)   4: remove_extra_whitespaces (true)
// A malformed file (truncated or overlong varint / length, a group wire type, a piece that is not
// UTF-8, an unknown piece type, no pieces, a repeated piece, ...) throws llmc::Error with one line
// naming the file, the problem and its byte offset.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llmc/io/gguf.h"

namespace llmc {

struct SpmModelProto {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<GGUFTokenType> types;
  int model_type = 1;  // trainer_spec.model_type: 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR
  bool byte_fallback = false;
  // trainer_spec; -1 = none. A set id outside the pieces is an error; a default one (unk 0, bos 1,
  // eos 2 of a model with fewer pieces) becomes -1.
  int unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
  std::string normalizer_name;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
};

// Parses ModelProto bytes; `where` names the source in error messages.
SpmModelProto parse_spm_model(std::string_view bytes, const std::string& where);
// Reads and parses a tokenizer.model file.
SpmModelProto read_spm_model(const std::string& path);

// "UNIGRAM", "BPE", "WORD", "CHAR" or "type N".
std::string spm_model_type_name(int model_type);

// A token's text for a one-line error message: control bytes (and DEL) as \xNN, cut after 48 bytes
// (at a UTF-8 character boundary) with "...".
std::string printable_token(std::string_view text);

}  // namespace llmc
