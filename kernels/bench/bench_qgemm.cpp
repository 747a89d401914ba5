// Benchmark of qgemm_cpu against memory bandwidth and a dense fp32 torch::matmul baseline.
//
// For each (K, N), M and bit width: median time of >= `reps` (default 20) timed runs after
// warm-up; fast configurations get more runs (up to --max-reps within --budget seconds). Every
// run uses the next of several copies of the packed weights, and the copies together exceed the
// last-level cache (1.5 x LLC), so weights always come from DRAM; x and y stay cache resident.
//
//   eff_gbps     = (packed codes + scales + zeros + x + y bytes) / time
//   memcpy_gbps  = W / time of memcpy(dst, src, W) with W = packed weight bytes, src and dst both
//                  rotated over pools larger than the LLC (bytes counted once), split over the
//                  same threads of the kernels' own pool
//   read_gbps    = W / time of a streaming read (sum) of the same rotated copies, same threads
// Kernel, memcpy and read runs are interleaved within every repetition (robust to load changes).
// The best_* fields repeat the computation with the fastest run of each measurement instead of
// the median: on a shared, loaded machine they approximate the unloaded numbers.
//   pct_memcpy   = eff_gbps / memcpy_gbps, pct_read = eff_gbps / read_gbps
//   speedup_fp32 = time of torch::matmul(x, W_fp32^T) (weights rotated the same way, same
//                  thread count via at::set_num_threads) / time of qgemm_cpu
//   path         = "tiled" where qgemm_cpu is given a row-tiled copy as the runtime gives it (M < 16:
//                  2/3 bits on AVX-512, 4 bits on VNNI / AVX2; copies rotated the same way); canonical_time_us is then
//                  the canonical layout's time for the same product in the same repetitions
//
// Usage: bench_qgemm [--out FILE.json] [--threads T] [--reps R] [--max-reps R] [--budget SEC] [--group G]
//                    [--isa auto|scalar|avx2|avx512|avx512vnni] [--quick] [--clock wall|cpu] [--xq]
// --xq runs only the activation-rounding benchmark (AVX2 CPUs): the int16 preparation of x for the
// AVX2 kernels (qgemm_impl.h: prepare_xq_panel / prepare_xq / round_to_int16), scalar reference
// against AVX2 in one run, samples alternated, single thread; both wall and thread CPU time per
// sample (medians and minima), and their ratios. K = 576 and 1536, M = 8 (fused layout), 256 and
// 1536 (panel layout); --group sets the group (eval exports use 64).
// --clock cpu (with --threads 1) times everything with the thread's CPU clock: use it on a
// shared, oversubscribed machine, where wall-clock times mostly measure the scheduler.
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/membw.h"
#include "qgemm_impl.h"  // detail::parallel_for: the memcpy/read baselines use the kernels' own pool

using namespace llmc::kernels;
using Clock = std::chrono::steady_clock;

namespace {

struct Opts {
  std::string out = "build/bench_kernels.json";
  int threads = 0;
  int reps = 20;           // minimum timed runs per measurement
  int max_reps = 400;      // cap for fast configurations
  double budget_s = 1.0;   // time budget per configuration (more runs when they are fast)
  int group = 128;
  Isa isa = Isa::kAuto;
  bool quick = false;
  bool cpu_clock = false;  // --clock cpu: thread CPU time (single thread only)
  bool xq = false;         // --xq: the activation-rounding benchmark only
  bool out_set = false;
  std::vector<std::pair<int, int>> shapes;  // (K, N) from --shapes N:K,... (bench_decode_stream's order)
  std::vector<int> ms, bits;                // --ms 1,128 / --bits 4: instead of the defaults
};

// "a,b,c" -> ints (--shapes: "N:K,N:K" with the colons read as commas). Exits with a usage line on
// anything else.
std::vector<int> parse_ints(const std::string& v, const char* flag) {
  std::vector<int> out;
  size_t at = 0;
  while (at <= v.size()) {
    const size_t comma = v.find(',', at);
    const std::string t = v.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
    char* end = nullptr;
    const long x = std::strtol(t.c_str(), &end, 10);
    if (t.empty() || *end != '\0' || x <= 0) {
      std::fprintf(stderr, "%s: '%s' is not a list of positive integers\n", flag, v.c_str());
      std::exit(2);
    }
    out.push_back(static_cast<int>(x));
    if (comma == std::string::npos) break;
    at = comma + 1;
  }
  return out;
}

bool g_cpu_clock = false;

double wall_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

// Timestamp for measurements: wall clock, or with --clock cpu the calling thread's CPU time
// (with one thread every measured operation runs on the calling thread; CPU time then excludes
// the time the thread is descheduled on a shared machine but still includes memory stalls).
double now_s() {
  if (!g_cpu_clock) return wall_s();
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

double min_of(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

size_t llc_bytes() {
  long v = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (v <= 0) v = sysconf(_SC_LEVEL2_CACHE_SIZE);
  return v > 0 ? static_cast<size_t>(v) : (size_t{32} << 20);
}

// Enough copies of `bytes` to cover `pool` bytes (at least 2).
int copies_for(size_t bytes, size_t pool) { return static_cast<int>(std::max<size_t>(2, (pool + bytes - 1) / bytes)); }

// A pool of `n` copies of one buffer, each 64-byte aligned; pages are touched up front.
struct Pool {
  size_t stride = 0;
  int n = 0;
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> mem;
  uint8_t* at(int i) { return mem.get() + static_cast<size_t>(i) * stride; }
  void init(size_t bytes, int copies) {
    stride = (bytes + 63) / 64 * 64;
    n = copies;
    mem.reset(static_cast<uint8_t*>(std::aligned_alloc(64, stride * n)));
    if (!mem) {
      std::fprintf(stderr, "out of memory (%zu bytes)\n", stride * n);
      std::exit(1);
    }
    std::memset(mem.get(), 0, stride * n);
  }
  void release() { mem.reset(); }
};

struct Row {
  int K, N, M, bits, group, threads;
  std::string isa;
  double t_us, eff_gbps, memcpy_gbps, read_gbps, pct_memcpy, pct_read, dense_us, speedup;
  // Same quantities from the fastest run of each measurement (indicative of an unloaded machine).
  double best_t_us, best_eff_gbps, best_memcpy_gbps, best_pct_memcpy, best_dense_us, best_speedup;
  size_t weight_bytes;
  int copies;
  int runs;
  // "tiled": qgemm_cpu given a row-tiled copy (qtiled.h), as the runtime calls it at small M (2/3 bits
  // on AVX-512, 4 bits on VNNI / AVX2); "canonical" otherwise. For "tiled", canonical_us is the same product from
  // the canonical layout alone, timed in the same repetitions.
  std::string path = "canonical";
  double canonical_us = 0;
};

// Splits [0, bytes) into T 64-byte aligned chunks run on the kernels' thread pool, so the
// baselines pay exactly the kernel's threading overhead.
template <typename F>
void par_bytes(size_t bytes, int T, F f) {
  struct Ctx {
    size_t bytes;
    int T;
    F* f;
  } ctx{bytes, T, &f};
  llmc::kernels::detail::parallel_for(
      T, T,
      [](void* c, int t) {
        const Ctx& x = *static_cast<const Ctx*>(c);
        const size_t lo = x.bytes * t / x.T / 64 * 64, hi = (t + 1 == x.T) ? x.bytes : x.bytes * (t + 1) / x.T / 64 * 64;
        (*x.f)(lo, hi);
      },
      &ctx);
}

volatile uint64_t g_sink = 0;

// Timed runs for a configuration whose single run takes about t_run seconds: at least `reps`,
// more (up to max_reps) while they fit in the budget.
int reps_for(const Opts& o, double t_run) {
  const int by_budget = t_run > 0 ? static_cast<int>(o.budget_s / t_run) : o.max_reps;
  return std::max(o.reps, std::min(o.max_reps, by_budget));
}

double thread_cpu_s() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// --xq: scalar reference vs AVX2 for the activation preparation of the AVX2 int16 kernels. Every
// sample calls one variant `inner` times (about 0.5 ms of scalar work); samples of the variants
// alternate, so load changes on a shared machine hit all of them alike.
int run_xq_bench(const Opts& o) {
  namespace d = llmc::kernels::detail;
  if (!isa_supported(Isa::kAvx2)) {
    std::fprintf(stderr, "--xq needs a CPU with AVX2 (the AVX2 preparation has nothing to run on)\n");
    return 2;
  }
  const std::string out = o.out_set ? o.out : "build/bench_xq.json";
  const int samples = std::max(o.reps, 30);
  struct Cfg {
    int K, M;
  };
  const std::vector<Cfg> cfgs = {{576, 8}, {576, 256}, {576, 1536}, {1536, 8}, {1536, 256}, {1536, 1536}};
  std::mt19937 rng(42);
  std::normal_distribution<float> nd;
  std::ostringstream rows;
  const double t_start = wall_s();
  std::printf("bench_qgemm --xq: group=%d samples=%d (scalar reference vs AVX2, 1 thread)\n", o.group, samples);
  for (size_t ci = 0; ci < cfgs.size(); ++ci) {
    const auto [K, M] = cfgs[ci];
    const bool panel = M >= 16;
    std::vector<float> x(static_cast<size_t>(M) * K);
    for (auto& v : x) v = nd(rng);
    const QLayout l = make_layout(4, o.group, 16, K);
    d::Problem p;
    p.M = M;
    p.N = 16;
    p.K = K;
    p.bits = 4;
    p.group = o.group;
    p.Kp = l.K_padded;
    p.Kb = l.real_blocks;
    p.G = l.groups_per_row;
    p.Mp = (M + 15) / 16 * 16;
    d::Scratch sq[2], sg[2];
    std::vector<int16_t> qbuf(static_cast<size_t>(o.group));
    // Variants: 0/1 the layout's whole preparation (scalar, AVX2), 2/3 the rounding alone into a
    // group buffer (round_to_int16_scalar / _avx2 over every (row, group)).
    auto run = [&](int v) {
      if (v < 2) {
        const Isa isa = v == 0 ? Isa::kScalar : Isa::kAvx2;
        if (panel) d::prepare_xq_panel(x.data(), p, sq[v], sg[v], isa);
        else d::prepare_xq(x.data(), p, sq[v], sg[v], isa);
        return;
      }
      int total = 0;
      for (int m = 0; m < M; ++m) {
        for (int g = 0; g < p.G; ++g) {
          const int k0 = g * p.group, n = std::min(K, k0 + p.group) - k0;
          int s = 0;
          const float* xr = x.data() + static_cast<size_t>(m) * K + k0;
          const float dx = v == 2 ? d::round_to_int16_scalar(xr, n, qbuf.data(), &s) : d::round_to_int16_avx2(xr, n, qbuf.data(), &s);
          total += s + static_cast<int>(dx > 0.f);
        }
      }
      g_sink = g_sink + static_cast<uint64_t>(total);
    };
    // Calls per sample: ~0.5 ms of the scalar preparation.
    double t1 = 0;
    for (int w = 0; w < 3; ++w) {
      const double t0 = wall_s();
      run(0);
      t1 = wall_s() - t0;
    }
    const int inner = std::max(1, static_cast<int>(5e-4 / std::max(t1, 1e-9)));
    std::vector<double> tw[4], tc[4];
    for (int r = 0; r < samples + 2; ++r) {
      for (int v = 0; v < 4; ++v) {
        const double w0 = wall_s(), c0 = thread_cpu_s();
        for (int i = 0; i < inner; ++i) run(v);
        const double c1 = thread_cpu_s(), w1 = wall_s();
        if (r >= 2) {  // two warm-up rounds
          tw[v].push_back((w1 - w0) / inner);
          tc[v].push_back((c1 - c0) / inner);
        }
      }
    }
    double med_w[4], med_c[4], min_w[4];
    for (int v = 0; v < 4; ++v) {
      med_w[v] = median(tw[v]) * 1e6;
      med_c[v] = median(tc[v]) * 1e6;
      min_w[v] = min_of(tw[v]) * 1e6;
    }
    const char* layout = panel ? "panel" : "fused";
    std::printf("K=%5d M=%5d %s: prepare scalar %9.1f us avx2 %8.1f us  x%.2f (cpu x%.2f, best x%.2f) | "
                "round only scalar %9.1f us avx2 %8.1f us  x%.2f (cpu x%.2f, best x%.2f)\n",
                K, M, layout, med_w[0], med_w[1], med_w[0] / med_w[1], med_c[0] / med_c[1], min_w[0] / min_w[1], med_w[2],
                med_w[3], med_w[2] / med_w[3], med_c[2] / med_c[3], min_w[2] / min_w[3]);
    std::fflush(stdout);
    char buf[2048];
    std::snprintf(buf, sizeof buf,
                  "    {\"K\": %d, \"M\": %d, \"group\": %d, \"layout\": \"%s\", \"samples\": %d, \"calls_per_sample\": %d, "
                  "\"prepare_scalar_us\": %.3f, \"prepare_avx2_us\": %.3f, \"prepare_ratio\": %.3f, "
                  "\"prepare_scalar_cpu_us\": %.3f, \"prepare_avx2_cpu_us\": %.3f, \"prepare_ratio_cpu\": %.3f, "
                  "\"prepare_scalar_best_us\": %.3f, \"prepare_avx2_best_us\": %.3f, \"prepare_ratio_best\": %.3f, "
                  "\"round_scalar_us\": %.3f, \"round_avx2_us\": %.3f, \"round_ratio\": %.3f, "
                  "\"round_scalar_cpu_us\": %.3f, \"round_avx2_cpu_us\": %.3f, \"round_ratio_cpu\": %.3f, "
                  "\"round_scalar_best_us\": %.3f, \"round_avx2_best_us\": %.3f, \"round_ratio_best\": %.3f}%s\n",
                  K, M, o.group, layout, samples, inner, med_w[0], med_w[1], med_w[0] / med_w[1], med_c[0], med_c[1],
                  med_c[0] / med_c[1], min_w[0], min_w[1], min_w[0] / min_w[1], med_w[2], med_w[3], med_w[2] / med_w[3],
                  med_c[2], med_c[3], med_c[2] / med_c[3], min_w[2], min_w[3], min_w[2] / min_w[3],
                  ci + 1 < cfgs.size() ? "," : "");
    rows << buf;
  }
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 1) load[0] = -1;
  std::ostringstream js;
  js << "{\n  \"benchmark\": \"xq_prepare\",\n  \"group\": " << o.group << ",\n  \"samples\": " << samples
     << ",\n  \"threads\": 1,\n  \"loadavg_1min_at_end\": " << load[0] << ",\n  \"seconds\": " << (wall_s() - t_start)
     << ",\n  \"note\": \"*_us: median wall time per call; *_cpu_us: median thread CPU time; *_best_us: fastest sample; "
        "ratio = scalar / avx2\",\n  \"results\": [\n"
     << rows.str() << "  ]\n}\n";
  std::ofstream f(out);
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", out.c_str());
    return 1;
  }
  f << js.str();
  std::printf("wrote %s (%.1f s)\n", out.c_str(), wall_s() - t_start);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value for %s\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") {
      o.out = next();
      o.out_set = true;
    } else if (a == "--xq") o.xq = true;
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--reps") o.reps = std::max(1, std::stoi(next()));
    else if (a == "--max-reps") o.max_reps = std::max(1, std::stoi(next()));
    else if (a == "--budget") o.budget_s = std::stod(next());
    else if (a == "--group") o.group = std::stoi(next());
    else if (a == "--quick") o.quick = true;
    else if (a == "--ms") o.ms = parse_ints(next(), "--ms");
    else if (a == "--bits") o.bits = parse_ints(next(), "--bits");
    else if (a == "--shapes") {
      std::string v = next();
      for (char& ch : v) ch = ch == ':' ? ',' : ch;
      const std::vector<int> kn = parse_ints(v, "--shapes");  // N, K, N, K, ...
      if (kn.size() % 2 != 0) {
        std::fprintf(stderr, "--shapes: N:K pairs (rows:columns), comma separated\n");
        return 2;
      }
      for (size_t j = 0; j < kn.size(); j += 2) o.shapes.push_back({kn[j + 1], kn[j]});
    }
    else if (a == "--clock") o.cpu_clock = next() == "cpu";
    else if (a == "--isa") {
      const std::string v = next();
      o.isa = v == "scalar"       ? Isa::kScalar
              : v == "avx2"       ? Isa::kAvx2
              : v == "avx512"     ? Isa::kAvx512
              : v == "avx512vnni" ? Isa::kAvx512Vnni
                                  : Isa::kAuto;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--out FILE] [--threads T] [--reps R] [--max-reps R] [--budget SEC] [--group G] "
                   "[--isa I] [--quick] [--clock wall|cpu] [--xq] [--shapes N:K,...] [--ms M,...] [--bits B,...]\n",
                   argv[0]);
      return 2;
    }
  }
  if (o.xq) return run_xq_bench(o);
  const int T = o.threads > 0 ? o.threads : default_num_threads();
  if (o.cpu_clock && T != 1) {
    std::fprintf(stderr, "--clock cpu needs --threads 1\n");
    return 2;
  }
  g_cpu_clock = o.cpu_clock;
  at::set_num_threads(T);
  torch::NoGradGuard no_grad;
  const Isa isa = o.isa == Isa::kAuto ? best_isa() : o.isa;
  const size_t llc = llc_bytes();
  const size_t pool_bytes = llc + llc / 2;
  std::printf("bench_qgemm: threads=%d isa=%s group=%d LLC=%zu MiB, weight pool %zu MiB, reps=%d\n", T,
              isa_name(isa), o.group, llc >> 20, pool_bytes >> 20, o.reps);

  std::vector<std::pair<int, int>> shapes = {{4096, 4096}, {4096, 14336}, {14336, 4096}, {576, 1536}, {1536, 576}};
  std::vector<int> Ms = {1, 16, 128};
  std::vector<int> bitss = {2, 3, 4, 8};
  if (o.quick) {
    shapes = {{4096, 4096}, {576, 1536}};
    Ms = {1, 16};
  }
  if (!o.shapes.empty()) shapes = o.shapes;
  if (!o.ms.empty()) Ms = o.ms;
  if (!o.bits.empty()) bitss = o.bits;
  const int warm = 3;
  std::vector<Row> rows;
  std::mt19937 rng(42);
  const double t_start = wall_s();

  for (auto [K, N] : shapes) {
    // Dense fp32 baseline per M (weights rotated like the quantized ones).
    std::vector<double> dense_us(Ms.size(), 0), dense_best_us(Ms.size(), 0);
    {
      const size_t wbytes = static_cast<size_t>(N) * K * 4;
      const int nc = copies_for(wbytes, pool_bytes);
      std::vector<torch::Tensor> Ws;
      for (int c = 0; c < nc; ++c) Ws.push_back(torch::randn({N, K}, torch::kFloat32) * 0.02);
      for (size_t mi = 0; mi < Ms.size(); ++mi) {
        const int M = Ms[mi];
        const torch::Tensor X = torch::randn({M, K}, torch::kFloat32);
        std::vector<double> ts;
        int ci = 0;
        double t_warm = 0;
        for (int r = 0, total = warm + o.reps; r < total; ++r) {
          const torch::Tensor& W = Ws[ci++ % nc];
          const double t0 = now_s();
          torch::Tensor Y = torch::matmul(X, W.t());
          const double t1 = now_s();
          if (r < warm) t_warm = t1 - t0;
          if (r == warm - 1) total = warm + reps_for(o, t_warm);
          if (r >= warm) ts.push_back(t1 - t0);
        }
        dense_us[mi] = median(ts) * 1e6;
        dense_best_us[mi] = min_of(ts) * 1e6;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let torch's OpenMP threads go idle

    for (int bits : bitss) {
      const QLayout l = make_layout(bits, o.group, N, K);
      const size_t wb = l.total_bytes();
      const int nc = copies_for(wb, pool_bytes);
      // Copy 0: random codes and realistic fp16 scales/zeros; the other copies are byte copies.
      Pool wp;
      wp.init(wb, nc);
      {
        std::uniform_int_distribution<int> byte(0, 255);
        uint8_t* c0 = wp.at(0);
        for (size_t i = 0; i < l.code_bytes; ++i) c0[i] = static_cast<uint8_t>(byte(rng));
        auto* sc = reinterpret_cast<uint16_t*>(c0 + l.code_bytes);
        auto* zc = sc + l.scale_count;
        std::uniform_real_distribution<float> sd(0.001f, 0.01f);
        for (size_t i = 0; i < l.scale_count; ++i) {
          sc[i] = fp32_to_fp16(sd(rng));
          zc[i] = fp32_to_fp16(static_cast<float>((1 << bits) / 2));
        }
        for (int c = 1; c < nc; ++c) std::memcpy(wp.at(c), c0, wb);
      }
      auto view = [&](int c) {
        uint8_t* p = wp.at(c);
        const auto* sc = reinterpret_cast<const uint16_t*>(p + l.code_bytes);
        return QMatrixView{bits, o.group, N, K, p, sc, sc + l.scale_count};
      };
      // Row-tiled copies where the runtime would make them (same data, rotated the same way).
      const bool tiled = (isa == Isa::kAvx512 || isa == Isa::kAvx512Vnni || isa == Isa::kAvx2) && tiled_faster(bits);
      Pool tp;
      if (tiled) {
        const QTiledLayout tl = make_tiled_layout(bits, o.group, N, K);
        tp.init(tl.total_bytes, nc);
        tile_into(view(0), tp.at(0));
        for (int c = 1; c < nc; ++c) std::memcpy(tp.at(c), tp.at(0), tl.total_bytes);
      }
      auto tview = [&](int c) { return tiled ? QTiledView{bits, o.group, N, K, tp.at(c)} : QTiledView{}; };

      // Interleaved measurement: every repetition times a memcpy, a streaming read and the
      // kernel for each M, each on the next (cold) copy, so load fluctuations on a shared
      // machine hit baselines and kernel alike.
      Pool dst;
      dst.init(wb, nc);
      std::vector<std::vector<float>> xs, ys;
      std::normal_distribution<float> nd;
      for (int M : Ms) {
        xs.emplace_back(static_cast<size_t>(M) * K);
        ys.emplace_back(static_cast<size_t>(M) * N);
        for (auto& v : xs.back()) v = nd(rng);
      }
      // Per M: `reps` interleaved repetitions of (memcpy, read, kernel), each on the next copy.
      std::vector<std::vector<double>> tm(Ms.size()), tr(Ms.size()), tk(Ms.size()), tc(Ms.size());
      int ci = 0;
      for (size_t mi = 0; mi < Ms.size(); ++mi) {
        double t_warm = 0;
        for (int r = 0, total = warm + o.reps; r < total; ++r) {
          {
            const uint8_t* src = wp.at(ci % nc);
            uint8_t* d = dst.at(ci % nc);
            ++ci;
            const double t0 = now_s();
            par_bytes(wb, T, [&](size_t lo, size_t hi) { std::memcpy(d + lo, src + lo, hi - lo); });
            const double t1 = now_s();
            if (r >= warm) tm[mi].push_back(t1 - t0);
          }
          {
            const uint8_t* src = wp.at(ci++ % nc);
            std::atomic<uint64_t> acc{0};
            const double t0 = now_s();
            par_bytes(wb, T, [&](size_t lo, size_t hi) { acc += llmc::kernels::read_sum(src + lo, hi - lo); });
            const double t1 = now_s();
            g_sink = g_sink + acc.load();
            if (r >= warm) tr[mi].push_back(t1 - t0);
          }
          const int c = ci++ % nc;
          const double t0 = now_s();
          qgemm_cpu(xs[mi].data(), Ms[mi], view(c), tview(c), nullptr, ys[mi].data(), T, isa);
          const double t1 = now_s();
          if (r < warm) t_warm = t1 - t0;
          if (r == warm - 1) total = warm + reps_for(o, t_warm);
          if (r >= warm) tk[mi].push_back(t1 - t0);
          if (tiled && Ms[mi] < kTiledMaxM) {
            const QMatrixView w = view(ci++ % nc);
            const double t2 = now_s();
            qgemm_cpu(xs[mi].data(), Ms[mi], w, nullptr, ys[mi].data(), T, isa);
            if (r >= warm) tc[mi].push_back(now_s() - t2);
          }
        }
      }
      dst.release();
      for (size_t mi = 0; mi < Ms.size(); ++mi) {
        const int M = Ms[mi];
        const double memcpy_gbps = wb / median(tm[mi]) / 1e9;
        const double read_gbps = wb / median(tr[mi]) / 1e9;
        const double t = median(tk[mi]);
        const double bytes = static_cast<double>(wb) + 4.0 * M * K + 4.0 * M * N;
        const double tb = min_of(tk[mi]);
        Row row{K, N, M, bits, o.group, T, isa_name(isa), t * 1e6, bytes / t / 1e9, memcpy_gbps, read_gbps, 0, 0,
                dense_us[mi], dense_us[mi] / (t * 1e6), tb * 1e6, bytes / tb / 1e9, wb / min_of(tm[mi]) / 1e9, 0,
                dense_best_us[mi], dense_best_us[mi] / (tb * 1e6), wb, nc, static_cast<int>(tk[mi].size())};
        row.pct_memcpy = 100.0 * row.eff_gbps / memcpy_gbps;
        row.pct_read = 100.0 * row.eff_gbps / read_gbps;
        row.best_pct_memcpy = 100.0 * row.best_eff_gbps / row.best_memcpy_gbps;
        if (!tc[mi].empty()) {
          row.path = "tiled";
          row.canonical_us = median(tc[mi]) * 1e6;
        }
        rows.push_back(row);
        std::printf("K=%5d N=%5d M=%3d b=%d: %9.1f us  %6.2f GB/s  memcpy %6.2f (%5.1f%%)  read %6.2f (%5.1f%%)  "
                    "fp32 %9.1f us  x%.2f | best: %6.2f GB/s %5.1f%% x%.2f",
                    K, N, M, bits, row.t_us, row.eff_gbps, memcpy_gbps, row.pct_memcpy, read_gbps, row.pct_read,
                    row.dense_us, row.speedup, row.best_eff_gbps, row.best_pct_memcpy, row.best_speedup);
        if (row.path == "tiled") {
          std::printf(" | tiled; canonical %.1f us (x%.2f)", row.canonical_us, row.canonical_us / row.t_us);
        }
        std::printf("\n");
        std::fflush(stdout);
      }
    }
  }

  std::ostringstream js;
  js << "{\n  \"benchmark\": \"qgemm_cpu\",\n  \"threads\": " << T << ",\n  \"isa\": \"" << isa_name(isa)
     << "\",\n  \"group\": " << o.group << ",\n  \"reps\": " << o.reps << ",\n  \"max_reps\": " << o.max_reps << ",\n  \"budget_s\": " << o.budget_s << ",\n  \"llc_bytes\": " << llc
     << ",\n  \"clock\": \"" << (o.cpu_clock ? "thread_cpu" : "wall") << "\",\n  \"seconds\": " << (wall_s() - t_start) << ",\n  \"results\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    char buf[2048];
    std::snprintf(buf, sizeof buf,
                  "    {\"K\": %d, \"N\": %d, \"M\": %d, \"bits\": %d, \"group\": %d, \"threads\": %d, \"isa\": \"%s\", "
                  "\"weight_bytes\": %zu, \"weight_copies\": %d, \"runs\": %d, \"time_us\": %.3f, \"eff_gbps\": %.3f, "
                  "\"memcpy_gbps\": %.3f, \"read_gbps\": %.3f, \"pct_memcpy\": %.1f, \"pct_read\": %.1f, "
                  "\"dense_fp32_us\": %.3f, \"speedup_vs_fp32\": %.3f, \"best_time_us\": %.3f, "
                  "\"best_eff_gbps\": %.3f, \"best_memcpy_gbps\": %.3f, \"best_pct_memcpy\": %.1f, "
                  "\"best_dense_fp32_us\": %.3f, \"best_speedup_vs_fp32\": %.3f, \"path\": \"%s\", "
                  "\"canonical_time_us\": %.3f}%s\n",
                  r.K, r.N, r.M, r.bits, r.group, r.threads, r.isa.c_str(), r.weight_bytes, r.copies, r.runs, r.t_us, r.eff_gbps,
                  r.memcpy_gbps, r.read_gbps, r.pct_memcpy, r.pct_read, r.dense_us, r.speedup, r.best_t_us,
                  r.best_eff_gbps, r.best_memcpy_gbps, r.best_pct_memcpy, r.best_dense_us, r.best_speedup,
                  r.path.c_str(), r.canonical_us, i + 1 < rows.size() ? "," : "");
    js << buf;
  }
  js << "  ]\n}\n";
  std::ofstream f(o.out);
  if (!f) {
    std::fprintf(stderr, "cannot write %s\n", o.out.c_str());
    return 1;
  }
  f << js.str();
  std::printf("wrote %s (%.1f s)\n", o.out.c_str(), wall_s() - t_start);
  return 0;
}
