// Per-token int8 quantization on CUDA (quantize_rowwise; the activation pass of
// linear_w8a8): one block per row, 16-byte loads, absmax by warp shuffles, then the
// row quantized in the same kernel (its second read hits L1/L2). Numerics as
// reference.quantize_rowwise: scale = absmax / qmax, q = round-half-even(x / scale)
// (an IEEE division, as torch); a row with NaN/Inf gets scale NaN and q = 0; a row
// whose absmax < qmax * FLT_MIN gets scale 1 (its q round to 0).
#include <cfloat>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "element.cuh"
#include "kernels.h"

namespace qkernels::cuda {
namespace {

constexpr int kThreads = 256;


// The row's absmax, or -1 when it holds NaN/Inf (every thread gets the answer).
__device__ float block_absmax(float local, bool nonfinite) {
  __shared__ float maxes[kThreads / 32];
  __shared__ int bad[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) {
    local = fmaxf(local, __shfl_xor_sync(0xffffffffu, local, off));
    nonfinite = __any_sync(0xffffffffu, nonfinite);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
    maxes[warp] = local;
    bad[warp] = nonfinite;
  }
  __syncthreads();
  float m = 0.0f;
  bool any_bad = false;
  for (int w = 0; w < kThreads / 32; ++w) {
    m = fmaxf(m, maxes[w]);
    any_bad |= bad[w] != 0;
  }
  return any_bad ? -1.0f : m;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    quantize_rows_kernel(const T* __restrict__ x, int8_t* __restrict__ q,
                         float* __restrict__ scale, int64_t k, float qmax) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * k;
  int8_t* qr = q + row * k;
  // kVec > 1 only when k % kVec == 0 and the rows are 16-byte aligned (the host checks).
  const int64_t chunks = k / kVec;
  float local = 0.0f;
  bool nonfinite = false;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
    T v[kVec];
    if constexpr (kVec > 1) {
      *reinterpret_cast<uint4*>(v) = reinterpret_cast<const uint4*>(xr)[c];
    } else {
      v[0] = xr[c];
    }
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float f = to_float(v[i]);
      nonfinite |= !(fabsf(f) <= FLT_MAX);
      local = fmaxf(local, fabsf(f));
    }
  }
  const float absmax = block_absmax(local, nonfinite);
  float s;
  if (absmax < 0.0f) {
    s = __int_as_float(0x7fc00000);  // NaN: the row's outputs are NaN downstream
  } else if (absmax < qmax * FLT_MIN) {
    s = 1.0f;
  } else {
    s = absmax / qmax;
  }
  if (threadIdx.x == 0) scale[row] = s;
  const bool zero = absmax < 0.0f;
  for (int64_t c = threadIdx.x; c < chunks; c += kThreads) {
    T v[kVec];
    if constexpr (kVec > 1) {
      *reinterpret_cast<uint4*>(v) = reinterpret_cast<const uint4*>(xr)[c];
    } else {
      v[0] = xr[c];
    }
    int8_t out[kVec];
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const float r = rintf(to_float(v[i]) / s);  // round half to even, like torch.round
      out[i] = zero ? int8_t(0) : static_cast<int8_t>(fminf(fmaxf(r, -qmax), qmax));
    }
    if constexpr (kVec == 8) {
      reinterpret_cast<uint2*>(qr)[c] = *reinterpret_cast<uint2*>(out);
    } else if constexpr (kVec == 4) {
      reinterpret_cast<uint32_t*>(qr)[c] = *reinterpret_cast<uint32_t*>(out);
    } else {
      qr[c] = out[0];
    }
  }
}

template <typename T>
void launch(const void* x, int8_t* q, float* scale, int64_t rows, int64_t k, int bits,
            bool vectorized, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(T);
  const float qmax = float((1 << (bits - 1)) - 1);
  if (vectorized) {
    quantize_rows_kernel<T, kVec><<<rows, kThreads, 0, stream>>>(
        static_cast<const T*>(x), q, scale, k, qmax);
  } else {
    quantize_rows_kernel<T, 1><<<rows, kThreads, 0, stream>>>(
        static_cast<const T*>(x), q, scale, k, qmax);
  }
}

}  // namespace

int quantize_rows_vector_width(DType dtype) { return 16 / dtype_size(dtype); }

void quantize_rows(const void* x, DType dtype, int8_t* q, float* scale, int64_t rows, int64_t k,
                   int bits, bool vectorized, cudaStream_t stream) {
  switch (dtype) {
    case DType::kFloat32:
      return launch<float>(x, q, scale, rows, k, bits, vectorized, stream);
    case DType::kBFloat16:
      return launch<__nv_bfloat16>(x, q, scale, rows, k, bits, vectorized, stream);
    case DType::kFloat16:
      return launch<__half>(x, q, scale, rows, k, bits, vectorized, stream);
  }
}

}  // namespace qkernels::cuda
