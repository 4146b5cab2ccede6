// CPU lowrank_mm: two BLAS GEMMs. The [M, r] intermediate is small (r << K, N),
// so it stays in cache between them; a fused kernel buys nothing on CPU.
#include "lowrank.h"

#include "checks.h"
#include "op_registry.h"

namespace qkernels::cpu {

at::Tensor lowrank_mm(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                      const std::optional<at::Tensor>& bias) {
  constexpr const char* op = "lowrank_mm";
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor&>{"x", x}, {"a", a},
                                {"b", b}}) {
    QK_CHECK_CPU(op, name, t);
    QK_CHECK(at::isFloatingType(t.scalar_type()), op, name, " must be a float tensor, got ",
             describe(t));
  }
  QK_CHECK(x.dim() >= 1, op, "x must have at least one dimension, got ", describe(x));
  const int64_t k = x.size(-1);
  QK_CHECK(a.dim() == 2 && a.size(1) == k && a.scalar_type() == x.scalar_type(), op,
           "a must be [rank, K] with K == x.shape[-1] (=", k, ") and x's dtype, got ",
           describe(a));
  QK_CHECK(b.dim() == 2 && b.size(1) == a.size(0) && b.scalar_type() == x.scalar_type(), op,
           "b must be [N, rank] with rank == a.shape[0] (=", a.size(0), ") and x's dtype, got ",
           describe(b));
  const int64_t n = b.size(0);
  int64_t m = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) m *= x.size(d);
  const at::Tensor x2d = x.reshape({m, k});
  at::Tensor out;
  if (bias.has_value()) {
    QK_CHECK_CPU(op, "bias", *bias);
    QK_CHECK(bias->dim() == 1 && bias->size(0) == n && bias->scalar_type() == x.scalar_type(),
             op, "bias must be [N] (=", n, ") of x's dtype, got ", describe(*bias));
    out = at::addmm(*bias, at::mm(x2d, a.t()), b.t());
  } else {
    out = at::mm(at::mm(x2d, a.t()), b.t());
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return out.view(shape);
}

namespace {

const char* blas(Isa) { return "blas"; }

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CPU, m) { register_cpu_op(m, "lowrank_mm", lowrank_mm, blas); }

}  // namespace qkernels::cpu
