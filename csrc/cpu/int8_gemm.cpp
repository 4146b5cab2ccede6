// CPU implementations of the int8 GEMM family: argument checks, packing,
// per-token quantization and the threaded drivers around the ISA kernels.
#include "int8_gemm.h"

#include <atomic>
#include <string>
#include <utility>
#include <cmath>
#include <cstring>

#include <ATen/Parallel.h>

#include "checks.h"
#include "int8_gemm_driver.h"
#include "int8_gemm_kernels.h"
#include "isa.h"
#include "op_registry.h"

namespace qkernels::cpu {

const Int8GemmKernels& int8_gemm_kernels(Isa isa) {
  static const Int8GemmKernels kTable[] = {
      {"scalar", scalar_int8_gemm_block, scalar_quantize_rows, scalar_row_stats},
      {"avx2", avx2_int8_gemm_block, avx2_quantize_rows, avx2_row_stats},
      {"avx512_vnni", avx512_int8_gemm_block, avx512_quantize_rows, avx512_row_stats},
  };
  return kTable[static_cast<int>(isa)];
}

const W8A16Kernels& w8a16_kernels(Isa isa) {
  static const W8A16Kernels kBf16{"avx512_bf16", avx512bf16_w8a16_block, true};
  static const W8A16Kernels kAvx2{"avx2_fma", avx2_w8a16_block, false};
  static const W8A16Kernels kScalar{"scalar", scalar_w8a16_block, false};
  // Trap: AVX512-BF16 is a separate CPUID bit; a VNNI CPU without it runs the AVX2 kernel.
  if (bf16_kernels(isa)) return kBf16;
  return isa == Isa::kScalar ? kScalar : kAvx2;
}

InKind in_kind(const char* op, const char* name, const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return InKind::kFloat32;
    case at::kBFloat16: return InKind::kBFloat16;
    case at::kHalf: return InKind::kFloat16;
    default:
      QK_CHECK(false, op, name, " must be float32, bfloat16 or float16, got ", describe(x));
  }
  return InKind::kFloat32;
}

static OutKind out_kind(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return OutKind::kBFloat16;
    case at::kHalf: return OutKind::kFloat16;
    case at::kInt: return OutKind::kInt32;
    default: return OutKind::kFloat32;
  }
}

// Scale vector of `n` float32 entries: shape [n] (or [n, 1] / [1, n] as `alt`).
at::Tensor check_scale(const char* op, const char* name, const at::Tensor& s, int64_t n,
                       const char* expect) {
  QK_CHECK_CPU(op, name, s);
  const bool shape_ok = (s.dim() == 1 && s.size(0) == n) ||
                        (s.dim() == 2 && s.numel() == n && (s.size(0) == 1 || s.size(1) == 1));
  QK_CHECK(s.scalar_type() == at::kFloat && shape_ok, op, name, " must be float32 of shape ",
           expect, " (=", n, "), got ", describe(s));
  return s.contiguous().view({n});
}

at::Tensor check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t n) {
  if (!bias.has_value()) return at::Tensor();
  const at::Tensor& b = *bias;
  QK_CHECK_CPU(op, "bias", b);
  QK_CHECK(at::isFloatingType(b.scalar_type()) && b.dim() == 1 && b.size(0) == n, op,
           "bias must be a float tensor of shape [N] (=", n, "), got ", describe(b));
  return b.to(at::kFloat).contiguous();
}

// Resolves a weight argument to the packed layout: int8 [N, K] is packed now
// (costs a pass over the weight; modules pre-pack), uint8 is taken as packed.
at::Tensor packed_weight(const char* op, const char* name, const at::Tensor& w, int64_t n,
                         int64_t k) {
  QK_CHECK_CPU(op, name, w);
  if (w.scalar_type() == at::kChar) {
    QK_CHECK(w.dim() == 2 && w.size(0) == n && w.size(1) == k, op, name,
             " must be int8 of shape [N, K] = [", n, ", ", k, "], got ", describe(w));
    return pack_int8_weight(w);
  }
  const int64_t np = round_up(n, kGroupCols), kp = round_up(k, kKStep);
  QK_CHECK(w.scalar_type() == at::kByte && w.dim() == 2 && w.size(0) == np && w.size(1) == kp,
           op, name, " must be int8 [N, K] = [", n, ", ", k,
           "] or a packed weight from qkernels.ops.pack_weight (uint8 [", np, ", ", kp,
           "]), got ", describe(w));
  return w.contiguous();
}

at::Tensor as_rows(const char* op, const char* name, const at::Tensor& x) {
  QK_CHECK_CPU(op, name, x);
  QK_CHECK(x.dim() >= 1, op, name, " must have at least one dimension, got ", describe(x));
  int64_t m = 1;  // not view({-1, K}): that is ambiguous when K == 0
  for (int64_t d = 0; d + 1 < x.dim(); ++d) m *= x.size(d);
  return x.contiguous().view({m, x.size(-1)});
}

namespace {

// Whether int8 activations [M, K] must be copied into a padded buffer for the GEMM:
// where K is not a multiple of 4 (the kernels read 4 k at a time), and where K is a
// power of two >= 1024 (the L1 set trap at kRowPadBytes).
bool needs_padded_copy(const at::Tensor& a) {
  const int64_t k = a.size(1);
  return !a.is_contiguous() || k % kKStep != 0 || (k >= 1024 && (k & (k - 1)) == 0);
}

// The GEMM operand of int8 activations: the rows themselves, or a copy into a K-padded
// buffer (needs_padded_copy); with each row's sum and the range of the values (which
// AVX2 multiply is exact for them).
QuantizedRows int8_rows(const at::Tensor& a, int64_t padded_k, Isa isa) {
  const int64_t m = a.size(0), k = a.size(1);
  const bool copy = needs_padded_copy(a) || padded_k != k;
  const int64_t ldq = copy ? padded_k + kRowPadBytes : k;
  const at::Tensor src = a.contiguous();
  at::Tensor q = copy ? at::empty({m, ldq}, a.options()) : src;
  at::Tensor rowsum = at::empty({m}, a.options().dtype(at::kInt));
  const int8_t* in = src.data_ptr<int8_t>();
  int8_t* out = q.data_ptr<int8_t>();
  const RowStatsArgs stats{out, ldq, k, rowsum.data_ptr<int32_t>()};
  const RowStatsFn row_stats = int8_gemm_kernels(isa).row_stats;
  std::atomic<int> widest{0};  // max |a| over all rows (128: a -128 somewhere)
  at::parallel_for(0, m, std::max<int64_t>(1, 65536 / std::max<int64_t>(k, 1)),
                   [&](int64_t b, int64_t e) {
                     for (int64_t r = b; copy && r < e; ++r) {
                       // Trap: with K = 0 `in` is null, and memcpy from null is UB even
                       // for 0 bytes (UBSan halts the sanitizer run on it).
                       if (k > 0) std::memcpy(out + r * ldq, in + r * k, static_cast<size_t>(k));
                       std::memset(out + r * ldq + k, 0, static_cast<size_t>(ldq - k));
                     }
                     const int widest_here = row_stats(stats, b, e);
                     int seen = widest.load();
                     while (seen < widest_here && !widest.compare_exchange_weak(seen, widest_here)) {
                     }
                   });
  return {q, at::Tensor(), rowsum, range_of_qmax(widest.load())};
}

}  // namespace

std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n;
  return shape;
}

namespace {

// sum_k a[m, k] * w[n, k] exactly, in int64, for a K past kMaxExactK: int32 GEMMs over
// K blocks that cannot overflow, each with its own row sums (see Int8GemmArgs).
at::Tensor wide_int_gemm(const QuantizedRows& a, const at::Tensor& packed, int64_t n, Isa isa) {
  const int64_t m = a.q.size(0), kp = packed.size(1);
  at::Tensor total = at::zeros({m, n}, a.q.options().dtype(at::kLong));
  at::Tensor part = at::empty({m, n}, a.q.options().dtype(at::kInt));
  for (int64_t k0 = 0; k0 < kp; k0 += kMaxExactK) {
    const int64_t k1 = std::min(kp, k0 + kMaxExactK);
    const at::Tensor rowsum = a.q.slice(1, k0, k1).sum(1, /*keepdim=*/false, at::kInt);
    const Int8GemmArgs p{a.q.data_ptr<int8_t>() + k0, a.q.size(1), rowsum.data_ptr<int32_t>(),
                         packed.data_ptr<uint8_t>() + k0 / kKStep * kGroupBytesPerK4,
                         (k1 - k0) / kKStep, kp * kGroupCols, n, nullptr, nullptr, nullptr,
                         part.data_ptr(), n, OutKind::kInt32, LoraEpilogue{}, a.range};
    run_int8_gemm(p, m, packed.size(0) / kGroupCols, isa);
    total += part;
  }
  return total;
}

}  // namespace

Activation parse_activation(const char* op, c10::string_view name) {
  static constexpr std::pair<const char*, Activation> kNames[] = {
      {"none", Activation::kNone},           {"relu", Activation::kRelu},
      {"gelu", Activation::kGelu},           {"gelu_tanh", Activation::kGeluTanh},
      {"silu", Activation::kSilu}};
  for (const auto& [known, act] : kNames)
    if (name == known) return act;
  QK_CHECK(false, op, "activation must be one of 'none', 'relu', 'gelu', 'gelu_tanh', 'silu', ",
           "got '", std::string(name), "'");
  return Activation::kNone;
}

at::Tensor apply_activation(const at::Tensor& x, Activation act) {
  switch (act) {
    case Activation::kNone: return x;
    case Activation::kRelu: return at::relu(x);
    case Activation::kGelu: return at::gelu(x);
    case Activation::kGeluTanh: return at::gelu(x, "tanh");
    case Activation::kSilu: return at::silu(x);
  }
  return x;
}

at::Tensor gemm_dequant(const char* op, const QuantizedRows& a, const at::Tensor& packed,
                        int64_t n, const at::Tensor& a_scale, const at::Tensor& b_scale,
                        const at::Tensor& bias, at::ScalarType out_dtype, Isa isa,
                        const LoraTensors* lora, Activation act) {
  const int64_t m = a.q.size(0);
  if (packed.size(1) > kMaxExactK) {
    const at::Tensor exact = wide_int_gemm(a, packed, n, isa);
    if (out_dtype == at::kInt) {
      if (exact.numel()) {
        const int64_t lo = exact.min().item<int64_t>(), hi = exact.max().item<int64_t>();
        QK_CHECK(lo >= INT32_MIN && hi <= INT32_MAX, op,
                 "the exact result does not fit the int32 output (it reaches ",
                 lo < INT32_MIN ? lo : hi, " at K = ", packed.size(1),
                 "); int8_mm sums the same products exactly into a float output");
      }
      return exact.to(at::kInt);
    }
    // The epilogue of the kernels, in the same order: acc * a_scale * b_scale + bias.
    at::Tensor out = exact.to(at::kFloat) * a_scale.view({m, 1}) * b_scale.view({1, n});
    if (bias.defined()) out += bias;
    if (lora) {
      TORCH_INTERNAL_ASSERT(!lora->bf16_pairs, op, ": the wide-K path adds a float32 adapter");
      out += at::mm(lora->t, lora->bt.slice(1, 0, n));
    }
    return apply_activation(out, act).to(out_dtype);
  }
  at::Tensor out = at::empty({m, n}, a.q.options().dtype(out_dtype));
  Int8GemmArgs p{a.q.data_ptr<int8_t>(),
                 a.q.size(1),
                 a.rowsum.data_ptr<int32_t>(),
                 packed.data_ptr<uint8_t>(),
                 packed.size(1) / kKStep,
                 packed.size(1) * kGroupCols,
                 n,
                 a_scale.defined() ? a_scale.data_ptr<float>() : nullptr,
                 b_scale.defined() ? b_scale.data_ptr<float>() : nullptr,
                 bias.defined() ? bias.data_ptr<float>() : nullptr,
                 out.data_ptr(),
                 n,
                 out_kind(out_dtype),
                 lora ? lora->epilogue() : LoraEpilogue{},
                 a.range,
                 act};
  run_int8_gemm(p, m, packed.size(0) / kGroupCols, isa);
  return out;
}

// Per-row symmetric quantization into a K-padded buffer (zeros beyond K).
QuantizedRows quantize_rows(const char* op, const at::Tensor& x2d, int64_t padded_k, int qmax,
                            Isa isa, const RowsFn& then) {
  const int64_t m = x2d.size(0), k = x2d.size(1);
  QuantizedRows r{at::empty({m, padded_k}, x2d.options().dtype(at::kChar)),
                  at::empty({m}, x2d.options().dtype(at::kFloat)),
                  at::empty({m}, x2d.options().dtype(at::kInt))};
  QuantizeArgs p{x2d.data_ptr(), k, in_kind(op, "x", x2d), k, qmax,
                 r.q.data_ptr<int8_t>(), padded_k, r.scale.data_ptr<float>(),
                 r.rowsum.data_ptr<int32_t>()};
  quantize_rows_into(p, m, isa, then);
  r.range = range_of_qmax(qmax);
  return r;
}

void quantize_rows_into(const QuantizeArgs& p, int64_t m, Isa isa, const RowsFn& then) {
  const QuantizeRowsFn fn = int8_gemm_kernels(isa).quantize;
  constexpr int64_t kThenRows = 16;  // rows quantized, then handed to `then`, at a time
  at::parallel_for(0, m, std::max<int64_t>(1, 16384 / std::max<int64_t>(p.k, 1)),
                   [&](int64_t b, int64_t e) {
                     if (!then) return fn(p, b, e);
                     for (int64_t s = b; s < e; s += kThenRows) {
                       const int64_t s1 = std::min(e, s + kThenRows);
                       fn(p, s, s1);
                       then(s, s1);
                     }
                   });
}

void run_int8_gemm(const Int8GemmArgs& p, int64_t m, int64_t groups, Isa isa) {
  const GemmBlockFn fn = int8_gemm_kernels(isa).gemm;
  parallel_tiles(m, groups, p.k4 * kKStep, kRowBlock, [&](int64_t m0, int64_t m1, int64_t g0,
                                                          int64_t g1) { fn(p, m0, m1, g0, g1); });
}

at::Tensor pack_int8_weight(const at::Tensor& w) {
  constexpr const char* op = "pack_weight";
  QK_CHECK_CPU(op, "wq", w);
  QK_CHECK(w.scalar_type() == at::kChar && w.dim() == 2, op,
           "wq must be int8 of shape [N, K], got ", describe(w));
  const int64_t n = w.size(0), k = w.size(1);
  const int64_t np = round_up(n, kGroupCols), kp = round_up(k, kKStep), k4 = kp / kKStep;
  const at::Tensor wc = w.contiguous();
  at::Tensor packed = at::empty({np, kp}, w.options().dtype(at::kByte));
  const int8_t* src = wc.data_ptr<int8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  at::parallel_for(0, np / kGroupCols, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      uint8_t* out = dst + g * k4 * kGroupBytesPerK4;
      for (int64_t c = 0; c < kGroupCols; ++c) {
        const int64_t row = g * kGroupCols + c;
        for (int64_t d = 0; d < kp; ++d) {
          const int8_t v = (row < n && d < k) ? src[row * k + d] : 0;
          out[(d / kKStep) * kGroupBytesPerK4 + c * kKStep + d % kKStep] =
              static_cast<uint8_t>(v) ^ 0x80;
        }
      }
    }
  });
  return packed;
}

at::Tensor unpack_int8_weight(const at::Tensor& packed, int64_t n, int64_t k) {
  constexpr const char* op = "unpack_weight";
  QK_CHECK_CPU(op, "packed", packed);
  const int64_t np = round_up(n, kGroupCols), kp = round_up(k, kKStep);
  QK_CHECK(n >= 0 && k >= 0 && packed.scalar_type() == at::kByte && packed.dim() == 2 &&
               packed.size(0) == np && packed.size(1) == kp,
           op, "packed must be uint8 of shape [", np, ", ", kp, "] for N=", n, ", K=", k,
           ", got ", describe(packed));
  // Inverse of the packing permutation, [G, K4, 16, 4] -> [N, K], in one pass (the LoRA
  // backward unpacks every frozen weight each step: a permute + copy chain cost 4 passes).
  // Per group of 16 rows: each K4 step is 64 contiguous bytes, 4 for each row.
  const at::Tensor src = packed.contiguous();
  at::Tensor w = at::empty({n, k}, packed.options().dtype(at::kChar));  // own storage
  const uint8_t* in = src.data_ptr<uint8_t>();
  int8_t* out = w.data_ptr<int8_t>();
  const int64_t k4 = kp / kKStep, full = k / kKStep;
  at::parallel_for(0, np / kGroupCols, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const uint8_t* group = in + g * k4 * kGroupBytesPerK4;
      const int64_t rows = std::min(kGroupCols, n - g * kGroupCols);
      for (int64_t c = 0; c < rows; ++c) {
        int8_t* dst = out + (g * kGroupCols + c) * k;
        const uint8_t* col = group + c * kKStep;
        for (int64_t q = 0; q < full; ++q) {
          uint32_t v;
          std::memcpy(&v, col + q * kGroupBytesPerK4, 4);
          v ^= 0x80808080u;
          std::memcpy(dst + q * kKStep, &v, 4);
        }
        for (int64_t d = full * kKStep; d < k; ++d)
          dst[d] = static_cast<int8_t>(col[d / kKStep * kGroupBytesPerK4 + d % kKStep] ^ 0x80);
      }
    }
  });
  return w;
}

std::tuple<at::Tensor, at::Tensor> quantize_rowwise(const at::Tensor& x, int64_t bits) {
  constexpr const char* op = "quantize_rowwise";
  QK_CHECK(bits >= 2 && bits <= 8, op, "bits must be in [2, 8], got ", bits);
  const at::Tensor x2d = as_rows(op, "x", x);
  in_kind(op, "x", x2d);
  const int64_t k = x2d.size(1);
  QuantizedRows r = quantize_rows(op, x2d, k, (1 << (bits - 1)) - 1, selected_isa(op));
  std::vector<int64_t> scale_shape(x.sizes().begin(), x.sizes().end() - 1);
  return {r.q.view(x.sizes()), r.scale.view(scale_shape)};
}

at::Tensor int_mm(const at::Tensor& a, const at::Tensor& b) {
  constexpr const char* op = "int_mm";
  QK_CHECK_CPU(op, "a", a);
  QK_CHECK_CPU(op, "b", b);
  QK_CHECK(a.scalar_type() == at::kChar && a.dim() == 2, op,
           "a must be int8 of shape [M, K], got ", describe(a));
  QK_CHECK(b.scalar_type() == at::kChar && b.dim() == 2 && b.size(1) == a.size(1), op,
           "b must be int8 of shape [N, K] with K == a.shape[1] (=", a.size(1), "), got ",
           describe(b));
  const Isa isa = selected_isa(op);
  const int64_t n = b.size(0);
  const at::Tensor packed = pack_int8_weight(b);
  return gemm_dequant(op, int8_rows(a, packed.size(1), isa), packed, n, at::Tensor(), at::Tensor(),
                      at::Tensor(), at::kInt, isa);
}

at::Tensor int8_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& a_scale,
                   const at::Tensor& b_scale, const std::optional<at::Tensor>& bias,
                   std::optional<at::ScalarType> out_dtype) {
  constexpr const char* op = "int8_mm";
  QK_CHECK_CPU(op, "a", a);
  QK_CHECK(a.scalar_type() == at::kChar && a.dim() == 2, op,
           "a must be int8 of shape [M, K], got ", describe(a));
  const int64_t m = a.size(0), k = a.size(1);
  QK_CHECK_CPU(op, "b_scale", b_scale);
  QK_CHECK(b_scale.dim() >= 1, op, "b_scale must be float32 of shape [N], got ",
           describe(b_scale));
  const int64_t n = b_scale.numel();
  const at::Tensor bs = check_scale(op, "b_scale", b_scale, n, "[N] or [1, N]");
  const at::Tensor as = check_scale(op, "a_scale", a_scale, m, "[M] or [M, 1]");
  const at::ScalarType dtype = out_dtype.value_or(at::kFloat);
  QK_CHECK(dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf, op,
           "out_dtype must be float32, bfloat16 or float16, got ", dtype_name(dtype));
  const at::Tensor packed = packed_weight(op, "b", b, n, k);
  const at::Tensor bias_f = check_bias(op, bias, n);
  const Isa isa = selected_isa(op);
  QuantizedRows rows = int8_rows(a, packed.size(1), isa);
  return gemm_dequant(op, rows, packed, n, as, bs, bias_f, dtype, isa);
}

namespace {

at::Tensor w8a8_linear(const char* op, const at::Tensor& x, const at::Tensor& wq,
                       const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                       Activation act) {
  const at::Tensor x2d = as_rows(op, "x", x);
  in_kind(op, "x", x2d);
  const int64_t k = x2d.size(1);
  QK_CHECK_CPU(op, "w_scale", w_scale);
  QK_CHECK(w_scale.dim() >= 1, op, "w_scale must be float32 of shape [N], got ",
           describe(w_scale));
  const int64_t n = w_scale.numel();
  const at::Tensor ws = check_scale(op, "w_scale", w_scale, n, "[N]");
  const at::Tensor packed = packed_weight(op, "wq", wq, n, k);
  const at::Tensor bias_f = check_bias(op, bias, n);
  const Isa isa = selected_isa(op);
  QuantizedRows rows = quantize_rows(op, x2d, packed.size(1) + kRowPadBytes, 127, isa);
  return gemm_dequant(op, rows, packed, n, rows.scale, ws, bias_f, x.scalar_type(), isa,
                      nullptr, act)
      .view(out_shape(x, n));
}

at::Tensor w8a16_linear(const char* op, const at::Tensor& x, const at::Tensor& wq,
                        const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                        Activation act) {
  const at::Tensor x2d = as_rows(op, "x", x);
  in_kind(op, "x", x2d);
  const int64_t k = x2d.size(1);
  QK_CHECK_CPU(op, "w_scale", w_scale);
  QK_CHECK(w_scale.dim() >= 1, op, "w_scale must be float32 of shape [N], got ",
           describe(w_scale));
  const int64_t n = w_scale.numel();
  const at::Tensor ws = check_scale(op, "w_scale", w_scale, n, "[N]");
  const at::Tensor packed = packed_weight(op, "wq", wq, n, k);
  const at::Tensor bias_f = check_bias(op, bias, n);
  return w8a16_gemm(x2d, packed, n, ws, bias_f, x.scalar_type(), selected_isa(op), nullptr, act)
      .view(out_shape(x, n));
}

}  // namespace

at::Tensor linear_w8a8(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                       const std::optional<at::Tensor>& bias) {
  return w8a8_linear("linear_w8a8", x, wq, w_scale, bias, Activation::kNone);
}

at::Tensor linear_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                        const std::optional<at::Tensor>& bias) {
  return w8a16_linear("linear_w8a16", x, wq, w_scale, bias, Activation::kNone);
}

at::Tensor linear_w8a8_act(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                           const std::optional<at::Tensor>& bias, c10::string_view activation) {
  constexpr const char* op = "linear_w8a8_act";
  return w8a8_linear(op, x, wq, w_scale, bias, parse_activation(op, activation));
}

at::Tensor linear_w8a16_act(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                            const std::optional<at::Tensor>& bias, c10::string_view activation) {
  constexpr const char* op = "linear_w8a16_act";
  return w8a16_linear(op, x, wq, w_scale, bias, parse_activation(op, activation));
}

at::Tensor w8a16_gemm(const at::Tensor& x2d, const at::Tensor& packed, int64_t n,
                      const at::Tensor& b_scale, const at::Tensor& bias,
                      at::ScalarType out_dtype, Isa isa, const LoraTensors* lora,
                      Activation act) {
  const int64_t m = x2d.size(0), k = x2d.size(1);
  const W8A16Kernels& kernels = w8a16_kernels(isa);
  const bool bf16 = kernels.bf16_x;
  // The kernels read x as bf16 (AVX512-BF16) or fp32, zero beyond K.
  const at::ScalarType x_dtype = bf16 ? at::kBFloat16 : at::kFloat;
  const int64_t ldx = packed.size(1) + kRowPadBytes / static_cast<int64_t>(at::elementSize(x_dtype));
  at::Tensor xk = at::zeros({m, ldx}, x2d.options().dtype(x_dtype));
  xk.slice(1, 0, k).copy_(x2d);
  at::Tensor out = at::empty({m, n}, x2d.options().dtype(out_dtype));
  W8A16Args p{xk.data_ptr(),
              xk.size(1),
              bf16 ? InKind::kBFloat16 : InKind::kFloat32,
              packed.data_ptr<uint8_t>(),
              packed.size(1) / kKStep,
              n,
              b_scale.data_ptr<float>(),
              bias.defined() ? bias.data_ptr<float>() : nullptr,
              out.data_ptr(),
              n,
              out_kind(out_dtype),
              lora ? lora->epilogue() : LoraEpilogue{},
              act};
  const W8A16BlockFn fn = kernels.block;
  parallel_tiles(m, packed.size(0) / kGroupCols, k, /*row_block=*/64,
                 [&](int64_t m0, int64_t m1, int64_t g0, int64_t g1) { fn(p, m0, m1, g0, g1); });
  nan_where_scale_nonfinite(out, b_scale);
  return out;
}

// W8A16 means dequantize, then multiply: a non-finite scale makes every weight of its
// channel +-inf or NaN (0 * inf), and the dot product NaN. The kernels scale the sum
// instead (acc * inf = +-inf), so such channels are set to NaN here, as the reference
// does. One pass over N scales; the fill runs only for a damaged scale.
void nan_where_scale_nonfinite(at::Tensor& out, const at::Tensor& scale) {
  const float* s = scale.data_ptr<float>();
  bool any = false;
  for (int64_t i = 0; i < scale.numel(); ++i) any |= !std::isfinite(s[i]);
  if (any) out.masked_fill_(at::isfinite(scale).logical_not().view({1, -1}), NAN);
}

std::string describe(const at::Tensor& t) {
  std::string s = dtype_name(t.scalar_type()) + " [";
  for (int64_t i = 0; i < t.dim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.size(i));
  }
  return s + "] on " + t.device().str();
}

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kChar: return "torch.int8";
    case at::kByte: return "torch.uint8";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kShort: return "torch.int16";
    case at::kBool: return "torch.bool";
    default: return std::string("torch.") + c10::toString(t);
  }
}

namespace {

const char* portable(Isa) { return "portable"; }
const char* w8a8_kernel(Isa isa) { return int8_gemm_kernels(isa).name; }
const char* w8a16_kernel(Isa isa) { return w8a16_kernels(isa).name; }

}  // namespace

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  register_cpu_op(m, "pack_weight", pack_int8_weight, portable);
  register_cpu_op(m, "unpack_weight", unpack_int8_weight, portable);
  register_cpu_op(m, "quantize_rowwise", quantize_rowwise, w8a8_kernel);
  register_cpu_op(m, "int_mm", int_mm, w8a8_kernel);
  register_cpu_op(m, "int8_mm", int8_mm, w8a8_kernel);
  register_cpu_op(m, "linear_w8a8", linear_w8a8, w8a8_kernel);
  register_cpu_op(m, "linear_w8a16", linear_w8a16, w8a16_kernel);
  register_cpu_op(m, "linear_w8a8_act", linear_w8a8_act, w8a8_kernel);
  register_cpu_op(m, "linear_w8a16_act", linear_w8a16_act, w8a16_kernel);
}

}  // namespace qkernels::cpu
