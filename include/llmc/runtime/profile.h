#pragma once
// Where a forward's time goes, op by op (`bench --profile`): the runtime engine adds each op's wall
// time here while a profile is set (RuntimeEngine::set_profile), so a decode step can be laid next
// to what the latency table predicts for the same ops. The groups are the LUT's parts (lut.h):
// every linear by its shape and bits; "attention" (split of q|k|v, RoPE, cache append, attention);
// "norms, SwiGLU, residuals"; "embedding, final norm, lm_head".
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>

namespace llmc::rt {

struct OpTime {
  int64_t calls = 0;
  double seconds = 0;
};

struct OpProfile {
  // (N, K, bits, group): bits 16 = dense fp32 (group 0)
  std::map<std::tuple<int64_t, int64_t, int, int>, OpTime> linears;
  std::map<std::string, OpTime> groups;                           // the other parts, by name
  static constexpr const char* kAttention = "attention";
  static constexpr const char* kLayerFixed = "norms, SwiGLU, residuals";
  static constexpr const char* kModelFixed = "embedding, final norm, lm_head";
};

// Adds the wall time from construction to destruction to *t (nothing when t is null).
class OpTimer {
 public:
  explicit OpTimer(OpTime* t) : t_(t) {
    if (t_) t0_ = std::chrono::steady_clock::now();
  }
  ~OpTimer() {
    if (!t_) return;
    t_->calls += 1;
    t_->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpTime* t_;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace llmc::rt
