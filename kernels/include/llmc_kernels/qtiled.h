// Row-tiled copy of a 2-, 3- or 4-bit packed matrix, for the CPU's small-M ("decode") product.
//
// Why a second layout: with the canonical layout (qformat.h) every weight is dequantized and
// multiplied by x in registers: at M = 1 that is ~6 (2 bit) and ~10 (3 bit) AVX-512 instructions
// per 32 codes, more than memory bandwidth needs on small matrices. Tiling 16 rows together lets one
// SIMD lane hold one row: a 4-bit slice of a lane (two 2-bit codes, or four 3rd bits) indexes a
// 16-entry table built once per call from x (vpermps), and a single add accumulates 16 rows x 2
// codes. The tables are shared by all rows, the zero point is folded into per-group sums of x.
// 4 bits (AVX-512 VNNI; AVX2 in two halves of 8 rows, vpmaddwd + vpaddd): a lane's word holds 8
// codes of its row; (word >> 4j) & 0x000f000f gives two of them as int16, multiplied with a
// broadcast pair of x rounded to int16 by one vpdpwssd (16 rows x 2 codes), and each group's scales
// and zeros load as vectors of 16 rows: none of the
// canonical kernel's per-row work (factors per group, a horizontal sum per row), which at K = 576
// costs as much as decoding the codes (docs/measurements.md).
//
// Layout (all little-endian). T = ceil(N / 16) tiles of 16 rows (rows past N are zero codes with
// zero scale and zero point); Kb = ceil(K / 32) blocks (a partial last group's padding blocks
// past Kb are dropped: x is zero there); G = K_padded / group groups. K is cut into panels of
// kPanelBlocks = 16 blocks (512 columns, whole groups for every group size); panel p holds
// pb = min(16, Kb - 16 p) blocks and pg = min(512 / group, G - p * 512 / group) groups.
// The data is a sequence of slices, panel-major: slice (p, t) for p = 0.., t = 0..T-1, so the
// kernel, which walks one panel over all tiles (the panel's x tables stay in L1), reads memory
// front to back. A slice is
//   codes : pb tile blocks (TileBlock2 / 3 / 4): word h of canonical block 16 p + j
//           (qformat.h Block2 / Block3 / Block4) of row 16 t + r is at uint32 index (j * bits + h) * 16 + r
//   scales: pg x 16 fp16, [g][r] = scale of row 16 t + r, group p * 512 / group + g
//   zeros : pg x 16 fp16, same indexing
// Slices (and their code parts) are multiples of 64 bytes, scale and zero rows 32-byte aligned;
// the buffer is 64-byte aligned (QTiled below owns one).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "llmc_kernels/qformat.h"

namespace llmc::kernels {

constexpr int kTileRows = 16;
constexpr int kPanelBlocks = 16;

// One tile block: 16 rows x 32 codes.
struct TileBlock2 {
  uint32_t lo[2][kTileRows];  // lo[h][r] = Block2::lo[h] of row r
};
struct TileBlock3 {
  uint32_t lo[2][kTileRows];  // as TileBlock2
  uint32_t hi[kTileRows];     // Block3::hi of row r
};
struct TileBlock4 {
  uint32_t word[4][kTileRows];  // word[h][r] = Block4::word[h] of row r
};
static_assert(sizeof(TileBlock2) == 128, "2-bit tile block is 16 x 32 codes in 128 bytes");
static_assert(sizeof(TileBlock3) == 192, "3-bit tile block is 16 x 32 codes in 192 bytes");
static_assert(sizeof(TileBlock4) == 256, "4-bit tile block is 16 x 32 codes in 256 bytes");

// True for the bit widths that have a tiled form.
constexpr bool tiled_bits(int bits) { return bits == 2 || bits == 3 || bits == 4; }

struct QTiledLayout {
  int bits = 0, group = 0, N = 0, K = 0;
  int tiles = 0;   // T = ceil(N / 16)
  int blocks = 0;  // Kb = ceil(K / 32)
  int groups = 0;  // G = K_padded / group
  int panels = 0;  // ceil(Kb / 16)
  size_t total_bytes = 0;
  // Blocks and groups of panel p.
  int panel_blocks(int p) const {
    const int left = blocks - kPanelBlocks * p;
    return left < kPanelBlocks ? left : kPanelBlocks;
  }
  int panel_groups(int p) const {
    const int gp = kPanelBlocks * kBlockCodes / group;
    return groups - gp * p < gp ? groups - gp * p : gp;
  }
  size_t slice_bytes(int p) const {
    return static_cast<size_t>(panel_blocks(p)) * bits * kTileRows * 4 +
           static_cast<size_t>(panel_groups(p)) * 2 * kTileRows * 2;
  }
  // Byte offset of slice (p, t); its scales start at + panel_blocks(p) * bits * 64, zeros 32 * pg later.
  size_t slice_offset(int p, int t) const {
    return static_cast<size_t>(p) * tiles * slice_bytes(0) + static_cast<size_t>(t) * slice_bytes(p);
  }
  // Byte offsets of tile block (t, kb) and of the 16 scales / zeros of (t, group g).
  size_t block_offset(int t, int kb) const {
    return slice_offset(kb / kPanelBlocks, t) + static_cast<size_t>(kb % kPanelBlocks) * bits * kTileRows * 4;
  }
  size_t scales_offset(int t, int g) const {
    const int gp = kPanelBlocks * kBlockCodes / group, p = g / gp;
    return slice_offset(p, t) + static_cast<size_t>(panel_blocks(p)) * bits * kTileRows * 4 +
           static_cast<size_t>(g - p * gp) * kTileRows * 2;
  }
  size_t zeros_offset(int t, int g) const {
    const int p = g / (kPanelBlocks * kBlockCodes / group);
    return scales_offset(t, g) + static_cast<size_t>(panel_groups(p)) * kTileRows * 2;
  }
};
// Validated as make_layout(), plus bits in {2, 3, 4}.
QTiledLayout make_tiled_layout(int bits, int group, int N, int K);

// Non-owning view; `data` points at a buffer laid out as QTiledLayout (64-byte aligned).
struct QTiledView {
  int bits = 0, group = 0, N = 0, K = 0;
  const uint8_t* data = nullptr;
  QTiledLayout layout() const { return make_tiled_layout(bits, group, N, K); }
  bool empty() const { return data == nullptr; }
};

// Owning tiled copy: its own buffer, or a part of one that several copies share (within()), which
// lives as long as any of them.
class QTiled {
 public:
  QTiled() = default;
  QTiled(QTiled&&) = default;
  QTiled& operator=(QTiled&&) = default;
  QTiled(const QTiled&) = delete;
  QTiled& operator=(const QTiled&) = delete;
  const QTiledLayout& layout() const { return layout_; }
  QTiledView view() const { return QTiledView{layout_.bits, layout_.group, layout_.N, layout_.K, buf_.get()}; }
  uint8_t* data() { return buf_.get(); }

  // Uninitialized storage for `layout` (64-byte aligned).
  static QTiled allocate(const QTiledLayout& layout);
  // Uninitialized storage for `layout` at `offset` (a multiple of 64) of `buffer` (64-byte aligned,
  // at least offset + layout.total_bytes long; kept alive by the copy).
  static QTiled within(std::shared_ptr<uint8_t> buffer, size_t offset, const QTiledLayout& layout);

 private:
  QTiledLayout layout_;
  std::shared_ptr<uint8_t> buf_;
};

// Tiled copy of a canonical 2/3/4-bit matrix (throws std::invalid_argument for other widths).
QTiled tile(const QMatrixView& w);
// Writes the tiled copy of w into `out` (tiled layout of w's shape, 64-byte aligned).
void tile_into(const QMatrixView& w, uint8_t* out);
// Canonical codes [N][K] back from a tiled view (padding dropped): the inverse of tile().
void untile_codes(const QTiledView& t, uint8_t* codes);
// The canonical matrix of rows [row0, row0 + rows) of a tiled copy (rows < 0: through the last): the
// inverse of tile(), the same codes, scales and zeros (padding codes 0, as pack() writes them).
// Lets a holder of the tiled copy alone give the canonical layout back where a stage needs it.
QMatrix untile(const QTiledView& t, int row0 = 0, int rows = -1);

}  // namespace llmc::kernels
