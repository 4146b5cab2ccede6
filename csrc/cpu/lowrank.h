// CPU low-rank matmul (contract in DESIGN.md).
#pragma once

#include <optional>

#include <ATen/ATen.h>

namespace qkernels::cpu {

// (x @ a^T) @ b^T + bias, x [..., K], a [r, K], b [N, r].
at::Tensor lowrank_mm(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                      const std::optional<at::Tensor>& bias);

}  // namespace qkernels::cpu
