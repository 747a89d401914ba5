// The GEMVs of one decoded token as a model runs them: `layers` x the given shapes at M = 1, every
// matrix its own (so the weights stream from memory as in a real decode, not from cache), timed as
// one pass, next to the read-only bandwidth probe. Isolates the decode kernels' weight stream from
// the runtime (attention, norms, model loading) on a machine whose speed drifts: alternate two
// builds' runs of this, or compare --bits in one run.
//
// Usage: bench_decode_stream [--threads T] [--reps R] [--bits B] [--group G] [--layers L]
//                            [--shapes N:K,N:K,...] [--probe-mib MIB] [--layout L] [--out FILE]
// --layout canonical|tiled|both: the canonical matrices (qgemm_cpu), their row-tiled copies
// (qgemm_tiled_cpu; 2/3/4 bits, as the runtime holds them where tiled_faster()), or both timed in
// turn, pass by pass (default: what the runtime would hold on this CPU).
// Defaults: 1 thread, 30 reps, 4 bits, group 64, SmolLM2-135M's 30 layers of q|k|v 960:576,
// o 576:576, gate|up 3072:576, down 576:1536; probe 1024 MiB. Prints a line per layout; --out writes
// JSON. Bytes (and GB/s) count what a product reads: the codes of the blocks holding real columns
// and every scale and zero.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_kernels/membw.h"
#include "llmc_kernels/qgemm.h"

using namespace llmc::kernels;

namespace {

struct Options {
  int threads = 1, reps = 30, bits = 4, group = 64, layers = 30, probe_mib = 1024;
  std::vector<std::pair<int, int>> shapes = {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}};
  std::string out, layout;
};

[[noreturn]] void usage(const std::string& msg) {
  std::fprintf(stderr, "bench_decode_stream: %s\n", msg.c_str());
  std::exit(2);
}

int int_arg(const std::string& flag, const char* v, int lo) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > (1 << 30)) usage(flag + ": expected an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return static_cast<int>(x);
}

std::vector<std::pair<int, int>> parse_shapes(const std::string& s) {
  std::vector<std::pair<int, int>> r;
  size_t i = 0;
  while (i < s.size()) {
    const size_t j = std::min(s.find(',', i), s.size());
    const std::string item = s.substr(i, j - i);
    int n = 0, k = 0;
    char tail = 0;
    if (std::sscanf(item.c_str(), "%d:%d%c", &n, &k, &tail) != 2 || n < 1 || k < 1)
      usage("--shapes: expected N:K[,N:K...], got '" + item + "'");
    r.emplace_back(n, k);
    i = j + 1;
  }
  if (r.empty()) usage("--shapes: empty");
  return r;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) usage(a + ": missing value (or unknown flag)");
    const char* v = argv[++i];
    if (a == "--threads") o.threads = int_arg(a, v, 1);
    else if (a == "--reps") o.reps = int_arg(a, v, 1);
    else if (a == "--bits") o.bits = int_arg(a, v, 2);
    else if (a == "--group") o.group = int_arg(a, v, 32);
    else if (a == "--layers") o.layers = int_arg(a, v, 1);
    else if (a == "--probe-mib") o.probe_mib = int_arg(a, v, 1);
    else if (a == "--shapes") o.shapes = parse_shapes(v);
    else if (a == "--out") o.out = v;
    else if (a == "--layout") {
      o.layout = v;
      if (o.layout != "canonical" && o.layout != "tiled" && o.layout != "both")
        usage("--layout: expected canonical, tiled or both, got '" + o.layout + "'");
    }
    else usage("unknown flag " + a);
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::vector<QMatrix> ws;
  size_t bytes = 0;
  std::mt19937 rng(1);
  int maxK = 0, maxN = 0;
  try {
    for (int l = 0; l < o.layers; ++l)
      for (auto [N, K] : o.shapes) {
        std::vector<uint8_t> codes(static_cast<size_t>(N) * K);
        for (auto& c : codes) c = static_cast<uint8_t>(rng() % (1u << o.bits));
        const QLayout lay = make_layout(o.bits, o.group, N, K);
        std::vector<uint16_t> sc(lay.scale_count), zc(lay.scale_count);
        std::uniform_real_distribution<float> sd(0.001f, 0.01f);
        for (size_t i = 0; i < lay.scale_count; ++i) {
          sc[i] = fp32_to_fp16(sd(rng));
          zc[i] = fp32_to_fp16(static_cast<float>((1 << o.bits) / 2));
        }
        ws.push_back(pack(o.bits, o.group, N, K, codes.data(), sc.data(), zc.data()));
        // What a product reads: the codes of the blocks that hold real columns (both layouts stop
        // there; a partial last group's padding blocks are never read) and every scale and zero.
        bytes += static_cast<size_t>(N) * (static_cast<size_t>(lay.real_blocks) * 4 * o.bits + 4 * static_cast<size_t>(lay.groups_per_row));
        maxK = std::max(maxK, K);
        maxN = std::max(maxN, N);
      }
  } catch (const std::invalid_argument& e) {
    usage(e.what());
  }
  std::string layout = o.layout.empty() ? (tiled_faster(o.bits) ? "tiled" : "canonical") : o.layout;
  if (layout != "canonical" && !tiled_bits(o.bits)) usage("--layout " + layout + ": " + std::to_string(o.bits) + "-bit matrices have no tiled form");
  std::vector<QTiled> tiles;
  if (layout != "canonical")
    for (const QMatrix& w : ws) tiles.push_back(tile(w.view()));
  std::vector<float> x(static_cast<size_t>(maxK)), y(static_cast<size_t>(maxN));
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  const ReadBandwidth probe = read_bandwidth(static_cast<size_t>(o.probe_mib) << 20, o.threads, 10);
  // One pass over every matrix in one layout (0 canonical, 1 tiled), in ms.
  auto pass = [&](int tiled) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i < ws.size(); ++i) {
      if (tiled) qgemm_tiled_cpu(x.data(), 1, tiles[i].view(), nullptr, y.data(), o.threads);
      else qgemm_cpu(x.data(), 1, ws[i].view(), nullptr, y.data(), o.threads);
    }
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<int> runs;
  if (layout != "tiled") runs.push_back(0);
  if (layout != "canonical") runs.push_back(1);
  std::vector<std::vector<double>> ms(2);
  for (int r = 0; r <= o.reps; ++r)  // pass 0 warms up; the layouts in turn, pass by pass
    for (int k : runs) {
      const double t = pass(k);
      if (r > 0) ms[k].push_back(t);
    }
  double ratio = 0;  // canonical / tiled: median of the per-pass ratios (passes in turn)
  if (runs.size() == 2) {
    std::vector<double> r;
    for (size_t i = 0; i < ms[0].size(); ++i) r.push_back(ms[0][i] / ms[1][i]);
    std::sort(r.begin(), r.end());
    ratio = r[r.size() / 2];
  }
  double med[2] = {0, 0}, p10[2] = {0, 0}, gbps[2] = {0, 0};
  for (int k : runs) {
    std::sort(ms[k].begin(), ms[k].end());
    med[k] = ms[k][ms[k].size() / 2];
    p10[k] = ms[k][ms[k].size() / 10];
    gbps[k] = bytes / med[k] / 1e6;  // both layouts read the same bytes (rows padded to 16 hold none)
    std::printf("decode stream (%s): %d x %zu GEMVs, %d-bit group %d, %.1f MB, %d threads, %s: %.3f ms (p10 %.3f), %.1f GB/s = %.0f%% of the read probe (%.1f GB/s best)\n",
                k ? "tiled" : "canonical", o.layers, o.shapes.size(), o.bits, o.group, bytes / 1e6, o.threads,
                isa_name(best_isa()), med[k], p10[k], gbps[k], 100 * gbps[k] / probe.best_gbps, probe.best_gbps);
  }
  if (runs.size() == 2) std::printf("canonical / tiled time: %.3f (median of the per-pass ratios)\n", ratio);
  if (!o.out.empty()) {
    std::string shapes;
    for (auto [N, K] : o.shapes) shapes += (shapes.empty() ? "\"" : ", \"") + std::to_string(N) + ":" + std::to_string(K) + "\"";
    const std::string tmp = o.out + ".tmp";
    {
      std::ofstream f(tmp);
      f << "{\"benchmark\": \"decode_stream\", \"isa\": \"" << isa_name(best_isa()) << "\", \"threads\": " << o.threads
        << ", \"bits\": " << o.bits << ", \"group\": " << o.group << ", \"layers\": " << o.layers << ", \"shapes\": [" << shapes
        << "], \"bytes\": " << bytes << ", \"reps\": " << o.reps << ", \"read_probe_best_gbps\": " << probe.best_gbps
        << ", \"read_probe_median_gbps\": " << probe.median_gbps << ", \"layouts\": {";
      for (size_t i = 0; i < runs.size(); ++i) {
        const int k = runs[i];
        f << (i ? ", " : "") << "\"" << (k ? "tiled" : "canonical") << "\": {\"median_ms\": " << med[k] << ", \"p10_ms\": " << p10[k]
          << ", \"gbps\": " << gbps[k] << "}";
      }
      f << "}";
      if (runs.size() == 2) f << ", \"canonical_over_tiled\": " << ratio;
      f << "}\n";
      if (!f) usage("cannot write " + tmp);
    }
    if (std::rename(tmp.c_str(), o.out.c_str()) != 0) usage("cannot rename " + tmp + " to " + o.out);
  }
  return 0;
}
