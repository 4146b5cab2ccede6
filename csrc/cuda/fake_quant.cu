// Fake-quant on CUDA: forward and straight-through backward (fake_quant, _group,
// _backward, _group_backward), and fake_quant_lsq's forward and backward, in the segment
// layout of qkernels/meta/fake_quant.py: element i has params[(i / seg_len) % n_params],
// or params[i % seg_len] when they vary `along` the last dim. Numerics as the reference
// and the Triton kernels: 1/scale precomputed by the host, round half to even; a
// fractional zero point is added before rounding and (rc - zp) * s is formed in
// float64 (as torch); NaN/Inf pass through; the STE mask is qmin <= level <= qmax.
//
// Elementwise kernels: grid-stride loops over packs of kVec elements, one 16-byte load
// per pack when the host found x, y/dy/dx 16-byte aligned and numel, seg_len multiples
// of kVec (then a pack never straddles a segment, so it has one param, or kVec
// consecutive ones along the last dim); kVec = 1 otherwise.
//
// LSQ backward: the scale / zero-point gradients are per-element fp32 terms (the CPU
// kernels' expressions) summed in float64 without atomics: each block writes the sums of
// its tile to its own slot of a partials buffer, and the host sums the partials over
// rows (torch's reduction), so the result is deterministic run to run.
#include <cmath>
#include <cstdint>
#include <cstring>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "element.cuh"
#include "kernels.h"

namespace qkernels::cuda {
namespace {

constexpr int kThreads = 256;


// kVec elements of T; one 16-byte access when kVec * sizeof(T) == 16.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

// 16-byte packs go through __ldg / __stcg of a uint4: a plain Pack access whose elements
// are then used one by one can be split into narrower accesses by nvcc.
template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> load(const T* p, int64_t i) {
  if constexpr (sizeof(T) * kVec == 16) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p + i));
    Pack<T, kVec> v;
    memcpy(&v, &raw, 16);
    return v;
  } else {
    return *reinterpret_cast<const Pack<T, kVec>*>(p + i);
  }
}

template <typename T, int kVec>
__device__ __forceinline__ void store(T* p, int64_t i, const Pack<T, kVec>& v) {
  if constexpr (sizeof(T) * kVec == 16) {
    uint4 raw;
    memcpy(&raw, &v, 16);
    __stcg(reinterpret_cast<uint4*>(p + i), raw);
  } else {
    *reinterpret_cast<Pack<T, kVec>*>(p + i) = v;
  }
}

// The param of element i (with kVec > 1: of the pack's first element).
__device__ __forceinline__ int64_t param_index(int64_t i, const FakeQuantLayout& l) {
  return l.along ? i % l.seg_len : (i / l.seg_len) % l.n_params;
}

__device__ __forceinline__ float level(float x, float inv, float zp, bool zp_in_round) {
  return zp_in_round ? rintf(zp + x * inv) : rintf(x * inv) + zp;
}

__device__ __forceinline__ float fake_quant_value(float x, float s, float inv, float zp,
                                                  const FakeQuantLayout& l) {
  const float rc = fminf(fmaxf(level(x, inv, zp, l.zp_in_round), l.qmin), l.qmax);
  const float out = l.zp_in_round
                        ? static_cast<float>((double(rc) - double(zp)) * double(s))
                        : (rc - zp) * s;
  return isfinite(x) ? out : x;
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ scale,
                   const float* __restrict__ inv, const float* __restrict__ zp,
                   FakeQuantLayout l) {
  const int64_t packs = l.numel / kVec;
  for (int64_t v = blockIdx.x * int64_t(kThreads) + threadIdx.x; v < packs;
       v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * kVec;
    const int64_t p0 = param_index(i, l);
    const Pack<T, kVec> in = load<T, kVec>(x, i);
    Pack<T, kVec> out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int64_t p = l.along ? p0 + j : p0;
      out.v[j] = from_float<T>(fake_quant_value(to_float(in.v[j]), scale[p], inv[p], zp[p], l));
    }
    store<T, kVec>(y, i, out);
  }
}

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                    const float* __restrict__ inv, const float* __restrict__ zp,
                    FakeQuantLayout l) {
  const int64_t packs = l.numel / kVec;
  for (int64_t v = blockIdx.x * int64_t(kThreads) + threadIdx.x; v < packs;
       v += int64_t(gridDim.x) * kThreads) {
    const int64_t i = v * kVec;
    const int64_t p0 = param_index(i, l);
    const Pack<T, kVec> xs = load<T, kVec>(x, i);
    const Pack<T, kVec> g = load<T, kVec>(dy, i);
    Pack<T, kVec> out;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      const int64_t p = l.along ? p0 + j : p0;
      const float r = level(to_float(xs.v[j]), inv[p], zp[p], l.zp_in_round);
      const bool keep = r >= l.qmin && r <= l.qmax;  // false for NaN
      out.v[j] = keep ? g.v[j] : from_float<T>(0.0f);
    }
    store<T, kVec>(dx, i, out);
  }
}

// ---- LSQ backward ----

// One element's dx and its fp32 scale / zero-point gradient terms (zero for NaN/Inf x,
// which passes through and so depends on neither), as the CPU kernels form them.
struct LsqTerms {
  bool inside;
  float ds, dz;
};

__device__ __forceinline__ LsqTerms lsq_terms(float x, float dy, float s, float inv, float zp,
                                              float qmin, float qmax, float grad_factor) {
  const float r = rintf(zp + x * inv);
  LsqTerms t;
  t.inside = qmin <= r && r <= qmax;
  if (t.inside) {
    const float xfq = (r - zp) * s;
    t.ds = dy * (xfq - x) * inv * grad_factor;
    t.dz = 0.0f;
  } else {
    t.ds = dy * ((r < qmin ? qmin : qmax) - zp) * grad_factor;
    t.dz = -dy * s * grad_factor;
  }
  if (!isfinite(x)) t.ds = t.dz = 0.0f;
  return t;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Segment layout (params constant over a segment): block b covers chunk b % cps of
// segment b / cps (cps = chunks per segment) and writes its two sums to partials row
// (segment / n_params) * cps + chunk, column segment % n_params.
constexpr int64_t kLsqChunk = kThreads * 16;

template <typename T, int kVec>
__global__ void __launch_bounds__(kThreads)
    lsq_backward_segments(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                          const float* __restrict__ scale, const float* __restrict__ inv,
                          const float* __restrict__ zp, float grad_factor, FakeQuantLayout l,
                          int64_t cps, int64_t n_blocks, int64_t partial_rows,
                          double* __restrict__ partials) {
  __shared__ double sums[2][kThreads / 32];
  for (int64_t b = blockIdx.x; b < n_blocks; b += gridDim.x) {
    const int64_t seg = b / cps, chunk = b % cps;
    const int64_t p = seg % l.n_params;
    const int64_t seg_end = min((seg + 1) * l.seg_len, l.numel);
    const int64_t begin = seg * l.seg_len + chunk * kLsqChunk;
    const int64_t end = min(begin + kLsqChunk, seg_end);
    const float s = scale[p], iv = inv[p], z = zp[p];
    double ds = 0.0, dz = 0.0;
    for (int64_t i = begin + int64_t(threadIdx.x) * kVec; i < end; i += kThreads * kVec) {
      const Pack<T, kVec> xs = load<T, kVec>(x, i);
      const Pack<T, kVec> g = load<T, kVec>(dy, i);
      Pack<T, kVec> out;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const LsqTerms t =
            lsq_terms(to_float(xs.v[j]), to_float(g.v[j]), s, iv, z, l.qmin, l.qmax, grad_factor);
        out.v[j] = t.inside ? g.v[j] : from_float<T>(0.0f);
        ds += t.ds;
        dz += t.dz;
      }
      store<T, kVec>(dx, i, out);
    }
    ds = warp_sum(ds);
    dz = warp_sum(dz);
    const int warp = threadIdx.x / 32;
    if (threadIdx.x % 32 == 0) {
      sums[0][warp] = ds;
      sums[1][warp] = dz;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double total_s = 0.0, total_z = 0.0;
      for (int w = 0; w < kThreads / 32; ++w) {
        total_s += sums[0][w];
        total_z += sums[1][w];
      }
      const int64_t slot = ((seg / l.n_params) * cps + chunk) * l.n_params + p;
      partials[slot] = total_s;
      partials[partial_rows * l.n_params + slot] = total_z;
    }
    __syncthreads();  // sums is rewritten by the next iteration
  }
}

// Along layout (x as [rows, C], params per column): a block is 32 columns x 8 row lanes
// over kLsqRows rows; it writes partials row (row chunk), columns of its tile.
constexpr int kLsqCols = 32, kLsqLanes = kThreads / kLsqCols;
constexpr int64_t kLsqRows = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    lsq_backward_columns(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                         const float* __restrict__ scale, const float* __restrict__ inv,
                         const float* __restrict__ zp, float grad_factor, FakeQuantLayout l,
                         int64_t partial_rows, double* __restrict__ partials) {
  __shared__ double sums[2][kLsqLanes][kLsqCols];
  const int64_t cols = l.seg_len, rows = l.numel / cols;
  const int64_t col = int64_t(blockIdx.x) * kLsqCols + threadIdx.x % kLsqCols;
  const int lane = threadIdx.x / kLsqCols;
  const bool active = col < cols;
  const float s = active ? scale[col] : 1.0f, iv = active ? inv[col] : 1.0f;
  const float z = active ? zp[col] : 0.0f;
  for (int64_t rc = blockIdx.y; rc < partial_rows; rc += gridDim.y) {
    double ds = 0.0, dz = 0.0;
    const int64_t row_end = min((rc + 1) * kLsqRows, rows);
    if (active) {
      for (int64_t row = rc * kLsqRows + lane; row < row_end; row += kLsqLanes) {
        const int64_t i = row * cols + col;
        const T g = dy[i];
        const LsqTerms t = lsq_terms(to_float(x[i]), to_float(g), s, iv, z, l.qmin, l.qmax,
                                     grad_factor);
        dx[i] = t.inside ? g : from_float<T>(0.0f);
        ds += t.ds;
        dz += t.dz;
      }
    }
    sums[0][lane][threadIdx.x % kLsqCols] = ds;
    sums[1][lane][threadIdx.x % kLsqCols] = dz;
    __syncthreads();
    if (lane == 0 && active) {
      double total_s = 0.0, total_z = 0.0;
      for (int w = 0; w < kLsqLanes; ++w) {
        total_s += sums[0][w][threadIdx.x];
        total_z += sums[1][w][threadIdx.x];
      }
      partials[rc * cols + col] = total_s;
      partials[(partial_rows + rc) * cols + col] = total_z;
    }
    __syncthreads();
  }
}

int blocks_for(int64_t work, int sm_count) {
  const int64_t cap = int64_t(sm_count) * 16;
  return static_cast<int>(work < cap ? work : cap);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// kVec for these pointers and layout: 16 bytes / element size, or 1.
int vector_width(DType dtype, const FakeQuantLayout& l, std::initializer_list<const void*> ptrs) {
  const int vec = 16 / dtype_size(dtype);
  if (l.numel % vec || l.seg_len % vec) return 1;
  for (const void* p : ptrs) {
    if (!aligned16(p)) return 1;
  }
  return vec;
}

int64_t lsq_chunks_per_segment(const FakeQuantLayout& l) {
  return (l.seg_len + kLsqChunk - 1) / kLsqChunk;
}

// Calls f(T{}) with the element type of dtype.
template <typename F>
void with_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kFloat16:
      return f(__half{});
  }
}

}  // namespace

void fake_quant_forward(const void* x, void* y, DType dtype, const float* scale,
                        const float* inv, const float* zp, const FakeQuantLayout& l,
                        int sm_count, cudaStream_t stream) {
  const int vec = vector_width(dtype, l, {x, y});
  const int blocks = blocks_for((l.numel / vec + kThreads - 1) / kThreads, sm_count);
  with_type(dtype, [&](auto t) {
    using T = decltype(t);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (vec > 1) {
      forward_kernel<T, 16 / sizeof(T)><<<blocks, kThreads, 0, stream>>>(xt, yt, scale, inv, zp,
                                                                          l);
    } else {
      forward_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(xt, yt, scale, inv, zp, l);
    }
  });
}

void fake_quant_backward(const void* dy, const void* x, void* dx, DType dtype, const float* inv,
                         const float* zp, const FakeQuantLayout& l, int sm_count,
                         cudaStream_t stream) {
  const int vec = vector_width(dtype, l, {dy, x, dx});
  const int blocks = blocks_for((l.numel / vec + kThreads - 1) / kThreads, sm_count);
  with_type(dtype, [&](auto t) {
    using T = decltype(t);
    const T* g = static_cast<const T*>(dy);
    const T* xt = static_cast<const T*>(x);
    T* out = static_cast<T*>(dx);
    if (vec > 1) {
      backward_kernel<T, 16 / sizeof(T)><<<blocks, kThreads, 0, stream>>>(g, xt, out, inv, zp, l);
    } else {
      backward_kernel<T, 1><<<blocks, kThreads, 0, stream>>>(g, xt, out, inv, zp, l);
    }
  });
}

int64_t lsq_partial_rows(const FakeQuantLayout& l) {
  if (l.along) return (l.numel / l.seg_len + kLsqRows - 1) / kLsqRows;
  const int64_t segments = (l.numel + l.seg_len - 1) / l.seg_len;
  return (segments + l.n_params - 1) / l.n_params * lsq_chunks_per_segment(l);
}

void fake_quant_lsq_backward(const void* dy, const void* x, void* dx, DType dtype,
                             const float* scale, const float* inv, const float* zp,
                             float grad_factor, const FakeQuantLayout& l, double* partials,
                             int sm_count, cudaStream_t stream) {
  const int64_t rows = lsq_partial_rows(l);
  with_type(dtype, [&](auto t) {
    using T = decltype(t);
    const T* g = static_cast<const T*>(dy);
    const T* xt = static_cast<const T*>(x);
    T* out = static_cast<T*>(dx);
    if (l.along) {
      const int64_t col_tiles = (l.seg_len + kLsqCols - 1) / kLsqCols;
      const dim3 grid(static_cast<unsigned>(col_tiles),
                      static_cast<unsigned>(rows < 65535 ? rows : 65535));
      lsq_backward_columns<T><<<grid, kThreads, 0, stream>>>(g, xt, out, scale, inv, zp,
                                                             grad_factor, l, rows, partials);
      return;
    }
    const int64_t cps = lsq_chunks_per_segment(l);
    const int64_t n_blocks = (l.numel + l.seg_len - 1) / l.seg_len * cps;
    const int grid = blocks_for(n_blocks, sm_count * 8);
    if (vector_width(dtype, l, {dy, x, dx}) > 1) {
      lsq_backward_segments<T, 16 / sizeof(T)><<<grid, kThreads, 0, stream>>>(
          g, xt, out, scale, inv, zp, grad_factor, l, cps, n_blocks, rows, partials);
    } else {
      lsq_backward_segments<T, 1><<<grid, kThreads, 0, stream>>>(
          g, xt, out, scale, inv, zp, grad_factor, l, cps, n_blocks, rows, partials);
    }
  });
}

}  // namespace qkernels::cuda
