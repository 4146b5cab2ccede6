// CPU kernels of the LoRA family (contract in DESIGN.md): a frozen int8 base, W8A8 or
// W8A16, plus a low-rank adapter scaling * (x a^T) b^T added in the base GEMM's
// epilogue, so the output is written once. t = x a^T is one small sgemm next to the
// per-token quantization of x; scaling is folded into the b^T the epilogue reads.
#include "lora.h"

#include "checks.h"
#include "int8_gemm_driver.h"
#include "int8_gemm_kernels.h"
#include "isa.h"
#include "op_registry.h"

namespace qkernels::cpu {
namespace {

void check_float(const char* op, const char* name, const at::Tensor& t) {
  QK_CHECK(at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kDouble, op, name,
           " must be float32, bfloat16 or float16, got ", describe(t));
}

// The adapter as the epilogue reads it; a [r, K], b [N, r] in any float dtype.
LoraTensors prepare_adapter(const char* op, const at::Tensor& x2d, const at::Tensor& a,
                            const at::Tensor& b, double scaling, int64_t n) {
  const int64_t k = x2d.size(1);
  QK_CHECK_CPU(op, "a", a);
  QK_CHECK_CPU(op, "b", b);
  check_float(op, "a", a);
  check_float(op, "b", b);
  QK_CHECK(a.dim() == 2 && a.size(0) >= 1 && a.size(1) == k, op,
           "a must be [r, K] with r >= 1 and K == x.shape[-1] (=", k, "), got ", describe(a));
  const int64_t r = a.size(0);
  QK_CHECK(b.dim() == 2 && b.size(0) == n && b.size(1) == r, op, "b must be [N, r] = [", n,
           ", ", r, "] (N from w_scale, r from a), got ", describe(b));
  // Dense operands: BLAS picks its summation order by layout, and results must not
  // depend on the strides of the arguments.
  at::Tensor t = at::mm(x2d.to(at::kFloat).contiguous(), a.to(at::kFloat).contiguous().t());
  // scaling goes into bt (r x N) rather than t (M x r): one op fewer, and smaller.
  const int64_t ldbt = round_up(n, kGroupCols);
  at::Tensor bt = at::empty({r, ldbt}, t.options());
  at::Tensor head = bt.slice(1, 0, n);
  at::mul_out(head, b.t(), at::scalar_tensor(scaling, t.options()));
  if (ldbt > n) bt.slice(1, n, ldbt).zero_();
  return {t, bt};
}

struct Base {
  at::Tensor x2d, packed, w_scale, bias;
  int64_t n;
};

Base check_base(const char* op, const at::Tensor& x, const at::Tensor& wq,
                const at::Tensor& w_scale, const std::optional<at::Tensor>& bias) {
  at::Tensor x2d = as_rows(op, "x", x);
  in_kind(op, "x", x2d);
  QK_CHECK_CPU(op, "w_scale", w_scale);
  QK_CHECK(w_scale.dim() >= 1, op, "w_scale must be float32 of shape [N], got ",
           describe(w_scale));
  const int64_t n = w_scale.numel();
  const at::Tensor ws = check_scale(op, "w_scale", w_scale, n, "[N]");
  return {x2d, packed_weight(op, "wq", wq, n, x2d.size(1)), ws, check_bias(op, bias, n), n};
}

const char* w8a8_kernel(Isa isa) { return int8_gemm_kernels(isa).name; }
const char* w8a16_kernel(Isa isa) { return w8a16_kernels(isa).name; }

}  // namespace

at::Tensor lora_w8a8(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                     const std::optional<at::Tensor>& bias, const at::Tensor& a,
                     const at::Tensor& b, double scaling) {
  constexpr const char* op = "lora_w8a8";
  const Base base = check_base(op, x, wq, w_scale, bias);
  const LoraTensors lora = prepare_adapter(op, base.x2d, a, b, scaling, base.n);
  const Isa isa = selected_isa(op);
  QuantizedRows rows =
      quantize_rows(op, base.x2d, base.packed.size(1) + kRowPadBytes, 127, isa);
  return gemm_dequant(op, rows, base.packed, base.n, rows.scale, base.w_scale, base.bias,
                      x.scalar_type(), isa, &lora)
      .view(out_shape(x, base.n));
}

at::Tensor lora_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                      const std::optional<at::Tensor>& bias, const at::Tensor& a,
                      const at::Tensor& b, double scaling) {
  constexpr const char* op = "lora_w8a16";
  const Base base = check_base(op, x, wq, w_scale, bias);
  const LoraTensors lora = prepare_adapter(op, base.x2d, a, b, scaling, base.n);
  return w8a16_gemm(base.x2d, base.packed, base.n, base.w_scale, base.bias, x.scalar_type(),
                    selected_isa(op), &lora)
      .view(out_shape(x, base.n));
}

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "lora_w8a8", lora_w8a8, w8a8_kernel);
  register_cpu_op(m, "lora_w8a16", lora_w8a16, w8a16_kernel);
}

}  // namespace qkernels::cpu
