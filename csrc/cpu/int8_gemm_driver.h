// Threaded drivers of the int8 GEMM family, also used by the LSTM op.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "isa.h"
#include "int8_gemm_kernels.h"

namespace qkernels::cpu {

constexpr int64_t kRowBlock = 96;   // rows per task: a multiple of the 6-row micro-tile
constexpr int64_t kGroupBlock = 4;  // column groups (of 16) per task: the 64-wide micro-tile
constexpr int64_t kMinParallelMacs = 1 << 18;  // below this, threading costs more than it saves
// Activation buffers get 64 spare bytes per row. Trap: with a power-of-two row
// stride (K = 4096) the rows of a micro-tile all fall in one L1 set and evict
// each other on every k step; at 16 rows this cost the w8a16 kernel 2x.
constexpr int64_t kRowPadBytes = 64;

// The largest K (a multiple of 4) at which no int8 dot product can overflow int32:
// 128 * 128 * K <= 2^31 - 1. A longer K is summed in blocks of it (DESIGN.md, "int32
// accumulation").
constexpr int64_t kMaxExactK = (2147483647LL / (128 * 128)) / kKStep * kKStep;  // 131068

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

struct QuantizedRows {
  at::Tensor q, scale, rowsum;
  ActRange range = ActRange::kFull;
};

// The range of values a symmetric quantization to +-qmax produces.
inline ActRange range_of_qmax(int qmax) {
  return qmax <= 64 ? ActRange::kSevenBit : qmax <= 127 ? ActRange::kSymmetric : ActRange::kFull;
}

// A low-rank adapter for the epilogue, out += t bt: lora_w8a8 passes t = x a^T and
// bt = scaling * b^T, either float32 (t [M, r], bt [r, ceil16(N)], zero-padded) or in
// bf16 pairs (t bf16 [M, 2 ceil(r / 2)], bt int32 words [ceil(r / 2), ceil16(N)]). See
// LoraEpilogue.
struct LoraTensors {
  at::Tensor t, bt;
  bool bf16_pairs = false;
  LoraEpilogue epilogue() const {
    const int64_t t_len = bf16_pairs ? t.size(1) / 2 : t.size(1);
    return {t.data_ptr(), bt.data_ptr(), t_len, bt.size(1), bf16_pairs};
  }
};

// Work on rows [b, e) of x run right after their quantization, while they are in cache.
using RowsFn = std::function<void(int64_t, int64_t)>;

// Per-row symmetric quantization of x2d [M, K] into a padded_k-wide buffer; `then`, if
// given, runs on each block of rows once it is quantized.
QuantizedRows quantize_rows(const char* op, const at::Tensor& x2d, int64_t padded_k, int qmax,
                            Isa isa, const RowsFn& then = nullptr);
// The same into existing buffers, rows [0, m) of x (row stride ldx).
void quantize_rows_into(const QuantizeArgs& p, int64_t m, Isa isa, const RowsFn& then = nullptr);

void run_int8_gemm(const Int8GemmArgs& p, int64_t m, int64_t groups, Isa isa);

// Dequantized int8 GEMM of quantized rows with a packed weight -> [M, n] out_dtype
// (int32: the exact sums, or an error naming `op` where one does not fit int32).
at::Tensor gemm_dequant(const char* op, const QuantizedRows& a, const at::Tensor& packed,
                        int64_t n, const at::Tensor& a_scale, const at::Tensor& b_scale,
                        const at::Tensor& bias, at::ScalarType out_dtype, Isa isa,
                        const LoraTensors* lora = nullptr,
                        Activation act = Activation::kNone);

// Weight-only GEMM of x2d [M, K] (any float dtype) with a packed weight, dequantized by
// b_scale, plus bias and an optional adapter -> [M, n] out_dtype.
// Output channels [m, n] of a non-finite W8A16 weight scale -> NaN (see int8_gemm.cpp).
void nan_where_scale_nonfinite(at::Tensor& out, const at::Tensor& scale);
at::Tensor w8a16_gemm(const at::Tensor& x2d, const at::Tensor& packed, int64_t n,
                      const at::Tensor& b_scale, const at::Tensor& bias,
                      at::ScalarType out_dtype, Isa isa, const LoraTensors* lora = nullptr,
                      Activation act = Activation::kNone);

// An activation's name in the ops' schema ("none", "relu", "gelu", "gelu_tanh", "silu"),
// or an error naming `op` and the names it takes.
Activation parse_activation(const char* op, c10::string_view name);

// The checks every int8 GEMM entry shares (messages name `op`).
InKind in_kind(const char* op, const char* name, const at::Tensor& x);
at::Tensor as_rows(const char* op, const char* name, const at::Tensor& x);
at::Tensor check_scale(const char* op, const char* name, const at::Tensor& s, int64_t n,
                       const char* expect);
at::Tensor check_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t n);
at::Tensor packed_weight(const char* op, const char* name, const at::Tensor& w, int64_t n,
                         int64_t k);
std::vector<int64_t> out_shape(const at::Tensor& x, int64_t n);

// Splits [0, m) x [0, groups) into tasks; task order keeps a thread's column
// blocks together so that its weight panel stays in its own L2.
template <typename Fn>
void parallel_tiles(int64_t m, int64_t groups, int64_t k, int64_t row_block, Fn&& fn) {
  if (m == 0 || groups == 0) return;
  const int64_t mb = (m + row_block - 1) / row_block;
  const int64_t nb = (groups + kGroupBlock - 1) / kGroupBlock;
  const int64_t macs = m * groups * kGroupCols * std::max<int64_t>(k, 1);
  const int64_t grain = macs < kMinParallelMacs ? mb * nb : 1;
  at::parallel_for(0, mb * nb, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t % mb, j = t / mb;
      fn(i * row_block, std::min(m, (i + 1) * row_block), j * kGroupBlock,
         std::min(groups, (j + 1) * kGroupBlock));
    }
  });
}

}  // namespace qkernels::cpu
