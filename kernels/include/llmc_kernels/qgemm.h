// CPU matrix multiplication with weight-only quantized weights (see qformat.h for the format).
//
//   y[M][N] = x[M][K] * dequant(W)[N][K]^T (+ bias[N])
//
// x, y and bias are fp32, row-major, densely packed (row stride K for x, N for y); x and y must
// not overlap. All functions throw std::invalid_argument, naming the argument, for bad arguments
// (null pointers, M/N/K < 1, bits not in {2,3,4,8}, group not in {32,64,128}, negative thread
// counts, an ISA this CPU lacks); nothing is written to y then.
#pragma once

#include <cstdint>

#include "llmc_kernels/qformat.h"
#include "llmc_kernels/qtiled.h"

namespace llmc::kernels {

// Instruction-set path of qgemm_cpu. kAuto picks the best one this CPU supports (runtime CPUID
// check); the others force a path (used by the tests to cover all of them on one machine).
// kAvx512Vnni: the kAvx512 paths, except that M < 16 (decode, every width) and M >= 16 at 4 and 8
// bits (prefill) multiply integer codes with x rounded to int16 (vpdpwssd), as the AVX2 paths do;
// 2/3-bit prefill too (on AMX tiles where the CPU has them).
enum class Isa { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3, kAvx512Vnni = 4 };

const char* isa_name(Isa isa);
// kAuto and kScalar: always; kAvx2: AVX2+FMA+F16C; kAvx512: that + AVX-512 F+BW+VL+DQ;
// kAvx512Vnni: that + AVX-512 VNNI.
bool isa_supported(Isa isa);
Isa best_isa();               // what kAuto resolves to

// Default thread count used when num_threads == 0 (initially std::thread::hardware_concurrency()).
// n <= 0 restores that initial default.
void set_default_num_threads(int n);
int default_num_threads();

// Quantized GEMM. num_threads: 0 = default_num_threads(), otherwise the exact count (threads
// split the N output rows). Work runs on a persistent internal thread pool; concurrent calls
// from several threads are safe (they are serialized on the pool).
void qgemm_cpu(const float* x, int M, const QMatrixView& w, const float* bias, float* y, int num_threads = 0,
               Isa isa = Isa::kAuto);

// The product with several matrices stacked by rows, y[M][N_0 + ... + N_{n-1}] = x [W_0; ...;
// W_{n-1}]^T (+ bias[sum N]), without a stacked copy: one activation preparation and one
// thread-pool round trip, as qgemm_cpu on the stacked matrix, and the same bits as that call (every
// output row is computed the same way). The parts must share bits, group and K. The runtime runs
// q/k/v and gate/up this way, so each matrix is held once.
void qgemm_cpu_stacked(const float* x, int M, const QMatrixView* parts, int nparts, const float* bias, float* y,
                       int num_threads = 0, Isa isa = Isa::kAuto);

// Precision: the fp32 paths (scalar, AVX-512) differ from the fp64 reference only by fp32 rounding.
// The integer paths (AVX2 and AVX-512 VNNI at any M) multiply integer codes with x rounded to int16
// per (row, group) in exact integer sums: |x - dx * xq| <= dx / 2 with dx = max|x over the group| /
// 32767, i.e. a relative
// perturbation of x below 1.6e-5 of the group's largest |x|. Whether a call with M rows of x and a
// `bits`-bit matrix takes such a path (the defaults: whether a decode may):
bool qgemm_rounds_x_to_int16(Isa isa = Isa::kAuto, int M = 1, int bits = 4);

// Activations of the integer prefill kernels on AVX-512 VNNI (M >= 16, any width, canonical or
// row-tiled): 16, the default, rounds x to int16 per (row, group) as above; 8 rounds
// it to int8 per (row, group), |x - dx * xq| <= dx / 2 with dx = max|x over the group| / 127 (a
// relative perturbation below 0.4% of the group's largest |x|; llama.cpp's Q4_0 path rounds x to
// int8 per 32 columns), and multiplies with vpdpbusd: twice vpdpwssd's products per instruction.
// On AVX2 it holds for 2/3/4-bit matrices (vpmaddubsw, 32 products per instruction, summed in int16
// over 32 columns; 8-bit codes would saturate those sums and keep int16 x).
// Decode (M < 16) and the other paths ignore it. Process-wide, read at each call; bits other than
// 8 or 16 throw std::invalid_argument.
void set_prefill_x_bits(int bits);
int prefill_x_bits();
// The precision x is rounded to by a call with M rows of x and a `bits`-bit matrix: 16 or 8
// (integer paths, see above), 32 (fp32 paths).
int qgemm_x_bits(Isa isa = Isa::kAuto, int M = 1, int bits = 4);
// qgemm_x_bits of a prefill-sized call (M >= 16) on this CPU's best path: the width prompts and
// scoring run with here (prefill_x_bits() where the CPU's int8-x kernel takes `bits`).
int prefill_x_bits_here(int bits = 4);

// The same product given also a row-tiled copy of w (qtiled.h; an empty view means none): for
// M < kTiledMaxM on AVX-512 CPUs it reads the tiled copy (the x-table kernel), otherwise w. The
// tiled copy must have w's bits, group, N and K.
constexpr int kTiledMaxM = 16;
void qgemm_cpu(const float* x, int M, const QMatrixView& w, const QTiledView& tiled, const float* bias, float* y,
               int num_threads = 0, Isa isa = Isa::kAuto);
// Whether qgemm_cpu has a faster small-M path for a tiled copy of a `bits`-bit matrix on this CPU
// (2/3 bits on AVX-512; 4 bits on AVX-512 VNNI and AVX2, every group: SmolLM2's decode 1.15-1.7x
// faster at one thread with VNNI, its linears 1.35x on a Zen 3 AVX2 VM, prefill 0-10% slower;
// docs/measurements.md): callers make tiled copies only then.
bool tiled_faster(int bits);
// The product from the tiled copy alone, any M: on AVX-512 the x-table kernel (2/3 bits) or, on
// AVX-512 VNNI and AVX2, the 4-bit tile kernel (x rounded to int16 per (row, group), as qgemm_cpu's integer
// paths) for M < kTiledMaxM and, from there, the panel kernel reading the tiled copy (the same bits
// as qgemm_cpu on the canonical matrix), so a holder of the tiled copy needs no canonical one; a
// portable scalar path elsewhere (kScalar, 2/3 bits without AVX-512, 4 bits without VNNI or AVX2). t.data must
// be 64-byte aligned.
void qgemm_tiled_cpu(const float* x, int M, const QTiledView& t, const float* bias, float* y, int num_threads = 0,
                     Isa isa = Isa::kAuto);

// Reference: dequantizes each weight in fp64 (w = s * (q - z)) and accumulates in fp64.
// Single-threaded and slow; for tests.
void qgemm_reference(const float* x, int M, const QMatrixView& w, const float* bias, float* y);

// Naive dense fp32 reference: y = x * W^T (+ bias) with W fp32 [N][K], fp64 accumulation.
void gemm_dense_reference(const float* x, int M, const float* W, int N, int K, const float* bias, float* y);

}  // namespace llmc::kernels
