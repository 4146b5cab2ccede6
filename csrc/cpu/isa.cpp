#include "isa.h"

#include <cstdlib>
#include <cstring>

#include <c10/util/Exception.h>

namespace qkernels::cpu {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures r;
    __builtin_cpu_init();
    // __builtin_cpu_supports also checks that the OS saves the wide registers.
    r.avx2 = __builtin_cpu_supports("avx2");
    r.fma = __builtin_cpu_supports("fma");
    r.f16c = __builtin_cpu_supports("f16c");
    r.avx512f = __builtin_cpu_supports("avx512f");
    r.avx512bw = __builtin_cpu_supports("avx512bw");
    r.avx512vl = __builtin_cpu_supports("avx512vl");
    r.avx512dq = __builtin_cpu_supports("avx512dq");
    r.avx512vnni = __builtin_cpu_supports("avx512vnni");
    r.avx512bf16 = __builtin_cpu_supports("avx512bf16");
    return r;
  }();
  return f;
}

static bool supports(Isa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::kAvx512Vnni:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni && f.fma;
    case Isa::kAvx2:
      return f.avx2 && f.fma && f.f16c;
    case Isa::kScalar:
      return true;
  }
  return false;
}

Isa best_isa() {
  if (supports(Isa::kAvx512Vnni)) return Isa::kAvx512Vnni;
  if (supports(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512Vnni: return "avx512_vnni";
    case Isa::kAvx2: return "avx2";
    case Isa::kScalar: return "scalar";
  }
  return "?";
}

bool bf16_kernels(Isa isa) {
  if (isa != Isa::kAvx512Vnni || !cpu_features().avx512bf16) return false;
  const char* env = std::getenv("QKERNELS_CPU_BF16");
  return env == nullptr || std::strcmp(env, "0") != 0;
}

Isa selected_isa(const char* op) {
  const char* env = std::getenv("QKERNELS_CPU_ISA");
  if (env == nullptr || *env == '\0') return best_isa();
  for (Isa isa : {Isa::kAvx512Vnni, Isa::kAvx2, Isa::kScalar}) {
    if (std::strcmp(env, isa_name(isa)) == 0) {
      TORCH_CHECK_VALUE(supports(isa), "qkernels.", op, ": QKERNELS_CPU_ISA=", env,
                        " is not supported by this CPU (features: ", features_string(),
                        "); use one of avx512_vnni|avx2|scalar that it has, or unset it");
      return isa;
    }
  }
  TORCH_CHECK_VALUE(false, "qkernels.", op, ": QKERNELS_CPU_ISA must be one of "
                    "avx512_vnni|avx2|scalar, got '", env, "'");
  return Isa::kScalar;
}

std::string features_string() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512dq, "avx512dq");
  add(f.avx512vnni, "avx512_vnni");
  add(f.avx512bf16, "avx512_bf16");
  return s.empty() ? "none" : s;
}

}  // namespace qkernels::cpu
