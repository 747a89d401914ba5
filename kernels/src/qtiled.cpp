// Row-tiled 2/3/4-bit layout (qtiled.h): layout, conversion, and the qgemm_tiled_cpu dispatcher.
#include "llmc_kernels/qtiled.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "llmc_kernels/qgemm.h"
#include "qgemm_impl.h"

namespace llmc::kernels {
namespace {

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument(msg); }

size_t align64(size_t n) { return (n + 63) / 64 * 64; }

// Whether ISA path `use` has a tiled kernel for `bits`: the x-table kernel (2/3 bits, AVX-512) or
// the 4-bit tile kernel (AVX-512 VNNI, AVX2).
bool tiled_path(Isa use, int bits) {
  if (bits == 4) return use == Isa::kAvx512Vnni || use == Isa::kAvx2;
  return tiled_bits(bits) && detail::is_avx512(use);
}

// Words of canonical block kb of row 16 t + r.
void read_block(const uint8_t* data, const QTiledLayout& l, int t, int kb, int r, uint32_t* bw) {
  detail::tile_block_words(data + l.block_offset(t, kb), l.bits, r, bw);
}
uint16_t read_u16(const uint8_t* p, int r) {
  uint16_t v;
  std::memcpy(&v, p + 2 * r, 2);
  return v;
}

// Rows [row0, row0 + rows) of a tiled copy in the canonical order: codes [rows][K] (padding dropped)
// and, where not null, fp16 scales / zeros [rows][groups].
void untile_rows(const QTiledView& t, const QTiledLayout& l, int row0, int rows, uint8_t* codes, uint16_t* sc,
                 uint16_t* zr) {
  for (int i = 0; i < rows; ++i) {
    const int n = row0 + i, ti = n / kTileRows, r = n % kTileRows;
    for (int kb = 0; kb < l.blocks; ++kb) {
      uint32_t bw[4];
      read_block(t.data, l, ti, kb, r, bw);
      for (int c = 0; c < kBlockCodes && kb * kBlockCodes + c < t.K; ++c)
        codes[static_cast<size_t>(i) * t.K + kb * kBlockCodes + c] = static_cast<uint8_t>(block_code(t.bits, bw, c));
    }
    for (int g = 0; sc != nullptr && g < l.groups; ++g) {
      sc[static_cast<size_t>(i) * l.groups + g] = read_u16(t.data + l.scales_offset(ti, g), r);
      zr[static_cast<size_t>(i) * l.groups + g] = read_u16(t.data + l.zeros_offset(ti, g), r);
    }
  }
}

// Portable path: each row dequantized from its tile (fp32), then dotted with every row of x (fp64).
void tiled_scalar(const float* x, int M, const QTiledView& t, const float* bias, float* y) {
  const QTiledLayout l = t.layout();
  std::vector<float> w(static_cast<size_t>(t.K));
  for (int n = 0; n < t.N; ++n) {
    const int ti = n / kTileRows, r = n % kTileRows;
    for (int kb = 0; kb < l.blocks; ++kb) {
      uint32_t bw[4];
      read_block(t.data, l, ti, kb, r, bw);
      const int g = kb * kBlockCodes / t.group;
      const float s = fp16_to_fp32(read_u16(t.data + l.scales_offset(ti, g), r));
      const float z = fp16_to_fp32(read_u16(t.data + l.zeros_offset(ti, g), r));
      for (int c = 0; c < kBlockCodes && kb * kBlockCodes + c < t.K; ++c) {
        w[static_cast<size_t>(kb) * kBlockCodes + c] = dequant(block_code(t.bits, bw, c), s, z);
      }
    }
    for (int m = 0; m < M; ++m) {
      const float* xr = x + static_cast<size_t>(m) * t.K;
      double acc = bias ? bias[n] : 0.0;  // fp64: one serial chain of fp32 adds loses ~1e-5 at K = 1e5
      for (int k = 0; k < t.K; ++k) acc += static_cast<double>(xr[k]) * w[k];
      y[static_cast<size_t>(m) * t.N + n] = static_cast<float>(acc);
    }
  }
}

#if defined(LLMC_KERNELS_X86)
struct TileTask {
  const detail::TiledProblem* p;
  int tiles_per_task;
  void (*tiles)(const detail::TiledProblem&, int, int);  // tiled_tiles_avx512 or tiled4_tiles_{vnni,avx2}
};

void run_tiles(void* c, int task) {
  const auto& ctx = *static_cast<const TileTask*>(c);
  const int t0 = task * ctx.tiles_per_task, t1 = std::min(ctx.p->l.tiles, t0 + ctx.tiles_per_task);
  ctx.tiles(*ctx.p, t0, t1);
}

// The 4-bit tile kernel's call (M < kTiledMaxM, AVX-512 VNNI or AVX2: `tiles`): x rounded to int16
// per (row, group) as the canonical integer kernels round it (the same dx and xq), paired for the
// tile words (TiledProblem::pairs), then tasks take ranges of tiles.
void tiled4(const float* x, int M, const QTiledView& t, const QTiledLayout& l, const float* bias, float* y,
            int nthreads, void (*tiles)(const detail::TiledProblem&, int, int)) {
  detail::TiledProblem p;
  p.l = l;
  p.data = t.data;
  p.bias = bias;
  p.M = M;
  p.x = x;
  p.y = y;
  thread_local detail::Scratch s_p, s_g;
  thread_local std::vector<int16_t> q;
  p.pairs = reinterpret_cast<int32_t*>(s_p.get(static_cast<size_t>(M) * l.blocks * 16));
  p.dx = s_g.get(2 * static_cast<size_t>(M) * l.groups);
  p.xs = p.dx + static_cast<size_t>(M) * l.groups;
  q.assign(static_cast<size_t>(l.blocks) * kBlockCodes, int16_t{0});  // 0 past K in the last block
  for (int m = 0; m < M; ++m) {
    const float* xr = x + static_cast<size_t>(m) * t.K;
    for (int g = 0; g < l.groups; ++g) {  // every group holds real columns (K_padded = round_up(K, group))
      const int k0 = g * t.group, n = std::min(t.K, k0 + t.group) - k0;
      int sum = 0;
      p.dx[static_cast<size_t>(m) * l.groups + g] = detail::round_to_int16_avx2(xr + k0, n, q.data() + k0, &sum);
      p.xs[static_cast<size_t>(m) * l.groups + g] = static_cast<float>(sum);
    }
    int32_t* pr = p.pairs + static_cast<size_t>(m) * l.blocks * 16;
    for (int kb = 0; kb < l.blocks; ++kb) {
      const int16_t* qb = q.data() + kb * kBlockCodes;
      for (int h = 0; h < 4; ++h)
        for (int j = 0; j < 4; ++j)
          pr[(kb * 4 + h) * 4 + j] = static_cast<int32_t>(static_cast<uint16_t>(qb[4 * j + h]) |
                                                          static_cast<uint32_t>(static_cast<uint16_t>(qb[4 * j + 16 + h])) << 16);
    }
  }
  const int per = detail::units_per_task(l.tiles, nthreads, l.tiles);
  TileTask ctx{&p, per, tiles};
  detail::parallel_for(nthreads, (l.tiles + per - 1) / per, run_tiles, &ctx);
}
#endif

}  // namespace

QTiledLayout make_tiled_layout(int bits, int group, int N, int K) {
  if (!tiled_bits(bits)) bad("tiled layout: bits must be 2, 3 or 4 (got " + std::to_string(bits) + ")");
  const QLayout c = make_layout(bits, group, N, K);
  QTiledLayout l;
  l.bits = bits, l.group = group, l.N = N, l.K = K;
  l.tiles = (N + kTileRows - 1) / kTileRows;
  l.blocks = c.real_blocks;
  l.groups = c.groups_per_row;
  l.panels = (l.blocks + kPanelBlocks - 1) / kPanelBlocks;
  l.total_bytes = l.slice_offset(l.panels - 1, 0) + static_cast<size_t>(l.tiles) * l.slice_bytes(l.panels - 1);
  return l;
}

QTiled QTiled::allocate(const QTiledLayout& layout) {
  QTiled t;
  t.layout_ = layout;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, align64(layout.total_bytes)));
  if (p == nullptr) throw std::bad_alloc();
  t.buf_ = std::shared_ptr<uint8_t>(p, [](uint8_t* q) { std::free(q); });
  return t;
}

QTiled QTiled::within(std::shared_ptr<uint8_t> buffer, size_t offset, const QTiledLayout& layout) {
  if (!buffer) bad("QTiled::within: null buffer");
  if ((reinterpret_cast<uintptr_t>(buffer.get()) + offset) % 64 != 0) bad("QTiled::within: not 64-byte aligned");
  QTiled t;
  t.layout_ = layout;
  uint8_t* p = buffer.get() + offset;
  t.buf_ = std::shared_ptr<uint8_t>(std::move(buffer), p);  // aliasing: shares the buffer's ownership
  return t;
}

void tile_into(const QMatrixView& w, uint8_t* out) {
  validate(w, "tile");
  if (out == nullptr) bad("tile: out is null");
  if (reinterpret_cast<uintptr_t>(out) % 64 != 0) bad("tile: out must be 64-byte aligned");
  const QTiledLayout l = make_tiled_layout(w.bits, w.group, w.N, w.K);
  const QLayout c = w.layout();
  std::memset(out, 0, l.total_bytes);
  for (int n = 0; n < w.N; ++n) {
    const int t = n / kTileRows, r = n % kTileRows;
    for (int kb = 0; kb < l.blocks; ++kb) {
      uint32_t bw[4];
      load_block_words(w.codes + block_offset(c.row_bytes, w.bits, n, kb), w.bits, bw);
      uint8_t* b = out + l.block_offset(t, kb);
      for (int h = 0; h < w.bits; ++h) std::memcpy(b + (static_cast<size_t>(h) * kTileRows + r) * 4, &bw[h], 4);
    }
    for (int g = 0; g < l.groups; ++g) {
      std::memcpy(out + l.scales_offset(t, g) + 2 * r, &w.scales[static_cast<size_t>(n) * l.groups + g], 2);
      std::memcpy(out + l.zeros_offset(t, g) + 2 * r, &w.zeros[static_cast<size_t>(n) * l.groups + g], 2);
    }
  }
}

QTiled tile(const QMatrixView& w) {
  validate(w, "tile");
  QTiled t = QTiled::allocate(make_tiled_layout(w.bits, w.group, w.N, w.K));
  tile_into(w, t.data());
  return t;
}

void untile_codes(const QTiledView& t, uint8_t* codes) {
  if (t.data == nullptr) bad("untile_codes: tiled data is null");
  if (codes == nullptr) bad("untile_codes: codes is null");
  untile_rows(t, t.layout(), 0, t.N, codes, nullptr, nullptr);
}

QMatrix untile(const QTiledView& t, int row0, int rows) {
  if (t.data == nullptr) bad("untile: tiled data is null");
  const QTiledLayout l = t.layout();
  if (rows < 0) rows = t.N - row0;
  if (row0 < 0 || rows < 1 || row0 + rows > t.N) {
    bad("untile: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) + ") outside [0, " +
        std::to_string(t.N) + ")");
  }
  std::vector<uint8_t> codes(static_cast<size_t>(rows) * t.K);
  std::vector<uint16_t> sc(static_cast<size_t>(rows) * l.groups), zr(sc.size());
  untile_rows(t, l, row0, rows, codes.data(), sc.data(), zr.data());
  return pack(t.bits, t.group, rows, t.K, codes.data(), sc.data(), zr.data());
}

void qgemm_tiled_cpu(const float* x, int M, const QTiledView& t, const float* bias, float* y, int num_threads,
                     Isa isa) {
  if (t.data == nullptr) bad("qgemm_tiled_cpu: tiled data is null");
  if (reinterpret_cast<uintptr_t>(t.data) % 64 != 0) bad("qgemm_tiled_cpu: tiled data must be 64-byte aligned");
  const QTiledLayout l = t.layout();  // validates bits, group, N, K
  detail::check_xy("qgemm_tiled_cpu", x, M, t.N, t.K, y);
  detail::check_threads_isa("qgemm_tiled_cpu", num_threads, isa);
  const Isa use = isa == Isa::kAuto ? best_isa() : isa;
#if defined(LLMC_KERNELS_X86)
  if (!tiled_path(use, t.bits)) {
    tiled_scalar(x, M, t, bias, y);  // e.g. 4-bit tiles forced onto AVX-512 without VNNI (tests)
    return;
  }
  if (M >= kTiledMaxM) {
    // Prefill: the canonical layout's panel kernel reading the tiled copy (each weight dequantized
    // once per call; the x-table kernel below re-reads the matrix every 15 rows of x: 1.1x (2 bits)
    // and 2x (3 bits) slower at M = 128), so a tiled matrix needs no canonical copy (on AVX-512
    // VNNI the integer panel kernel, or AMX tiles, reading the tiled words; AVX2 its integer panel
    // kernels (4 bits); Isa::kAvx512 fp32).
    detail::qgemm_tiled_panel(x, M, t, bias, y, num_threads > 0 ? num_threads : default_num_threads(), use);
    return;
  }
  if (t.bits == 4) {  // AVX-512 VNNI or AVX2
    tiled4(x, M, t, l, bias, y, num_threads > 0 ? num_threads : default_num_threads(),
           use == Isa::kAvx2 ? detail::tiled4_tiles_avx2 : detail::tiled4_tiles_vnni);
    return;
  }
  {
    // Rows of x in chunks of kTiledMaxM - 1: the tables (1 KB per row and block, 1.5 KB for 3
    // bits) stay bounded for any M.
    constexpr int kChunkM = kTiledMaxM - 1;
    const int mc = std::min(M, kChunkM);
    thread_local detail::Scratch s2, sh, sx;
    detail::TiledProblem p;
    p.l = l;
    p.data = t.data;
    p.bias = bias;
    p.tab2 = s2.get(static_cast<size_t>(mc) * l.blocks * 256);
    p.tabh = t.bits == 3 ? sh.get(static_cast<size_t>(mc) * l.blocks * 128) : nullptr;
    p.xs = sx.get(static_cast<size_t>(mc) * l.groups);
    const int nthreads = num_threads > 0 ? num_threads : default_num_threads();
    const int per = detail::units_per_task(l.tiles, nthreads, l.tiles);
    for (int m0 = 0; m0 < M; m0 += kChunkM) {
      p.M = std::min(kChunkM, M - m0);
      p.x = x + static_cast<size_t>(m0) * t.K;
      p.y = y + static_cast<size_t>(m0) * t.N;
      detail::tiled_tables_avx512(p);
      TileTask ctx{&p, per, detail::tiled_tiles_avx512};
      detail::parallel_for(nthreads, (l.tiles + per - 1) / per, run_tiles, &ctx);
    }
    return;
  }
#endif
  (void)use;
  tiled_scalar(x, M, t, bias, y);
}

bool tiled_faster(int bits) { return tiled_path(best_isa(), bits); }

void qgemm_cpu(const float* x, int M, const QMatrixView& w, const QTiledView& tiled, const float* bias, float* y,
               int num_threads, Isa isa) {
  // tiled_path of the ISA the call runs on (a forced one this CPU lacks is rejected further on).
  if (!tiled.empty() && M < kTiledMaxM && tiled_path(isa == Isa::kAuto ? best_isa() : isa, w.bits)) {
    if (tiled.bits != w.bits || tiled.group != w.group || tiled.N != w.N || tiled.K != w.K) {
      bad("qgemm_cpu: the tiled copy's shape (bits/group/N/K) differs from the matrix's");
    }
    qgemm_tiled_cpu(x, M, tiled, bias, y, num_threads, isa);
    return;
  }
  qgemm_cpu(x, M, w, bias, y, num_threads, isa);
}

}  // namespace llmc::kernels
