// AVX-512 kernel of norm_quantize: LayerNorm / RMSNorm of rows (norm_kernels.h).
// Requires AVX512F/BW/VL at run time; the dispatcher only calls in here when the CPU has
// them. Headers come before the target pragma and everything after it has internal
// linkage (see kernel_args.h).
#include <cstdint>

#include "norm_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include <immintrin.h>

#include "avx512_io.h"

namespace qkernels::cpu {
namespace {

// One row: its fields in locals (stores through y could alias the argument struct, which
// made GCC reload every field in every iteration) and its element kind a template
// argument (no switch per vector).
template <InKind kKind>
struct RowNorm {
  const void* x;
  void* y;
  int64_t k;

  __m512 load(int64_t i, __mmask16 mask) const { return load_f32x16(x, kKind, i, mask); }

  // Two accumulators: the adds of one row are a dependency chain otherwise.
  // squares: sum (x - center)^2, the two-pass variance (no cancellation); else sum x.
  float sum(bool squares, float center) const {
    const __m512 c = _mm512_set1_ps(center);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
      const __m512 a = _mm512_sub_ps(load(i, 0xFFFF), c);
      const __m512 b = _mm512_sub_ps(load(i + 16, 0xFFFF), c);
      s0 = squares ? _mm512_fmadd_ps(a, a, s0) : _mm512_add_ps(s0, a);
      s1 = squares ? _mm512_fmadd_ps(b, b, s1) : _mm512_add_ps(s1, b);
    }
    for (; i < k; i += 16) {
      const __mmask16 mask = tail_mask(k - i);
      const __m512 a = _mm512_maskz_sub_ps(mask, load(i, mask), c);  // masked-off lanes: 0
      s0 = squares ? _mm512_fmadd_ps(a, a, s0) : _mm512_add_ps(s0, a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  }

  void normalize(float mean, float rstd, const float* weight, const float* bias) const {
    const __m512 vmean = _mm512_set1_ps(mean), vrstd = _mm512_set1_ps(rstd);
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 mask = tail_mask(k - i);
      __m512 v = _mm512_mul_ps(_mm512_sub_ps(load(i, mask), vmean), vrstd);
      if (weight) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, weight + i));
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + i));
      store_f32x16(y, out_kind_of(kKind), i, v, mask);
    }
  }
};

template <InKind kKind>
void norm_rows(const NormArgs& p, int64_t m0, int64_t m1) {
  const float inv_k = 1.f / static_cast<float>(p.k);
  const float* weight = p.weight;
  const float* bias = p.bias;
  const float eps = p.eps;
  const bool rms = p.rms;
  const size_t elem = kKind == InKind::kFloat32 ? 4 : 2;
  for (int64_t m = m0; m < m1; ++m) {
    const RowNorm<kKind> row{static_cast<const char*>(p.x) + m * p.ldx * elem,
                             static_cast<char*>(p.y) + m * p.ldy * elem, p.k};
    float mean = 0.f, var;
    if (rms) {
      var = row.sum(/*squares=*/true, 0.f) * inv_k;
    } else {
      mean = row.sum(/*squares=*/false, 0.f) * inv_k;
      var = row.sum(/*squares=*/true, mean) * inv_k;
    }
    row.normalize(mean, 1.f / __builtin_sqrtf(var + eps), weight, bias);
  }
}

}  // namespace

void avx512_norm_rows(const NormArgs& p, int64_t m0, int64_t m1) {
  switch (p.x_kind) {
    case InKind::kFloat32: return norm_rows<InKind::kFloat32>(p, m0, m1);
    case InKind::kBFloat16: return norm_rows<InKind::kBFloat16>(p, m0, m1);
    case InKind::kFloat16: return norm_rows<InKind::kFloat16>(p, m0, m1);
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
