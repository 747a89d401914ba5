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

// The one UTF-8 check of text a tokenizer reads (RFC 3629, as strict as PCRE2): rejects stray or
// invalid bytes (0x80..0xbf leading, 0xc0, 0xc1, 0xf5..0xff), truncated sequences, overlong forms,
// UTF-16 surrogates (U+D800..U+DFFF) and code points past U+10FFFF.
// utf8_problem: nullptr when valid, else why, with the byte offset of the bad sequence in *offset.
const char* utf8_problem(std::string_view text, size_t* offset = nullptr);
// Throws llmc::Error "WHAT: invalid UTF-8 at byte offset N (byte 0xXX: why)" when `text` is not valid.
void check_utf8(std::string_view text, const char* what);
// `text` with each byte that utf8_problem rejects replaced by U+FFFD (valid text comes back as it
// is). For model output, where byte tokens may stop mid-sequence: JSON writers throw on invalid UTF-8.
std::string utf8_replace_invalid(std::string_view text);

}  // namespace llmc
