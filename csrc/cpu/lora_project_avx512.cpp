// AVX-512 kernel of the LoRA adapter's down-projection t = x a^T (lora_kernels.h).
// Requires AVX512F at run time; the dispatcher only calls in here when the CPU has it.
// Headers come before the target pragma and everything after it has internal linkage
// (see kernel_args.h).
#include <cstdint>

#include "lora_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
#include <immintrin.h>

#include "avx512_io.h"
#include "unroll.h"

namespace qkernels::cpu {
namespace {

constexpr int kRows = 8;  // FMA chains of 4 cycles on 2 pipes: 8 in flight

template <InKind kKind>
inline float x_at(const void* x, int64_t i) {
  return load_as_float(x, kKind, i);
}

// MR rows from m, all panels: each k broadcasts one x per row against one 16-wide panel
// row of a^T (MR chains sharing each panel load).
template <int MR, InKind kKind>
void project_rows(const LoraProjectArgs& p, int64_t m) {
  const int64_t panels = (p.r + 15) / 16, k_len = p.k, ldx = p.ldx;
  const void* x = p.x;
  float* t = static_cast<float*>(p.t);
  for (int64_t jb = 0; jb < panels; ++jb) {
    const float* ap = static_cast<const float*>(p.a_panels) + jb * k_len * 16;
    __m512 acc[MR];
    unroll<MR>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
    for (int64_t k = 0; k < k_len; ++k) {
      const __m512 w = _mm512_loadu_ps(ap + k * 16);
      unroll<MR>([&](auto i) {
        acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(x_at<kKind>(x, (m + i) * ldx + k)), w, acc[i]);
      });
    }
    const __mmask16 mask = tail_mask(p.r - jb * 16);
    unroll<MR>([&](auto i) { _mm512_mask_storeu_ps(t + (m + i) * p.r + jb * 16, mask, acc[i]); });
  }
}

template <InKind kKind>
void project(const LoraProjectArgs& p, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + kRows <= m1; m += kRows) project_rows<kRows, kKind>(p, m);
  switch (m1 - m) {  // the last rows
    case 7: return project_rows<7, kKind>(p, m);
    case 6: return project_rows<6, kKind>(p, m);
    case 5: return project_rows<5, kKind>(p, m);
    case 4: return project_rows<4, kKind>(p, m);
    case 3: return project_rows<3, kKind>(p, m);
    case 2: return project_rows<2, kKind>(p, m);
    case 1: return project_rows<1, kKind>(p, m);
    default: return;
  }
}

}  // namespace

void avx512_lora_project(const LoraProjectArgs& p, int64_t m0, int64_t m1) {
  switch (p.x_kind) {
    case InKind::kFloat32: return project<InKind::kFloat32>(p, m0, m1);
    case InKind::kBFloat16: return project<InKind::kBFloat16>(p, m0, m1);
    case InKind::kFloat16: return project<InKind::kFloat16>(p, m0, m1);
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
