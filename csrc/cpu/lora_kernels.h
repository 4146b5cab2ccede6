// The ISA kernel of the LoRA adapter's down-projection t = x a^T (lora_w8a8 / lora_w8a16):
// arguments (plain old data, see the trap in kernel_args.h) and declaration.
#pragma once

#include <cstdint>

#include "kernel_args.h"

namespace qkernels::cpu {

// t[m, j] = sum_k x[m, k] * a[j, k] for j < r, in fp32, summed in k order.
struct LoraProjectArgs {
  const void* x;          // [M, ldx]
  int64_t ldx;
  InKind x_kind;
  int64_t k;
  const float* a_panels;  // [ceil(r / 16)][K][16]: a^T in panels of 16 columns, zero-padded
  int64_t r;
  float* t;               // [M, r]
};

// Rows [m0, m1). AVX-512F: the skinny sgemm (N = r) of BLAS reached 46 GMAC/s at
// M = 2048, K = 3072, r = 16 on the VNNI machine; a register tile of 8 rows x 16 columns
// keeps both FMA pipes busy.
void avx512_lora_project(const LoraProjectArgs& p, int64_t m0, int64_t m1);

}  // namespace qkernels::cpu
