// The CUTLASS int8 GEMMs behind int_mm / int8_mm / linear_w8a8 on CUDA: the interface
// between the torch-facing dispatcher (int8_gemm.cu) and the kernel instantiations
// (int8_gemm_sm80_<out>.cu, int8_gemm_sm90_<out>.cu). Torch-free, so the instantiation
// units compile without ATen.
//
// D[m, n] = epilogue(sum_k A[m, k] * B[n, k]) with A [M, K] and B [N, K] int8 row-major
// (B is the weight as stored: "TN" in BLAS terms), int32 accumulation on tensor cores.
// Epilogue, per the contract in reference.py: out = (float(acc) * a_scale[m]) * b_scale[n]
// + bias[n], each step rounded in fp32 (no FMA), then rounded to the output dtype;
// or the int32 accumulator itself (int_mm).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace qkernels::cuda {

enum class OutType : int { kInt32 = 0, kFloat32 = 1, kBFloat16 = 2, kFloat16 = 3 };

// One tile configuration per M bucket; int8_gemm.cu maps M to a bucket and the
// bucket to a config (a table that measured picks replace).
enum class Tile : int { kDecode = 0, kSmall = 1, kMedium = 2, kLarge = 3 };
constexpr int kNumTiles = 4;

// CUTLASS reads A and B rows in 16-byte vectors and writes D rows in 16-byte vectors:
// K % 16 == 0 and N % 16 == 0 (16 int8, or 16 elements of any output dtype: at least
// 16 bytes). Other shapes go to the Triton kernels (DESIGN.md, "CUDA C++ backend").
constexpr int kAlignK = 16;
constexpr int kAlignN = 16;

struct Int8GemmArgs {
  const int8_t* a = nullptr;        // [M, K]
  const int8_t* b = nullptr;        // [N, K]
  const float* a_scale = nullptr;   // [M]; unused for kInt32
  const float* b_scale = nullptr;   // [N]; unused for kInt32
  const float* bias = nullptr;      // [N] or null (adds 0)
  void* out = nullptr;              // [M, N] of OutType
  int m = 0, n = 0, k = 0;
  void* workspace = nullptr;        // workspace_bytes() of device memory
  cudaStream_t stream = nullptr;
  int sm_count = 0;                 // the device's multiprocessor count
};

// Each arch unit defines these for its out type: the run returns nullptr on success or a
// static message naming what CUTLASS refused; _smem is the kernel's shared memory
// (checked against the arch's limit by tools/cuda_check.py).
#define QK_DECLARE_INT8_GEMM(arch, out)                                                  \
  size_t int8_gemm_##arch##_##out##_workspace(const Int8GemmArgs& args, Tile tile);     \
  const char* int8_gemm_##arch##_##out(const Int8GemmArgs& args, Tile tile);            \
  size_t int8_gemm_##arch##_##out##_smem(Tile tile);

QK_DECLARE_INT8_GEMM(sm80, i32)
QK_DECLARE_INT8_GEMM(sm80, f32)
QK_DECLARE_INT8_GEMM(sm80, bf16)
QK_DECLARE_INT8_GEMM(sm80, f16)
QK_DECLARE_INT8_GEMM(sm90, i32)
QK_DECLARE_INT8_GEMM(sm90, f32)
QK_DECLARE_INT8_GEMM(sm90, bf16)
QK_DECLARE_INT8_GEMM(sm90, f16)

#undef QK_DECLARE_INT8_GEMM

}  // namespace qkernels::cuda
