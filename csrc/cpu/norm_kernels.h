// The ISA kernels of norm_quantize (LayerNorm / RMSNorm of each row): arguments
// (plain old data, see the trap in kernel_args.h) and declarations. The per-token int8
// quantization of the normalized rows is the int8 GEMM family's own kernel
// (int8_gemm_kernels.h), run on each block of rows while it is still in L1.
#pragma once

#include <cstdint>

#include "kernel_args.h"

namespace qkernels::cpu {

// LayerNorm: y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var biased.
// RMSNorm:   y = x * rstd * weight + bias,          rstd = 1 / sqrt(mean(x^2) + eps).
// All in fp32 (sums in an ISA-specific order), rounded once to y's dtype.
struct NormArgs {
  const void* x;        // [M, ldx]
  int64_t ldx;
  InKind x_kind;
  int64_t k;            // >= 1
  const float* weight;  // [K], or nullptr: 1
  const float* bias;    // [K], or nullptr: 0
  float eps;
  bool rms;
  void* y;              // [M, ldy]
  int64_t ldy;
  OutKind y_kind;
};

using NormRowsFn = void (*)(const NormArgs&, int64_t, int64_t);

void scalar_norm_rows(const NormArgs& p, int64_t m0, int64_t m1);
void avx2_norm_rows(const NormArgs& p, int64_t m0, int64_t m1);  // fp32; else scalar
void avx512_norm_rows(const NormArgs& p, int64_t m0, int64_t m1);

}  // namespace qkernels::cpu
