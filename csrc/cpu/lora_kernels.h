// The ISA kernels of the LoRA adapter (lora_w8a8 / lora_w8a16): the down-projection
// t = x a^T and, on AVX512-BF16, the epilogue's t (scaling b^T) in bf16 pairs.
// Arguments are plain old data (see the trap in kernel_args.h).
#pragma once

#include <cstdint>

#include "int8_gemm_kernels.h"
#include "kernel_args.h"

namespace qkernels::cpu {

// t[m, j] = sum_k x[m, k] * a[j, k] for j < r, with fp32 sums in k order. Two layouts:
// - fp32 (avx512_lora_project): a_panels float [ceil(r / 16)][K][16] (a^T in panels of
//   16 columns, zero-padded), t float [M, r];
// - bf16 pairs (avx512bf16_lora_project): a_panels uint32 [ceil(r / 16)][ceil(K / 2)][16],
//   each word the bf16 pair (a[j, 2i], a[j, 2i + 1]) (low half first, zero-padded); t
//   uint32 [M, ceil(r / 2)], the bf16 pairs (t[m, 2i], t[m, 2i + 1]) the epilogue reads
//   (LoraEpilogue::bf16_pairs). x is rounded to bf16 as torch rounds.
struct LoraProjectArgs {
  const void* x;          // [M, ldx]
  int64_t ldx;
  InKind x_kind;
  int64_t k;
  const void* a_panels;
  int64_t r;
  void* t;
  uint32_t* x_pairs;      // bf16 only: [kLoraProjectRows][ceil(K / 2)] scratch of the thread
};

constexpr int kLoraProjectRows = 16;  // rows a projection kernel reads at a time, at most

// Rows [m0, m1). AVX-512F: the skinny sgemm (N = r) of BLAS reached 46 GMAC/s at
// M = 2048, K = 3072, r = 16 on the VNNI machine; a register tile of 8 rows x 16 columns
// keeps both FMA pipes busy.
void avx512_lora_project(const LoraProjectArgs& p, int64_t m0, int64_t m1);
// The same with vdpbf16ps (AVX512-BF16): two multiply-adds per fp32 lane and instruction.
void avx512bf16_lora_project(const LoraProjectArgs& p, int64_t m0, int64_t m1);

// A float matrix s [R, C] (row stride ld) times `scale` as bf16 pairs along its rows, the
// words w[row, p] = (s[row, 2p], s[row, 2p + 1]) (round to nearest even, denormals
// flushed, zero past C), stored transposed in vectors of 16 rows: out[g * g_stride +
// p * p_stride + lane] = w[16 g + lane, p] for g < groups (zero past R) and p < ceil(C /
// 2). a^T's panels and the epilogue's bt are both such a layout. Work comes in blocks of
// 16 rows x 16 words, numbered g * ceil(ceil(C / 2) / 16) + p / 16: blocks [b0, b1).
struct PackPairsArgs {
  const float* s;
  int64_t rows, cols, ld;
  float scale;
  uint32_t* out;
  int64_t groups, g_stride, p_stride;
};

void avx512bf16_pack_pairs(const PackPairsArgs& p, int64_t b0, int64_t b1);

// The epilogue's adapter on bf16 pairs (AVX512-BF16): out[i * groups * 16 + c] = sum_j
// t[m + i, j] * bt[j, n0 + c] for `rows` (1..16) rows and `groups` (1..4) groups of 16
// columns, in pair order.
void avx512bf16_lora_tile(const LoraEpilogue& l, int rows, int groups, int64_t m, int64_t n0,
                          float* out);

}  // namespace qkernels::cpu
