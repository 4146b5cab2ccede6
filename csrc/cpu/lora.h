// CPU LoRA-on-int8-base ops (contract in DESIGN.md).
#pragma once

#include <optional>

#include <ATen/ATen.h>

namespace qkernels::cpu {

// linear_w8a8(x, wq, w_scale, bias) + scaling * (x a^T) b^T, a [r, K], b [N, r].
at::Tensor lora_w8a8(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                     const std::optional<at::Tensor>& bias, const at::Tensor& a,
                     const at::Tensor& b, double scaling);
// The same on a weight-only base: linear_w8a16 semantics, x is not quantized.
at::Tensor lora_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                      const std::optional<at::Tensor>& bias, const at::Tensor& a,
                      const at::Tensor& b, double scaling);

}  // namespace qkernels::cpu
