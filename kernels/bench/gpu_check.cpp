// gpu_check: the CUDA kernels on a real GPU, in one standalone program (no torch, no gtest).
//
//   (a) correctness: qgemm_cuda against the CPU fp64 qgemm_reference for bits {2,3,4,8} x group
//       {32,64,128} x M {1,4,16,33,128} x dtype {f16,bf16} on a few shapes (K = 576 and 2112, not
//       multiples of 128; odd N; two shapes with a bias). x (and the bias) are rounded to the
//       dtype before the reference. Error as in tests/kernels/test_cuda_host.cpp:
//       max|y - ref| / max|ref| <= 4e-3 (f16) / 3e-2 (bf16); y starts as NaN, so an output that is
//       never written fails.
//   (b) speed: qgemm_cuda (f16) against cuBLAS (cublasGemmEx, fp16 inputs and output, fp32
//       compute) on the dequantized weights, N x K in {4096x4096, 11008x4096, 4096x11008,
//       576x1536, 1536x576}, M in {1, 16, 128}, bits {2,3,4,8}, one group size (default 128).
//       Each run is timed alone with CUDA events; the L2 cache is flushed (a write of 2 x its
//       size) before every run, outside the timed span, so the weights come from HBM. Median of
//       --reps runs after --warmup. weight_GBps = weight bytes read (packed codes + scales +
//       zeros for qgemm, N*K*2 for cuBLAS) / median time; speedup_vs_cublas = cuBLAS time /
//       qgemm time. Each row also checks qgemm's output against cuBLAS's (rel. error <= 1e-2:
//       both round y to fp16, cuBLAS also the weights).
//   (c) JSON (--out FILE; written to FILE.tmp.PID, then renamed): device, settings, every check
//       and timing with pass/fail, overall pass.
//
// Exit status: 0 all checks pass, 1 a check failed or a CUDA/cuBLAS error, 2 no CUDA device
// (printed as one line "gpu_check: no CUDA device ..." before anything else is done), 3 bad
// command line.
//
// Usage: gpu_check [--out FILE.json] [--reps R] [--warmup W] [--group G] [--no-flush]
//                  [--skip-check] [--skip-bench] [--quick]
// --quick: timing on 4096x4096 and 576x1536 only, 20 reps (a smoke run).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "llmc_kernels/qformat.h"
#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qgemm_cuda.h"

using namespace llmc::kernels;

namespace {

// ---- options -----------------------------------------------------------------------------------

struct Opts {
  std::string out;
  int reps = 50;
  int warmup = 5;
  int group = 128;
  bool flush = true;
  bool check = true;
  bool bench = true;
  bool quick = false;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr, "gpu_check: %s\n", msg.c_str());
  std::fprintf(stderr,
               "usage: gpu_check [--out FILE.json] [--reps R] [--warmup W] [--group 32|64|128] [--no-flush]\n"
               "                 [--skip-check] [--skip-bench] [--quick]\n");
  std::exit(3);
}

int parse_int(const char* s, const char* name, int lo, int hi) {
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
    usage(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "] (got '" +
          s + "')");
  return static_cast<int>(v);
}

Opts parse(int argc, char** argv) {
  Opts o;
  bool reps_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--out") {
      o.out = val();
      if (o.out.empty()) usage("--out needs a file name");
    } else if (a == "--reps") {
      o.reps = parse_int(val(), "--reps", 20, 100000);
      reps_set = true;
    } else if (a == "--warmup") {
      o.warmup = parse_int(val(), "--warmup", 1, 100000);
    } else if (a == "--group") {
      o.group = parse_int(val(), "--group", 32, 128);
      if (!valid_group(o.group)) usage("--group must be 32, 64 or 128");
    } else if (a == "--no-flush") {
      o.flush = false;
    } else if (a == "--skip-check") {
      o.check = false;
    } else if (a == "--skip-bench") {
      o.bench = false;
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "-h" || a == "--help") {
      usage("help");
    } else {
      usage("unknown argument '" + a + "'");
    }
  }
  if (o.quick && !reps_set) o.reps = 20;
  return o;
}

// ---- errors, buffers ---------------------------------------------------------------------------

void ck(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}
void ckb(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string(what) + ": " + cublasGetStatusString(s));
}

template <typename T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(std::max<size_t>(n, 1)) { ck(cudaMalloc(&p_, n_ * sizeof(T)), "cudaMalloc"); }
  ~DevBuf() { cudaFree(p_); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  T* get() const { return p_; }
  void up(const T* src, size_t n) {
    if (n > n_) throw std::logic_error("DevBuf::up: too many elements");
    ck(cudaMemcpy(p_, src, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  void up(const std::vector<T>& v) { up(v.data(), v.size()); }
  void down(T* dst, size_t n) const {
    if (n > n_) throw std::logic_error("DevBuf::down: too many elements");
    ck(cudaMemcpy(dst, p_, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// A packed matrix in device memory.
struct DevQ {
  DevBuf<uint8_t> codes;
  DevBuf<uint16_t> scales, zeros;
  QMatrixView view;
  explicit DevQ(const QMatrix& w)
      : codes(w.codes.size()), scales(w.scales.size()), zeros(w.zeros.size()) {
    codes.up(w.codes);
    scales.up(w.scales);
    zeros.up(w.zeros);
    view = QMatrixView{w.layout.bits, w.layout.group, w.layout.N, w.layout.K, codes.get(), scales.get(), zeros.get()};
  }
};

// ---- random data (own generator: splitmix64) -----------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9e3779b97f4a7c15ull + 0x1234567ull) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) {  // [lo, hi)
    return lo + (hi - lo) * static_cast<float>(static_cast<double>(next() >> 11) * 0x1p-53);
  }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>((next() >> 32) * n >> 32); }  // [0, n)
};

// Same distribution as the kernel tests: uniform codes, scales in [0.5, 2] * 2^-6, zero points
// uniform in [0, 2^bits - 1], every third one fractional.
QMatrix random_qmatrix(int bits, int group, int N, int K, uint64_t seed) {
  Rng rng(seed);
  const QLayout l = make_layout(bits, group, N, K);
  const uint32_t levels = 1u << bits;
  std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
  for (auto& c : codes) c = static_cast<uint8_t>(rng.below(levels));
  std::vector<uint16_t> scales(l.scale_count), zeros(l.scale_count);
  for (size_t i = 0; i < l.scale_count; ++i) {
    scales[i] = fp32_to_fp16(rng.uniform(0.5f, 2.0f) / 64.f);
    const float z = rng.uniform(0.f, static_cast<float>(levels - 1));
    zeros[i] = fp32_to_fp16(i % 3 == 2 ? z : std::round(z));
  }
  return pack(bits, group, N, K, codes.data(), scales.data(), zeros.data());
}

std::vector<float> random_vec(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(-1.f, 1.f);
  return v;
}

const char* dtype_name(DType d) { return d == DType::kF16 ? "f16" : "bf16"; }
uint16_t enc(DType d, float f) { return d == DType::kF16 ? fp32_to_fp16(f) : fp32_to_bf16(f); }
float dec(DType d, uint16_t h) { return d == DType::kF16 ? fp16_to_fp32(h) : bf16_to_fp32(h); }

// max_i |y_i - ref_i| / max_i |ref_i| (as the kernel tests); any non-finite y gives infinity.
double rel_error(const float* y, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(y[i])) return INFINITY;
    num = std::max(num, std::fabs(static_cast<double>(y[i]) - ref[i]));
    den = std::max(den, std::fabs(static_cast<double>(ref[i])));
  }
  return den > 0 ? num / den : num;
}

// qgemm_reference split over threads by output rows (rows are independent).
void reference_mt(const std::vector<float>& x, int M, const QMatrix& w, const float* bias, std::vector<float>& y) {
  const QLayout& l = w.layout;
  const int T = std::max(1, std::min<int>(16, static_cast<int>(std::thread::hardware_concurrency())));
  const int chunk = (l.N + T - 1) / T;
  y.assign(static_cast<size_t>(M) * l.N, 0.f);
  std::vector<std::thread> th;
  std::vector<std::string> errors(static_cast<size_t>(T));
  for (int t = 0; t < T; ++t) {
    const int n0 = t * chunk, n1 = std::min(l.N, n0 + chunk);
    if (n0 >= n1) break;
    th.emplace_back([&, t, n0, n1] {
      try {
        const QMatrixView v{l.bits, l.group, n1 - n0, l.K, w.codes.data() + static_cast<size_t>(n0) * l.row_bytes,
                            w.scales.data() + static_cast<size_t>(n0) * l.groups_per_row,
                            w.zeros.data() + static_cast<size_t>(n0) * l.groups_per_row};
        std::vector<float> part(static_cast<size_t>(M) * (n1 - n0));
        qgemm_reference(x.data(), M, v, bias ? bias + n0 : nullptr, part.data());
        for (int m = 0; m < M; ++m)
          std::copy(part.begin() + static_cast<size_t>(m) * (n1 - n0), part.begin() + static_cast<size_t>(m + 1) * (n1 - n0),
                    y.begin() + static_cast<size_t>(m) * l.N + n0);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(t)] = e.what();
      }
    });
  }
  for (auto& t : th) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw std::runtime_error("qgemm_reference: " + e);
}

// ---- JSON ----------------------------------------------------------------------------------------

std::string jnum(double v) {
  if (!std::isfinite(v)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.6g", v);
  return b;
}
std::string jstr(const std::string& s) {
  std::string r = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      r += '\\';
      r += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      r += b;
    } else {
      r += c;
    }
  }
  return r + "\"";
}

struct CheckRow {
  int bits, group, N, K, M;
  DType dtype;
  bool bias;
  double err, tol;
  bool pass;
};

struct BenchRow {
  int N, K, M, bits, group;
  double q_us, q_gbps, q_pct_peak;
  double c_us, c_gbps;
  double speedup;
  double agree_err;
  bool pass;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// ---- (a) correctness -----------------------------------------------------------------------------

void run_checks(std::vector<CheckRow>& rows) {
  struct Shape {
    int N, K;
    bool bias;
  };
  // K = 576 (18 of 20 blocks with g = 128) and 2112 (> two 1024-column GEMV tiles, 16.5 x 128)
  // are not multiples of 128; N = 37, 161, 131 leave partial warps, GEMV blocks and 64-row tiles.
  const std::vector<Shape> shapes = {{37, 576, false}, {161, 1536, true}, {131, 2112, false}, {96, 4096, true}};
  const int Ms[] = {1, 4, 16, 33, 128};
  const int Mmax = 128;  // the reference is computed once for Mmax rows; smaller M use its first rows
  int done = 0, failed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const Shape& sh : shapes) {
    for (int bits : {2, 3, 4, 8}) {
      for (int g : {32, 64, 128}) {
        const uint64_t seed = 1000u * static_cast<uint64_t>(sh.N) + 10u * static_cast<uint64_t>(bits) + static_cast<uint64_t>(g) + sh.K;
        const QMatrix w = random_qmatrix(bits, g, sh.N, sh.K, seed);
        DevQ dw(w);
        const std::vector<float> xf = random_vec(static_cast<size_t>(Mmax) * sh.K, seed + 1);
        const std::vector<float> bf = random_vec(static_cast<size_t>(sh.N), seed + 2);
        for (DType dt : {DType::kF16, DType::kBF16}) {
          std::vector<uint16_t> xh(xf.size()), bh(bf.size());
          std::vector<float> xr(xf.size()), br(bf.size());
          for (size_t i = 0; i < xf.size(); ++i) xr[i] = dec(dt, xh[i] = enc(dt, xf[i]));
          for (size_t i = 0; i < bf.size(); ++i) br[i] = dec(dt, bh[i] = enc(dt, bf[i]));
          std::vector<float> ref;
          reference_mt(xr, Mmax, w, sh.bias ? br.data() : nullptr, ref);
          DevBuf<uint16_t> dx(xh.size()), db(bh.size()), dy(static_cast<size_t>(Mmax) * sh.N);
          dx.up(xh);
          db.up(bh);
          std::vector<uint16_t> yh(static_cast<size_t>(Mmax) * sh.N);
          std::vector<float> y(yh.size());
          for (int M : Ms) {
            const size_t n = static_cast<size_t>(M) * sh.N;
            ck(cudaMemset(dy.get(), 0xff, n * sizeof(uint16_t)), "cudaMemset");  // NaN in f16 and bf16
            qgemm_cuda(dx.get(), dt, M, dw.view, sh.bias ? db.get() : nullptr, dy.get(), nullptr);
            ck(cudaDeviceSynchronize(), "qgemm_cuda (synchronize)");
            dy.down(yh.data(), n);
            for (size_t i = 0; i < n; ++i) y[i] = dec(dt, yh[i]);
            const double err = rel_error(y.data(), ref.data(), n);
            const double tol = dt == DType::kF16 ? 4e-3 : 3e-2;
            const bool pass = err <= tol;  // false for NaN / inf
            rows.push_back({bits, g, sh.N, sh.K, M, dt, sh.bias, err, tol, pass});
            ++done;
            if (!pass) {
              ++failed;
              std::printf("FAIL check bits=%d group=%d N=%d K=%d M=%d dtype=%s bias=%d: rel_error %.3g > %.3g\n", bits, g,
                          sh.N, sh.K, M, dtype_name(dt), sh.bias ? 1 : 0, err, tol);
            }
          }
        }
      }
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("correctness: %d cases, %d failed (%.1f s)\n", done, failed, s);
  // Worst error per (bits, dtype).
  std::printf("  %-5s %-5s %12s %9s\n", "bits", "dtype", "worst_error", "tolerance");
  for (int bits : {2, 3, 4, 8}) {
    for (DType dt : {DType::kF16, DType::kBF16}) {
      double worst = 0, tol = 0;
      for (const CheckRow& r : rows)
        if (r.bits == bits && r.dtype == dt) {
          worst = std::isnan(r.err) ? INFINITY : std::max(worst, r.err);
          tol = r.tol;
        }
      std::printf("  %-5d %-5s %12.3g %9.1g\n", bits, dtype_name(dt), worst, tol);
    }
  }
  std::fflush(stdout);
}

// ---- (b) timing ----------------------------------------------------------------------------------

class Timer {
 public:
  // flush: write 2 x l2_bytes (at least 1 MiB) before every timed run, outside the timed span.
  Timer(size_t l2_bytes, bool flush)
      : flush_bytes_(flush ? std::max<size_t>(2 * l2_bytes, size_t{1} << 20) : 0), scratch_(std::max<size_t>(flush_bytes_, 1)) {
    ck(cudaEventCreate(&a_), "cudaEventCreate");
    ck(cudaEventCreate(&b_), "cudaEventCreate");
  }
  ~Timer() {
    cudaEventDestroy(a_);
    cudaEventDestroy(b_);
  }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // Median microseconds of `reps` runs of f (after `warmup`), each timed alone on the default stream.
  template <typename F>
  double median_us(F&& f, int warmup, int reps) {
    for (int i = 0; i < warmup; ++i) f();
    ck(cudaDeviceSynchronize(), "warm-up");
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      if (flush_bytes_ > 0) ck(cudaMemsetAsync(scratch_.get(), i & 0xff, flush_bytes_, nullptr), "L2 flush");
      ck(cudaEventRecord(a_, nullptr), "cudaEventRecord");
      f();
      ck(cudaEventRecord(b_, nullptr), "cudaEventRecord");
      ck(cudaEventSynchronize(b_), "cudaEventSynchronize");
      float ms = 0;
      ck(cudaEventElapsedTime(&ms, a_, b_), "cudaEventElapsedTime");
      t.push_back(1e3 * ms);
    }
    return median(t);
  }

 private:
  size_t flush_bytes_;
  DevBuf<uint8_t> scratch_;
  cudaEvent_t a_{}, b_{};
};

void run_bench(const Opts& o, const cudaDeviceProp& prop, double peak_gbps, std::vector<BenchRow>& rows) {
  struct Shape {
    int N, K;
  };
  std::vector<Shape> shapes = {{4096, 4096}, {11008, 4096}, {4096, 11008}, {576, 1536}, {1536, 576}};
  if (o.quick) shapes = {{4096, 4096}, {576, 1536}};
  const int Ms[] = {1, 16, 128};
  const int Mmax = 128;
  const size_t l2 = static_cast<size_t>(std::max(prop.l2CacheSize, 0));
  Timer timer(l2, o.flush);
  cublasHandle_t h = nullptr;
  ckb(cublasCreate(&h), "cublasCreate");
  struct HandleGuard {
    cublasHandle_t h;
    ~HandleGuard() { cublasDestroy(h); }
  } guard{h};
  ckb(cublasSetStream(h, nullptr), "cublasSetStream");

  std::printf("\ntiming: f16, group %d, median of %d runs after %d warm-up, L2 %s before each run\n", o.group, o.reps,
              o.warmup, o.flush ? "flushed" : "NOT flushed");
  std::printf("  %-11s %4s %4s %10s %8s %7s %10s %8s %7s %9s\n", "N x K", "M", "bits", "qgemm_us", "GB/s", "%peak",
              "cublas_us", "GB/s", "x_cublas", "agree");
  for (const Shape& sh : shapes) {
    const std::vector<float> xf = random_vec(static_cast<size_t>(Mmax) * sh.K, 7u * sh.N + sh.K);
    std::vector<uint16_t> xh(xf.size());
    for (size_t i = 0; i < xf.size(); ++i) xh[i] = fp32_to_fp16(xf[i]);
    DevBuf<uint16_t> dx(xh.size()), dyq(static_cast<size_t>(Mmax) * sh.N), dyc(static_cast<size_t>(Mmax) * sh.N);
    dx.up(xh);
    DevBuf<uint16_t> dW(static_cast<size_t>(sh.N) * sh.K);  // dequantized weights, fp16 [N][K]
    std::vector<uint16_t> yq(static_cast<size_t>(Mmax) * sh.N), yc(yq.size());
    std::vector<float> fq(yq.size()), fc(yq.size());
    double cublas_us[3] = {0, 0, 0};
    for (int bits : {2, 3, 4, 8}) {
      const QMatrix w = random_qmatrix(bits, o.group, sh.N, sh.K, 100u * static_cast<uint64_t>(sh.N) + sh.K + bits);
      DevQ dw(w);
      {
        const std::vector<float> wf = dequantize(w.view());
        std::vector<uint16_t> wh(wf.size());
        for (size_t i = 0; i < wf.size(); ++i) wh[i] = fp32_to_fp16(wf[i]);
        dW.up(wh);
      }
      const double qbytes = static_cast<double>(w.layout.total_bytes());
      const double cbytes = 2.0 * sh.N * sh.K;
      for (int mi = 0; mi < 3; ++mi) {
        const int M = Ms[mi];
        auto q = [&] { qgemm_cuda(dx.get(), DType::kF16, M, dw.view, nullptr, dyq.get(), nullptr); };
        const float alpha = 1.f, beta = 0.f;
        // Row-major y[M][N] = x[M][K] W[N][K]^T is column-major y^T (N x M) = W^T(N x K) x^T (K x M).
        auto c = [&] {
          ckb(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, sh.N, M, sh.K, &alpha, dW.get(), CUDA_R_16F, sh.K, dx.get(),
                           CUDA_R_16F, sh.K, &beta, dyc.get(), CUDA_R_16F, sh.N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmEx");
        };
        // Agreement of the two outputs (same x, same weights up to cuBLAS's fp16 rounding of them).
        const size_t n = static_cast<size_t>(M) * sh.N;
        q();
        c();
        ck(cudaDeviceSynchronize(), "qgemm_cuda / cublasGemmEx (synchronize)");
        dyq.down(yq.data(), n);
        dyc.down(yc.data(), n);
        for (size_t i = 0; i < n; ++i) {
          fq[i] = fp16_to_fp32(yq[i]);
          fc[i] = fp16_to_fp32(yc[i]);
        }
        const double agree = rel_error(fq.data(), fc.data(), n);
        const double q_us = timer.median_us(q, o.warmup, o.reps);
        // cuBLAS reads the same fp16 bytes whatever the bits: timed once per shape and M.
        if (cublas_us[mi] == 0) cublas_us[mi] = timer.median_us(c, o.warmup, o.reps);
        BenchRow r{};
        r.N = sh.N;
        r.K = sh.K;
        r.M = M;
        r.bits = bits;
        r.group = o.group;
        r.q_us = q_us;
        r.q_gbps = qbytes / (q_us * 1e3);
        r.q_pct_peak = peak_gbps > 0 ? 100.0 * r.q_gbps / peak_gbps : NAN;
        r.c_us = cublas_us[mi];
        r.c_gbps = cbytes / (r.c_us * 1e3);
        r.speedup = r.c_us / q_us;
        r.agree_err = agree;
        r.pass = agree <= 1e-2;
        rows.push_back(r);
        char shape[32];
        std::snprintf(shape, sizeof shape, "%dx%d", sh.N, sh.K);
        std::printf("  %-11s %4d %4d %10.1f %8.0f %7.1f %10.1f %8.0f %7.2fx %9.2g%s\n", shape, M, bits, r.q_us, r.q_gbps,
                    r.q_pct_peak, r.c_us, r.c_gbps, r.speedup, agree, r.pass ? "" : "  FAIL");
        std::fflush(stdout);
      }
    }
  }
}

// Device-to-device copy of 1 GiB (or a quarter of free memory): GB/s counting bytes read + written.
double d2d_copy_gbps() {
  size_t free_b = 0, total_b = 0;
  ck(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  const size_t bytes = std::min<size_t>(size_t{1} << 30, free_b / 4);
  if (bytes < (size_t{1} << 20)) return NAN;
  DevBuf<uint8_t> a(bytes), b(bytes);
  ck(cudaMemset(a.get(), 1, bytes), "cudaMemset");
  cudaEvent_t e0, e1;
  ck(cudaEventCreate(&e0), "cudaEventCreate");
  ck(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    ck(cudaEventRecord(e0, nullptr), "cudaEventRecord");
    ck(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr), "cudaMemcpyAsync");
    ck(cudaEventRecord(e1, nullptr), "cudaEventRecord");
    ck(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    ck(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    if (i >= 2) t.push_back(ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return 2.0 * static_cast<double>(bytes) / (median(t) * 1e6);
}

void write_json(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(static_cast<long>(getpid()));
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw std::runtime_error("write failed: " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string err = std::strerror(errno);
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot rename " + tmp + " to " + path + ": " + err);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const Opts o = parse(argc, argv);

  // No device: one line, exit 2, before anything else touches CUDA.
  int count = 0;
  const cudaError_t de = cudaGetDeviceCount(&count);
  if (de != cudaSuccess || count <= 0) {
    if (de != cudaSuccess)
      std::printf("gpu_check: no CUDA device (cudaGetDeviceCount: %s)\n", cudaGetErrorString(de));
    else
      std::printf("gpu_check: no CUDA device (cudaGetDeviceCount found 0 devices)\n");
    std::fflush(stdout);
    return 2;
  }

  std::vector<CheckRow> checks;
  std::vector<BenchRow> bench;
  std::string error;
  cudaDeviceProp prop{};
  int driver = 0, runtime = 0, mem_khz = 0, bus_bits = 0;
  double peak_gbps = NAN, d2d = NAN;
  try {
    ck(cudaSetDevice(0), "cudaSetDevice");
    ck(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    ck(cudaDriverGetVersion(&driver), "cudaDriverGetVersion");
    ck(cudaRuntimeGetVersion(&runtime), "cudaRuntimeGetVersion");
    if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0) == cudaSuccess &&
        cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) == cudaSuccess && mem_khz > 0 &&
        bus_bits > 0)
      peak_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
    (void)cudaGetLastError();
    std::printf("gpu_check: %s (sm_%d%d, %d SMs, L2 %.0f MiB, %.1f GiB, peak memory %.0f GB/s), driver %d, runtime %d\n",
                prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
                static_cast<double>(prop.totalGlobalMem) / (1 << 30), peak_gbps, driver, runtime);
    std::fflush(stdout);
    if (!cuda_available()) throw std::runtime_error("llmc_kernels: cuda_available() is false although a device is present");
    if (o.check) run_checks(checks);
    if (o.bench) {
      d2d = d2d_copy_gbps();
      std::printf("\ndevice-to-device copy: %.0f GB/s (read + written)\n", d2d);
      run_bench(o, prop, peak_gbps, bench);
    }
  } catch (const std::exception& e) {
    error = e.what();
    std::printf("gpu_check: ERROR: %s\n", error.c_str());
  }

  int failed = 0;
  for (const CheckRow& r : checks) failed += r.pass ? 0 : 1;
  int bench_failed = 0;
  for (const BenchRow& r : bench) bench_failed += r.pass ? 0 : 1;
  const bool pass = error.empty() && failed == 0 && bench_failed == 0;

  if (!o.out.empty()) {
    std::string j = "{\n";
    j += "  \"tool\": \"gpu_check\",\n";
    j += "  \"device\": {\"name\": " + jstr(prop.name) + ", \"compute_capability\": \"" + std::to_string(prop.major) + "." +
         std::to_string(prop.minor) + "\", \"sms\": " + std::to_string(prop.multiProcessorCount) +
         ", \"l2_bytes\": " + std::to_string(prop.l2CacheSize) + ", \"memory_bytes\": " + std::to_string(prop.totalGlobalMem) +
         ", \"peak_memory_GBps\": " + jnum(peak_gbps) + ", \"d2d_copy_GBps\": " + jnum(d2d) +
         ", \"driver_version\": " + std::to_string(driver) + ", \"runtime_version\": " + std::to_string(runtime) + "},\n";
    j += "  \"settings\": {\"reps\": " + std::to_string(o.reps) + ", \"warmup\": " + std::to_string(o.warmup) +
         ", \"bench_group\": " + std::to_string(o.group) + ", \"bench_dtype\": \"f16\", \"l2_flushed\": " +
         (o.flush ? "true" : "false") + ", \"quick\": " + (o.quick ? "true" : "false") + "},\n";
    j += "  \"checks\": [";
    for (size_t i = 0; i < checks.size(); ++i) {
      const CheckRow& r = checks[i];
      j += std::string(i ? ",\n    " : "\n    ") + "{\"bits\": " + std::to_string(r.bits) + ", \"group\": " +
           std::to_string(r.group) + ", \"N\": " + std::to_string(r.N) + ", \"K\": " + std::to_string(r.K) +
           ", \"M\": " + std::to_string(r.M) + ", \"dtype\": \"" + dtype_name(r.dtype) + "\", \"bias\": " +
           (r.bias ? "true" : "false") + ", \"rel_error\": " + jnum(r.err) + ", \"tolerance\": " + jnum(r.tol) +
           ", \"pass\": " + (r.pass ? "true" : "false") + "}";
    }
    j += checks.empty() ? "],\n" : "\n  ],\n";
    j += "  \"bench\": [";
    for (size_t i = 0; i < bench.size(); ++i) {
      const BenchRow& r = bench[i];
      j += std::string(i ? ",\n    " : "\n    ") + "{\"N\": " + std::to_string(r.N) + ", \"K\": " + std::to_string(r.K) +
           ", \"M\": " + std::to_string(r.M) + ", \"bits\": " + std::to_string(r.bits) + ", \"group\": " +
           std::to_string(r.group) + ", \"qgemm_us\": " + jnum(r.q_us) + ", \"qgemm_weight_GBps\": " + jnum(r.q_gbps) +
           ", \"qgemm_pct_peak\": " + jnum(r.q_pct_peak) + ", \"cublas_us\": " + jnum(r.c_us) +
           ", \"cublas_weight_GBps\": " + jnum(r.c_gbps) + ", \"speedup_vs_cublas\": " + jnum(r.speedup) +
           ", \"rel_error_vs_cublas\": " + jnum(r.agree_err) + ", \"tolerance\": 0.01, \"pass\": " +
           (r.pass ? "true" : "false") + "}";
    }
    j += bench.empty() ? "],\n" : "\n  ],\n";
    j += "  \"checks_run\": " + std::to_string(checks.size()) + ", \"checks_failed\": " + std::to_string(failed) +
         ", \"bench_failed\": " + std::to_string(bench_failed) + ",\n";
    j += "  \"error\": " + (error.empty() ? std::string("null") : jstr(error)) + ",\n";
    j += std::string("  \"pass\": ") + (pass ? "true" : "false") + "\n}\n";
    try {
      write_json(o.out, j);
      std::printf("\nwrote %s\n", o.out.c_str());
    } catch (const std::exception& e) {
      std::printf("gpu_check: ERROR: %s\n", e.what());
      return 1;
    }
  }
  std::printf("gpu_check: %s (%zu checks, %d failed; %zu timings, %d disagree with cuBLAS%s%s)\n", pass ? "PASS" : "FAIL",
              checks.size(), failed, bench.size(), bench_failed, error.empty() ? "" : "; error: ", error.c_str());
  return pass ? 0 : 1;
}
