#include "llmc/data/text_docs.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0, hit;
  while ((hit = s.find(from, pos)) != std::string::npos) {
    out.append(s, pos, hit - pos);
    out += to;
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

// Python re.sub(pattern, replacement, s) for the replacement forms used here ("\1" groups only).
std::string regex_sub(const std::string& s, const char* pattern, const char* replacement) {
  int err = 0;
  PCRE2_SIZE erroff = 0;
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> re(
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED, PCRE2_UTF, &err, &erroff, nullptr),
      pcre2_code_free);
  if (!re) fail("internal: bad regex {}", pattern);
  // Python's "\1" -> PCRE2 substitute's "$1".
  std::string repl;
  for (const char* p = replacement; *p; ++p) {
    if (p[0] == '\\' && p[1] >= '1' && p[1] <= '9') {
      repl += '$';
      repl += p[1];
      ++p;
    } else if (*p == '$') {
      repl += "$$";
    } else {
      repl += *p;
    }
  }
  PCRE2_SIZE out_len = s.size() * 2 + 64;
  std::string out(out_len, '\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    out_len = out.size();
    int rc = pcre2_substitute(re.get(), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), 0,
                              PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, nullptr, nullptr,
                              reinterpret_cast<PCRE2_SPTR>(repl.data()), repl.size(),
                              reinterpret_cast<PCRE2_UCHAR*>(out.data()), &out_len);
    if (rc >= 0) {
      out.resize(out_len);
      return out;
    }
    if (rc != PCRE2_ERROR_NOMEMORY) fail("internal: regex substitution failed ({})", rc);
    out.assign(out_len + 1, '\0');
  }
  fail("internal: regex substitution failed");
}

}  // namespace

std::string wikitext_detokenize(const std::string& page) {
  std::string s = page;
  // contractions
  replace_all(s, "s '", "s'");
  s = regex_sub(s, R"(/' [0-9]/)", R"(/'[0-9]/)");
  // number separators
  replace_all(s, " @-@ ", "-");
  replace_all(s, " @,@ ", ",");
  replace_all(s, " @.@ ", ".");
  // punctuation
  replace_all(s, " : ", ": ");
  replace_all(s, " ; ", "; ");
  replace_all(s, " . ", ". ");
  replace_all(s, " ! ", "! ");
  replace_all(s, " ? ", "? ");
  replace_all(s, " , ", ", ");
  // double brackets
  s = regex_sub(s, R"(\(\s*([^\)]*?)\s*\))", R"((\1))");
  s = regex_sub(s, R"(\[\s*([^\]]*?)\s*\])", R"([\1])");
  s = regex_sub(s, R"(\{\s*([^}]*?)\s*\})", R"({\1})");
  s = regex_sub(s, R"("\s*([^"]*?)\s*")", R"("\1")");
  s = regex_sub(s, R"('\s*([^']*?)\s*')", R"('\1')");
  // miscellaneous
  replace_all(s, "= = = =", "====");
  replace_all(s, "= = =", "===");
  replace_all(s, "= =", "==");
  replace_all(s, " \xC2\xB0 ", "\xC2\xB0");
  replace_all(s, " \n", "\n");
  replace_all(s, "\n ", "\n");
  replace_all(s, " N ", " 1 ");
  replace_all(s, " 's", "'s");
  return s;
}

int64_t count_words(const std::string& s) {
  // Python's \s on str: ASCII whitespace \t\n\v\f\r, space, \x1c-\x1f, \x85 and Unicode spaces.
  // wikitext holds only ASCII whitespace (and U+00A0 NBSP, which Python also counts), so runs of
  // those are counted; other Unicode spaces are rare enough to ignore.
  int64_t runs = 0;
  bool in_ws = false;
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = 1;
    bool ws = c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
    if (c == 0xC2 && i + 1 < s.size() && (static_cast<unsigned char>(s[i + 1]) == 0xA0 ||
                                          static_cast<unsigned char>(s[i + 1]) == 0x85)) {
      ws = true;
      len = 2;
    }
    if (ws && !in_ws) ++runs;
    in_ws = ws;
    i += len;
  }
  return runs + 1;
}

std::vector<TextDocument> load_wikitext_docs(const std::string& path) {
  if (!file_exists(path)) fail("{}: WikiText-2 file not found (set --data-dir)", path);
  const std::string raw = read_text_file(path);
  if (raw.empty()) fail("{}: empty file", path);
  check_utf8(raw, path.c_str());
  std::vector<TextDocument> docs;
  std::string page;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    size_t end = nl == std::string::npos ? raw.size() : nl + 1;
    std::string line = raw.substr(pos, end - pos);
    pos = end;
    // An article title line looks like " = Title = "; section lines start with " = = ", and a few
    // body lines start with " = " but do not end with " = " (e.g. " = National record").
    std::string bare = line;
    while (!bare.empty() && (bare.back() == '\n' || bare.back() == '\r')) bare.pop_back();
    const bool heading = bare.rfind(" = ", 0) == 0 && bare.rfind(" = = ", 0) != 0 && bare.size() >= 6 &&
                         bare.compare(bare.size() - 3, 3, " = ") == 0;
    // Text before the first title (a blank line) stays with the first article.
    if (heading && !page.empty() && page.find_first_not_of(" \n") != std::string::npos) {
      docs.push_back({wikitext_detokenize(page), page});
      page.clear();
    }
    page += line;
  }
  if (!page.empty()) docs.push_back({wikitext_detokenize(page), page});
  return docs;
}

std::vector<TextDocument> load_wikitext_raw(const std::string& path) {
  if (!file_exists(path)) fail("{}: WikiText-2 file not found (set --data-dir)", path);
  std::string raw = read_text_file(path);
  if (raw.empty()) fail("{}: empty file", path);
  check_utf8(raw, path.c_str());
  return {TextDocument{raw, raw}};
}

std::vector<TextDocument> load_text_docs(const std::string& path) {
  if (!file_exists(path)) fail("{}: text file not found", path);
  const std::string raw = read_text_file(path);
  if (raw.find_first_not_of(" \t\r\n") == std::string::npos) fail("{}: empty text file", path);
  check_utf8(raw, path.c_str());
  const std::string sep = "<|endoftext|>";
  std::vector<TextDocument> docs;
  std::string cur;
  bool saw_sep = false;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t nl = raw.find('\n', pos);
    size_t end = nl == std::string::npos ? raw.size() : nl + 1;
    std::string line = raw.substr(pos, end - pos);
    pos = end;
    std::string bare = line;
    while (!bare.empty() && (bare.back() == '\n' || bare.back() == '\r')) bare.pop_back();
    if (bare == sep) {
      saw_sep = true;
      while (!cur.empty() && (cur.back() == '\n' || cur.back() == '\r')) cur.pop_back();
      if (cur.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back({cur, cur});
      cur.clear();
    } else {
      cur += line;
    }
  }
  if (!saw_sep && cur.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back({cur, cur});
  if (docs.empty()) fail("{}: no complete document (text before a '<|endoftext|>' line)", path);
  return docs;
}

}  // namespace llmc
