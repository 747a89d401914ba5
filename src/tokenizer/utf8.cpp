// The one UTF-8 validator of every text a tokenizer reads (prompts, task text, documents): strict,
// as RFC 3629 and PCRE2 (which the BPE pre-tokenizer runs with PCRE2_NO_UTF_CHECK) are.
#include "llmc/core/error.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

std::string utf8_replace_invalid(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t off = 0;
  while (const char* why = utf8_problem(s, &off)) {
    (void)why;
    out.append(s.substr(0, off));
    out.append("\xEF\xBF\xBD");  // U+FFFD for the one offending byte; the rest is checked again
    s.remove_prefix(off + 1);
  }
  out.append(s);
  return out;
}

const char* utf8_problem(std::string_view s, size_t* offset) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (offset) *offset = i;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else if (c < 0xc0) {
      return "unexpected continuation byte";
    } else if (c == 0xc0 || c == 0xc1) {
      return "overlong encoding";  // a two-byte form of an ASCII character
    } else {
      return "invalid lead byte";  // 0xf5..0xff: past U+10FFFF or never valid
    }
    for (size_t k = 1; k < len; ++k) {
      if (i + k >= n) return "truncated sequence";
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return "missing continuation byte";
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) return "overlong encoding";
    if (cp >= 0xd800 && cp <= 0xdfff) return "UTF-16 surrogate";
    if (cp > 0x10ffff) return "code point past U+10FFFF";
    i += len;
  }
  return nullptr;
}

void check_utf8(std::string_view s, const char* what) {
  size_t off = 0;
  if (const char* why = utf8_problem(s, &off)) {
    const unsigned char c = static_cast<unsigned char>(s[off]);
    fail("{}: invalid UTF-8 at byte offset {} (byte 0x{:02x}: {})", what, off, c, why);
  }
}

}  // namespace llmc
