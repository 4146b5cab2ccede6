// Where each op's C++ CPU kernel is registered, and which kernel table it reads.
//
// Every csrc/cpu/<family>.cpp registers its ops with `register_cpu_op` inside its own
// TORCH_LIBRARY_IMPL block, naming the function that says which kernel runs under an
// ISA — the same table lookup the op itself makes — so `qkernels info` reads what
// dispatches, not a copy of the dispatch logic.
#pragma once

#include <string>
#include <vector>

#include <torch/library.h>

#include "isa.h"

namespace qkernels::cpu {

using KernelNameFn = const char* (*)(Isa);

void record_cpu_kernel(const char* op, KernelNameFn kernel);

template <typename Fn>
void register_cpu_op(torch::Library& m, const char* op, Fn* fn, KernelNameFn kernel) {
  m.impl(op, fn);
  record_cpu_kernel(op, kernel);
}

// The kernel `op` dispatches to now (under QKERNELS_CPU_ISA / the CPU's best ISA).
std::string cpu_kernel_name(const std::string& op);
// Every op with a registered C++ CPU kernel.
std::vector<std::string> cpu_ops();

}  // namespace qkernels::cpu
