// The fused epilogue activations on 8 floats (AVX2 + FMA). Include after the file's
// `#pragma GCC target(...)` (AVX2 or AVX-512, which implies it), from ISA files only:
// internal linkage, see kernel_args.h. The AVX-512 epilogues apply it to each half of
// a 16-float vector, so one tested implementation serves both.
//
// Accuracy against float64 (tests/ops/test_fused_activation.py, the dense grid): exp
// within ~2 ulp; gelu's erf is a rational approximation (below), |gelu error| <= 2e-7 *
// |x| + a few ulp; tanh-gelu and silu are x * sigmoid(.), which has no cancellation for
// negative x (torch's 0.5x(1+tanh) has).
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

// x * Phi(x) = 0.5 x + 0.5 x erf(x / sqrt 2), erf(z) = z P(z^2) / Q(z^2) on |z| <= 3.925
// (a degree 5 / 5 rational fitted here by reweighted least squares: max |error| 1.7e-8
// before fp32 rounding) and +-1 beyond (where erf is within 1e-8 of it). No exp: ~18
// vector ops per 8 outputs (the erfc-times-exp form before cost ~30). For x < 0 the
// sum cancels: absolute error ~6e-8 |x|, within the contract's 2e-7 |x|.
inline __m256 gelu8(__m256 x) {
  const __m256 half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
  // Trap: minps / maxps return their second operand when either is NaN, so x (NaN) is
  // second and stays NaN; +-Inf clamp to +-3.925 (erf +-1: gelu(+Inf) = Inf, -Inf: NaN).
  __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f));
  z = _mm256_max_ps(_mm256_set1_ps(-3.925f), _mm256_min_ps(_mm256_set1_ps(3.925f), z));
  const __m256 s = _mm256_mul_ps(z, z);
  __m256 p = _mm256_set1_ps(2.0262947234e-06f);
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(2.8755232863e-04f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(3.8873287801e-03f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(5.3117852603e-02f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.9325450363e-01f));
  p = _mm256_fmadd_ps(p, s, _mm256_set1_ps(1.1283790178e+00f));
  __m256 q = _mm256_set1_ps(3.7987069451e-05f);
  q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(1.1920640030e-03f));
  q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(1.5210602671e-02f));
  q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(1.1528055424e-01f));
  q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(5.0459895112e-01f));
  q = _mm256_fmadd_ps(q, s, _mm256_set1_ps(1.f));
  const __m256 erf = _mm256_div_ps(_mm256_mul_ps(z, p), q);
  return _mm256_fmadd_ps(half_x, erf, half_x);
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
