// CPU op norm_quantize (contract in DESIGN.md): LayerNorm or RMSNorm of each row of x
// and the per-token int8 quantization of the result, in one pass over memory. The
// normalized rows are written once (the float output the residual path reads) and
// quantized while still in L1, by the same quantization kernel linear_w8a8 runs, so
// int8_mm on (q, scale) equals linear_w8a8 on y bit for bit.
#include <cmath>
#include <optional>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "checks.h"
#include "int8_gemm_driver.h"
#include "int8_gemm_kernels.h"
#include "isa.h"
#include "norm_kernels.h"
#include "op_registry.h"
#include "scalar_convert.h"

namespace qkernels::cpu {

void scalar_norm_rows(const NormArgs& p, int64_t m0, int64_t m1) {
  const float inv_k = 1.f / static_cast<float>(p.k);
  for (int64_t m = m0; m < m1; ++m) {
    const int64_t base = m * p.ldx;
    float sum = 0.f;
    for (int64_t k = 0; k < p.k; ++k) {
      const float v = load_as_float(p.x, p.x_kind, base + k);
      sum += p.rms ? v * v : v;
    }
    float mean = 0.f, var = sum * inv_k;
    if (!p.rms) {
      mean = var;
      float squares = 0.f;
      for (int64_t k = 0; k < p.k; ++k) {
        const float d = load_as_float(p.x, p.x_kind, base + k) - mean;
        squares += d * d;
      }
      var = squares * inv_k;
    }
    const float rstd = 1.f / std::sqrt(var + p.eps);
    for (int64_t k = 0; k < p.k; ++k) {
      float y = (load_as_float(p.x, p.x_kind, base + k) - mean) * rstd;
      if (p.weight) y *= p.weight[k];
      if (p.bias) y += p.bias[k];
      store_float(p.y, p.y_kind, m * p.ldy + k, y);
    }
  }
}

namespace {

constexpr int64_t kRowsPerStep = 8;  // normalized, then quantized while in L1

NormRowsFn norm_kernel(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni: return avx512_norm_rows;
    case Isa::kAvx2: return avx2_norm_rows;
    case Isa::kScalar: break;
  }
  return scalar_norm_rows;
}

const char* norm_kernel_name(Isa isa) { return isa_name(isa); }

// weight / bias: float [K] of any float dtype, or absent.
at::Tensor check_affine(const char* op, const char* name, const std::optional<at::Tensor>& t,
                        int64_t k) {
  if (!t.has_value()) return at::Tensor();
  QK_CHECK_CPU(op, name, *t);
  QK_CHECK(at::isFloatingType(t->scalar_type()) && t->dim() == 1 && t->size(0) == k, op, name,
           " must be a float tensor of shape [K] (=", k, "), got ", describe(*t));
  return t->to(at::kFloat).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_quantize(
    const at::Tensor& x, const std::optional<at::Tensor>& weight,
    const std::optional<at::Tensor>& bias, double eps, bool rms, int64_t bits) {
  constexpr const char* op = "norm_quantize";
  QK_CHECK(bits >= 2 && bits <= 8, op, "bits must be in [2, 8], got ", bits);
  QK_CHECK(std::isfinite(eps) && eps >= 0, op, "eps must be finite and >= 0, got ", eps);
  const at::Tensor x2d = as_rows(op, "x", x);
  const InKind kind = in_kind(op, "x", x2d);
  const int64_t m = x2d.size(0), k = x2d.size(1);
  QK_CHECK(k >= 1, op, "x must have a non-empty last dimension to normalize, got ", describe(x));
  const at::Tensor w = check_affine(op, "weight", weight, k);
  const at::Tensor b = check_affine(op, "bias", bias, k);
  at::Tensor y = at::empty({m, k}, x2d.options());
  at::Tensor q = at::empty({m, k}, x2d.options().dtype(at::kChar));
  at::Tensor scale = at::empty({m}, x2d.options().dtype(at::kFloat));
  const NormArgs np{x2d.data_ptr(), k, kind, k,
                    w.defined() ? w.data_ptr<float>() : nullptr,
                    b.defined() ? b.data_ptr<float>() : nullptr,
                    static_cast<float>(eps), rms, y.data_ptr(), k, out_kind_of(kind)};
  // Quantizes y as stored (rounded to x's dtype): q is quantize_rowwise(y) exactly.
  const QuantizeArgs qp{y.data_ptr(), k, kind, k, (1 << (bits - 1)) - 1,
                        q.data_ptr<int8_t>(), k, scale.data_ptr<float>(), nullptr};
  const Isa isa = selected_isa(op);
  const NormRowsFn norm = norm_kernel(isa);
  const QuantizeRowsFn quantize = int8_gemm_kernels(isa).quantize;
  at::parallel_for(0, m, std::max<int64_t>(kRowsPerStep, 16384 / k), [&](int64_t b0, int64_t e) {
    for (int64_t r = b0; r < e; r += kRowsPerStep) {
      const int64_t r1 = std::min(e, r + kRowsPerStep);
      norm(np, r, r1);
      quantize(qp, r, r1);
    }
  });
  std::vector<int64_t> scale_shape(x.sizes().begin(), x.sizes().end() - 1);
  return {y.view(x.sizes()), q.view(x.sizes()), scale.view(scale_shape)};
}

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "norm_quantize", norm_quantize, norm_kernel_name);
}

}  // namespace qkernels::cpu
