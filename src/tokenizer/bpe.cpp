// Byte-level BPE core: byte <-> character map, pre-tokenizer regexes (PCRE2), special-token
// partition, ranked merges. Loaders live in bpe_gguf.cpp and bpe_json.cpp.
#include "llmc/tokenizer/bpe.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include "llmc/core/error.h"

namespace llmc {

const char* const kGPT2PreRegex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

// llama.cpp's adaptation of the Llama-3 / Qwen2 tokenizer.json regexes: the case-insensitive
// contraction group (?i:'s|...) spelled out, so it cannot case-fold to other letters (e.g. U+017F).
const char* const kLlama3PreRegex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2PreRegex =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// ---- GPT-2 byte-level map ----

struct ByteMap {
  std::array<uint32_t, 256> to_cp{};
  std::array<int, 324> from_cp{};  // code points 0..323 (the map's range) -> byte, -1 otherwise
  std::array<std::string, 256> to_utf8;
  ByteMap() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      to_cp[b] = printable ? static_cast<uint32_t>(b) : next++;
      from_cp[to_cp[b]] = b;
      const uint32_t cp = to_cp[b];
      std::string s;
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {  // all map targets are below U+0800: two bytes
        s += static_cast<char>(0xc0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3f));
      }
      to_utf8[b] = s;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4; }

bool valid_utf8(std::string_view s) { return utf8_problem(s) == nullptr; }

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

struct Regex {
  std::string pattern;
  std::unique_ptr<pcre2_code, CodeDeleter> code;
  bool jit = false;
};

Regex compile_regex(const std::string& pattern, const std::string& source) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail("{}: pre-tokenizer regex /{}/ does not compile at offset {}: {}", source, pattern, off,
         reinterpret_cast<const char*>(msg));
  }
  Regex r;
  r.pattern = pattern;
  r.code.reset(code);
  r.jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // optional speed-up; fall back silently
  return r;
}

// Splits `frag` by one regex: matches and the gaps between them both become pieces.
void split_by(const Regex& re, std::string_view frag, pcre2_match_data* md, std::vector<std::string_view>& out,
              const std::string& source) {
  size_t start = 0, last = 0;
  while (start <= frag.size()) {
    int rc = pcre2_match(re.code.get(), reinterpret_cast<PCRE2_SPTR>(frag.data()), frag.size(), start,
                         PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // a pathological run: retry with the interpreter
      rc = pcre2_match(re.code.get(), reinterpret_cast<PCRE2_SPTR>(frag.data()), frag.size(), start,
                       PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof msg);
      fail("{}: pre-tokenizer regex /{}/ failed: {}", source, re.pattern, reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t s = ov[0], e = ov[1];
    if (e < s || e > frag.size()) fail("{}: pre-tokenizer regex /{}/ returned a reversed match (\\K?)", source, re.pattern);
    if (e == s) {  // empty match: move on by one character
      if (s >= frag.size()) break;
      start = s + std::min(utf8_len(static_cast<unsigned char>(frag[s])), frag.size() - s);
      continue;
    }
    if (s > last) out.push_back(frag.substr(last, s - last));
    out.push_back(frag.substr(s, e - s));
    last = start = e;
  }
  if (last < frag.size()) out.push_back(frag.substr(last));
}

}  // namespace

std::string byte_level_encode(std::string_view bytes) {
  const ByteMap& m = byte_map();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += m.to_utf8[b];
  return out;
}

std::string byte_level_decode(std::string_view text) {
  const ByteMap& m = byte_map();
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    // Map targets are U+0021..U+0143: one byte, or two bytes with a 0xC2..0xC5 lead.
    if (c < 0x80) {
      const int b = m.from_cp[c];
      out += b >= 0 ? static_cast<char>(b) : static_cast<char>(c);
      ++i;
      continue;
    }
    if (c >= 0xc2 && c <= 0xc5 && i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xc0) == 0x80) {
      const uint32_t cp = ((c & 0x1fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3fu);
      const int b = cp < m.from_cp.size() ? m.from_cp[cp] : -1;
      if (b >= 0) {
        out += static_cast<char>(b);
      } else {
        out.append(text.substr(i, 2));
      }
      i += 2;
      continue;
    }
    // Not a map character: copy the whole sequence through.
    const size_t len = std::min(utf8_len(c), text.size() - i);
    out.append(text.substr(i, len));
    i += len;
  }
  return out;
}

std::vector<std::string> bpe_pre_regexes(const std::string& pre, const std::string& where) {
  if (pre == "gpt2") return {kGPT2PreRegex};
  // llama.cpp's smollm (also starcoder, refact, ...): digits first, one per piece, then GPT-2.
  if (pre == "smollm") return {"\\p{N}", kGPT2PreRegex};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") return {kLlama3PreRegex};
  if (pre == "qwen2") return {kQwen2PreRegex};
  fail("{}: unsupported BPE pre-tokenizer '{}' (supported: gpt2, smollm, llama-bpe, llama3, qwen2)", where, pre);
}

struct BPETokenizer::Impl {
  BPEVocab v;
  std::unordered_map<std::string, int> text_to_id;
  // (left id, right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int, int>> merges;
  std::array<int, 256> byte_token{};
  // Special tokens, bucketed by first byte, longest first, for leftmost-longest matching.
  std::array<std::vector<int>, 256> special_by_first;
  bool any_special = false;
  std::vector<Regex> regexes;

  static uint64_t key(int a, int b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

  void bpe_piece(std::string_view piece, std::vector<int32_t>& out) const;
  std::vector<std::string_view> split(std::string_view text, pcre2_match_data* md) const;
};

BPETokenizer::BPETokenizer(BPEVocab vocab) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.v = std::move(vocab);
  BPEVocab& v = m.v;
  const size_t n = v.tokens.size();
  if (n == 0) fail("{}: the vocabulary is empty", v.source);
  if (n > static_cast<size_t>(INT32_MAX)) fail("{}: the vocabulary is too large", v.source);
  if (v.types.empty()) v.types.assign(n, GGUFTokenType::NORMAL);
  if (v.types.size() != n) fail("{}: {} token types for {} tokens", v.source, v.types.size(), n);
  for (int* id : {&v.bos, &v.eos, &v.unk})
    if (*id < -1 || *id >= static_cast<int>(n)) fail("{}: special token id {} is outside the vocabulary", v.source, *id);
  if (v.pre_regexes.empty()) fail("{}: no pre-tokenizer regex", v.source);

  for (size_t i = 0; i < n; ++i) {
    const std::string& t = v.tokens[i];
    if (t.empty()) continue;
    m.text_to_id.emplace(t, static_cast<int>(i));  // first wins on duplicates
    const auto ty = v.types[i];
    if ((ty == GGUFTokenType::CONTROL || ty == GGUFTokenType::USER_DEFINED || ty == GGUFTokenType::UNKNOWN) &&
        valid_utf8(t)) {
      m.special_by_first[static_cast<unsigned char>(t[0])].push_back(static_cast<int>(i));
      m.any_special = true;
    }
  }
  for (auto& bucket : m.special_by_first)
    std::stable_sort(bucket.begin(), bucket.end(),
                     [&](int a, int b) { return v.tokens[a].size() > v.tokens[b].size(); });

  const ByteMap& bm = byte_map();
  for (int b = 0; b < 256; ++b) {
    auto it = m.text_to_id.find(bm.to_utf8[b]);
    m.byte_token[b] = it == m.text_to_id.end() ? -1 : it->second;
  }

  m.merges.reserve(v.merges.size());
  for (size_t r = 0; r < v.merges.size(); ++r) {
    const auto& [a, b] = v.merges[r];
    auto ia = m.text_to_id.find(a), ib = m.text_to_id.find(b), im = m.text_to_id.find(a + b);
    if (ia == m.text_to_id.end() || ib == m.text_to_id.end() || im == m.text_to_id.end())
      fail("{}: merge {} '{} {}' names a token that is not in the vocabulary", v.source, r, a, b);
    m.merges.emplace(Impl::key(ia->second, ib->second), std::make_pair(static_cast<int>(r), im->second));  // first rank wins
  }
  for (const auto& p : v.pre_regexes) m.regexes.push_back(compile_regex(p, v.source));
}

BPETokenizer::~BPETokenizer() = default;

int BPETokenizer::vocab_size() const { return static_cast<int>(impl_->v.tokens.size()); }
int BPETokenizer::bos_id() const { return impl_->v.bos; }
int BPETokenizer::eos_id() const { return impl_->v.eos; }
bool BPETokenizer::add_bos_default() const { return impl_->v.add_bos; }

int BPETokenizer::token_id(std::string_view text) const {
  auto it = impl_->text_to_id.find(std::string(text));
  return it == impl_->text_to_id.end() ? -1 : it->second;
}

const std::string& BPETokenizer::token_text(int id) const {
  if (id < 0 || id >= vocab_size())
    fail("{}: token id {} is outside the vocabulary ({} tokens)", impl_->v.source, id, vocab_size());
  return impl_->v.tokens[id];
}

std::vector<std::string_view> BPETokenizer::Impl::split(std::string_view text, pcre2_match_data* md) const {
  if (text.empty()) return {};
  std::vector<std::string_view> pieces{text}, next;
  for (const auto& re : regexes) {
    next.clear();
    for (auto p : pieces) split_by(re, p, md, next, v.source);
    pieces.swap(next);
  }
  return pieces;
}

void BPETokenizer::Impl::bpe_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (v.ignore_merges) {
    auto it = text_to_id.find(byte_level_encode(piece));
    if (it != text_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // One symbol per byte (each byte is one byte-level character), linked in a list.
  struct Symbol {
    int id, prev, next;
  };
  std::vector<Symbol> sym(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) {
    int id = byte_token[static_cast<unsigned char>(piece[i])];
    if (id < 0) id = v.unk;
    if (id < 0)
      fail("{}: byte 0x{:02x} has no token and the vocabulary has no unknown token", v.source,
           static_cast<unsigned char>(piece[i]));
    sym[i] = {id, static_cast<int>(i) - 1, i + 1 < piece.size() ? static_cast<int>(i) + 1 : -1};
  }
  if (sym.size() == 1) {
    out.push_back(sym[0].id);
    return;
  }
  struct Pair {
    int rank, left, right, left_id, right_id, merged;
  };
  // Lowest rank first; equal ranks: leftmost first.
  auto later = [](const Pair& a, const Pair& b) { return a.rank > b.rank || (a.rank == b.rank && a.left > b.left); };
  std::priority_queue<Pair, std::vector<Pair>, decltype(later)> queue(later);
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    auto it = merges.find(key(sym[l].id, sym[r].id));
    if (it == merges.end()) return;
    queue.push({it->second.first, l, r, sym[l].id, sym[r].id, it->second.second});
  };
  for (size_t i = 0; i + 1 < sym.size(); ++i) try_add(static_cast<int>(i), static_cast<int>(i) + 1);
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    Symbol& r = sym[p.right];
    // Stale: one side merged away (id -1), changed, or no longer adjacent.
    if (l.id != p.left_id || r.id != p.right_id || l.next != p.right) continue;
    l.id = p.merged;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = p.left;
    r.id = -1;
    r.prev = r.next = -1;
    try_add(l.prev, p.left);
    try_add(p.left, l.next);
  }
  for (int i = 0; i != -1; i = sym[i].next) out.push_back(sym[i].id);
}

std::vector<std::string> BPETokenizer::pre_tokenize(std::string_view text) const {
  check_utf8(text, "tokenizer input");  // strict: the regexes run with PCRE2_NO_UTF_CHECK
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(8, nullptr));
  std::vector<std::string> out;
  for (auto p : impl_->split(text, md.get())) out.emplace_back(p);
  return out;
}

std::vector<int32_t> BPETokenizer::encode(std::string_view text, bool add_bos) const {
  const Impl& m = *impl_;
  check_utf8(text, "tokenizer input");  // strict: the regexes run with PCRE2_NO_UTF_CHECK
  std::vector<int32_t> out;
  if (add_bos && m.v.bos >= 0) out.push_back(m.v.bos);
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(8, nullptr));
  if (!md) fail("{}: out of memory for regex match data", m.v.source);

  auto encode_raw = [&](std::string_view raw) {
    for (auto piece : m.split(raw, md.get())) m.bpe_piece(piece, out);
  };
  if (!m.any_special) {
    encode_raw(text);
    return out;
  }
  // Cut out special tokens, leftmost-longest. Special texts are valid UTF-8 and the text is too,
  // so matches start and end on character boundaries and the stretches between stay valid.
  size_t raw_begin = 0, i = 0;
  while (i < text.size()) {
    int found = -1;
    for (int id : m.special_by_first[static_cast<unsigned char>(text[i])]) {
      const std::string& t = m.v.tokens[id];
      if (text.compare(i, t.size(), t) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++i;
      continue;
    }
    encode_raw(text.substr(raw_begin, i - raw_begin));
    out.push_back(found);
    i += m.v.tokens[found].size();
    raw_begin = i;
  }
  encode_raw(text.substr(raw_begin));
  return out;
}

std::string BPETokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      fail("{}: cannot decode token id {}: outside the vocabulary ({} tokens)", m.v.source, id, vocab_size());
    switch (m.v.types[id]) {
      case GGUFTokenType::CONTROL:
      case GGUFTokenType::UNKNOWN:
        break;  // special tokens are not text
      case GGUFTokenType::USER_DEFINED:
        out += m.v.tokens[id];
        break;
      default:
        out += byte_level_decode(m.v.tokens[id]);
    }
  }
  return out;
}

}  // namespace llmc
