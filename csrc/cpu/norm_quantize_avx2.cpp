// AVX2 kernel of norm_quantize: LayerNorm / RMSNorm of fp32 rows (norm_kernels.h);
// half-precision rows, rare on AVX2-only machines, take the scalar kernel. Headers come
// before the target pragma and everything after it has internal linkage (kernel_args.h).
#include <cstdint>

#include "norm_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace qkernels::cpu {
namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// sum of (x - center)^2 (squares) or of x, over a row; the k % 8 tail in scalar.
inline float row_sum(const float* x, int64_t k, bool squares, float center) {
  const __m256 c = _mm256_set1_ps(center);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256 a = _mm256_sub_ps(_mm256_loadu_ps(x + i), c);
    const __m256 b = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), c);
    s0 = squares ? _mm256_fmadd_ps(a, a, s0) : _mm256_add_ps(s0, a);
    s1 = squares ? _mm256_fmadd_ps(b, b, s1) : _mm256_add_ps(s1, b);
  }
  for (; i + 8 <= k; i += 8) {
    const __m256 a = _mm256_sub_ps(_mm256_loadu_ps(x + i), c);
    s0 = squares ? _mm256_fmadd_ps(a, a, s0) : _mm256_add_ps(s0, a);
  }
  float sum = hsum8(_mm256_add_ps(s0, s1));
  for (; i < k; ++i) {
    const float d = x[i] - center;
    sum += squares ? d * d : d;
  }
  return sum;
}

}  // namespace

void avx2_norm_rows(const NormArgs& p, int64_t m0, int64_t m1) {
  if (p.x_kind != InKind::kFloat32) {
    scalar_norm_rows(p, m0, m1);
    return;
  }
  const float inv_k = 1.f / static_cast<float>(p.k);
  const int64_t kv = p.k / 8 * 8;
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = static_cast<const float*>(p.x) + m * p.ldx;
    float* y = static_cast<float*>(p.y) + m * p.ldy;
    float mean = 0.f, var;
    if (p.rms) {
      var = row_sum(x, p.k, /*squares=*/true, 0.f) * inv_k;
    } else {
      mean = row_sum(x, p.k, /*squares=*/false, 0.f) * inv_k;
      var = row_sum(x, p.k, /*squares=*/true, mean) * inv_k;
    }
    const float rstd = 1.f / __builtin_sqrtf(var + p.eps);
    const __m256 vrstd = _mm256_set1_ps(rstd), vmean = _mm256_set1_ps(mean);
    for (int64_t i = 0; i < kv; i += 8) {
      __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmean), vrstd);
      if (p.weight) v = _mm256_mul_ps(v, _mm256_loadu_ps(p.weight + i));
      if (p.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(p.bias + i));
      _mm256_storeu_ps(y + i, v);
    }
    for (int64_t i = kv; i < p.k; ++i) {
      float v = (x[i] - mean) * rstd;
      if (p.weight) v *= p.weight[i];
      if (p.bias) v += p.bias[i];
      y[i] = v;
    }
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
