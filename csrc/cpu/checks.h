// Argument checks shared by the CPU ops. Every message names the op, the
// argument, what was expected and what arrived, e.g.
//   qkernels.int8_mm: b must be int8 [N, K] with K == 4096, got torch.float16 [4096, 4095] on cpu
#pragma once

#include <string>

#include <ATen/ATen.h>

namespace qkernels::cpu {

std::string describe(const at::Tensor& t);
std::string dtype_name(at::ScalarType t);

}  // namespace qkernels::cpu

#define QK_CHECK(cond, op, ...) TORCH_CHECK_VALUE(cond, "qkernels.", op, ": ", __VA_ARGS__)

// Every tensor argument of a CPU kernel must live on the CPU.
#define QK_CHECK_CPU(op, name, t)                                                   \
  QK_CHECK((t).device().is_cpu(), op, name, " must be on the cpu like the other "   \
           "arguments, got ", ::qkernels::cpu::describe(t))
