// SentencePiece-style BPE without libsentencepiece (see include/llmc/tokenizer/spm_native.h).
#include "llmc/tokenizer/spm_native.h"

#include <cmath>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "llmc/core/error.h"

namespace llmc {

namespace {

constexpr const char* kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space
constexpr size_t kSpaceLen = 3;

// Length of the UTF-8 sequence starting with lead byte c (text was validated before).
size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : 4; }

// "<0xAB>" -> 0xAB; -1 when `p` is not a byte piece.
int parse_byte_piece(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = p[k];
    const int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

int token_id_or_none(const GGUFFile& f, const char* key, size_t vocab) {
  if (!f.has(key)) return -1;
  const uint32_t id = f.get_u32(key);
  if (id == 0xffffffffu) return -1;
  if (id >= vocab) fail("{}: metadata '{}' = {} is outside the vocabulary ({} tokens)", f.path(), key, id, vocab);
  return static_cast<int>(id);
}

}  // namespace

struct SpmNativeTokenizer::Impl {
  SpmVocab v;
  // Pieces that text may be segmented into: NORMAL and USER_DEFINED (control, unknown, unused and
  // byte pieces never come out of merging, as in SentencePiece).
  std::unordered_map<std::string, int> piece_to_id;
  int byte_id[256];
  int byte_value_of_id(int id) const { return v.types[id] == GGUFTokenType::BYTE ? parse_byte_piece(v.pieces[id]) : -1; }
};

SpmNativeTokenizer::SpmNativeTokenizer(SpmVocab vocab) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.v = std::move(vocab);
  SpmVocab& v = m.v;
  const size_t n = v.pieces.size();
  if (n == 0) fail("{}: the vocabulary is empty", v.source);
  if (n > static_cast<size_t>(INT32_MAX)) fail("{}: the vocabulary is too large", v.source);
  if (v.scores.empty()) v.scores.assign(n, 0.0f);
  if (v.types.empty()) v.types.assign(n, GGUFTokenType::NORMAL);
  if (v.scores.size() != n) fail("{}: {} scores for {} tokens", v.source, v.scores.size(), n);
  if (v.types.size() != n) fail("{}: {} token types for {} tokens", v.source, v.types.size(), n);
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(v.scores[i])) fail("{}: the score of token {} is NaN", v.source, i);
  for (int* id : {&v.bos, &v.eos, &v.unk})
    if (*id < -1 || *id >= static_cast<int>(n)) fail("{}: special token id {} is outside the vocabulary", v.source, *id);

  std::fill(std::begin(m.byte_id), std::end(m.byte_id), -1);
  for (size_t i = 0; i < n; ++i) {
    const auto t = v.types[i];
    if (t == GGUFTokenType::BYTE) {
      const int b = parse_byte_piece(v.pieces[i]);
      if (b < 0) fail("{}: token {} '{}' has type BYTE but is not of the form <0xXX>", v.source, i, v.pieces[i]);
      if (m.byte_id[b] < 0) m.byte_id[b] = static_cast<int>(i);
    } else if ((t == GGUFTokenType::NORMAL || t == GGUFTokenType::USER_DEFINED) && !v.pieces[i].empty()) {
      m.piece_to_id.emplace(v.pieces[i], static_cast<int>(i));  // first wins on duplicates
    }
  }
}

SpmNativeTokenizer::~SpmNativeTokenizer() = default;

int SpmNativeTokenizer::vocab_size() const { return static_cast<int>(impl_->v.pieces.size()); }
int SpmNativeTokenizer::bos_id() const { return impl_->v.bos; }
int SpmNativeTokenizer::eos_id() const { return impl_->v.eos; }
bool SpmNativeTokenizer::add_bos_default() const { return impl_->v.add_bos; }

const std::string& SpmNativeTokenizer::piece(int id) const {
  if (id < 0 || id >= vocab_size()) fail("{}: token id {} is outside the vocabulary ({} tokens)", impl_->v.source, id, vocab_size());
  return impl_->v.pieces[id];
}

std::vector<int32_t> SpmNativeTokenizer::encode(std::string_view text, bool add_bos) const {
  const Impl& m = *impl_;
  check_utf8(text, "tokenizer input");
  std::vector<int32_t> out;
  if (add_bos && m.v.bos >= 0) out.push_back(m.v.bos);
  if (text.empty()) return out;

  // Dummy prefix and space escaping.
  std::string s;
  s.reserve(text.size() * 3 / 2 + kSpaceLen);
  if (m.v.add_space_prefix) s += kSpace;
  for (char c : text) {
    if (c == ' ')
      s += kSpace;
    else
      s += c;
  }

  // One symbol per UTF-8 character; merged symbols keep the index of their left part and stay
  // contiguous in `s`, so a symbol is just (offset, length).
  struct Symbol {
    size_t off, len;
    int prev, next;
  };
  std::vector<Symbol> sym;
  for (size_t off = 0; off < s.size();) {
    const size_t len = std::min(utf8_len(static_cast<unsigned char>(s[off])), s.size() - off);
    const int idx = static_cast<int>(sym.size());
    sym.push_back({off, len, idx - 1, off + len < s.size() ? idx + 1 : -1});
    off += len;
  }

  struct Bigram {
    float score;
    int left, right;
    size_t len;
  };
  // Highest score first; equal scores: leftmost first (llama.cpp's llm_bigram_spm comparator).
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].len + sym[right].len;
    auto it = m.piece_to_id.find(s.substr(sym[left].off, len));
    if (it == m.piece_to_id.end()) return;
    queue.push({m.v.scores[it->second], left, right, len});
  };
  for (int i = 1; i < static_cast<int>(sym.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    // Stale entry: one side was merged away or grew since the pair was queued.
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }

  for (int i = sym.empty() ? -1 : 0; i != -1; i = sym[i].next) {
    const std::string piece = s.substr(sym[i].off, sym[i].len);
    auto it = m.piece_to_id.find(piece);
    if (it != m.piece_to_id.end()) {
      out.push_back(it->second);
      continue;
    }
    // Not a piece: byte fallback.
    for (unsigned char c : piece) {
      int id = m.byte_id[c];
      if (id < 0) id = m.v.unk;
      if (id < 0) fail("{}: cannot encode byte 0x{:02x}: no <0x{:02X}> piece and no <unk>", m.v.source, c, c);
      out.push_back(id);
    }
  }
  return out;
}

std::string SpmNativeTokenizer::decode(const std::vector<int32_t>& ids) const {
  const Impl& m = *impl_;
  std::string out;
  // SentencePiece drops the "▁" that starts the first piece (the dummy prefix), once: this encoder
  // keeps whitespace runs (remove_extra_whitespaces off), so decode(encode(s)) == s.
  bool prefix_pending = m.v.add_space_prefix;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      fail("{}: cannot decode token id {}: outside the vocabulary ({} tokens)", m.v.source, id, vocab_size());
    const GGUFTokenType t = m.v.types[id];
    if (t == GGUFTokenType::CONTROL) continue;
    if (t == GGUFTokenType::BYTE) {
      out += static_cast<char>(m.byte_value_of_id(id));
      continue;
    }
    if (t == GGUFTokenType::UNKNOWN) {
      out += " \xE2\x81\x87 ";  // SentencePiece's surface for <unk>: " ⁇ "
      continue;
    }
    std::string_view p = m.v.pieces[id];
    if (!out.empty()) prefix_pending = false;
    if (prefix_pending && p.substr(0, kSpaceLen) == kSpace) {
      p.remove_prefix(kSpaceLen);
      prefix_pending = false;
    }
    for (size_t k = 0; k < p.size();) {
      if (p.compare(k, kSpaceLen, kSpace) == 0) {
        out += ' ';
        k += kSpaceLen;
      } else {
        out += p[k++];
      }
    }
  }
  return out;
}

std::unique_ptr<Tokenizer> spm_native_from_gguf(const GGUFFile& f) {
  const std::string model = f.get_string_or("tokenizer.ggml.model", "");
  if (model != "llama")
    fail("{}: tokenizer.ggml.model is '{}', not 'llama' (SentencePiece-style)", f.path(), model);
  SpmVocab v;
  v.source = f.path();
  v.pieces = f.get_string_array("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.scores")) v.scores = f.get_f32_array("tokenizer.ggml.scores");
  if (f.has("tokenizer.ggml.token_type")) {
    for (int32_t t : f.get_i32_array("tokenizer.ggml.token_type")) {
      if (t < 0 || t > static_cast<int32_t>(GGUFTokenType::BYTE))
        fail("{}: tokenizer.ggml.token_type holds unknown type {}", f.path(), t);
      v.types.push_back(static_cast<GGUFTokenType>(t));
    }
  }
  if (!v.scores.empty() && v.scores.size() != v.pieces.size())
    fail("{}: tokenizer.ggml.scores has {} entries for {} tokens", f.path(), v.scores.size(), v.pieces.size());
  if (!v.types.empty() && v.types.size() != v.pieces.size())
    fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", f.path(), v.types.size(), v.pieces.size());
  v.bos = token_id_or_none(f, "tokenizer.ggml.bos_token_id", v.pieces.size());
  v.eos = token_id_or_none(f, "tokenizer.ggml.eos_token_id", v.pieces.size());
  v.unk = token_id_or_none(f, "tokenizer.ggml.unknown_token_id", v.pieces.size());
  v.add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", true);
  v.add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix", true);
  return std::make_unique<SpmNativeTokenizer>(std::move(v));
}

}  // namespace llmc
