// CPU fake-quantization ops: argument checks, the segment layout of each
// quantization granularity, and the threaded drivers around the kernels.
// Numbers follow torch.fake_quantize_per_{tensor,channel}_affine and
// torch._fake_quantize_learnable_per_{tensor,channel}_affine exactly,
// including their rounding of learned zero points.
#include "fake_quant.h"

#include <cmath>
#include <mutex>
#include <vector>

#include <ATen/Parallel.h>

#include "alloc.h"
#include "checks.h"
#include "fake_quant_kernels.h"
#include "isa.h"
#include "op_registry.h"

namespace qkernels::cpu {
namespace {

constexpr int64_t kMinElementsPerTask = 1 << 15;
constexpr int64_t kPerTensorSegment = 1 << 14;

InKind kind_of(const char* op, const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return InKind::kFloat32;
    case at::kBFloat16: return InKind::kBFloat16;
    case at::kHalf: return InKind::kFloat16;
    default:
      QK_CHECK(false, op, "x must be float32, bfloat16 or float16, got ", describe(x));
  }
  return InKind::kFloat32;
}

struct Layout {
  int64_t seg_len = 1, n_params = 1;
  bool along = false;
};

// Per tensor (one param) or per channel along `axis` of a contiguous x.
Layout channel_layout(const at::Tensor& x, int64_t n_params, int64_t axis) {
  if (n_params == 1) return {std::max<int64_t>(1, std::min(x.numel(), kPerTensorSegment)), 1};
  int64_t inner = 1;
  for (int64_t d = axis + 1; d < x.dim(); ++d) inner *= x.size(d);
  if (inner == 1) return {n_params, n_params, true};  // channels are the contiguous dim
  return {inner, n_params, false};
}

struct QParams {
  at::Tensor scale, inv, zp;  // float32 [n_params]
};

QParams make_params(const at::Tensor& scale, const at::Tensor& zp_float) {
  at::Tensor s = scale.to(at::kFloat).contiguous().view({-1});
  // 1.0f / scale once per param, as torch's kernels do (not a per-element divide).
  at::Tensor inv = at::empty_like(s);
  const float* sp = s.data_ptr<float>();
  float* ip = inv.data_ptr<float>();
  for (int64_t i = 0; i < s.numel(); ++i) ip[i] = 1.0f / sp[i];
  return {s, inv, zp_float.to(at::kFloat).contiguous().view({-1})};
}

FakeQuantArgs make_args(const at::Tensor& x, InKind kind, const Layout& l, const QParams& q,
                        bool zp_in_rounding, int64_t qmin, int64_t qmax) {
  FakeQuantArgs p{};
  p.x = x.data_ptr();
  p.kind = kind;
  p.numel = x.numel();
  p.seg_len = l.seg_len;
  p.n_params = l.n_params;
  p.params_along_segment = l.along;
  p.scale = q.scale.data_ptr<float>();
  p.inv_scale = q.inv.data_ptr<float>();
  p.zero_point = q.zp.data_ptr<float>();
  p.zp_in_rounding = zp_in_rounding;
  p.qmin = static_cast<float>(qmin);
  p.qmax = static_cast<float>(qmax);
  return p;
}

int64_t segments(const FakeQuantArgs& p) { return (p.numel + p.seg_len - 1) / p.seg_len; }

int64_t grain(const FakeQuantArgs& p) {
  return std::max<int64_t>(1, kMinElementsPerTask / p.seg_len);
}

// `kernel` picks the forward or backward entry of the ISA's table.
void run(const FakeQuantArgs& p, FakeQuantFn FakeQuantKernels::*kernel, const char* op) {
  const FakeQuantFn fn = fake_quant_kernels(selected_isa(op)).*kernel;
  at::parallel_for(0, segments(p), grain(p), [&](int64_t b, int64_t e) { fn(p, b, e); });
}

// ---- argument checks (messages: op, argument, expected, got) ----

void check_range(const char* op, int64_t qmin, int64_t qmax) {
  QK_CHECK(qmin < qmax, op, "qmin must be < qmax, got qmin=", qmin, ", qmax=", qmax);
  QK_CHECK(qmin >= -(1 << 24) && qmax <= (1 << 24), op,
           "qmin/qmax must be within +-2^24 (exact in float32), got ", qmin, ", ", qmax);
}

// Value checks read the (small) parameter tensors directly: a handful of
// torch ops with .item() here would cost more than the kernel on small inputs.
void check_scale_values(const char* op, const at::Tensor& scale) {
  const at::Tensor s = scale.to(at::kFloat).contiguous();
  const float* p = s.data_ptr<float>();
  for (int64_t i = 0; i < s.numel(); ++i) {
    QK_CHECK(std::isfinite(p[i]) && p[i] > 0.f, op, "scale must be finite and > 0, got ", p[i],
             " at index ", i);
  }
}

void check_zero_point_values(const char* op, const at::Tensor& zp, int64_t qmin, int64_t qmax) {
  const at::Tensor z = zp.to(at::kDouble).contiguous();
  const double* p = z.data_ptr<double>();
  for (int64_t i = 0; i < z.numel(); ++i) {
    QK_CHECK(p[i] >= qmin && p[i] <= qmax, op, "zero_point must lie in [qmin, qmax] = [", qmin,
             ", ", qmax, "], got ", p[i], " at index ", i);
  }
}

// LSQ's learned zero point may leave [qmin, qmax] (it is clamped when used); it must
// still be a number.
void check_zero_point_finite(const char* op, const at::Tensor& zp) {
  const at::Tensor z = zp.to(at::kDouble).contiguous();
  const double* p = z.data_ptr<double>();
  for (int64_t i = 0; i < z.numel(); ++i) {
    QK_CHECK(std::isfinite(p[i]), op, "zero_point must be finite, got ", p[i], " at index ", i);
  }
}

// Returns the number of params (1 = per tensor) and the wrapped axis.
std::pair<int64_t, int64_t> check_channel_args(const char* op, const at::Tensor& x,
                                               const at::Tensor& scale, const at::Tensor& zp,
                                               int64_t axis) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"x", x},
                                {"scale", scale},
                                {"zero_point", zp}}) {
    QK_CHECK_CPU(op, name, t);
  }
  kind_of(op, x);
  QK_CHECK(scale.scalar_type() == at::kFloat, op, "scale must be float32, got ", describe(scale));
  QK_CHECK(zp.numel() == scale.numel() && zp.dim() <= 1 && scale.dim() <= 1, op,
           "scale and zero_point must be 1-D (or scalars) of the same size, got scale ",
           describe(scale), " and zero_point ", describe(zp));
  QK_CHECK(at::isFloatingType(zp.scalar_type()) || at::isIntegralType(zp.scalar_type(), false),
           op, "zero_point must be an integer or float tensor, got ", describe(zp));
  const int64_t n = scale.numel();
  QK_CHECK(n >= 1, op, "scale must have at least one element, got ", describe(scale));
  if (n == 1) return {1, 0};
  QK_CHECK(x.dim() >= 1 && axis >= -x.dim() && axis < x.dim(), op, "axis must be in [",
           -x.dim(), ", ", x.dim(), ") for x of shape ", x.sizes(), ", got ", axis);
  const int64_t a = axis < 0 ? axis + x.dim() : axis;
  QK_CHECK(x.size(a) == n, op, "scale must have one element (per tensor) or x.shape[axis] (=",
           x.size(a), ") elements (per channel), got ", describe(scale));
  return {n, a};
}

Layout check_group_args(const char* op, const at::Tensor& x, const at::Tensor& scale,
                        const at::Tensor& zp, int64_t group_size) {
  QK_CHECK_CPU(op, "x", x);
  QK_CHECK_CPU(op, "scale", scale);
  QK_CHECK_CPU(op, "zero_point", zp);
  kind_of(op, x);
  QK_CHECK(x.dim() >= 1 && group_size >= 1 && x.size(-1) % group_size == 0, op,
           "group_size must be >= 1 and divide x.shape[-1] (=", x.dim() ? x.size(-1) : 0,
           "), got ", group_size);
  std::vector<int64_t> expect(x.sizes().begin(), x.sizes().end());
  expect.back() /= group_size;
  QK_CHECK(scale.scalar_type() == at::kFloat && scale.sizes() == at::IntArrayRef(expect), op,
           "scale must be float32 of shape ", at::IntArrayRef(expect), ", got ", describe(scale));
  QK_CHECK(zp.sizes() == at::IntArrayRef(expect) &&
               (at::isFloatingType(zp.scalar_type()) ||
                at::isIntegralType(zp.scalar_type(), false)),
           op, "zero_point must be an integer or float tensor of shape ",
           at::IntArrayRef(expect), ", got ", describe(zp));
  return {group_size, std::max<int64_t>(1, x.numel() / group_size), false};
}

void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& x) {
  QK_CHECK_CPU(op, "grad", grad);
  QK_CHECK(grad.sizes() == x.sizes() && grad.scalar_type() == x.scalar_type(), op,
           "grad must match x (", describe(x), "), got ", describe(grad));
}

// ---- shared bodies ----

at::Tensor forward(const char* op, const at::Tensor& x, const Layout& l, const QParams& q,
                   bool zp_in_rounding, int64_t qmin, int64_t qmax) {
  const at::Tensor xc = x.contiguous();
  at::Tensor y = empty_like_cached(op, xc);
  if (xc.numel() == 0) return y;
  FakeQuantArgs p = make_args(xc, kind_of(op, x), l, q, zp_in_rounding, qmin, qmax);
  p.out = y.data_ptr();
  run(p, &FakeQuantKernels::forward, op);
  return y;
}

at::Tensor backward(const char* op, const at::Tensor& grad, const at::Tensor& x, const Layout& l,
                    const QParams& q, bool zp_in_rounding, int64_t qmin, int64_t qmax) {
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous();
  at::Tensor dx = empty_like_cached(op, xc);
  if (xc.numel() == 0) return dx;
  FakeQuantArgs p = make_args(xc, kind_of(op, x), l, q, zp_in_rounding, qmin, qmax);
  p.dy = gc.data_ptr();
  p.out = dx.data_ptr();
  run(p, &FakeQuantKernels::backward, op);
  return dx;
}

// The zero point torch's learnable ops use: forward rounds half to even and
// clamps; the per-tensor backward adds 0.5 and truncates (so it rounds halves
// up); the per-channel backward rounds half to even.
at::Tensor lsq_zero_point(const at::Tensor& zp, int64_t qmin, int64_t qmax, bool per_tensor_bwd) {
  const at::Tensor z = zp.to(at::kFloat);
  if (per_tensor_bwd) return (z + 0.5f).clamp(qmin, qmax).trunc();
  return z.round().clamp(qmin, qmax);
}

}  // namespace

at::Tensor fake_quant(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                      int64_t axis, int64_t qmin, int64_t qmax) {
  constexpr const char* op = "fake_quant";
  check_range(op, qmin, qmax);
  const auto [n, a] = check_channel_args(op, x, scale, zero_point, axis);
  check_scale_values(op, scale);
  check_zero_point_values(op, zero_point, qmin, qmax);
  const at::Tensor xc = x.contiguous();
  return forward(op, xc, channel_layout(xc, n, a), make_params(scale, zero_point),
                 at::isFloatingType(zero_point.scalar_type()), qmin, qmax);
}

at::Tensor fake_quant_backward(const at::Tensor& grad, const at::Tensor& x,
                               const at::Tensor& scale, const at::Tensor& zero_point,
                               int64_t axis, int64_t qmin, int64_t qmax) {
  constexpr const char* op = "fake_quant_backward";
  check_range(op, qmin, qmax);
  const auto [n, a] = check_channel_args(op, x, scale, zero_point, axis);
  check_grad(op, grad, x);
  const at::Tensor xc = x.contiguous();
  return backward(op, grad, xc, channel_layout(xc, n, a), make_params(scale, zero_point),
                  at::isFloatingType(zero_point.scalar_type()), qmin, qmax);
}

at::Tensor fake_quant_group(const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t group_size, int64_t qmin,
                            int64_t qmax) {
  constexpr const char* op = "fake_quant_group";
  check_range(op, qmin, qmax);
  const Layout l = check_group_args(op, x, scale, zero_point, group_size);
  check_scale_values(op, scale);
  check_zero_point_values(op, zero_point, qmin, qmax);
  return forward(op, x, l, make_params(scale, zero_point),
                 at::isFloatingType(zero_point.scalar_type()), qmin, qmax);
}

at::Tensor fake_quant_group_backward(const at::Tensor& grad, const at::Tensor& x,
                                     const at::Tensor& scale, const at::Tensor& zero_point,
                                     int64_t group_size, int64_t qmin, int64_t qmax) {
  constexpr const char* op = "fake_quant_group_backward";
  check_range(op, qmin, qmax);
  const Layout l = check_group_args(op, x, scale, zero_point, group_size);
  check_grad(op, grad, x);
  return backward(op, grad, x, l, make_params(scale, zero_point),
                  at::isFloatingType(zero_point.scalar_type()), qmin, qmax);
}

at::Tensor fake_quant_lsq(const at::Tensor& x, const at::Tensor& scale,
                          const at::Tensor& zero_point, int64_t axis, int64_t qmin, int64_t qmax,
                          double grad_factor) {
  constexpr const char* op = "fake_quant_lsq";
  check_range(op, qmin, qmax);
  const auto [n, a] = check_channel_args(op, x, scale, zero_point, axis);
  check_scale_values(op, scale);
  check_zero_point_finite(op, zero_point);
  const at::Tensor xc = x.contiguous();
  return forward(op, xc, channel_layout(xc, n, a),
                 make_params(scale, lsq_zero_point(zero_point, qmin, qmax, false)),
                 /*zp_in_rounding=*/false, qmin, qmax);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t qmin, int64_t qmax, double grad_factor) {
  constexpr const char* op = "fake_quant_lsq_backward";
  check_range(op, qmin, qmax);
  const auto [n, a] = check_channel_args(op, x, scale, zero_point, axis);
  check_grad(op, grad, x);
  check_zero_point_finite(op, zero_point);
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous();
  const Layout l = channel_layout(xc, n, a);
  const QParams q = make_params(scale, lsq_zero_point(zero_point, qmin, qmax, n == 1));
  at::Tensor dx = empty_like_cached(op, xc);
  std::vector<double> dscale(n, 0.0), dzp(n, 0.0);
  if (xc.numel() > 0) {
    FakeQuantArgs p = make_args(xc, kind_of(op, x), l, q, /*zp_in_rounding=*/true, qmin, qmax);
    p.dy = gc.data_ptr();
    p.out = dx.data_ptr();
    p.grad_factor = static_cast<float>(grad_factor);
    const FakeQuantFn fn = fake_quant_kernels(selected_isa(op)).lsq_backward;
    std::mutex merge;
    at::parallel_for(0, segments(p), grain(p), [&](int64_t b, int64_t e) {
      std::vector<double> ds(n, 0.0), dz(n, 0.0);
      FakeQuantArgs local = p;
      local.dscale = ds.data();
      local.dzero_point = dz.data();
      fn(local, b, e);
      std::lock_guard<std::mutex> lock(merge);
      for (int64_t i = 0; i < n; ++i) {
        dscale[i] += ds[i];
        dzp[i] += dz[i];
      }
    });
  }
  auto to_tensor = [&](const std::vector<double>& v, const at::Tensor& like) {
    at::Tensor t = at::empty({n}, at::kDouble);
    std::copy(v.begin(), v.end(), t.data_ptr<double>());
    const at::ScalarType dt =
        at::isFloatingType(like.scalar_type()) ? like.scalar_type() : at::kFloat;
    return t.to(dt).view(like.sizes());
  };
  return {dx, to_tensor(dscale, scale), to_tensor(dzp, zero_point)};
}

const FakeQuantKernels& fake_quant_kernels(Isa isa) {
  static const FakeQuantKernels kAvx512{"avx512", avx512_fake_quant_forward,
                                        avx512_fake_quant_backward, avx512_lsq_backward};
  static const FakeQuantKernels kScalar{"scalar", scalar_fake_quant_forward,
                                        scalar_fake_quant_backward, scalar_lsq_backward};
  return isa == Isa::kAvx512Vnni ? kAvx512 : kScalar;
}

namespace {

const char* fake_quant_kernel(Isa isa) { return fake_quant_kernels(isa).name; }

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "fake_quant", fake_quant, fake_quant_kernel);
  register_cpu_op(m, "fake_quant_backward", fake_quant_backward, fake_quant_kernel);
  register_cpu_op(m, "fake_quant_group", fake_quant_group, fake_quant_kernel);
  register_cpu_op(m, "fake_quant_group_backward", fake_quant_group_backward, fake_quant_kernel);
  register_cpu_op(m, "fake_quant_lsq", fake_quant_lsq, fake_quant_kernel);
  register_cpu_op(m, "fake_quant_lsq_backward", fake_quant_lsq_backward, fake_quant_kernel);
}

}  // namespace qkernels::cpu
