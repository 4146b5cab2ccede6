// C++-side check of the CPU int8 GEMM kernels against a naive loop, for every
// ISA path the CPU has. Runs without Python (make cmake-test).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <ATen/ATen.h>

#include "cpu/int8_gemm.h"
#include "cpu/isa.h"

namespace {

at::Tensor naive_int_mm(const at::Tensor& a, const at::Tensor& b) {
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1);
  at::Tensor out = at::zeros({m, n}, at::kInt);
  auto A = a.accessor<int8_t, 2>();
  auto B = b.accessor<int8_t, 2>();
  auto C = out.accessor<int32_t, 2>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int32_t acc = 0;
      for (int64_t p = 0; p < k; ++p) acc += int32_t(A[i][p]) * int32_t(B[j][p]);
      C[i][j] = acc;
    }
  return out;
}

int check_isa(const char* isa) {
  setenv("QKERNELS_CPU_ISA", isa, 1);
  int failures = 0;
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 17, 33}, {64, 256, 16}, {130, 1000, 100}};
  for (const auto& s : shapes) {
    const at::Tensor a = at::randint(-128, 128, {s[0], s[1]}, at::kChar);
    const at::Tensor b = at::randint(-128, 128, {s[2], s[1]}, at::kChar);
    const bool ok = at::equal(qkernels::cpu::int_mm(a, b), naive_int_mm(a, b));
    const bool roundtrip = at::equal(
        qkernels::cpu::unpack_int8_weight(qkernels::cpu::pack_int8_weight(b), s[2], s[1]), b);
    std::printf("%-12s M=%-4ld K=%-5ld N=%-4ld int_mm %s, pack round trip %s\n", isa, s[0],
                s[1], s[2], ok ? "ok" : "MISMATCH", roundtrip ? "ok" : "MISMATCH");
    failures += !ok + !roundtrip;
  }
  return failures;
}

}  // namespace

int main() {
  at::manual_seed(0);
  const char* isas[] = {"avx512_vnni", "avx2", "scalar"};
  const int best = static_cast<int>(qkernels::cpu::best_isa());
  int failures = 0;
  for (int i = 2 - best; i < 3; ++i) failures += check_isa(isas[i]);
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
