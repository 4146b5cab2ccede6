// The LoRA adapter's share of an AVX-512 epilogue. Include after the file's
// `#pragma GCC target(...)` and unroll.h, from ISA files only (internal linkage: see
// kernel_args.h).
#pragma once

#include <immintrin.h>

#include "int8_gemm_kernels.h"
#include "lora_kernels.h"
#include "unroll.h"

namespace qkernels::cpu {
namespace {

// The adapter's 16 columns n0.. of MR rows m..: out[i * stride + c] = sum_j t[m + i, j] *
// bt[j, n0 + c], summed in j order (as the AVX2 and scalar kernels). Trap: one row alone is
// bound by the FMA latency of its chain (~4 cycles per j: the adapter then cost 50-70% of
// the base GEMM at r = 16 on a VNNI CPU); MR rows give MR chains sharing each bt load.
template <int MR>
inline void lora_rows16(const LoraEpilogue& l, int64_t m, int64_t n0, float* out,
                        int64_t stride) {
  __m512 acc[MR];
  unroll<MR>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
  const float* bt = static_cast<const float*>(l.bt) + n0;
  const float* t = static_cast<const float*>(l.t) + m * l.r;
  for (int64_t j = 0; j < l.r; ++j) {
    const __m512 b = _mm512_loadu_ps(bt + j * l.ldbt);
    unroll<MR>([&](auto i) { acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(t[i * l.r + j]), b, acc[i]); });
  }
  unroll<MR>([&](auto i) { _mm512_store_ps(out + i * stride, acc[i]); });
}

// The adapter's MR rows x `groups` * 16 columns from n0 into out [MR, groups * 16].
template <int MR>
inline void lora_tile(const LoraEpilogue& l, int64_t m, int64_t n0, int groups, float* out) {
  if (l.bf16_pairs) return avx512bf16_lora_tile(l, MR, groups, m, n0, out);
  for (int c = 0; c < groups; ++c) lora_rows16<MR>(l, m, n0 + c * 16, out + c * 16, groups * 16);
}

}  // namespace
}  // namespace qkernels::cpu
