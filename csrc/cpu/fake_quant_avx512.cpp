// AVX-512 fake-quantization: forward, straight-through backward and the
// learned-step-size backward, each one pass over memory (the backward
// recomputes the clamp mask from x instead of reading a saved mask).
// Semantics in kernel_args.h, FakeQuantArgs; fake_quant_scalar.cpp is the
// readable version.
#include <cstdint>

#include "fake_quant_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include <immintrin.h>

#include "avx512_io.h"

namespace qkernels::cpu {
namespace {

constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

struct VParams {
  __m512 scale, inv, zp;
};

// Walks segments 16 elements at a time, handing `fn` the params (broadcast per
// segment, or loaded per position in channel-last mode) and the lane mask.
template <typename Fn>
void for_each_vector(const FakeQuantArgs& p, int64_t s0, int64_t s1, Fn&& fn) {
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t begin = s * p.seg_len;
    const int64_t len = begin + p.seg_len < p.numel ? p.seg_len : p.numel - begin;
    VParams q{};
    if (!p.params_along_segment) {
      const int64_t k = s % p.n_params;
      q = {_mm512_set1_ps(p.scale[k]), _mm512_set1_ps(p.inv_scale[k]),
           _mm512_set1_ps(p.zero_point[k])};
    }
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 m = tail_mask(len - j);
      if (p.params_along_segment)
        q = {_mm512_maskz_loadu_ps(m, p.scale + j), _mm512_maskz_loadu_ps(m, p.inv_scale + j),
             _mm512_maskz_loadu_ps(m, p.zero_point + j)};
      fn(s, j, begin + j, m, q);
    }
  }
}

inline __m512 quant_level(const FakeQuantArgs& p, __m512 x, const VParams& q) {
  if (p.zp_in_rounding)
    return _mm512_roundscale_ps(_mm512_add_ps(q.zp, _mm512_mul_ps(x, q.inv)), kRound);
  return _mm512_add_ps(_mm512_roundscale_ps(_mm512_mul_ps(x, q.inv), kRound), q.zp);
}

// (rc - zp) * scale in float64, rounded once: a fractional zero point makes
// rc - zp inexact in float, and torch's kernel computes this in double.
inline __m512 dequant_f64(__m512 rc, const VParams& q) {
  auto half = [](__m512 v, int h) {
    return _mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                             : _mm512_castps512_ps256(v));
  };
  __m256 out[2];
  for (int h = 0; h < 2; ++h)
    out[h] = _mm512_cvtpd_ps(
        _mm512_mul_pd(_mm512_sub_pd(half(rc, h), half(q.zp, h)), half(q.scale, h)));
  return _mm512_insertf32x8(_mm512_castps256_ps512(out[0]), out[1], 1);
}

inline __mmask16 in_range(const FakeQuantArgs& p, __m512 r) {
  return _mm512_cmp_ps_mask(r, _mm512_set1_ps(p.qmin), _CMP_GE_OQ) &
         _mm512_cmp_ps_mask(r, _mm512_set1_ps(p.qmax), _CMP_LE_OQ);
}

// 16 float64 lanes: float32 vectors are widened and added lane by lane.
struct F64x16 {
  // Trap: a user-written constructor, so it is compiled under this file's target
  // (an implicit one with default member initializers is not).
  F64x16() : lo(_mm512_setzero_pd()), hi(_mm512_setzero_pd()) {}
  __m512d lo, hi;
  void add(__m512 v) {
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(
                               _mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
  }
  double sum() const { return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)); }
};

// acc[l] += v[l] in float64 for the lanes in m (channel-last: one channel per lane).
inline void add_lanes(double* acc, __m512 v, __mmask16 m) {
  const __mmask8 lo = static_cast<__mmask8>(m), hi = static_cast<__mmask8>(m >> 8);
  _mm512_mask_storeu_pd(acc, lo, _mm512_add_pd(_mm512_maskz_loadu_pd(lo, acc),
                                               _mm512_cvtps_pd(_mm512_castps512_ps256(v))));
  _mm512_mask_storeu_pd(
      acc + 8, hi,
      _mm512_add_pd(_mm512_maskz_loadu_pd(hi, acc + 8),
                    _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))));
}

}  // namespace

void avx512_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  const __m512 qmin = _mm512_set1_ps(p.qmin), qmax = _mm512_set1_ps(p.qmax);
  const __m512 flt_max = _mm512_set1_ps(__FLT_MAX__);
  for_each_vector(p, s0, s1, [&](int64_t, int64_t, int64_t i, __mmask16 m, const VParams& q) {
    const __m512 x = load_f32x16(p.x, p.kind, i, m);
    const __m512 r = quant_level(p, x, q);
    const __m512 rc = _mm512_min_ps(_mm512_max_ps(r, qmin), qmax);
    const __m512 y = p.zp_in_rounding ? dequant_f64(rc, q)
                                      : _mm512_mul_ps(_mm512_sub_ps(rc, q.zp), q.scale);
    // NaN and +-Inf pass through (|x| <= FLT_MAX fails for both; DESIGN.md).
    const __mmask16 nonfinite = _mm512_cmp_ps_mask(_mm512_abs_ps(x), flt_max, _CMP_NLE_UQ);
    store_f32x16(p.out, out_kind_of(p.kind), i, _mm512_mask_mov_ps(y, nonfinite, x), m);
  });
}

void avx512_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  for_each_vector(p, s0, s1, [&](int64_t, int64_t, int64_t i, __mmask16 m, const VParams& q) {
    const __mmask16 in = in_range(p, quant_level(p, load_f32x16(p.x, p.kind, i, m), q));
    store_f32x16(p.out, out_kind_of(p.kind), i, _mm512_maskz_mov_ps(in, load_f32x16(p.dy, p.kind, i, m)), m);
  });
}

void avx512_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  const __m512 qmin = _mm512_set1_ps(p.qmin), qmax = _mm512_set1_ps(p.qmax);
  const __m512 gf = _mm512_set1_ps(p.grad_factor);
  // Per-segment mode: float64 lanes over one segment (per-tensor: the whole tensor),
  // then one reduction; DESIGN.md promises float64 sums, as the scalar kernel.
  F64x16 seg_dscale, seg_dzp;
  int64_t current = -1;
  auto flush = [&]() {
    if (current < 0) return;
    const int64_t k = current % p.n_params;
    p.dscale[k] += seg_dscale.sum();
    p.dzero_point[k] += seg_dzp.sum();
    seg_dscale = seg_dzp = F64x16{};
  };
  for_each_vector(p, s0, s1, [&](int64_t s, int64_t j, int64_t i, __mmask16 m, const VParams& q) {
    const __m512 x = load_f32x16(p.x, p.kind, i, m);
    const __m512 dy = load_f32x16(p.dy, p.kind, i, m);
    const __m512 r = quant_level(p, x, q);
    const __mmask16 in = in_range(p, r);
    store_f32x16(p.out, out_kind_of(p.kind), i, _mm512_maskz_mov_ps(in, dy), m);
    // Inside: dy * (fq(x) - x) * inv * g. Outside: dy * (qmin|qmax - zp) * g, and
    // d(zero_point) = -dy * scale * g. Same operation order as torch's kernel.
    const __m512 xfq = _mm512_mul_ps(_mm512_sub_ps(r, q.zp), q.scale);
    const __m512 inside = _mm512_mul_ps(
        _mm512_mul_ps(_mm512_mul_ps(dy, _mm512_sub_ps(xfq, x)), q.inv), gf);
    const __mmask16 below = _mm512_cmp_ps_mask(r, qmin, _CMP_LT_OQ);
    const __m512 edge = _mm512_sub_ps(_mm512_mask_mov_ps(qmax, below, qmin), q.zp);
    const __m512 outside = _mm512_mul_ps(_mm512_mul_ps(dy, edge), gf);
    // NaN / +-Inf x pass through, so they add nothing to the scale and zero-point sums.
    const __mmask16 counted =
        m & _mm512_cmp_ps_mask(_mm512_abs_ps(x), _mm512_set1_ps(__FLT_MAX__), _CMP_LE_OQ);
    const __m512 dscale = _mm512_maskz_mov_ps(counted, _mm512_mask_mov_ps(outside, in, inside));
    const __m512 dzp = _mm512_maskz_mov_ps(
        counted & static_cast<__mmask16>(~in),
        _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), dy), q.scale), gf));
    if (p.params_along_segment) {
      add_lanes(p.dscale + j, dscale, m);
      add_lanes(p.dzero_point + j, dzp, m);
      return;
    }
    if (s != current) {
      flush();
      current = s;
    }
    seg_dscale.add(dscale);
    seg_dzp.add(dzp);
  });
  flush();
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
