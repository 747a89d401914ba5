// Internal interface between the qgemm_cpu dispatcher and the per-ISA kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "llmc_kernels/qgemm.h"
#include "llmc_kernels/qtiled.h"

namespace llmc::kernels::detail {

// One qgemm_cpu call, after validation and activation preparation.
struct Problem {
  int M = 0, N = 0, K = 0;
  int bits = 0, group = 0;
  int Kp = 0;  // K_padded
  // Blocks of 32 columns that hold real columns, ceil(K / 32). The kernels stop there: the rest of
  // a partial last group is padding whose x is zero (K = 576 with g = 128: 18 of 20 blocks).
  int Kb = 0;
  int G = 0;   // groups per row
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  const uint16_t* scales = nullptr;  // [N][G] fp16
  const uint16_t* zeros = nullptr;   // [N][G] fp16
  const float* bias = nullptr;       // [N] or null
  float* y = nullptr;                // [M][N]

  // Fused (small-M) path.
  const float* xp = nullptr;  // [M][Kp] copy of x, zero in the padding columns, 64-byte aligned rows
  const float* xg = nullptr;  // [M][G] per-group sums of xp (fused 2/3-bit AVX paths)

  // Fused AVX2 path: x rounded to int16 per (row, group), x ~= dx * xq, and laid out per block of
  // 32 columns in the kernel's lane order (avx2_lane_code), one copy per bit plane.
  const int16_t* xq = nullptr;  // [M][Kp / 32][planes][32], 64-byte aligned rows
  size_t xq_row = 0;            // int16 elements per row of xq
  const float* xdx = nullptr;   // [M][G] dx
  const float* xqs = nullptr;   // [M][G] sum of xq over the group (exact: |sum| < 2^24)

  // Panel (large-M) path.
  int Mp = 0;                 // M rounded up to a multiple of 16
  // AVX2: x rounded to int16 per (row, group) as for the fused path, in pairs of columns:
  const int16_t* xq2 = nullptr;  // [Kp / 2][Mp][2]: (xq[m][2i], xq[m][2i + 1]), 0 outside [M) x [K)
  // AVX-512 VNNI at prefill_x_bits() == 8: x rounded to int8 per (row, group) in quads of columns
  // (xq2 is then null; xdxT / xdxsT as for xq2):
  const int8_t* xq4 = nullptr;   // [Kp / 4][Mp][4]: xq[m][4i .. 4i + 3], 0 outside [M) x [K)
  // The AMX kernel's x (VNNI panel on AMX tiles, amx_usable(); xq2 / xq4 are then null), row-major
  // [Mp][Kp], each 32-column block in amx_column order, 0 outside [M) x [K): at int16 x the bytes of
  // xq2's values, lo = xq & 255 and hi = xq >> 8 (arithmetic); at int8 x (prefill_x_bits() == 8) xq4's
  // values in xhi, xlo null.
  const uint8_t* xlo = nullptr;
  const int8_t* xhi = nullptr;
  bool amx = false;  // the VNNI panel kernel runs on AMX tiles (decided once, by prepare_int_panel)
  const float* xdxT = nullptr;   // [G][Mp] dx
  const float* xdxsT = nullptr;  // [G][Mp] dx * sum of xq over the group
  const float* xT = nullptr;  // [Kp][Mp] transposed x, zero outside [M) x [K)
  float* yT = nullptr;        // [N][Mp] fp32 accumulators (not for the AMX kernel: sums in registers)
  // AVX-512 panel paths over a row-tiled copy (qtiled.h; 2/3 bits fp32, 4 bits the VNNI int16
  // kernel) instead of codes / scales / zeros: the same weights dequantized the same way, so the
  // same bits as the canonical panel.
  const uint8_t* tiled = nullptr;
  QTiledLayout tl;
};

// Whether the int8-x prefill kernel may run on AMX tiles: the CPU has AMX-TILE and AMX-INT8 and
// Linux granted this process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM, asked once), the
// environment does not say LLMC_AMX=0, and the tests have not disabled it (set_amx_allowed(false): the AVX-512 VNNI kernel instead, whose bits
// the AMX kernel must reproduce).
bool amx_usable();
void set_amx_allowed(bool allowed);

// The AVX-512 paths (kAvx512Vnni differs in its integer decode and 4/8-bit prefill kernels).
inline bool is_avx512(Isa isa) { return isa == Isa::kAvx512 || isa == Isa::kAvx512Vnni; }

// Panel path tiling (AVX-512 / AVX2): n-rows per micro tile and the K chunk dequantized at once.
constexpr int kPanelKc = 256;
constexpr int kPanelNr512 = 12;
// Rows handed to one task are a multiple of this (divisible by every NT/NR above and by 4).
constexpr int kRowQuantum = 12;

// The fused AVX2 kernel multiplies int16 codes with int16 x (vpmaddwd, exact int32 sums per
// group) and decodes a block of 32 codes into two vectors of 16 int16 lanes per bit plane without
// reordering them; x is stored in that order instead. Lane `lane` (0..31; 16..31 = second vector)
// of plane `plane` holds the block's code number returned here (a permutation of 0..31 per plane).
//   8 bit: vpmovzxbw of bytes 0..15 and 16..31: natural order.
//   4 bit: the 16-byte block broadcast to both halves, 32-bit shifts (0 | 4), mask 0xf: lane j < 16
//          is nibble p = j / 8 (+ 2 in the second vector, after a further shift by 8) of the
//          16-bit word l = j % 8 = bits [16 (l % 2), +16) of block word l / 2.
//   2/3 bit, plane 0 (low two bits, pair layout): the 8-byte block broadcast to the 4 qwords,
//          qword c shifted by 2c, mask 3: lane j is bits [2 (j / 4) (+ 8), +2) of 16-bit word j % 4.
//   3 bit, plane 1 (bit plane, weight 4): word 2 broadcast, element e shifted by e, mask 1: lane j
//          is bit j / 2 + 16 (j % 2) (+ 8) of the plane.
inline int avx2_planes(int bits) { return bits == 3 ? 2 : 1; }
inline int avx2_lane_code(int bits, int plane, int lane) {
  const int part = lane / 16, j = lane % 16;
  if (bits == 8) return lane;
  if (bits == 4) {
    const int l = j % 8, nib = j / 8 + 2 * part;
    return 4 * (4 * (l % 2) + nib) + l / 2;  // code c sits in word c % 4, nibble c / 4
  }
  if (plane == 1) return j / 2 + 16 * (j % 2) + 8 * part;
  const int l = j % 4;
  const int bit = 16 * (l % 2) + 2 * (j / 4) + 8 * part;  // bit offset in block word l / 2
  // Pair layout: nibble k of word h holds code 2k + h (bits 0-1) and 16 + 2k + h (bits 2-3).
  return (bit % 4 == 0 ? 0 : 16) + 2 * (bit / 4) + l / 2;
}

// Each function computes output rows [n0, n1) of y for all M rows of x.
void rows_scalar(const Problem& p, int n0, int n1);
void fused_rows_avx2(const Problem& p, int n0, int n1);
void panel_rows_avx2(const Problem& p, int n0, int n1);
void fused_rows_avx512(const Problem& p, int n0, int n1);
void fused_rows_avx512_vnni(const Problem& p, int n0, int n1);  // on Problem::xq, as fused_rows_avx2
// 4/8 bits, on Problem::xq2 or, where set, Problem::xq4 (Mp a multiple of 32)
void panel_rows_avx512_vnni(const Problem& p, int n0, int n1);
void panel_rows_avx512(const Problem& p, int n0, int n1);

// The panel kernels' last step, scalar (the reference of the two below, and their tail of fewer than
// a block of outputs): y[m][n] = yT[n][m] + bias[n] for m < M, n in [n0, n1) (yT = Problem::yT,
// [N][Mp]), in blocks of 16 rows of x.
void write_panel_output(const Problem& p, int n0, int n1);
// What the panel kernels call: the same with 8 x 8 (AVX2) / 16 x 16 (AVX-512) register transposes,
// bit for bit (a scalar store per element made it 13.6% of a 128-token prefill at 1 thread on Zen 4);
// callers check the ISA.
void write_panel_output_avx2(const Problem& p, int n0, int n1);
void write_panel_output_avx512(const Problem& p, int n0, int n1);

// Runs fn(ctx, task) for task in [0, ntasks) on `nthreads` threads (the caller is one of them)
// of a persistent pool; returns when all tasks are done. Calls from several threads are
// serialized; a call from inside a task runs serially (no deadlock); the first exception thrown
// by a task is rethrown here (remaining tasks are skipped).
void parallel_for(int nthreads, int ntasks, void (*fn)(void*, int), void* ctx);

// Units of work (e.g. 16-row tiles) per task when `units` equal units are split on nthreads threads,
// at most max_tasks tasks: about 4 tasks a thread (the dynamic scheduling absorbs a slow thread),
// and where a count of tasks that is a multiple of nthreads divides the units (2 to 8 a thread,
// the nearest to 4; ties: more tasks), that one, so threads of one speed finish together. (36 tiles
// on 2 threads made 8 tasks of 5, 5, ..., 1: one thread had 20 tiles, the other 16.)
int units_per_task(int units, int nthreads, int max_tasks);

// Grow-only 64-byte aligned float buffer (one per calling thread, reused across calls).
class Scratch {
 public:
  float* get(size_t n);
  ~Scratch();

 private:
  float* buf_ = nullptr;
  size_t cap_ = 0;
};

// Activations of the AVX2 int16 paths (qgemm_cpu.cpp). round_to_int16_*: x[0, n) ~= dx * q with
// dx = max|x| / 32767 and q = lrint(x * (32767 / max|x|)) clamped to [-32767, 32767] (the current
// rounding mode: half to even); writes q[0, n) and *sum = sum(q), returns dx. dx is NaN when x
// holds a NaN or inf (then q is -32767 where x is not finite, 0 elsewhere), 0 when x is all zero.
// When 0 < max|x| < 32767 / FLT_MAX (~9.6e-35), 32767 / max|x| overflows to inf and every q is
// -32767 (0 * inf and +-inf both convert to the integer indefinite value): a known quirk, kept.
// The scalar version is the reference; the AVX2 one (qgemm_avx2.cpp, only on AVX2 CPUs) gives the
// same bits of q, sum and dx for every input.
float round_to_int16_scalar(const float* x, int n, int16_t* q, int* sum);
float round_to_int16_avx2(const float* x, int n, int16_t* q, int* sum);
// The same rounding to int8: dx = max|x| / 127, q in [-127, 127] (the int8-x prefill kernel's).
float round_to_int8_scalar(const float* x, int n, int8_t* q, int* sum);

// Largest group xq_panel_avx2 takes (its row buffer); qformat's groups are 32, 64 or 128.
constexpr int kXqMaxGroup = 128;
// Problem::xq2 / xdxT / xdxsT for p.M, p.K, p.group, p.G, p.Kp, p.Mp (M <= Mp, Mp a multiple of 16):
// writes all of xq2 [Kp / 2][Mp][2] and dxT, dxsT [G][Mp] (0 outside [M) x [K)), the same bits as
// prepare_xq_panel(..., Isa::kScalar). Rounds 16 rows of a group at a time into an L1 buffer and
// stores them with 8 x 8 transposes of column pairs (whole 64-byte lines of xq2).
void xq_panel_avx2(const float* x, const Problem& p, int16_t* xq2, float* dxT, float* dxsT);
// Problem::xq / xdx / xqs for p.M, p.K, p.group, p.G, p.bits, p.xq_row: rows [0, M) of xq (lane
// order by pshufb tables), dx and sum(xq) [M][G]; the same bits as prepare_xq(..., Isa::kScalar).
void xq_fused_avx2(const float* x, const Problem& p, int16_t* xq, float* dx, float* xs);

// The dispatcher's activation preparation for the AVX2 int16 kernels (qgemm_cpu.cpp): the fused
// path's Problem::xq / xdx / xqs, the panel path's xq2 / xdxT / xdxsT (p.Mp set by the caller),
// in buffers from s_q and s_g. isa = Isa::kScalar: the scalar reference (round_to_int16_scalar,
// scalar scatter); Isa::kAvx2: xq_fused_avx2 / xq_panel_avx2 (AVX2 CPUs only).
// Both give the same bits; qgemm_cpu uses kAvx2.
void prepare_xq(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa);
void prepare_xq_panel(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa);
// Problem::xq4 / xdxT / xdxsT (the int8-x panel kernel's; p.Mp set by the caller, a multiple of 16):
// all of xq4 [Kp / 4][Mp][4] and dxT, dxsT [G][Mp] (0 outside [M) x [K)), rounded by
// round_to_int8_scalar. isa = Isa::kScalar: the reference; Isa::kAvx512Vnni: xq8_panel_avx512
// (AVX-512 VNNI CPUs only); Isa::kAvx2: xq8_panel_avx2 (AVX2 CPUs); the same bits.
void prepare_xq8_panel(const float* x, Problem& p, Scratch& s_q, Scratch& s_g, Isa isa);
void xq8_panel_avx512(const float* x, const Problem& p, int8_t* xq4, float* dxT, float* dxsT);
void xq8_panel_avx2(const float* x, const Problem& p, int8_t* xq4, float* dxT, float* dxsT);
// Where the AMX int16 kernel keeps column c of a 32-column block of x: byte b of the block holds
// column amx_column(bits, b). At 4 bits, b = 4q + j (q = 2h + s) holds column 8j + 4s + h: the code
// that byte j of a block's word h holds in its low (s = 0) or high (s = 1) nibble, so the nibbles of
// one word of 16 weight rows are B-tile rows of the kernel as they are (no transposes); at 2 and 3
// bits, b = 4q + n (q = 4h + j) holds column 16 (j % 2) + 4n + 2 (j / 2) + h: the code whose low two
// bits sit at bits 8n + 2j of the block's word h (qformat.h Block2's pair layout), so (word h >> 2j)
// & 0x03030303 of 16 weight rows is a B row (3 bits: plus those codes' third bits); at 8 bits the
// natural order.
constexpr int amx_column(int bits, int b) {
  return bits == 4  ? 8 * (b % 4) + 4 * ((b / 4) % 2) + b / 8
         : bits < 4 ? 16 * ((b / 4) % 2) + 4 * (b % 4) + 2 * ((b / 8) % 2) + b / 16
                    : b;
}
// The reference of Problem::xlo / xhi (scalar): from p.xq2 (int16; Kp, Mp as for it) every value's
// bytes, or from p.xq4 (int8; lo not written) every value, at their place of the row-major,
// amx_column-ordered layout ([Mp][Kp] each).
void amx_x_bytes(const Problem& p, uint8_t* lo, int8_t* hi);
// Problem::xlo / xhi straight from x (AVX-512 VNNI CPUs), and dxT / dxsT: prepare_xq_panel's int16
// rounding (x_bits = 16) or prepare_xq8_panel's int8 rounding (x_bits = 8, lo unused) with
// amx_x_bytes's bytes, bit for bit (p.group <= kXqMaxGroup); blocks of 16 x-rows on nthreads threads.
void xq_rows_avx512(const float* x, const Problem& p, int x_bits, uint8_t* lo, int8_t* hi, float* dxT, float* dxsT,
                    int nthreads = 1);
// What the panel paths call: prepare_xq8_panel (x_bits = 8; AVX-512 VNNI's rounding where s_amx is
// given, else AVX2's) or prepare_xq_panel (AVX2 rounding), then Problem::yT [N][Mp] from s_y; p.Mp set by the caller. s_amx: the VNNI panel's
// callers' scratch for AMX (null: the AVX2 panel, no AMX). With it, Problem::amx = amx_usable(), and
// on AMX Problem::xlo / xhi from s_amx (on nthreads threads) instead of xq2 / xq4.
void prepare_int_panel(const float* x, Problem& p, int x_bits, Scratch& s_x, Scratch& s_g, Scratch& s_y,
                       Scratch* s_amx = nullptr, int nthreads = 1);

// Argument checks shared by qgemm_cpu and qgemm_tiled_cpu (std::invalid_argument prefixed `who`):
// x, y non-null, 1 <= M <= 2^30, y not overlapping x ([M][K] and [M][N] floats); then
// num_threads >= 0 and an Isa value this CPU supports.
void check_xy(const char* who, const float* x, int M, int N, int K, const float* y);
void check_threads_isa(const char* who, int num_threads, Isa isa);

// Word h of the canonical block of row lane r (< kTileRows) in a tile block at blk (qtiled.h: uint32
// h * 16 + r); tile_block_words: all `bits` of them.
inline uint32_t tile_block_word(const uint8_t* blk, int h, int r) {
  uint32_t w;
  std::memcpy(&w, blk + (static_cast<size_t>(h) * kTileRows + r) * 4, 4);
  return w;
}
inline void tile_block_words(const uint8_t* blk, int bits, int r, uint32_t* bw) {
  for (int h = 0; h < bits; ++h) bw[h] = tile_block_word(blk, h, r);
}

// One qgemm_tiled_cpu call (qtiled.h layout) after validation. The x tables are built once per
// call (tiled_tables_*), then tasks take ranges of tiles (tiled_tiles_*).
struct TiledProblem {
  int M = 0;                      // rows of x in this call (<= 15: one chunk of qgemm_tiled_cpu)
  QTiledLayout l;                 // bits, group, N, K, tiles T, blocks Kb, groups G, slices
  const uint8_t* data = nullptr;  // slices as in qtiled.h
  const float* x = nullptr;       // [M][K]
  const float* bias = nullptr;    // [N] or null
  float* y = nullptr;             // [M][N]
  // Tables (64-byte aligned), per row m of x and block kb: 16 pair tables of 16 floats
  // ([m][kb][i][idx], i = code pair (i, 16 + i)), and for 3 bits 8 tables of the third bits
  // ([m][kb][j][idx], codes 4j .. 4j + 3). Codes are centred (q - c, c = 1.5 or 3.5) so that the
  // folded zero-point term s * (c - z) * sum(x) stays small.
  float* tab2 = nullptr;  // [M][Kb][16][16]
  float* tabh = nullptr;  // [M][Kb][8][16] (3 bits)
  float* xs = nullptr;    // [M][G] sums of x over each group's real columns (4 bits: of xq)
  // 4 bits (tiled4_tiles_vnni): x rounded to int16 per (row, group) as for the canonical integer
  // kernels, as the pairs a tile word's shifted halves meet: pairs[((m * Kb + kb) * 4 + h) * 4 + j]
  // = xq[32 kb + 4 j + h] | xq[32 kb + 4 j + 16 + h] << 16 (word h of a block holds code 4f + h in
  // nibble f), and dx per (row, group).
  int32_t* pairs = nullptr;  // [M][Kb][4][4]
  float* dx = nullptr;       // [M][G]
};

// Tile t's slice of tiled panel pn (qtiled.h): the panel's groups and blocks, the slice's codes
// (blocks of 4 x 64 bytes at 4 bits), its 16 scales and zeros per group, and its size.
struct TileSlice {
  int groups = 0, blocks = 0;
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;  // [groups][16] fp16
  const uint8_t* zeros = nullptr;   // [groups][16] fp16
  size_t bytes = 0;
};
inline TileSlice tile_slice(const TiledProblem& p, int pn, int t) {
  const QTiledLayout& l = p.l;
  TileSlice s;
  s.groups = l.panel_groups(pn);
  s.blocks = l.panel_blocks(pn);
  s.codes = p.data + l.slice_offset(pn, t);
  s.scales = s.codes + static_cast<size_t>(s.blocks) * l.bits * kTileRows * 4;
  s.zeros = s.scales + static_cast<size_t>(s.groups) * kTileRows * 2;
  s.bytes = l.slice_bytes(pn);
  return s;
}

// qgemm_tiled_cpu for M >= 16 on AVX-512 or AVX2 (qgemm_cpu.cpp): the panel kernel reading the tiled copy,
// with the canonical panel path's x preparation and threading; arguments validated by the caller.
void qgemm_tiled_panel(const float* x, int M, const QTiledView& t, const float* bias, float* y, int nthreads, Isa use);

// The 4-bit tile kernels (AVX-512 VNNI, AVX2; qgemm_tiled_cpu at M < kTiledMaxM prepares
// TiledProblem::pairs / dx / xs once per call, then tasks take ranges of tiles). The same products
// and operations per row, so the same bits.
void tiled4_tiles_vnni(const TiledProblem& p, int t0, int t1);
void tiled4_tiles_avx2(const TiledProblem& p, int t0, int t1);

// The fp16 scales and zero points of rows nb .. nb + nr - 1 and group g from a row-tiled copy
// (Problem::tiled / tl): the 16 of (tile, group) lie in the tile's slice of the group's panel. The
// integer panel kernels' `scales` argument (int_panel.inc) where they read tiled words.
inline void tiled_panel_scales(const Problem& p, int nb, int nr, int g, uint16_t* s16, uint16_t* z16) {
  const QTiledLayout& l = p.tl;
  // Tile 0's offsets, and a tile's slice in the group's panel (the layout's arithmetic, once a call).
  const size_t s0 = l.scales_offset(0, g), z0 = l.zeros_offset(0, g), step = l.scales_offset(1, g) - s0;
  for (int r = 0; r < nr; ++r) {
    const int n = nb + r;
    const size_t at = static_cast<size_t>(n / kTileRows) * step + 2 * (n % kTileRows);
    std::memcpy(&s16[r], p.tiled + s0 + at, 2);
    std::memcpy(&z16[r], p.tiled + z0 + at, 2);
  }
}

void tiled_tables_avx512(const TiledProblem& p);
void tiled_tiles_avx512(const TiledProblem& p, int t0, int t1);

}  // namespace llmc::kernels::detail
