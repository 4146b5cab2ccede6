// Registers the C++ kernels for the ops whose schemas qkernels/_registry.py
// defines, and exposes build/dispatch facts to `qkernels info`.
#include <torch/extension.h>

#include "cpu/alloc.h"
#include "cpu/fake_quant.h"
#include "cpu/int8_gemm.h"
#include "cpu/isa.h"
#include "cpu/lowrank.h"
#include "cpu/lstm.h"

TORCH_LIBRARY_IMPL(qkernels, CPU, m) {
  m.impl("pack_weight", &qkernels::cpu::pack_int8_weight);
  m.impl("unpack_weight", &qkernels::cpu::unpack_int8_weight);
  m.impl("quantize_rowwise", &qkernels::cpu::quantize_rowwise);
  m.impl("int_mm", &qkernels::cpu::int_mm);
  m.impl("int8_mm", &qkernels::cpu::int8_mm);
  m.impl("linear_w8a8", &qkernels::cpu::linear_w8a8);
  m.impl("linear_w8a16", &qkernels::cpu::linear_w8a16);
  m.impl("fake_quant", &qkernels::cpu::fake_quant);
  m.impl("fake_quant_backward", &qkernels::cpu::fake_quant_backward);
  m.impl("fake_quant_group", &qkernels::cpu::fake_quant_group);
  m.impl("fake_quant_group_backward", &qkernels::cpu::fake_quant_group_backward);
  m.impl("fake_quant_lsq", &qkernels::cpu::fake_quant_lsq);
  m.impl("fake_quant_lsq_backward", &qkernels::cpu::fake_quant_lsq_backward);
  m.impl("pack_lstm_weight", &qkernels::cpu::pack_lstm_weight);
  m.impl("lstm_w8a8", &qkernels::cpu::lstm_w8a8);
  m.impl("lowrank_mm", &qkernels::cpu::lowrank_mm);
}

namespace {

std::string cpu_kernel(const std::string& op) {
  using namespace qkernels::cpu;
  const Isa isa = selected_isa(op.c_str());
  if (op == "lstm_w8a8") return std::string("cpu/") + isa_name(isa);
  if (op == "lowrank_mm") return "cpu/blas";
  if (op.rfind("fake_quant", 0) == 0)
    return isa == Isa::kAvx512Vnni ? "cpu/avx512" : "cpu/scalar";
  if (op == "linear_w8a16") {
    if (w8a16_uses_bf16(isa)) return "cpu/avx512_bf16";
    return isa == Isa::kScalar ? "cpu/scalar" : "cpu/avx2_fma";
  }
  return std::string("cpu/") + isa_name(isa);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "qkernels C++ kernels (ops are registered under torch.ops.qkernels)";
  m.def("cpu_features", &qkernels::cpu::features_string, "x86 features found at run time");
  m.def("best_cpu_isa", [] { return std::string(qkernels::cpu::isa_name(qkernels::cpu::best_isa())); });
  m.def("cpu_kernel", &cpu_kernel, "the CPU kernel `op` dispatches to now");
  m.def("empty_cpu_cache", &qkernels::cpu::empty_cache,
        "free the cached large CPU output buffers (see csrc/cpu/alloc.h)");
  m.def("cpu_cached_bytes", &qkernels::cpu::cached_bytes);
  m.def("built_with_cuda", [] {
#ifdef QKERNELS_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
}
