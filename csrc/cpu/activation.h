// Activations fused into the GEMM epilogues (linear_w8a8_act / linear_w8a16_act), scalar
// form: the portable kernels' and the partial column groups' path. Header-only, no torch
// includes (see kernel_args.h); include before any `#pragma GCC target`.
#pragma once

#include <cmath>

namespace qkernels::cpu {

// Applied in fp32 to the finished epilogue value (after scale and bias), before the
// output dtype rounding. Zero-initialised kernel arguments mean kNone.
enum class Activation : int { kNone = 0, kRelu = 1, kGelu = 2, kGeluTanh = 3, kSilu = 4 };

// torch's formulas: relu keeps NaN (and -0.0); gelu is the erf form; gelu_tanh is
// F.gelu(approximate="tanh") (GPT-2's gelu_new); silu = x * sigmoid(x).
inline float activate(Activation act, float x) {
  switch (act) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x < 0.f ? 0.f : x;
    case Activation::kGelu: return 0.5f * x * (1.f + std::erf(x * 0.70710678118654752f));
    case Activation::kGeluTanh: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + std::tanh(inner));
    }
    case Activation::kSilu: return x / (1.f + std::exp(-x));
  }
  return x;
}

}  // namespace qkernels::cpu
