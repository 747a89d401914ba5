#include "llmc/core/error.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

void check_utf8(std::string_view s, const char* what) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) fail("{}: invalid UTF-8 byte 0x{:02x} at offset {}", what, c, i);
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80)
        fail("{}: invalid UTF-8 continuation byte at offset {}", what, i + k);
    i += n;
  }
}

}  // namespace llmc
