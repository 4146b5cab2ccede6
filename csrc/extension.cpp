// The Python module qkernels._C: build facts and what `qkernels info` reports.
// The ops' C++ CPU kernels are registered by csrc/cpu/<family>.cpp themselves
// (TORCH_LIBRARY_IMPL + register_cpu_op), for the ops qkernels/op_table.py defines.
#include <torch/extension.h>

#include "cpu/alloc.h"
#include "cpu/isa.h"
#include "cpu/op_registry.h"

#ifdef QKERNELS_WITH_CUDA
namespace qkernels::cuda {
void bind(pybind11::module_& m);  // csrc/cuda/ops.cpp
}
#endif

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "qkernels C++ kernels (ops are registered under torch.ops.qkernels)";
  m.def("cpu_features", &qkernels::cpu::features_string, "x86 features found at run time");
  m.def("best_cpu_isa", [] { return std::string(qkernels::cpu::isa_name(qkernels::cpu::best_isa())); });
  m.def("cpu_kernel", &qkernels::cpu::cpu_kernel_name,
        "the CPU kernel `op` dispatches to now, from the kernel table the op reads");
  m.def("cpu_ops", &qkernels::cpu::cpu_ops, "ops with a registered C++ CPU kernel");
  m.def("empty_cpu_cache", &qkernels::cpu::empty_cache,
        "free the cached large CPU output buffers (see csrc/cpu/alloc.h)");
  m.def("cpu_cached_bytes", &qkernels::cpu::cached_bytes);
#ifdef QKERNELS_WITH_CUDA
  qkernels::cuda::bind(m);
#endif
  m.def("built_with_cuda", [] {
#ifdef QKERNELS_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
