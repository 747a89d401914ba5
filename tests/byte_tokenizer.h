#pragma once
// A byte-level tokenizer for tests that need a real Tokenizer without a tokenizer file:
// byte b -> id b + 3; BOS 1, EOS 2 (ids 0..258).
#include <string>
#include <string_view>
#include <vector>

#include "llmc/tokenizer/tokenizer.h"

namespace llmc::test {

class ByteTokenizer : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    for (unsigned char c : text) ids.push_back(c + 3);
    return ids;
  }
  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string s;
    for (int32_t i : ids)
      if (i >= 3) s += static_cast<char>(i - 3);
    return s;
  }
  int vocab_size() const override { return 259; }
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  bool add_bos_default() const override { return false; }
  std::string type() const override { return "byte"; }
};

}  // namespace llmc::test
