// Portable fake-quantization kernels (and the plain statement of the math the
// AVX-512 file vectorizes). Semantics in kernel_args.h, FakeQuantArgs.
#include <cmath>

#include "fake_quant_kernels.h"
#include "scalar_convert.h"

namespace qkernels::cpu {
namespace {

struct Params {
  float scale, inv, zp;
};

Params params(const FakeQuantArgs& p, int64_t seg, int64_t j) {
  const int64_t i = p.params_along_segment ? j : seg % p.n_params;
  return {p.scale[i], p.inv_scale[i], p.zero_point[i]};
}

float quant_level(const FakeQuantArgs& p, float x, const Params& q) {
  return p.zp_in_rounding ? std::nearbyint(q.zp + x * q.inv) : std::nearbyint(x * q.inv) + q.zp;
}

template <typename Fn>
void for_each_element(const FakeQuantArgs& p, int64_t s0, int64_t s1, Fn&& fn) {
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t begin = s * p.seg_len;
    const int64_t end = begin + p.seg_len < p.numel ? begin + p.seg_len : p.numel;
    for (int64_t i = begin; i < end; ++i) fn(s, i - begin, i);
  }
}

}  // namespace

void scalar_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  for_each_element(p, s0, s1, [&](int64_t s, int64_t j, int64_t i) {
    const Params q = params(p, s, j);
    const float x = load_as_float(p.x, p.kind, i);
    const float r = quant_level(p, x, q);
    const float rc = std::fmin(std::fmax(r, p.qmin), p.qmax);
    // A fractional zero point makes rc - zp inexact in float; torch computes it in
    // double, so the product is rounded once.
    const float y = p.zp_in_rounding
                        ? static_cast<float>((double(rc) - double(q.zp)) * double(q.scale))
                        : (rc - q.zp) * q.scale;
    // NaN and +-Inf pass through (torch's own op turns NaN into qmin: DESIGN.md).
    store_float(p.out, out_kind_of(p.kind), i, std::fabs(x) <= __FLT_MAX__ ? y : x);
  });
}

void scalar_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  for_each_element(p, s0, s1, [&](int64_t s, int64_t j, int64_t i) {
    const float r = quant_level(p, load_as_float(p.x, p.kind, i), params(p, s, j));
    const bool in = p.qmin <= r && r <= p.qmax;
    store_float(p.out, out_kind_of(p.kind), i, in ? load_as_float(p.dy, p.kind, i) : 0.f);
  });
}

void scalar_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1) {
  for_each_element(p, s0, s1, [&](int64_t s, int64_t j, int64_t i) {
    const Params q = params(p, s, j);
    const float x = load_as_float(p.x, p.kind, i);
    const float dy = load_as_float(p.dy, p.kind, i);
    const float r = quant_level(p, x, q);
    const bool in = p.qmin <= r && r <= p.qmax;
    store_float(p.out, out_kind_of(p.kind), i, in ? dy : 0.f);
    float dscale, dzp;
    if (in) {
      const float xfq = (r - q.zp) * q.scale;
      dscale = dy * (xfq - x) * q.inv * p.grad_factor;
      dzp = 0.f;
    } else {
      dscale = dy * ((r < p.qmin ? p.qmin : p.qmax) - q.zp) * p.grad_factor;
      dzp = -dy * q.scale * p.grad_factor;
    }
    if (!(std::fabs(x) <= __FLT_MAX__)) dscale = dzp = 0.f;  // passed through: no s, zp
    const int64_t k = p.params_along_segment ? j : s % p.n_params;
    p.dscale[k] += dscale;
    p.dzero_point[k] += dzp;
  });
}

}  // namespace qkernels::cpu
