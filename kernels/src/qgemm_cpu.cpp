// qgemm_cpu dispatcher: validation, ISA selection, activation preparation, threading; plus the
// fp64 reference kernels.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "llmc_kernels/qgemm.h"
#include "qgemm_impl.h"

namespace llmc::kernels {
namespace {

constexpr int kMaxDim = 1 << 30;
// M at which the AVX paths switch from the fused (decode-in-registers) kernel to the panel
// kernel (dequantize a weight panel to L1 once, then a register-blocked fp32 GEMM over all M).
constexpr int kPanelMinM = 16;

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

bool cpu_has_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & bit_F16C) != 0;
#else
  return false;
#endif
}

bool detect(Isa isa) {
#if defined(LLMC_KERNELS_X86)
  __builtin_cpu_init();
  switch (isa) {
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
    case Isa::kAvx512:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c() &&
             __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    case Isa::kAvx512Vnni:
      return detect(Isa::kAvx512) && __builtin_cpu_supports("avx512vnni");
    default: return true;
  }
#else
  (void)cpu_has_f16c;
  return isa == Isa::kAuto || isa == Isa::kScalar;
#endif
}

int hw_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(std::min(n, 1024u));
}

std::atomic<int> g_default_threads{0};

struct TaskCtx {
  const detail::Problem* p;
  void (*rows)(const detail::Problem&, int, int);
  int rows_per_task;
};

void run_task(void* c, int t) {
  const TaskCtx& ctx = *static_cast<const TaskCtx*>(c);
  const int n0 = t * ctx.rows_per_task;
  const int n1 = std::min(ctx.p->N, n0 + ctx.rows_per_task);
  ctx.rows(*ctx.p, n0, n1);
}

void check_common(const char* who, const float* x, int M, const QMatrixView& w, const float* y) {
  validate(w, who);
  detail::check_xy(who, x, M, w.N, w.K, y);
}

}  // namespace

namespace detail {

float* Scratch::get(size_t n) {
  if (n > cap_) {
    std::free(buf_);
    buf_ = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
    cap_ = buf_ ? n : 0;
    if (!buf_) throw std::bad_alloc();
  }
  return buf_;
}

Scratch::~Scratch() { std::free(buf_); }

void write_panel_output(const Problem& p, int n0, int n1) {
  constexpr int kB = 16;
  for (int m0 = 0; m0 < p.M; m0 += kB) {
    const int mb = std::min(kB, p.M - m0);
    float* y = p.y + static_cast<size_t>(m0) * p.N;
    for (int n = n0; n < n1; ++n) {
      const float* src = p.yT + static_cast<size_t>(n) * p.Mp + m0;
      const float b = p.bias ? p.bias[n] : 0.f;
      for (int i = 0; i < mb; ++i) y[static_cast<size_t>(i) * p.N + n] = src[i] + b;
    }
  }
}

// Reference for round_to_int16_avx2 (qgemm_impl.h): lrint in the current rounding mode; NaN
// lanes are skipped by std::max and a non-finite x sets inv = 0, so x * inv is NaN there and lrint
// gives LONG_MIN, clamped to -32767 (the AVX2 version's cvtps_epi32 gives INT_MIN: the same q).
namespace {
template <class T, long kQmax>
float round_to_int_scalar(const float* x, int n, T* q, int* sum) {
  constexpr float qmax = static_cast<float>(kQmax);
  float amax = 0.f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  const float inv = finite && amax > 0.f ? qmax / amax : 0.f;
  int s = 0;
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<T>(std::clamp(std::lrint(x[i] * inv), -kQmax, kQmax));
    s += q[i];
  }
  *sum = s;
  return finite ? amax / qmax : std::numeric_limits<float>::quiet_NaN();
}
}  // namespace

float round_to_int16_scalar(const float* x, int n, int16_t* q, int* sum) {
  return round_to_int_scalar<int16_t, 32767L>(x, n, q, sum);
}
float round_to_int8_scalar(const float* x, int n, int8_t* q, int* sum) {
  return round_to_int_scalar<int8_t, 127L>(x, n, q, sum);
}

// The fused AVX2 kernel's activations (Problem::xq): per row m and group g,
// dx = max|x| / 32767 over the group's real columns, xq = round(x / dx) (0 in the padding), laid
// out per block in avx2_lane_code() order for each bit plane; plus dx and sum(xq) per group.
// isa = kScalar is the reference for xq_fused_avx2 (rounding, then a scalar scatter).
void prepare_xq(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa) {
  const int planes = avx2_planes(p.bits);
  int perm[2][kBlockCodes];
  for (int pl = 0; pl < planes; ++pl)
    for (int l = 0; l < kBlockCodes; ++l) perm[pl][l] = avx2_lane_code(p.bits, pl, l);
  const int nblk = p.Kp / kBlockCodes;
  p.xq_row = static_cast<size_t>(nblk) * planes * kBlockCodes;  // a multiple of 32 int16 = 64 bytes
  auto* xq = reinterpret_cast<int16_t*>(s_q.get((static_cast<size_t>(p.M) * p.xq_row + 1) / 2));
  float* dx = s_g.get(2 * static_cast<size_t>(p.M) * p.G);
  float* xs = dx + static_cast<size_t>(p.M) * p.G;
  p.xq = xq;
  p.xdx = dx;
  p.xqs = xs;
#if defined(LLMC_KERNELS_X86)
  if (isa == Isa::kAvx2 && p.group <= kXqMaxGroup) {
    xq_fused_avx2(x, p, xq, dx, xs);
    return;
  }
#else
  (void)isa;
#endif
  std::vector<int16_t> q(static_cast<size_t>(p.group));
  for (int m = 0; m < p.M; ++m) {
    const float* xr = x + static_cast<size_t>(m) * p.K;
    int16_t* dst = xq + static_cast<size_t>(m) * p.xq_row;
    for (int g = 0; g < p.G; ++g) {
      const int k0 = g * p.group, n = std::min(p.K, k0 + p.group) - k0;
      std::fill(q.begin() + n, q.end(), int16_t{0});  // padding columns of a partial last group
      int sum = 0;
      dx[static_cast<size_t>(m) * p.G + g] = round_to_int16_scalar(xr + k0, n, q.data(), &sum);
      xs[static_cast<size_t>(m) * p.G + g] = static_cast<float>(sum);
      for (int b = 0; b < p.group / kBlockCodes; ++b) {
        int16_t* blk = dst + static_cast<size_t>(g * (p.group / kBlockCodes) + b) * planes * kBlockCodes;
        for (int pl = 0; pl < planes; ++pl)
          for (int l = 0; l < kBlockCodes; ++l) blk[pl * kBlockCodes + l] = q[static_cast<size_t>(b * kBlockCodes + perm[pl][l])];
      }
    }
  }
}

// The integer panel kernels' x buffers: [Kp / pack][Mp][pack] of T (pack = 4 / sizeof(T)) from s_q,
// dxT and dxsT ([G][Mp] each, one block) from s_g, the latter two set in p.
template <class T>
T* panel_x_buffers(Problem& p, Scratch& s_q, Scratch& s_g, float** dxT, float** dxsT) {
  const size_t Mp = static_cast<size_t>(p.Mp);
  T* xq = reinterpret_cast<T*>(s_q.get(static_cast<size_t>(p.Kp) * Mp * sizeof(T) / 4));
  *dxT = s_g.get(2 * static_cast<size_t>(p.G) * Mp);
  *dxsT = *dxT + static_cast<size_t>(p.G) * Mp;
  p.xdxT = *dxT;
  p.xdxsT = *dxsT;
  return xq;
}

// The integer panel kernels' x, the scalar reference: each (row, group) rounded by `round` (dx
// and sum(xq) out), stored in packs of 4 / sizeof(T) columns per x-row ([Kp / pack][Mp][pack], 0
// outside [M) x [K)), dxT = dx and dxsT = dx * sum(xq) per (group, x-row) ([G][Mp], dxsT right after
// dxT).
template <class T>
void panel_x_scalar(const float* x, const Problem& p, T* xq, float* dxT, float* dxsT,
                    float (*round)(const float*, int, T*, int*)) {
  constexpr int kPack = 4 / sizeof(T);
  const size_t Mp = static_cast<size_t>(p.Mp);
  std::fill(xq, xq + static_cast<size_t>(p.Kp) * Mp, T{0});
  std::fill(dxT, dxT + 2 * static_cast<size_t>(p.G) * Mp, 0.f);
  std::vector<T> q(static_cast<size_t>(p.group));
  for (int m = 0; m < p.M; ++m) {
    const float* xr = x + static_cast<size_t>(m) * p.K;
    for (int g = 0; g < p.G; ++g) {
      const int k0 = g * p.group, n = std::min(p.K, k0 + p.group) - k0;
      int sum = 0;
      const float dx = round(xr + k0, n, q.data(), &sum);
      for (int i = 0; i < n; ++i)
        xq[(static_cast<size_t>((k0 + i) / kPack) * Mp + m) * kPack + (k0 + i) % kPack] = q[static_cast<size_t>(i)];
      dxT[static_cast<size_t>(g) * Mp + m] = dx;
      dxsT[static_cast<size_t>(g) * Mp + m] = dx * static_cast<float>(sum);
    }
  }
}

// The panel AVX2 kernel's activations (Problem::xq2): the same int16 rounding per (row, group),
// stored as column pairs per x-row ([Kp / 2][Mp][2]), with dx and dx * sum(xq) per (group, x-row).
// isa = kScalar is the reference for xq_panel_avx2 (rounding, then a scalar scatter).
void prepare_xq_panel(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa) {
  float *dxT, *dxsT;
  int16_t* xq2 = panel_x_buffers<int16_t>(p, s_q, s_g, &dxT, &dxsT);
  p.xq2 = xq2;
#if defined(LLMC_KERNELS_X86)
  if (isa == Isa::kAvx2 && p.group <= kXqMaxGroup) {
    xq_panel_avx2(x, p, xq2, dxT, dxsT);
    return;
  }
#endif
  panel_x_scalar(x, p, xq2, dxT, dxsT, round_to_int16_scalar);
}

// The int8-x panel kernel's activations (Problem::xq4): x rounded to int8 per (row, group), stored
// as column quads per x-row ([Kp / 4][Mp][4]), dx and dx * sum(xq) per (group, x-row) as for xq2.
// isa = kScalar is the reference for xq8_panel_avx512 (rounding, then a scalar scatter).
void prepare_xq8_panel(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa) {
  float *dxT, *dxsT;
  int8_t* xq4 = panel_x_buffers<int8_t>(p, s_q, s_g, &dxT, &dxsT);
  p.xq4 = xq4;
#if defined(LLMC_KERNELS_X86)
  if (isa == Isa::kAvx512Vnni && p.group <= kXqMaxGroup) {
    xq8_panel_avx512(x, p, xq4, dxT, dxsT);
    return;
  }
  if (isa == Isa::kAvx2 && p.group <= kXqMaxGroup) {
    xq8_panel_avx2(x, p, xq4, dxT, dxsT);
    return;
  }
#endif
  panel_x_scalar(x, p, xq4, dxT, dxsT, round_to_int8_scalar);
}

void amx_x_bytes(const Problem& p, uint8_t* lo, int8_t* hi) {
  const size_t Mp = static_cast<size_t>(p.Mp), Kp = static_cast<size_t>(p.Kp);
  for (size_t m = 0; m < Mp; ++m) {
    for (size_t o = 0; o < Kp; ++o) {
      const size_t c = o / 32 * 32 + static_cast<size_t>(amx_column(p.bits, static_cast<int>(o % 32)));
      if (p.xq4 != nullptr) {
        hi[m * Kp + o] = p.xq4[((c / 4) * Mp + m) * 4 + c % 4];
        continue;
      }
      const int16_t v = p.xq2[((c / 2) * Mp + m) * 2 + c % 2];
      lo[m * Kp + o] = static_cast<uint8_t>(v & 255);
      hi[m * Kp + o] = static_cast<int8_t>(v >> 8);
    }
  }
}

// The integer panel kernels' x (int16 column pairs, or int8 quads at x_bits = 8, or on AMX the
// tiles' row-major bytes) and accumulators yT; p.Mp set by the caller. The AVX2 rounding for int16
// (AVX-512 VNNI CPUs have AVX2).
void prepare_int_panel(const float* x, Problem& p, int x_bits, Scratch& s_x, Scratch& s_g, Scratch& s_y,
                       Scratch* s_amx, int nthreads) {
  p.amx = s_amx != nullptr && amx_usable() && p.group <= kXqMaxGroup;
  if (p.amx) {
    // x on tiles: straight from x, Kp x Mp bytes (int8), or two such arrays (int16: lo, then hi).
    float *dxT, *dxsT;
    uint8_t* b = x_bits == 8 ? reinterpret_cast<uint8_t*>(panel_x_buffers<int8_t>(p, *s_amx, s_g, &dxT, &dxsT))
                             : reinterpret_cast<uint8_t*>(panel_x_buffers<int16_t>(p, *s_amx, s_g, &dxT, &dxsT));
    const size_t n = static_cast<size_t>(p.Kp) * p.Mp;
    p.xlo = x_bits == 8 ? nullptr : b;
    p.xhi = reinterpret_cast<int8_t*>(x_bits == 8 ? b : b + n);
#if defined(LLMC_KERNELS_X86)
    xq_rows_avx512(x, p, x_bits, b, const_cast<int8_t*>(p.xhi), dxT, dxsT, nthreads);
#endif
    p.yT = nullptr;  // the AMX kernel keeps its sums in registers and writes y
    return;
  }
  // (s_amx is given on AVX-512 VNNI only.)
  if (x_bits == 8) prepare_xq8_panel(x, p, s_x, s_g, s_amx != nullptr ? Isa::kAvx512Vnni : Isa::kAvx2);
  else prepare_xq_panel(x, p, s_x, s_g, Isa::kAvx2);
  p.yT = s_y.get(static_cast<size_t>(p.N) * p.Mp);
}

void check_xy(const char* who, const float* x, int M, int N, int K, const float* y) {
  const std::string s(who);
  if (x == nullptr) bad(s + ": x is null");
  if (y == nullptr) bad(s + ": y is null");
  if (M < 1 || M > kMaxDim) bad(s + ": M must be in [1, 2^30] (got " + std::to_string(M) + ")");
  const auto xb = reinterpret_cast<uintptr_t>(x), yb = reinterpret_cast<uintptr_t>(y);
  const uintptr_t xe = xb + static_cast<uintptr_t>(M) * static_cast<uintptr_t>(K) * sizeof(float);
  const uintptr_t ye = yb + static_cast<uintptr_t>(M) * static_cast<uintptr_t>(N) * sizeof(float);
  if (xb < ye && yb < xe) bad(s + ": y overlaps x");
}

void check_threads_isa(const char* who, int num_threads, Isa isa) {
  const std::string s(who);
  if (num_threads < 0) bad(s + ": num_threads must be >= 0 (got " + std::to_string(num_threads) + ")");
  if (isa != Isa::kAuto && isa != Isa::kScalar && isa != Isa::kAvx2 && isa != Isa::kAvx512 && isa != Isa::kAvx512Vnni) {
    bad(s + ": isa is not a valid Isa value");
  }
  if (!isa_supported(isa)) bad(s + ": isa " + isa_name(isa) + " is not supported by this CPU");
}

}  // namespace detail

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

bool isa_supported(Isa isa) {
  static const bool avx2 = detect(Isa::kAvx2);
  static const bool avx512 = detect(Isa::kAvx512);
  static const bool vnni = detect(Isa::kAvx512Vnni);
  switch (isa) {
    case Isa::kAuto:
    case Isa::kScalar: return true;
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512: return avx512;
    case Isa::kAvx512Vnni: return vnni;
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512Vnni)) return Isa::kAvx512Vnni;
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

void set_default_num_threads(int n) { g_default_threads.store(n > 0 ? n : 0); }

int default_num_threads() {
  const int n = g_default_threads.load();
  return n > 0 ? n : hw_threads();
}

namespace {
std::atomic<int> g_prefill_x_bits{16};
std::atomic<bool> g_amx_allowed{true};

// AMX-TILE + AMX-INT8 (CPUID.(7,0):EDX bits 24, 25) and the kernel's permission for the tile data
// state (Linux 5.16+: without it the first tile instruction faults).
bool amx_available() {
#if defined(LLMC_KERNELS_X86) && defined(__linux__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if ((d & (1u << 24)) == 0 || (d & (1u << 25)) == 0) return false;
  if ((c & (1u << 1)) == 0) return false;  // AVX-512 VBMI (the x rounding's vpermb; every AMX CPU has it)
  if (!detect(Isa::kAvx512Vnni)) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
}  // namespace

namespace detail {
bool amx_usable() {
  // LLMC_AMX=0 keeps the AVX-512 VNNI kernel (an A/B switch: the same bits).
  static const bool available = [] {
    const char* e = std::getenv("LLMC_AMX");
    return !(e && std::string(e) == "0") && amx_available();
  }();
  return available && g_amx_allowed.load();
}
void set_amx_allowed(bool allowed) { g_amx_allowed.store(allowed); }
}  // namespace detail

void set_prefill_x_bits(int bits) {
  if (bits != 8 && bits != 16) bad("set_prefill_x_bits: bits must be 8 or 16, got " + std::to_string(bits));
  g_prefill_x_bits.store(bits);
}
int prefill_x_bits() { return g_prefill_x_bits.load(); }

int qgemm_x_bits(Isa isa, int M, int bits) {
  const Isa use = (isa == Isa::kAuto) ? best_isa() : isa;
  if (M < kPanelMinM && (use == Isa::kAvx2 || use == Isa::kAvx512Vnni)) return 16;
  // AVX2's int8-x kernel (vpmaddubsw) takes codes below 16 only: its int16 pair sums would saturate
  // at 8 bits.
  if (use == Isa::kAvx2) return bits <= 4 ? prefill_x_bits() : 16;
  if (use == Isa::kAvx512Vnni) return prefill_x_bits();
  return 32;
}

int prefill_x_bits_here(int bits) { return qgemm_x_bits(Isa::kAuto, kPanelMinM, bits); }

bool qgemm_rounds_x_to_int16(Isa isa, int M, int bits) { return qgemm_x_bits(isa, M, bits) == 16; }

namespace {

// Tasks of a stacked product: rows [n0, n1) of the stacked output, each inside one part, computed
// with that part's Problem (probs[part]).
struct StackedCtx {
  const detail::Problem* probs;
  void (*rows)(const detail::Problem&, int, int);
  const int* task_part;  // [ntasks]
  const int* task_n0;    // [ntasks]: task t computes stacked rows [task_n0[t], task_n1[t])
  const int* task_n1;
};

void run_stacked_task(void* c, int t) {
  const StackedCtx& ctx = *static_cast<const StackedCtx*>(c);
  ctx.rows(ctx.probs[ctx.task_part[t]], ctx.task_n0[t], ctx.task_n1[t]);
}

// A Problem's shape (M rows of x, N output rows, the layout's K, bits, group and blocks), bias and y;
// the weights' pointers are the caller's.
detail::Problem problem_of(const QLayout& l, int M, int N, const float* bias, float* y) {
  detail::Problem p;
  p.M = M;
  p.N = N;
  p.K = l.K;
  p.bits = l.bits;
  p.group = l.group;
  p.Kp = l.K_padded;
  p.Kb = l.real_blocks;
  p.G = l.groups_per_row;
  p.bias = bias;
  p.y = y;
  return p;
}

// The fp32 panel path's x^T (p.xT, [Kp][Mp], zero outside [M) x [K)) and accumulators p.yT, for
// p.M, p.K, p.Kp, p.N.
void prepare_panel_fp32(const float* x, detail::Problem& p, detail::Scratch& s_x, detail::Scratch& s_y) {
  const int M = p.M;
  p.Mp = (M + 15) / 16 * 16;
  float* xT = s_x.get(static_cast<size_t>(p.Kp) * p.Mp);
  // Transpose in 16-row stripes: reads 16 rows of x, writes whole 64-byte lines of xT.
  for (int m0 = 0; m0 < p.Mp; m0 += 16) {
    for (int k = 0; k < p.Kp; ++k) {
      float* dst = xT + static_cast<size_t>(k) * p.Mp + m0;
      for (int i = 0; i < 16; ++i) {
        const int m = m0 + i;
        dst[i] = (m < M && k < p.K) ? x[static_cast<size_t>(m) * p.K + k] : 0.f;
      }
    }
  }
  p.xT = xT;
  p.yT = s_y.get(static_cast<size_t>(p.N) * p.Mp);
}

// Rows per task: a multiple of kRowQuantum (of kAmxRowQuantum on AMX tiles, whose kernel takes
// weight rows 16 at a time from tile-aligned starts), about 4 tasks per thread (dynamic scheduling
// keeps threads busy when the machine is shared), and at least 48 rows for the panel kernel so each
// task reuses its L2-resident slice of x^T across several weight panels.
constexpr int kAmxRowQuantum = 48;
static_assert(kAmxRowQuantum % detail::kRowQuantum == 0 && kAmxRowQuantum % kTileRows == 0,
              "whole 12-row panels and whole row tiles");
int rows_per_task(const detail::Problem& p, int nthreads, bool panel) {
  const int q = p.amx ? kAmxRowQuantum : detail::kRowQuantum;
  const int units = (p.N + q - 1) / q, min_units = panel ? (48 + q - 1) / q : 1;
  return q * detail::units_per_task(units, nthreads, std::max(1, units / min_units));
}

// qgemm_cpu over parts stacked by rows (qgemm_cpu_stacked; one part: qgemm_cpu). Arguments
// validated by the callers; all parts share bits, group and K.
void qgemm_parts(const float* x, int M, const QMatrixView* parts, int nparts, int Ntot, const float* bias, float* y,
                 int num_threads, Isa isa) {
  const QMatrixView& w = parts[0];
  const Isa use = (isa == Isa::kAuto) ? best_isa() : isa;
  const int nthreads = num_threads > 0 ? num_threads : default_num_threads();

  const QLayout l = w.layout();
  detail::Problem p = problem_of(l, M, Ntot, bias, y);
  p.codes = w.codes;
  p.row_bytes = l.row_bytes;
  p.scales = w.scales;
  p.zeros = w.zeros;

  thread_local detail::Scratch s_x, s_g, s_y, s_amx;
  const bool panel = use != Isa::kScalar && M >= kPanelMinM;
  void (*rows)(const detail::Problem&, int, int) = detail::rows_scalar;
  const int x_bits = qgemm_x_bits(use, M, l.bits);
  if (x_bits <= 16) {
    // The AVX-512 VNNI kernels take the AVX2 kernels' activations (their CPUs have AVX2), or at
    // x_bits = 8 the int8 ones; the VNNI panel kernel's micro tile is 32 rows of x.
    const bool vnni = use == Isa::kAvx512Vnni;
    if (panel) {
      p.Mp = vnni ? (M + 31) / 32 * 32 : (M + 15) / 16 * 16;
      detail::prepare_int_panel(x, p, x_bits, s_x, s_g, s_y, vnni ? &s_amx : nullptr, nthreads);
    } else {
      detail::prepare_xq(x, p, s_x, s_g, Isa::kAvx2);
    }
#if defined(LLMC_KERNELS_X86)
    rows = vnni ? (panel ? detail::panel_rows_avx512_vnni : detail::fused_rows_avx512_vnni)
                : (panel ? detail::panel_rows_avx2 : detail::fused_rows_avx2);
#endif
  } else if (!panel) {
    float* xp = s_x.get(static_cast<size_t>(M) * p.Kp);
    for (int m = 0; m < M; ++m) {
      float* dst = xp + static_cast<size_t>(m) * p.Kp;
      std::copy(x + static_cast<size_t>(m) * p.K, x + static_cast<size_t>(m + 1) * p.K, dst);
      std::fill(dst + p.K, dst + p.Kp, 0.f);
    }
    p.xp = xp;
    if (use != Isa::kScalar) {
      float* xg = s_g.get(static_cast<size_t>(M) * p.G);
      for (int m = 0; m < M; ++m) {
        for (int g = 0; g < p.G; ++g) {
          const float* src = xp + static_cast<size_t>(m) * p.Kp + static_cast<size_t>(g) * p.group;
          double sum = 0;
          for (int i = 0; i < p.group; ++i) sum += src[i];
          xg[static_cast<size_t>(m) * p.G + g] = static_cast<float>(sum);
        }
      }
      p.xg = xg;
    }
#if defined(LLMC_KERNELS_X86)
    if (detail::is_avx512(use)) rows = detail::fused_rows_avx512;
#endif
  } else {
    prepare_panel_fp32(x, p, s_x, s_y);
#if defined(LLMC_KERNELS_X86)
    if (detail::is_avx512(use)) rows = detail::panel_rows_avx512;
#endif
  }

  const int per = rows_per_task(p, nthreads, panel);
  if (nparts == 1) {
    TaskCtx ctx{&p, rows, per};
    const int ntasks = (p.N + per - 1) / per;
    detail::parallel_for(nthreads, ntasks, run_task, &ctx);
    return;
  }
  // Several parts: one Problem per part, the same prepared x, bias and y as the stacked product,
  // and codes/scales/zeros based so that stacked row n (off <= n < off + N_part) reads the part's
  // row n - off (the kernels index weights, bias and y by the stacked row). Tasks never straddle a
  // part. Every output row is computed exactly as in the stacked call. (The kernels' software
  // prefetch may point past a part's last row near its end: prefetches never fault.)
  thread_local std::vector<detail::Problem> probs;
  thread_local std::vector<int> tpart, tn0, tn1;
  probs.assign(static_cast<size_t>(nparts), p);
  tpart.clear();
  tn0.clear();
  tn1.clear();
  int off = 0;
  for (int i = 0; i < nparts; ++i) {
    const QMatrixView& v = parts[i];
    const uintptr_t r = static_cast<uintptr_t>(off) * p.row_bytes, g = static_cast<uintptr_t>(off) * p.G;
    probs[i].codes = reinterpret_cast<const uint8_t*>(reinterpret_cast<uintptr_t>(v.codes) - r);
    probs[i].scales = reinterpret_cast<const uint16_t*>(reinterpret_cast<uintptr_t>(v.scales) - g * 2);
    probs[i].zeros = reinterpret_cast<const uint16_t*>(reinterpret_cast<uintptr_t>(v.zeros) - g * 2);
    for (int n0 = off; n0 < off + v.N; n0 += per) {
      tpart.push_back(i);
      tn0.push_back(n0);
      tn1.push_back(std::min(off + v.N, n0 + per));
    }
    off += v.N;
  }
  StackedCtx ctx{probs.data(), rows, tpart.data(), tn0.data(), tn1.data()};
  detail::parallel_for(nthreads, static_cast<int>(tpart.size()), run_stacked_task, &ctx);
}

}  // namespace

namespace detail {

void qgemm_tiled_panel(const float* x, int M, const QTiledView& t, const float* bias, float* y, int nthreads, Isa use) {
  Problem p = problem_of(make_layout(t.bits, t.group, t.N, t.K), M, t.N, bias, y);
  p.tiled = t.data;
  p.tl = t.layout();
#if defined(LLMC_KERNELS_X86)
  thread_local Scratch s_x, s_g, s_y, s_amx;
  void (*rows)(const Problem&, int, int) = panel_rows_avx512;
  // The canonical matrix's prefill kernel on the tiled words: the integer kernel on AVX-512 VNNI or
  // (4-bit tiles) AVX2, else (2/3 bits, Isa::kAvx512) the fp32 panel kernel.
  if (use == Isa::kAvx2) {
    p.Mp = (M + 15) / 16 * 16;
    prepare_int_panel(x, p, qgemm_x_bits(use, M, t.bits), s_x, s_g, s_y, nullptr, nthreads);
    rows = panel_rows_avx2;
  } else if (const int xb = qgemm_x_bits(use, M, t.bits); xb <= 16) {
    p.Mp = (M + 31) / 32 * 32;
    prepare_int_panel(x, p, xb, s_x, s_g, s_y, &s_amx, nthreads);
    rows = panel_rows_avx512_vnni;
  } else {
    prepare_panel_fp32(x, p, s_x, s_y);
  }
  TaskCtx ctx{&p, rows, rows_per_task(p, nthreads, true)};
  parallel_for(nthreads, (p.N + ctx.rows_per_task - 1) / ctx.rows_per_task, run_task, &ctx);
#else
  (void)x, (void)nthreads, (void)use;
  throw std::logic_error("qgemm_tiled_panel: x86 only");
#endif
}

}  // namespace detail

void qgemm_cpu(const float* x, int M, const QMatrixView& w, const float* bias, float* y, int num_threads, Isa isa) {
  check_common("qgemm_cpu", x, M, w, y);
  detail::check_threads_isa("qgemm_cpu", num_threads, isa);
  qgemm_parts(x, M, &w, 1, w.N, bias, y, num_threads, isa);
}

void qgemm_cpu_stacked(const float* x, int M, const QMatrixView* parts, int nparts, const float* bias, float* y,
                       int num_threads, Isa isa) {
  if (parts == nullptr) bad("qgemm_cpu_stacked: parts is null");
  if (nparts < 1) bad("qgemm_cpu_stacked: nparts must be >= 1 (got " + std::to_string(nparts) + ")");
  int64_t Ntot = 0;
  for (int i = 0; i < nparts; ++i) {
    validate(parts[i], "qgemm_cpu_stacked");
    if (parts[i].bits != parts[0].bits || parts[i].group != parts[0].group || parts[i].K != parts[0].K)
      bad("qgemm_cpu_stacked: part " + std::to_string(i) + " differs from part 0 in bits, group or K");
    Ntot += parts[i].N;
  }
  if (Ntot > kMaxDim) bad("qgemm_cpu_stacked: the parts' rows add up to more than 2^30");
  detail::check_xy("qgemm_cpu_stacked", x, M, static_cast<int>(Ntot), parts[0].K, y);
  detail::check_threads_isa("qgemm_cpu_stacked", num_threads, isa);
  qgemm_parts(x, M, parts, nparts, static_cast<int>(Ntot), bias, y, num_threads, isa);
}

void qgemm_reference(const float* x, int M, const QMatrixView& w, const float* bias, float* y) {
  check_common("qgemm_reference", x, M, w, y);
  const QLayout l = w.layout();
  const std::vector<uint8_t> codes = unpack_codes(w);
  std::vector<double> wrow(static_cast<size_t>(l.K));
  for (int n = 0; n < l.N; ++n) {
    for (int k = 0; k < l.K; ++k) {
      const size_t gi = group_index(l.groups_per_row, l.group, n, k);
      const double s = fp16_to_fp32(w.scales[gi]), z = fp16_to_fp32(w.zeros[gi]);
      wrow[k] = s * (static_cast<double>(codes[static_cast<size_t>(n) * l.K + k]) - z);
    }
    for (int m = 0; m < M; ++m) {
      const float* xr = x + static_cast<size_t>(m) * l.K;
      double acc = bias ? bias[n] : 0.0;
      for (int k = 0; k < l.K; ++k) acc += static_cast<double>(xr[k]) * wrow[k];
      y[static_cast<size_t>(m) * l.N + n] = static_cast<float>(acc);
    }
  }
}

void gemm_dense_reference(const float* x, int M, const float* W, int N, int K, const float* bias, float* y) {
  if (x == nullptr) bad("gemm_dense_reference: x is null");
  if (W == nullptr) bad("gemm_dense_reference: W is null");
  if (y == nullptr) bad("gemm_dense_reference: y is null");
  if (M < 1 || M > kMaxDim) bad("gemm_dense_reference: M must be in [1, 2^30] (got " + std::to_string(M) + ")");
  if (N < 1 || N > kMaxDim) bad("gemm_dense_reference: N must be in [1, 2^30] (got " + std::to_string(N) + ")");
  if (K < 1 || K > kMaxDim) bad("gemm_dense_reference: K must be in [1, 2^30] (got " + std::to_string(K) + ")");
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      double acc = bias ? bias[n] : 0.0;
      const float* xr = x + static_cast<size_t>(m) * K;
      const float* wr = W + static_cast<size_t>(n) * K;
      for (int k = 0; k < K; ++k) acc += static_cast<double>(xr[k]) * wr[k];
      y[static_cast<size_t>(m) * N + n] = static_cast<float>(acc);
    }
  }
}

}  // namespace llmc::kernels
