// CPU kernels of the LoRA family (contract in DESIGN.md): a frozen int8 base, W8A8 or
// W8A16, plus a low-rank adapter scaling * (x a^T) b^T added in the base GEMM's
// epilogue, so the output is written once. t = x a^T is one small sgemm next to the
// per-token quantization of x; scaling is folded into the b^T the epilogue reads. On
// AVX512-BF16 CPUs the adapter runs in bf16 pairs (vdpbf16ps: twice an FMA's work).
#include "lora.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "checks.h"
#include "int8_gemm_driver.h"
#include "int8_gemm_kernels.h"
#include "isa.h"
#include "lora_kernels.h"
#include "op_registry.h"

namespace qkernels::cpu {
namespace {

void check_float(const char* op, const char* name, const at::Tensor& t) {
  QK_CHECK(at::isFloatingType(t.scalar_type()) && t.scalar_type() != at::kDouble, op, name,
           " must be float32, bfloat16 or float16, got ", describe(t));
}

// t = x a^T on AVX-512 by the kernels of lora_kernels.h over a^T packed in 16-column
// panels, in fp32 or in bf16 pairs, run over row ranges (`rows`).
struct Projection {
  at::Tensor a_panels, t, x_pairs;
  LoraProjectArgs args{};
  bool bf16 = false;
  void rows(int64_t b, int64_t e) const {
    if (!bf16) return avx512_lora_project(args, b, e);
    LoraProjectArgs a = args;  // each thread converts its rows of x into its own scratch
    a.x_pairs += at::get_thread_num() * kLoraProjectRows * ((args.k + 1) / 2);
    avx512bf16_lora_project(a, b, e);
  }
};

// Where the kernels run: in bf16 always (packed by avx512bf16_pack_pairs, a^T costs less
// than BLAS's fp32 t plus its conversion from 2 rows up, and ties at 1: 2026-12-07). In
// fp32 packing a^T costs a pass over a per call (r x K: 2.8 MB at r = 64, K = 11008),
// which BLAS's sgemm beat below ~128 rows (op suite, 2026-12-07: the adapter's overhead
// at 16 rows rose from 19% to 54% on the Llama down projection).
constexpr int64_t kOwnProjectionRows = 128;

bool own_projection(Isa isa, const at::Tensor& x2d, bool bf16) {
  return bf16 || (isa == Isa::kAvx512Vnni && x2d.size(0) >= kOwnProjectionRows);
}

// The adapter's operands in the kernels' layouts (torch ops on them cost more in
// dispatches than their work at these sizes: r x K and N x r).
at::Tensor as_float(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

at::Tensor pairs_of(const at::Tensor& s, float scale, int64_t groups, int64_t g_stride,
                    int64_t p_stride, int64_t words) {
  at::Tensor out = at::empty({words}, s.options().dtype(at::kInt));
  const PackPairsArgs args{s.data_ptr<float>(), s.size(0), s.size(1), s.size(1), scale,
                           reinterpret_cast<uint32_t*>(out.data_ptr<int32_t>()), groups,
                           g_stride, p_stride};
  // Blocks of 16 x 32 values. Trap: a and b are read cold (once per forward), so this is
  // bound by memory latency, not work (~19 us for 768 x 16 of each, single-threaded: 5%
  // of a 512 x 768 x 768 forward): 4 blocks a task, on every thread.
  const int64_t blocks = groups * ((s.size(1) + 31) / 32);
  at::parallel_for(0, blocks, 4, [&](int64_t b0, int64_t b1) {
    avx512bf16_pack_pairs(args, b0, b1);
  });
  return out;
}

// a [r, K] as the projection kernels read it, zero-padded: float [panels][K][16], or
// bf16 pairs [panels][ceil(K / 2)][16] (words).
at::Tensor pack_a(const at::Tensor& a, bool bf16) {
  const at::Tensor af = as_float(a);
  const int64_t r = a.size(0), k = a.size(1), panels = (r + 15) / 16, pairs = (k + 1) / 2;
  if (bf16) return pairs_of(af, 1.f, panels, pairs * 16, 16, panels * pairs * 16);
  at::Tensor padded = at::zeros({panels * 16, k}, af.options());
  padded.slice(0, 0, r).copy_(af);
  return padded.view({panels, 16, k}).transpose(1, 2).contiguous();
}

// scaling * b^T as the epilogue reads it, zero-padded: float [r, ldbt], or bf16 pairs
// along r [ceil(r / 2)][ldbt] (words).
at::Tensor pack_bt(const at::Tensor& b, double scaling, int64_t ldbt, bool bf16) {
  const int64_t n = b.size(0), r = b.size(1);
  if (bf16) {
    const int64_t rows = (r + 1) / 2;
    return pairs_of(as_float(b), static_cast<float>(scaling), ldbt / 16, 16, ldbt, rows * ldbt)
        .view({rows, ldbt});
  }
  at::Tensor bt = at::empty({r, ldbt}, b.options().dtype(at::kFloat));
  at::Tensor head = bt.slice(1, 0, n);
  at::mul_out(head, b.t(), at::scalar_tensor(scaling, bt.options()));
  if (ldbt > n) bt.slice(1, n, ldbt).zero_();
  return bt;
}

Projection projection(const char* op, const at::Tensor& x2d, const at::Tensor& a, bool bf16) {
  const int64_t m = x2d.size(0), k = x2d.size(1), r = a.size(0), pairs = (k + 1) / 2;
  Projection pr;
  pr.bf16 = bf16;
  pr.a_panels = pack_a(a, bf16);
  pr.t = bf16 ? at::empty({m, 2 * ((r + 1) / 2)}, x2d.options().dtype(at::kBFloat16))
              : at::empty({m, r}, x2d.options().dtype(at::kFloat));
  if (bf16) {
    pr.x_pairs = at::empty({at::get_num_threads() * kLoraProjectRows * pairs},
                           x2d.options().dtype(at::kInt));
  }
  pr.args = {x2d.data_ptr(), k, in_kind(op, "x", x2d), k, pr.a_panels.data_ptr(), r,
             pr.t.data_ptr(),
             bf16 ? reinterpret_cast<uint32_t*>(pr.x_pairs.data_ptr<int32_t>()) : nullptr};
  return pr;
}

// The adapter as the epilogue reads it; a [r, K], b [N, r] in any float dtype. `bf16`:
// in bf16 pairs (x, a, t and scaling * b^T rounded to bf16, fp32 sums).
// `deferred` (where own_projection): t is left for the caller to compute with it
// (lora_w8a8 runs it beside the quantization of x, while x's rows are in cache).
LoraTensors prepare_adapter(const char* op, const at::Tensor& x2d, const at::Tensor& a,
                            const at::Tensor& b, double scaling, int64_t n, Isa isa, bool bf16,
                            Projection* deferred = nullptr) {
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
  at::Tensor t;
  if (own_projection(isa, x2d, bf16)) {
    Projection pr = projection(op, x2d, a, bf16);
    t = pr.t;
    if (deferred) {
      *deferred = pr;
    } else {  // tasks of whole 8-row tiles, at least ~64K multiply-adds each
      const int64_t work = std::max<int64_t>(x2d.size(1) * a.size(0), 1);
      at::parallel_for(0, x2d.size(0), round_up(std::max<int64_t>(8, 65536 / work), 8),
                       [&](int64_t b0, int64_t e) { pr.rows(b0, e); });
    }
  } else {  // BLAS on dense operands: it picks its summation order by layout
    t = at::mm(x2d.to(at::kFloat).contiguous(), a.to(at::kFloat).contiguous().t());
  }
  // scaling goes into bt (r x N) rather than t (M x r): one op fewer, and smaller.
  return {t, pack_bt(b, scaling, round_up(n, kGroupCols), bf16), bf16};
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

// The adapter runs in bf16 where linear_w8a16 does: on the AVX512-BF16 kernels.
bool adapter_in_bf16(Isa isa) { return bf16_kernels(isa); }

const char* w8a8_kernel(Isa isa) {
  return adapter_in_bf16(isa) ? "avx512_vnni+bf16_adapter" : int8_gemm_kernels(isa).name;
}
const char* w8a16_kernel(Isa isa) { return w8a16_kernels(isa).name; }

}  // namespace

at::Tensor lora_w8a8(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                     const std::optional<at::Tensor>& bias, const at::Tensor& a,
                     const at::Tensor& b, double scaling) {
  constexpr const char* op = "lora_w8a8";
  const Base base = check_base(op, x, wq, w_scale, bias);
  const Isa isa = selected_isa(op);
  Projection pending;
  // The wide-K path (exact int64 sums) adds the adapter by at::mm: float32 there.
  const bool bf16 = adapter_in_bf16(isa) && base.packed.size(1) <= kMaxExactK;
  const bool beside = own_projection(isa, base.x2d, bf16);  // t in the quantization's pass
  const LoraTensors lora = prepare_adapter(op, base.x2d, a, b, scaling, base.n, isa, bf16,
                                           beside ? &pending : nullptr);
  RowsFn project;
  if (beside) project = [&pending](int64_t b0, int64_t e) { pending.rows(b0, e); };
  QuantizedRows rows =
      quantize_rows(op, base.x2d, base.packed.size(1) + kRowPadBytes, 127, isa, project);
  return gemm_dequant(op, rows, base.packed, base.n, rows.scale, base.w_scale, base.bias,
                      x.scalar_type(), isa, &lora)
      .view(out_shape(x, base.n));
}

at::Tensor lora_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                      const std::optional<at::Tensor>& bias, const at::Tensor& a,
                      const at::Tensor& b, double scaling) {
  constexpr const char* op = "lora_w8a16";
  const Base base = check_base(op, x, wq, w_scale, bias);
  const Isa isa = selected_isa(op);
  const LoraTensors lora =
      prepare_adapter(op, base.x2d, a, b, scaling, base.n, isa, adapter_in_bf16(isa));
  return w8a16_gemm(base.x2d, base.packed, base.n, base.w_scale, base.bias, x.scalar_type(),
                    isa, &lora)
      .view(out_shape(x, base.n));
}

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "lora_w8a8", lora_w8a8, w8a8_kernel);
  register_cpu_op(m, "lora_w8a16", lora_w8a16, w8a16_kernel);
}

}  // namespace qkernels::cpu
