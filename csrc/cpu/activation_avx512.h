// The fused epilogue activations on 16 floats: each 8-float half through activate8, so
// the AVX-512 kernels run the same (AVX2-tested) math. Include after an AVX-512 target
// pragma that has avx512dq, from ISA files only (internal linkage).
#pragma once

#include <immintrin.h>

#include "activation_avx2.h"

namespace qkernels::cpu {
namespace {

inline __m512 activate16(Activation act, __m512 f) {
  if (act == Activation::kNone) return f;
  const __m256 lo = activate8(act, _mm512_castps512_ps256(f));
  const __m256 hi = activate8(act, _mm512_extractf32x8_ps(f, 1));
  return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

}  // namespace
}  // namespace qkernels::cpu
