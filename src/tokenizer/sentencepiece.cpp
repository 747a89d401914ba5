#include "llmc/tokenizer/sentencepiece.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <mutex>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "spm_shim_api.h"

#ifndef LLMC_SHIM_BUILD_DIR
#define LLMC_SHIM_BUILD_DIR ""
#endif

namespace llmc {

namespace {

constexpr const char* kShimName = "libllmc_spm_shim.so";

struct Shim {
  void* lib = nullptr;
  llmc_spm_load_fn load = nullptr;
  llmc_spm_free_fn free = nullptr;
  llmc_spm_info_fn info = nullptr;
  llmc_spm_encode_fn encode = nullptr;
  llmc_spm_decode_fn decode = nullptr;
  llmc_spm_is_control_fn is_control = nullptr;
};

const Shim& shim() {
  static Shim s;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    std::string path = find_spm_shim();
    if (path.empty()) {
      error = fmt::format("{} not found (set LLMC_SPM_SHIM to its path)", kShimName);
      return;
    }
    s.lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!s.lib) {
      error = fmt::format("{}: dlopen failed: {}", path, ::dlerror());
      return;
    }
    s.load = reinterpret_cast<llmc_spm_load_fn>(::dlsym(s.lib, "llmc_spm_load"));
    s.free = reinterpret_cast<llmc_spm_free_fn>(::dlsym(s.lib, "llmc_spm_free"));
    s.info = reinterpret_cast<llmc_spm_info_fn>(::dlsym(s.lib, "llmc_spm_info"));
    s.encode = reinterpret_cast<llmc_spm_encode_fn>(::dlsym(s.lib, "llmc_spm_encode"));
    s.decode = reinterpret_cast<llmc_spm_decode_fn>(::dlsym(s.lib, "llmc_spm_decode"));
    s.is_control = reinterpret_cast<llmc_spm_is_control_fn>(::dlsym(s.lib, "llmc_spm_is_control"));
    if (!s.load || !s.free || !s.info || !s.encode || !s.decode || !s.is_control) {
      error = fmt::format("{}: missing symbols (stale build?)", path);
      s.lib = nullptr;
    }
  });
  if (!s.lib) fail("sentencepiece tokenizer unavailable: {}", error);
  return s;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const SpecialIds& special) : path_(path) {
    const Shim& s = shim();
    char err[512] = {0};
    h_ = s.load(path.c_str(), err, sizeof err);
    if (!h_) fail("{}: cannot load SentencePiece model: {}", path, err);
    int unk = 0;
    s.info(h_, &vocab_, &bos_, &eos_, &unk);
    if (special.bos >= 0) bos_ = special.bos;
    if (special.eos >= 0) eos_ = special.eos;
    add_bos_ = special.add_bos;
  }
  ~SentencePieceTokenizer() override {
    if (h_) shim().free(h_);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    check_utf8(text, "prompt text");
    const Shim& s = shim();
    std::vector<int32_t> ids(text.size() + 16);
    size_t n = 0;
    char err[512] = {0};
    if (s.encode(h_, text.data(), text.size(), ids.data(), ids.size(), &n, err, sizeof err) != 0)
      fail("{}: encode failed: {}", path_, err);
    if (n > ids.size()) {
      ids.resize(n);
      if (s.encode(h_, text.data(), text.size(), ids.data(), ids.size(), &n, err, sizeof err) != 0)
        fail("{}: encode failed: {}", path_, err);
    }
    ids.resize(n);
    if (add_bos && bos_ >= 0) ids.insert(ids.begin(), bos_);
    return ids;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    const Shim& s = shim();
    std::vector<int32_t> kept;
    kept.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_) fail("decode: token id {} out of range [0, {})", id, vocab_);
      if (!s.is_control(h_, id)) kept.push_back(id);
    }
    std::string out(kept.size() * 8 + 16, '\0');
    size_t n = 0;
    char err[512] = {0};
    if (s.decode(h_, kept.data(), kept.size(), out.data(), out.size(), &n, err, sizeof err) != 0)
      fail("{}: decode failed: {}", path_, err);
    if (n > out.size()) {
      out.resize(n);
      s.decode(h_, kept.data(), kept.size(), out.data(), out.size(), &n, err, sizeof err);
    }
    out.resize(n);
    return out;
  }

  int vocab_size() const override { return vocab_; }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  bool add_bos_default() const override { return add_bos_; }
  std::string type() const override { return "sentencepiece"; }

 private:
  std::string path_;
  void* h_ = nullptr;
  int vocab_ = 0, bos_ = -1, eos_ = -1;
  bool add_bos_ = true;
};

std::string exe_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  buf[n] = '\0';
  return parent_dir(buf);
}

}  // namespace

std::string find_spm_shim() {
  if (const char* env = std::getenv("LLMC_SPM_SHIM"); env && *env) return file_exists(env) ? env : "";
  for (const std::string& dir : {exe_dir(), exe_dir() + "/../lib", std::string(LLMC_SHIM_BUILD_DIR)}) {
    if (dir.empty()) continue;
    std::string p = path_join(dir, kShimName);
    if (file_exists(p)) return p;
  }
  return "";
}

std::unique_ptr<Tokenizer> load_sentencepiece(const std::string& model_path, const SpecialIds& special) {
  if (!file_exists(model_path)) fail("{}: tokenizer model not found", model_path);
  return std::make_unique<SentencePieceTokenizer>(model_path, special);
}

}  // namespace llmc
