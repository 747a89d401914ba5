#pragma once
// The one tokenizer interface every stage uses. Implementations: SentencePiece (through a dlopen'ed
// shim, see sentencepiece.h) and byte-level BPE.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace llmc {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes text; prepends BOS when add_bos and the model has one. Text must be valid UTF-8
  // (llmc::Error otherwise).
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;
  // Decodes ids to text; special tokens (BOS/EOS/...) are dropped.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;  // -1 when none
  virtual int eos_id() const = 0;  // -1 when none
  // Whether the model expects BOS at the start of a sequence (tokenizer_config add_bos_token).
  virtual bool add_bos_default() const = 0;
  virtual std::string type() const = 0;  // "sentencepiece", "bpe"
};

// Throws llmc::Error naming the offending byte offset when `text` is not valid UTF-8.
void check_utf8(std::string_view text, const char* what);

}  // namespace llmc
