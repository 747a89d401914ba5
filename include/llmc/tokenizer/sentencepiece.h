#pragma once
// SentencePiece tokenizer. Debian's libsentencepiece carries its own protobuf and crashes a
// process that also links libtorch, so it is loaded only through a small shim library
// (libllmc_spm_shim.so) opened with dlopen(RTLD_LOCAL | RTLD_DEEPBIND): its protobuf symbols then
// bind inside the shim and never meet libtorch's.
#include <memory>
#include <string>

#include "llmc/tokenizer/tokenizer.h"

namespace llmc {

struct SpecialIds {
  int bos = -1, eos = -1;
  bool add_bos = true;
};

// model_path: a tokenizer.model (SentencePiece ModelProto). BOS/EOS come from `special` when
// set (>= 0), else from the model.
std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path, const SpecialIds& special);

// Where the shim is looked up: $LLMC_SPM_SHIM, then beside the running executable, then the build
// folder compiled in.
std::string find_spm_shim();

}  // namespace llmc
