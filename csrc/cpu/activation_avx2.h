// The fused epilogue activations on 8 floats (AVX2 + FMA). Include after the file's
// `#pragma GCC target(...)` (AVX2 or AVX-512, which implies it), from ISA files only:
// internal linkage, see kernel_args.h. The AVX-512 epilogues apply it to each half of
// a 16-float vector, so one tested implementation serves both.
//
// Accuracy against torch's fp32 activations (tests/ops/test_fused_activation.py): exp
// within ~2 ulp; gelu's erfc is a rational-times-exp approximation (absolute error
// <= 1.5e-7 in Phi), so |gelu error| <= 2e-7 * |x| + an ulp; tanh-gelu and silu are
// x * sigmoid(.), which has no cancellation for negative x (torch's 0.5x(1+tanh) has).
#pragma once

// Needs activation.h, included before the target pragma (int8_gemm_kernels.h does).
#include <immintrin.h>

namespace qkernels::cpu {
namespace {

// e^x for x <= 88.3762 (no overflow), Cody-Waite reduction by ln 2 and a degree-7
// polynomial; below -87.3 clamped to where 2^n stays a normal float (so e^x of a large
// negative x is ~1e-38, not 0: only ever added to 1 or multiplied by a tiny factor here).
inline __m256 exp8_bounded(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3365f)), _mm256_set1_ps(88.3762f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);  // ln 2 = hi + lo
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  // e^r - 1 - r over |r| <= ln2 / 2, as r^2 * poly(r).
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// e^x, +Inf past the largest float's log.
inline __m256 exp8(__m256 x) {
  const __m256 overflow = _mm256_cmp_ps(x, _mm256_set1_ps(88.3762f), _CMP_GT_OQ);
  return _mm256_blendv_ps(exp8_bounded(x), _mm256_set1_ps(__builtin_inff()), overflow);
}

// x * sigmoid(s * x-ish): x / (1 + e^-z).
inline __m256 times_sigmoid8(__m256 x, __m256 z) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

// x * Phi(x), Phi from erfc(|x| / sqrt 2) (Abramowitz & Stegun 7.1.26).
inline __m256 gelu8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f), half = _mm256_set1_ps(0.5f);
  const __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), x),
                                 _mm256_set1_ps(0.70710678118654752f));
  // A division, not rcp + Newton: that gives NaN at z = Inf, where torch's gelu(-Inf) is
  // NaN but gelu(+Inf) is +Inf.
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), z, one));
  __m256 poly = _mm256_set1_ps(1.061405429f);
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-1.453152027f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(1.421413741f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(-0.284496736f));
  poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(0.254829592f));
  poly = _mm256_mul_ps(poly, t);
  // Trap: e^(-z^2) is clamped at e^-80 (|x| > 12.6), so that erfc stays a normal float:
  // denormal arithmetic (no FTZ / DAZ here) costs ~100 cycles per operation.
  const __m256 neg_z2 =
      _mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), z), _mm256_set1_ps(-80.f));
  const __m256 erfc = _mm256_mul_ps(poly, exp8_bounded(neg_z2));
  const __m256 tail = _mm256_mul_ps(half, erfc);  // Phi(-|x|)
  const __m256 phi =
      _mm256_blendv_ps(tail, _mm256_sub_ps(one, tail), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
  return _mm256_mul_ps(x, phi);
}

inline __m256 activate8(Activation act, __m256 x) {
  switch (act) {
    case Activation::kNone: return x;
    case Activation::kRelu: return _mm256_max_ps(_mm256_setzero_ps(), x);  // NaN stays NaN
    case Activation::kGelu: return gelu8(x);
    case Activation::kGeluTanh: {
      // 0.5 x (1 + tanh(u)) = x * sigmoid(2u)
      const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
      const __m256 u = _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x);
      return times_sigmoid8(x, _mm256_mul_ps(_mm256_set1_ps(2.f * 0.79788456080286536f), u));
    }
    case Activation::kSilu: return times_sigmoid8(x, x);
  }
  return x;
}

}  // namespace
}  // namespace qkernels::cpu
