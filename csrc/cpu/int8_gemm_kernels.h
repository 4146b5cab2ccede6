// The int8 GEMM family's ISA kernels: their arguments (plain old data, see the trap
// in kernel_args.h), their declarations, and the kernel table the ops and
// `qkernels info` both read, so what info reports is what runs.
#pragma once

#include <cstdint>

#include "activation.h"
#include "isa.h"
#include "kernel_args.h"

namespace qkernels::cpu {

// A low-rank adapter added in the epilogue (lora_w8a8 / lora_w8a16):
// out[m, n] += sum_j t[m, j] * bt[j, n], after the bias (lora.cpp: t = x a^T,
// bt = scaling * b^T). With bf16_pairs (AVX512-BF16 only), t and bt hold bf16 pairs
// along j in uint32 words: t [M, ceil(r / 2)], bt [ceil(r / 2), ldbt], zero-padded.
struct LoraEpilogue {
  const void* t;            // float [M, r] or pairs, or nullptr: no adapter
  const void* bt;           // float [r, ldbt] = b^T or pairs, zero in columns [N, ldbt)
  int64_t r;                // t's row length in its elements: floats or pairs
  int64_t ldbt;             // a multiple of 16, so a column group never reads past a row
  bool bf16_pairs;
};

// What is known of the activations' range. The AVX2 kernel picks its multiply by it:
// vpmaddubsw's int16 pair sums are exact only for small enough operands (DESIGN.md,
// "The AVX2 ceiling"). Zero-initialised arguments mean kFull, which is always safe.
enum class ActRange : int {
  kFull = 0,       // any int8, -128 included
  kSymmetric = 1,  // |a| <= 127: every per-token quantization at 8 bits
  kSevenBit = 2,   // |a| <= 64: 7-bit quantization (qmax <= 63) or such data
};

// C[m, n] = sum_k a[m, k] * w[n, k], with a signed int8 and w packed.
// The kernel computes sum_k a * (w + 128) and subtracts 128 * a_rowsum[m].
struct Int8GemmArgs {
  const int8_t* a;          // [M, lda], zero beyond K
  int64_t lda;
  const int32_t* a_rowsum;  // [M]
  const uint8_t* b;         // packed weight, at the first k4 slice this GEMM reads
  int64_t k4;               // K / 4 this GEMM sums over (the padded K, or a K block of it)
  int64_t b_group_stride;   // bytes from one column group to the next: full padded K * 16
  int64_t n;                // real N (stores are masked beyond it)
  const float* a_scale;     // [M]; unused for int32 output
  const float* b_scale;     // [N]; unused for int32 output
  const float* bias;        // [N] or nullptr
  void* out;                // [M, ldo] of out_kind
  int64_t ldo;
  OutKind out_kind;
  LoraEpilogue lora;        // float outputs only; zero-initialised: none
  ActRange a_range;         // what a may hold; zero-initialised: kFull
  Activation act;           // float outputs only, after bias and adapter; zero: none
};

// out[m, n] = (sum_k x[m, k] * w[n, k]) * b_scale[n] + bias[n]
struct W8A16Args {
  const void* x;            // [M, ldx] activations, zero beyond K
  int64_t ldx;
  InKind x_kind;            // bf16 for the AVX512-BF16 kernel, fp32 otherwise
  const uint8_t* b;         // packed weight
  int64_t k4;
  int64_t n;
  const float* b_scale;
  const float* bias;
  void* out;
  int64_t ldo;
  OutKind out_kind;
  LoraEpilogue lora;
  Activation act;           // after bias and adapter; zero-initialised: none
};

// Symmetric per-row quantization: scale = row_scale(...), q = clamp(round_half_even(
// x / scale), -qmax, qmax); q = 0 for a row whose scale is NaN.
struct QuantizeArgs {
  const void* x;            // [M, ldx]
  int64_t ldx;
  InKind x_kind;
  int64_t k;
  int qmax;
  int8_t* q;                // [M, ldq], zero-filled in [k, ldq)
  int64_t ldq;
  float* scale;             // [M]
  int32_t* rowsum;          // [M] sum of q, or nullptr
};

// The per-row scale every ISA, Triton and reference.quantize_rowwise share (DESIGN.md,
// "Non-finite and tiny values"): NaN for a row holding any NaN or +-Inf (its q are 0,
// so every output of the row is NaN); 1 for a row whose absmax is below qmax * FLT_MIN
// (zeros, denormals: a smaller scale would itself be denormal), so its q round to 0;
// absmax / qmax otherwise. `nonfinite`: the row holds a NaN or an Inf.
inline float row_scale(float absmax, bool nonfinite, int qmax) {
  if (nonfinite) return __builtin_nanf("");
  const float q = static_cast<float>(qmax);
  return absmax < q * __FLT_MIN__ ? 1.f : absmax / q;
}

// Sums and range of int8 activations that arrive already quantized (int8_mm, int_mm):
// rowsum[m] = sum_k a[m, k]; returns max |a| over rows [m0, m1) (128: a -128 somewhere).
struct RowStatsArgs {
  const int8_t* a;  // [M, lda]
  int64_t lda;
  int64_t k;
  int32_t* rowsum;  // [M]
};

// Rows [m0, m1), column groups [g0, g1).
using GemmBlockFn = void (*)(const Int8GemmArgs&, int64_t, int64_t, int64_t, int64_t);
using QuantizeRowsFn = void (*)(const QuantizeArgs&, int64_t, int64_t);
using RowStatsFn = int (*)(const RowStatsArgs&, int64_t, int64_t);
using W8A16BlockFn = void (*)(const W8A16Args&, int64_t, int64_t, int64_t, int64_t);

void avx512_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);
void avx2_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                          int64_t g1);
void scalar_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);
void avx512_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);
void avx2_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);
void scalar_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);
int avx512_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1);
int avx2_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1);
int scalar_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1);
// x must be bf16 here.
void avx512bf16_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);
void avx2_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void scalar_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1);

// W8A8 path: the int8 x int8 GEMM, the per-row quantization and the row statistics of
// already-quantized rows, of one ISA.
struct Int8GemmKernels {
  const char* name;
  GemmBlockFn gemm;
  QuantizeRowsFn quantize;
  RowStatsFn row_stats;
};
// Weight-only path; `bf16_x`: the kernel reads x as bf16 (else fp32).
struct W8A16Kernels {
  const char* name;
  W8A16BlockFn block;
  bool bf16_x;
};

const Int8GemmKernels& int8_gemm_kernels(Isa isa);
const W8A16Kernels& w8a16_kernels(Isa isa);

}  // namespace qkernels::cpu
