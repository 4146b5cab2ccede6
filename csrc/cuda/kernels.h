// The CUDA kernels that are not CUTLASS GEMMs, as torch-free launch functions (the
// torch-facing checks and allocation live in ops.cpp).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace qkernels::cuda {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

inline int dtype_size(DType d) { return d == DType::kFloat32 ? 4 : 2; }

// Elements per 16-byte load of `dtype`: rows whose length is a multiple of it (and
// whose base is 16-byte aligned) take the vectorized path.
int quantize_rows_vector_width(DType dtype);

// q [rows, k] int8 and scale [rows] from the contiguous x [rows, k].
void quantize_rows(const void* x, DType dtype, int8_t* q, float* scale, int64_t rows, int64_t k,
                   int bits, bool vectorized, cudaStream_t stream);

}  // namespace qkernels::cuda

namespace qkernels::cuda {

// linear_w8a16 for M <= 16 (kW8A16DecodeMaxM): out [m, n] (x's dtype) = x [m, k] @
// (wq [n, k] * w_scale)^T + bias. Needs k % 16 == 0 and 16-byte aligned x and wq rows.
constexpr int kW8A16DecodeMaxM = 16;
void w8a16_decode(const void* x, DType dtype, const int8_t* wq, const float* w_scale,
                  const float* bias, void* out, int m, int n, int k, cudaStream_t stream);

// w [n, k] of `dtype` = wq * scale[row], for the larger-M path's cuBLAS GEMM.
void dequantize_weight(const int8_t* wq, const float* scale, void* w, DType dtype, int64_t n,
                       int64_t k, int sm_count, cudaStream_t stream);

}  // namespace qkernels::cuda

namespace qkernels::cuda {

// The fake-quant segment layout (qkernels/meta/fake_quant.py: channel_layout,
// group_layout) and the op's integer range.
struct FakeQuantLayout {
  int64_t numel = 0;
  int64_t seg_len = 1;
  int64_t n_params = 1;
  bool along = false;        // params vary along each segment (channel-last)
  bool zp_in_round = false;  // a float zero point: added before rounding
  float qmin = 0.0f, qmax = 0.0f;
};

// y = fake_quant(x) for contiguous x, y of `dtype`; scale, inv (= 1/scale), zp float32.
void fake_quant_forward(const void* x, void* y, DType dtype, const float* scale,
                        const float* inv, const float* zp, const FakeQuantLayout& layout,
                        int sm_count, cudaStream_t stream);

// dx = dy where qmin <= level(x) <= qmax, else 0 (the straight-through estimator).
void fake_quant_backward(const void* dy, const void* x, void* dx, DType dtype, const float* inv,
                         const float* zp, const FakeQuantLayout& layout, int sm_count,
                         cudaStream_t stream);

// LSQ backward (params per channel or per tensor, the zero point in the rounding): dx, and
// the float64 partial sums of the scale and zero-point gradients in
// partials [2][lsq_partial_rows(layout)][n_params] (zero-filled by the caller); their sum
// over rows is the gradient.
int64_t lsq_partial_rows(const FakeQuantLayout& layout);
void fake_quant_lsq_backward(const void* dy, const void* x, void* dx, DType dtype,
                             const float* scale, const float* inv, const float* zp,
                             float grad_factor, const FakeQuantLayout& layout, double* partials,
                             int sm_count, cudaStream_t stream);

}  // namespace qkernels::cuda
