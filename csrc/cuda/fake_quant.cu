// Fake-quant forward and straight-through backward on CUDA (fake_quant, _group,
// _backward, _group_backward, and fake_quant_lsq's forward), in the segment layout of
// qkernels/meta/fake_quant.py: element i has params[(i / seg_len) % n_params], or
// params[i % seg_len] when they vary `along` the last dim. Numerics as the reference
// and the Triton kernels: 1/scale precomputed by the host, round half to even; a
// fractional zero point is added before rounding and (rc - zp) * s is formed in
// float64 (as torch); NaN/Inf pass through; the STE mask is qmin <= level <= qmax.
// Grid-stride loops, one element per thread per step (coalesced).
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"

namespace qkernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_float(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_float(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
__device__ __forceinline__ float load_float(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store_float(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_float(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
__device__ __forceinline__ void store_float(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ int64_t param_index(int64_t i, const FakeQuantLayout& l) {
  return l.along ? i % l.seg_len : (i / l.seg_len) % l.n_params;
}

__device__ __forceinline__ float level(float x, float inv, float zp, bool zp_in_round) {
  return zp_in_round ? rintf(zp + x * inv) : rintf(x * inv) + zp;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ scale,
                   const float* __restrict__ inv, const float* __restrict__ zp,
                   FakeQuantLayout l) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < l.numel;
       i += int64_t(gridDim.x) * kThreads) {
    const int64_t p = param_index(i, l);
    const float xf = load_float(x, i);
    const float r = level(xf, inv[p], zp[p], l.zp_in_round);
    const float rc = fminf(fmaxf(r, l.qmin), l.qmax);
    float out;
    if (l.zp_in_round) {
      out = static_cast<float>((double(rc) - double(zp[p])) * double(scale[p]));
    } else {
      out = (rc - zp[p]) * scale[p];
    }
    store_float(y, i, isfinite(xf) ? out : xf);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                    const float* __restrict__ inv, const float* __restrict__ zp,
                    FakeQuantLayout l) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < l.numel;
       i += int64_t(gridDim.x) * kThreads) {
    const int64_t p = param_index(i, l);
    const float r = level(load_float(x, i), inv[p], zp[p], l.zp_in_round);
    const bool keep = r >= l.qmin && r <= l.qmax;  // false for NaN
    if (keep) {
      dx[i] = dy[i];
    } else {
      store_float(dx, i, 0.0f);
    }
  }
}

int blocks_for(int64_t numel, int sm_count) {
  const int64_t needed = (numel + kThreads - 1) / kThreads;
  const int64_t cap = int64_t(sm_count) * 16;
  return static_cast<int>(needed < cap ? needed : cap);
}

}  // namespace

void fake_quant_forward(const void* x, void* y, DType dtype, const float* scale,
                        const float* inv, const float* zp, const FakeQuantLayout& l,
                        int sm_count, cudaStream_t stream) {
  const int blocks = blocks_for(l.numel, sm_count);
  switch (dtype) {
    case DType::kFloat32:
      return forward_kernel<float><<<blocks, kThreads, 0, stream>>>(
          static_cast<const float*>(x), static_cast<float*>(y), scale, inv, zp, l);
    case DType::kBFloat16:
      return forward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(x), static_cast<__nv_bfloat16*>(y), scale, inv, zp,
          l);
    case DType::kFloat16:
      return forward_kernel<__half><<<blocks, kThreads, 0, stream>>>(
          static_cast<const __half*>(x), static_cast<__half*>(y), scale, inv, zp, l);
  }
}

void fake_quant_backward(const void* dy, const void* x, void* dx, DType dtype, const float* inv,
                         const float* zp, const FakeQuantLayout& l, int sm_count,
                         cudaStream_t stream) {
  const int blocks = blocks_for(l.numel, sm_count);
  switch (dtype) {
    case DType::kFloat32:
      return backward_kernel<float><<<blocks, kThreads, 0, stream>>>(
          static_cast<const float*>(dy), static_cast<const float*>(x), static_cast<float*>(dx),
          inv, zp, l);
    case DType::kBFloat16:
      return backward_kernel<__nv_bfloat16><<<blocks, kThreads, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(dy), static_cast<const __nv_bfloat16*>(x),
          static_cast<__nv_bfloat16*>(dx), inv, zp, l);
    case DType::kFloat16:
      return backward_kernel<__half><<<blocks, kThreads, 0, stream>>>(
          static_cast<const __half*>(dy), static_cast<const __half*>(x),
          static_cast<__half*>(dx), inv, zp, l);
  }
}

}  // namespace qkernels::cuda
