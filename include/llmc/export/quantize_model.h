#pragma once
// Quantizes every linear of a discretized subnet at the bits its Arch chose: RTN, or GPTQ with
// Hessians from calibration activations collected layer by layer (the calibration batch runs
// through the already-quantized layers before it, so memory stays near one layer's activations).
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "llmc/model/llama.h"
#include "llmc/model/arch.h"

namespace llmc {

struct QuantizeOptions {
  std::string method = "rtn";  // rtn | gptq
  int group_size = 128;        // requested group (clipped per linear by effective_group)
  double damp = 0.01;          // GPTQ dampening (fraction of mean diag(H))
  int lm_head_bits = 16;       // 16: dense (exact); 8 or 4: packed by the method (GPTQ: on the final-norm outputs)
  int64_t chunk = 8;           // calibration sequences per forward chunk
  // Packed linears (and a packed lm_head) are quantized GGUF-exactly (quant.h,
  // quantize_rtn_fp16_offsets): 2/3/4 bits with fp16 offsets (bit-exact Q4_1), 8 bits
  // symmetric (bit-exact Q8_0).
  bool fp16_offsets = false;
  // Group range rule of RTN: "zero" (quantize_rtn: [min(0, w), max(0, w)], integer zero points) |
  // "minmax" (quantize_rtn_minmax: GGUF Q4_1's own rule; fractional zero points, so fp16_offsets
  // cannot apply). minmax is RTN only.
  std::string range = "zero";
};

// Output error of one quantized linear on its calibration inputs X (as seen in the layer-by-layer
// pass): ||X Wq^T - X W^T||^2 / ||X W^T||^2.
struct LinearQuantStat {
  int64_t layer = 0;
  int kind = 0;  // LinearKind
  int bits = 16;
  double rel_err = 0;
};

struct QuantizeReport {
  std::string method;
  std::vector<LinearQuantStat> linears;  // empty for RTN without calibration data
  double seconds = 0;
  // A packed lm_head's relative output error on (up to 1024) calibration positions (-1: no calibration).
  double lm_head_rel_err = -1;
  // Mean rel_err over the linears with bits < 16 (-1 when there are none / no calibration).
  double mean_rel_err(int bits = 0) const;
};

// Replaces, in place, every linear of `subnet` (a float32 discretized Llama, see discretize.h)
// with bits < 16 by a QuantizedLinear; 16-bit linears stay DenseLinear. `calib`: (n, T) int64
// calibration tokens; required for GPTQ, optional for RTN (then only used for the error report).
QuantizeReport quantize_model(Llama& subnet, const Arch& arch, const QuantizeOptions& opts, const at::Tensor& calib);

// Hidden states before the final norm computed layer by layer with the same code the calibration
// pass uses (full causal sequences, positions 0..T-1). Equals Llama::hidden_states; for tests.
at::Tensor layerwise_hidden_states(Llama& model, const at::Tensor& tokens);

}  // namespace llmc
