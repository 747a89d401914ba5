// SentencePiece ModelProto reader (include/llmc/tokenizer/spm_model.h): a protobuf wire-format walk
// over the few fields a GGUF vocabulary needs.
#include "llmc/tokenizer/spm_model.h"

#include <cmath>
#include <cstring>
#include <tuple>
#include <unordered_map>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

namespace {

enum Wire : int { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

// One protobuf message: fields in order, each read with the offset of the whole buffer kept for
// error messages.
class Reader {
 public:
  Reader(std::string_view b, size_t base, const std::string& where, const char* msg)
      : b_(b), base_(base), where_(where), msg_(msg) {}

  bool done() const { return p_ >= b_.size(); }

  // Reads the next tag; returns false at the end of the message.
  bool next(uint32_t& field, int& wire) {
    if (done()) return false;
    tag_at_ = p_;
    const uint64_t t = varint();
    field = static_cast<uint32_t>(t >> 3);
    wire = static_cast<int>(t & 7);
    if (field == 0 || t >> 3 > 0x1fffffff) bad("field number {} in {}", t >> 3, msg_);
    if (wire == 3 || wire == 4) bad("group wire type (field {} of {}) is not used by SentencePiece", field, msg_);
    if (wire != kVarint && wire != kFixed64 && wire != kLen && wire != kFixed32)
      bad("unknown wire type {} (field {} of {})", wire, field, msg_);
    return true;
  }

  uint64_t varint() {
    const size_t start = p_;
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (p_ >= b_.size()) bad_at(start, "truncated varint in {}", msg_);
      const uint8_t c = static_cast<uint8_t>(b_[p_++]);
      if (shift == 63 && c > 1) bad_at(start, "varint longer than 64 bits in {}", msg_);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (c < 0x80) return v;
    }
    bad_at(start, "varint longer than 10 bytes in {}", msg_);
  }

  // A length-delimited payload; its offset in the whole buffer goes to *at.
  std::string_view bytes(size_t* at = nullptr) {
    const size_t start = p_;
    const uint64_t n = varint();
    if (n > b_.size() - p_) bad_at(start, "length {} runs past the end of {} ({} bytes left)", n, msg_, b_.size() - p_);
    if (at) *at = base_ + p_;
    std::string_view s = b_.substr(p_, static_cast<size_t>(n));
    p_ += static_cast<size_t>(n);
    return s;
  }

  float fixed32_float() {
    if (b_.size() - p_ < 4) bad_at(p_, "truncated float in {}", msg_);
    uint32_t u = 0;
    for (int k = 0; k < 4; ++k) u |= static_cast<uint32_t>(static_cast<uint8_t>(b_[p_ + k])) << (8 * k);
    p_ += 4;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }

  void skip(int wire) {
    switch (wire) {
      case kVarint: varint(); break;
      case kLen: bytes(); break;
      case kFixed64:
      case kFixed32: {
        const size_t n = wire == kFixed64 ? 8 : 4;
        if (b_.size() - p_ < n) bad_at(p_, "truncated fixed{} field in {}", 8 * n, msg_);
        p_ += n;
        break;
      }
    }
  }

  // The field just read must have wire type `want` (a mismatch is a malformed file, not a field
  // to skip: these numbers are taken by sentencepiece_model.proto).
  void expect(uint32_t field, int wire, int want, const char* name) {
    if (wire != want) bad("field {} ({}) of {} has wire type {}, expected {}", field, name, msg_, wire, want);
  }

  // int32 fields are varints of the sign-extended 64-bit value.
  int32_t int32_value(const char* name) {
    const size_t start = p_;
    const auto v = static_cast<int64_t>(varint());
    if (v < INT32_MIN || v > INT32_MAX) bad_at(start, "{} = {} is not an int32 in {}", name, v, msg_);
    return static_cast<int32_t>(v);
  }

  template <typename... Args>
  [[noreturn]] void bad(fmt::format_string<Args...> f, Args&&... args) const {
    bad_offset(tag_at_, fmt::format(f, std::forward<Args>(args)...));
  }
  template <typename... Args>
  [[noreturn]] void bad_at(size_t at, fmt::format_string<Args...> f, Args&&... args) const {
    bad_offset(at, fmt::format(f, std::forward<Args>(args)...));
  }
  // `abs`: an offset in the whole file.
  template <typename... Args>
  [[noreturn]] void bad_abs(size_t abs, fmt::format_string<Args...> f, Args&&... args) const {
    bad_offset(abs - base_, fmt::format(f, std::forward<Args>(args)...));
  }

 private:
  [[noreturn]] void bad_offset(size_t at, const std::string& m) const {
    fail("{}: not a valid SentencePiece model: {} (byte offset {})", where_, m, base_ + at);
  }

  std::string_view b_;
  size_t base_;
  const std::string& where_;
  const char* msg_;
  size_t p_ = 0, tag_at_ = 0;
};

void read_piece(Reader& outer, std::string_view b, size_t base, const std::string& where, SpmModelProto& m) {
  Reader r(b, base, where, "SentencePiece");
  bool has_piece = false;
  std::string piece;
  float score = 0.0f;
  uint64_t type = 1;  // NORMAL
  size_t piece_at = base;
  uint32_t f;
  int w;
  while (r.next(f, w)) {
    if (f == 1) {
      r.expect(f, w, kLen, "piece");
      piece = std::string(r.bytes(&piece_at));
      has_piece = true;
    } else if (f == 2) {
      r.expect(f, w, kFixed32, "score");
      score = r.fixed32_float();
    } else if (f == 3) {
      r.expect(f, w, kVarint, "type");
      type = r.varint();
    } else {
      r.skip(w);
    }
  }
  const size_t id = m.pieces.size();
  if (!has_piece) outer.bad("piece {} has no text (field 1)", id);
  size_t off = 0;
  if (const char* why = utf8_problem(piece, &off))
    outer.bad_abs(piece_at + off, "piece {} is not valid UTF-8 ({})", id, why);
  if (!std::isfinite(score)) outer.bad("piece {} '{}' has a non-finite score", id, printable_token(piece));
  if (type < 1 || type > 6) outer.bad("piece {} '{}' has unknown type {}", id, printable_token(piece), type);
  m.pieces.push_back(std::move(piece));
  m.scores.push_back(score);
  m.types.push_back(static_cast<GGUFTokenType>(type));
}

void read_trainer(std::string_view b, size_t base, const std::string& where, SpmModelProto& m, bool* ids_set) {
  Reader r(b, base, where, "TrainerSpec");
  uint32_t f;
  int w;
  while (r.next(f, w)) {
    switch (f) {
      case 3: r.expect(f, w, kVarint, "model_type"); m.model_type = r.int32_value("model_type"); break;
      case 35: r.expect(f, w, kVarint, "byte_fallback"); m.byte_fallback = r.varint() != 0; break;
      case 40: r.expect(f, w, kVarint, "unk_id"); m.unk_id = r.int32_value("unk_id"); ids_set[0] = true; break;
      case 41: r.expect(f, w, kVarint, "bos_id"); m.bos_id = r.int32_value("bos_id"); ids_set[1] = true; break;
      case 42: r.expect(f, w, kVarint, "eos_id"); m.eos_id = r.int32_value("eos_id"); ids_set[2] = true; break;
      case 43: r.expect(f, w, kVarint, "pad_id"); m.pad_id = r.int32_value("pad_id"); ids_set[3] = true; break;
      default: r.skip(w);
    }
  }
}

void read_normalizer(std::string_view b, size_t base, const std::string& where, SpmModelProto& m) {
  Reader r(b, base, where, "NormalizerSpec");
  uint32_t f;
  int w;
  while (r.next(f, w)) {
    switch (f) {
      case 1: r.expect(f, w, kLen, "name"); m.normalizer_name = std::string(r.bytes()); break;
      case 3: r.expect(f, w, kVarint, "add_dummy_prefix"); m.add_dummy_prefix = r.varint() != 0; break;
      case 4:
        r.expect(f, w, kVarint, "remove_extra_whitespaces");
        m.remove_extra_whitespaces = r.varint() != 0;
        break;
      default: r.skip(w);
    }
  }
}

}  // namespace

std::string printable_token(std::string_view s) {
  constexpr size_t kMax = 48;
  size_t end = s.size();
  if (end > kMax) {
    end = kMax;
    while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;  // not inside a character
  }
  std::string out;
  for (size_t i = 0; i < end; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f)
      out += fmt::format("\\x{:02X}", c);
    else
      out += static_cast<char>(c);
  }
  if (end < s.size()) out += "...";
  return out;
}

std::string spm_model_type_name(int t) {
  switch (t) {
    case 1: return "UNIGRAM";
    case 2: return "BPE";
    case 3: return "WORD";
    case 4: return "CHAR";
    default: return fmt::format("type {}", t);
  }
}

SpmModelProto parse_spm_model(std::string_view b, const std::string& where) {
  if (b.empty()) fail("{}: not a valid SentencePiece model: the file is empty", where);
  SpmModelProto m;
  Reader r(b, 0, where, "ModelProto");
  bool trainer = false, normalizer = false;
  std::unordered_map<std::string, size_t> seen;
  bool ids_set[4] = {false, false, false, false};  // unk, bos, eos, pad
  uint32_t f;
  int w;
  while (r.next(f, w)) {
    size_t at = 0;
    if (f == 1) {
      r.expect(f, w, kLen, "pieces");
      std::string_view sub = r.bytes(&at);
      read_piece(r, sub, at, where, m);
      const size_t i = m.pieces.size() - 1;
      auto [it, fresh] = seen.emplace(m.pieces[i], i);
      if (!fresh) r.bad("piece {} '{}' repeats piece {}", i, printable_token(m.pieces[i]), it->second);
    } else if (f == 2) {
      r.expect(f, w, kLen, "trainer_spec");
      if (trainer) r.bad("trainer_spec appears twice");
      trainer = true;
      std::string_view sub = r.bytes(&at);
      read_trainer(sub, at, where, m, ids_set);
    } else if (f == 3) {
      r.expect(f, w, kLen, "normalizer_spec");
      if (normalizer) r.bad("normalizer_spec appears twice");
      normalizer = true;
      std::string_view sub = r.bytes(&at);
      read_normalizer(sub, at, where, m);
    } else {
      r.skip(w);
    }
  }
  const size_t n = m.pieces.size();
  if (n == 0) fail("{}: not a valid SentencePiece model: it has no pieces (ModelProto field 1)", where);
  if (n > static_cast<size_t>(INT32_MAX)) fail("{}: not a valid SentencePiece model: too many pieces", where);
  // A set id must name a piece; a default one (unk 0, bos 1, eos 2) past a tiny vocabulary is none.
  for (auto [name, id, set] : {std::make_tuple("unk_id", &m.unk_id, ids_set[0]), std::make_tuple("bos_id", &m.bos_id, ids_set[1]),
                               std::make_tuple("eos_id", &m.eos_id, ids_set[2]), std::make_tuple("pad_id", &m.pad_id, ids_set[3])})
    if (*id < -1 || *id >= static_cast<int64_t>(n)) {
      if (set) fail("{}: not a valid SentencePiece model: trainer_spec.{} = {} is outside the {} pieces", where, name, *id, n);
      *id = -1;
    }
  return m;
}

SpmModelProto read_spm_model(const std::string& path) {
  if (!file_exists(path)) fail("{}: tokenizer model not found", path);
  return parse_spm_model(read_text_file(path), path);
}

}  // namespace llmc
