// The fake-quant family's ISA kernels: arguments, declarations and the kernel table
// read by the ops and by `qkernels info`.
#pragma once

#include <cstdint>

#include "isa.h"
#include "kernel_args.h"

namespace qkernels::cpu {

// Elementwise affine fake-quantization over "segments" of contiguous
// elements. Per-segment mode: segment s uses params[s % n_params] (per tensor:
// n_params = 1; per channel with inner stride > 1; per group). Channel-last
// mode (`params_along_segment`): element j of every segment uses params[j].
//   r = round(x * inv_scale) + zp          (integer zero point, torch's formula)
//   r = round(zp + x * inv_scale)          (`zp_in_rounding`: float zero point)
//   y = (clamp(r, qmin, qmax) - zp) * scale, gradient passes where qmin <= r <= qmax.
struct FakeQuantArgs {
  const void* x;
  InKind kind;              // of x, dy and out
  const void* dy;           // backward only
  void* out;                // y (forward) or dx (backward)
  int64_t numel;
  int64_t seg_len;
  int64_t n_params;
  bool params_along_segment;
  const float* scale;
  const float* inv_scale;   // 1.0f / scale, computed once as torch does
  const float* zero_point;  // integer-valued unless zp_in_rounding
  bool zp_in_rounding;
  float qmin, qmax;
  // Learned step size backward: d(scale), d(zero_point) summed per param into
  // these float64 accumulators (one set per thread).
  float grad_factor;
  double* dscale;
  double* dzero_point;
};

// Segments [s0, s1). Forward writes y, backward dx, lsq_backward dx + sums.
using FakeQuantFn = void (*)(const FakeQuantArgs&, int64_t, int64_t);

void avx512_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx512_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx512_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void scalar_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void scalar_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void scalar_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);

struct FakeQuantKernels {
  const char* name;
  FakeQuantFn forward, backward, lsq_backward;
};

// AVX-512 under avx512_vnni; scalar otherwise (there are no AVX2 fake-quant kernels).
const FakeQuantKernels& fake_quant_kernels(Isa isa);

}  // namespace qkernels::cpu
