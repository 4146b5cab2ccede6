// AVX-512 loads and stores of 16 floats from / to fp32, bf16 and fp16 memory,
// with PyTorch's rounding (half to even, NaN kept). Include after the file's
// `#pragma GCC target("avx512f,avx512bw,avx512vl,...")`, from ISA files only:
// everything here has internal linkage (see kernel_args.h for why).
#pragma once

#include <immintrin.h>

#include "kernel_args.h"

namespace qkernels::cpu {
namespace {

inline __mmask16 tail_mask(int64_t valid) {
  return valid >= 16 ? static_cast<__mmask16>(0xFFFF)
                     : static_cast<__mmask16>((1u << valid) - 1u);
}

inline __m512 load_f32x16(const void* base, InKind kind, int64_t i, __mmask16 mask) {
  switch (kind) {
    case InKind::kFloat32:
      return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(base) + i);
    case InKind::kBFloat16: {
      const __m256i h = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + i);
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case InKind::kFloat16:
      return _mm512_cvtph_ps(
          _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + i));
  }
  return _mm512_setzero_ps();
}

// fp32 -> bf16 with round-half-even and NaN -> 0x7FC0, as c10::BFloat16.
// Integer arithmetic, so AVX512-BF16 is not required.
inline __m256i f32_to_bf16(__m512 f) {
  const __m512i bits = _mm512_castps_si512(f);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_srli_epi32(r, 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

inline void store_f32x16(void* base, OutKind kind, int64_t i, __m512 f, __mmask16 mask) {
  switch (kind) {
    case OutKind::kFloat32:
      _mm512_mask_storeu_ps(static_cast<float*>(base) + i, mask, f);
      break;
    case OutKind::kBFloat16:
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + i, mask, f32_to_bf16(f));
      break;
    case OutKind::kFloat16:
      _mm256_mask_storeu_epi16(static_cast<uint16_t*>(base) + i, mask,
                               _mm512_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      break;
    case OutKind::kInt32:
      break;
  }
}

}  // namespace
}  // namespace qkernels::cpu
