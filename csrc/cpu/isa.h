// Runtime choice of the CPU instruction set for each kernel family.
#pragma once

#include <string>

namespace qkernels::cpu {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512Vnni = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;
};

const CpuFeatures& cpu_features();
// Best ISA the CPU supports for the int8 kernels.
Isa best_isa();
// The ISA to use now: QKERNELS_CPU_ISA=avx512_vnni|avx2|scalar if set (read on
// every call so tests can switch it), else best_isa(). A forced ISA the CPU
// lacks, or an unknown name, raises a ValueError naming `op`.
Isa selected_isa(const char* op);
const char* isa_name(Isa isa);
// Whether the AVX512-BF16 kernels run (linear_w8a16, the LoRA adapter; they round x to
// bf16): on the AVX-512 ISA of a CPU that has AVX512-BF16, unless QKERNELS_CPU_BF16=0
// (read on every call) keeps those ops in float32.
bool bf16_kernels(Isa isa);
std::string features_string();

}  // namespace qkernels::cpu
