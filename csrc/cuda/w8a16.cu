// linear_w8a16 on CUDA: y = x (wq * w_scale)^T + bias with int8 weights, x float.
//  - decode (M <= 16): a memory-bound kernel that reads every weight byte once with
//    16-byte loads, converts in registers and keeps one fp32 sum per row of x; each block
//    owns kCols output columns and splits K over its warps (so N as small as 256 still
//    fills the GPU), reducing through shared memory. out = sum * w_scale[n] + bias[n].
//  - larger M: the weight dequantized once into x's dtype (dequantize_weight) for a
//    cuBLAS GEMM (ops.cpp).
#include <cstdint>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "element.cuh"
#include "kernels.h"

namespace qkernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kCols = 2;                    // output columns per block
constexpr int kSlices = kWarps / kCols;     // K slices per column
constexpr int kChunk = 16;                  // int8 weights per 16-byte load

// Bit-level unpacking of 16-byte loads (no address-taken arrays: those go to local memory).
// The loads are __ldg of a uint4: a plain uint4 dereference whose members are then used
// one by one is split into four 4-byte loads by nvcc (tools/cuda_check.py checks).
__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <typename T>
__device__ __forceinline__ void unpack(const uint4& v, float* out) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t w = word(v, i);
    if constexpr (sizeof(T) == 4) {
      out[i] = __uint_as_float(w);
    } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      out[2 * i] = __uint_as_float(w << 16);
      out[2 * i + 1] = __uint_as_float(w & 0xffff0000u);
    } else {
      out[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu)));
      out[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16)));
    }
  }
}

// 16 elements of x (16-byte aligned: K % 16 == 0 and aligned rows).
template <typename T>
__device__ __forceinline__ void load16(const T* x, float (&out)[kChunk]) {
  constexpr int kPer = 16 / sizeof(T);  // elements per 16-byte load
#pragma unroll
  for (int i = 0; i < kChunk / kPer; ++i) {
    unpack<T>(__ldg(reinterpret_cast<const uint4*>(x) + i), out + i * kPer);
  }
}

// The 16 int8 weights of a 16-byte load, sign-extended.
__device__ __forceinline__ void unpack_int8(const uint4& v, float (&out)[kChunk]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t w = word(v, i);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      out[4 * i + j] = static_cast<float>(static_cast<int32_t>(w << (24 - 8 * j)) >> 24);
    }
  }
}

template <typename T, int kM>
__global__ void __launch_bounds__(kThreads)
    w8a16_decode_kernel(const T* __restrict__ x, const int8_t* __restrict__ wq,
                        const float* __restrict__ w_scale, const float* __restrict__ bias,
                        T* __restrict__ out, int m, int n, int k) {
  __shared__ float partial[kWarps][kM];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * kCols + warp % kCols;
  const int slice = warp / kCols;
  float acc[kM];
#pragma unroll
  for (int r = 0; r < kM; ++r) acc[r] = 0.0f;
  if (col < n) {
    const int chunks = k / kChunk;
    const int8_t* w = wq + static_cast<int64_t>(col) * k;
    for (int c = slice * 32 + lane; c < chunks; c += kSlices * 32) {
      float wf[kChunk];
      unpack_int8(__ldg(reinterpret_cast<const uint4*>(w) + c), wf);
#pragma unroll
      for (int r = 0; r < kM; ++r) {
        if (r < m) {
          float xf[kChunk];
          load16(x + static_cast<int64_t>(r) * k + c * kChunk, xf);
#pragma unroll
          for (int i = 0; i < kChunk; ++i) acc[r] += xf[i] * wf[i];
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kM; ++r) {
    for (int off = 16; off > 0; off /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
    if (lane == 0) partial[warp][r] = acc[r];
  }
  __syncthreads();
  // Thread t < kCols * m writes column t % kCols of row t / kCols.
  const int t = threadIdx.x;
  if (t < kCols * m) {
    const int c = t % kCols, r = t / kCols;
    const int oc = blockIdx.x * kCols + c;
    if (oc < n) {
      float sum = 0.0f;
      for (int s = 0; s < kSlices; ++s) sum += partial[s * kCols + c][r];
      // Dequantize-then-multiply semantics: a non-finite scale's channel is NaN (the
      // sum times inf would be +-inf), as the reference and the CPU kernels give.
      const float scale = w_scale[oc];
      float y = isfinite(scale) ? sum * scale : __int_as_float(0x7fc00000);
      if (bias != nullptr) y = y + bias[oc];
      out[static_cast<int64_t>(r) * n + oc] = from_float<T>(y);
    }
  }
}

template <typename T>
void launch_decode(const void* x, const int8_t* wq, const float* w_scale, const float* bias,
                   void* out, int m, int n, int k, cudaStream_t stream) {
  const dim3 grid((n + kCols - 1) / kCols);
  const T* xt = static_cast<const T*>(x);
  T* ot = static_cast<T*>(out);
#define QK_DECODE(M) \
  w8a16_decode_kernel<T, M><<<grid, kThreads, 0, stream>>>(xt, wq, w_scale, bias, ot, m, n, k)
  if (m <= 1) QK_DECODE(1);
  else if (m <= 2) QK_DECODE(2);
  else if (m <= 4) QK_DECODE(4);
  else if (m <= 8) QK_DECODE(8);
  else QK_DECODE(16);
#undef QK_DECODE
}

template <typename T>
__global__ void dequantize_kernel(const int8_t* __restrict__ wq, const float* __restrict__ scale,
                                  T* __restrict__ w, int64_t n, int64_t k) {
  const int64_t total = n * k;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    w[i] = from_float<T>(static_cast<float>(wq[i]) * scale[i / k]);
  }
}

}  // namespace

void w8a16_decode(const void* x, DType dtype, const int8_t* wq, const float* w_scale,
                  const float* bias, void* out, int m, int n, int k, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch_decode<float>(x, wq, w_scale, bias, out, m, n, k, stream);
    case DType::kBFloat16:
      return launch_decode<__nv_bfloat16>(x, wq, w_scale, bias, out, m, n, k, stream);
    case DType::kFloat16:
      return launch_decode<__half>(x, wq, w_scale, bias, out, m, n, k, stream);
  }
}

void dequantize_weight(const int8_t* wq, const float* scale, void* w, DType dtype, int64_t n,
                       int64_t k, int sm_count, cudaStream_t stream) {
  const int blocks = sm_count * 8;
  switch (dtype) {
    case DType::kFloat32:
      return dequantize_kernel<float><<<blocks, 256, 0, stream>>>(
          wq, scale, static_cast<float*>(w), n, k);
    case DType::kBFloat16:
      return dequantize_kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(
          wq, scale, static_cast<__nv_bfloat16*>(w), n, k);
    case DType::kFloat16:
      return dequantize_kernel<__half><<<blocks, 256, 0, stream>>>(
          wq, scale, static_cast<__half*>(w), n, k);
  }
}

}  // namespace qkernels::cuda
