// libllmc_spm_shim.so: the only translation unit that links libsentencepiece (see sentencepiece.h).
#include <sentencepiece_processor.h>

#include <cstring>
#include <string>
#include <vector>

#include "spm_shim_api.h"

namespace {
void set_err(char* err, size_t cap, const std::string& m) {
  if (!err || cap == 0) return;
  std::strncpy(err, m.c_str(), cap - 1);
  err[cap - 1] = '\0';
}
}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* llmc_spm_load(const char* path, char* err, size_t errcap) {
  auto* sp = new sentencepiece::SentencePieceProcessor();
  auto st = sp->Load(path);
  if (!st.ok()) {
    set_err(err, errcap, st.ToString());
    delete sp;
    return nullptr;
  }
  return sp;
}

__attribute__((visibility("default"))) void llmc_spm_free(void* h) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(h);
}

__attribute__((visibility("default"))) int llmc_spm_info(void* h, int* vocab, int* bos, int* eos, int* unk) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  *vocab = sp->GetPieceSize();
  *bos = sp->bos_id();
  *eos = sp->eos_id();
  *unk = sp->unk_id();
  return 0;
}

__attribute__((visibility("default"))) int llmc_spm_encode(void* h, const char* text, size_t len, int32_t* ids,
                                                            size_t cap, size_t* n, char* err, size_t errcap) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  std::vector<int> out;
  auto st = sp->Encode(std::string(text, len), &out);
  if (!st.ok()) {
    set_err(err, errcap, st.ToString());
    return 1;
  }
  *n = out.size();
  for (size_t i = 0; i < out.size() && i < cap; ++i) ids[i] = out[i];
  return 0;
}

__attribute__((visibility("default"))) int llmc_spm_decode(void* h, const int32_t* ids, size_t n_ids, char* out,
                                                            size_t cap, size_t* n, char* err, size_t errcap) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  std::vector<int> v(ids, ids + n_ids);
  std::string text;
  auto st = sp->Decode(v, &text);
  if (!st.ok()) {
    set_err(err, errcap, st.ToString());
    return 1;
  }
  *n = text.size();
  std::memcpy(out, text.data(), std::min(cap, text.size()));
  return 0;
}

__attribute__((visibility("default"))) int llmc_spm_is_control(void* h, int id) {
  auto* sp = static_cast<sentencepiece::SentencePieceProcessor*>(h);
  return sp->IsControl(id) ? 1 : 0;
}
}
