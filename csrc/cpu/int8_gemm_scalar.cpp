// Portable scalar kernels of the int8 GEMM family: the fallback path and the readable
// statement of what the SIMD files compute on the packed layout.
#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "int8_gemm_kernels.h"
#include "scalar_convert.h"

namespace qkernels::cpu {
namespace {

float lora_term(const LoraEpilogue& l, int64_t m, int64_t n) {
  const float* t = static_cast<const float*>(l.t) + m * l.r;
  const float* bt = static_cast<const float*>(l.bt) + n;
  float acc = 0.f;
  for (int64_t j = 0; j < l.r; ++j) acc += t[j] * bt[j * l.ldbt];
  return acc;
}

}  // namespace

void scalar_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1) {
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* a = p.a + m * p.lda;
    for (int64_t g = g0; g < g1; ++g) {
      const uint8_t* b = p.b + g * p.b_group_stride;
      // No overflow (so no UB): callers keep K <= kMaxExactK per call.
      int32_t acc[kGroupCols] = {};
      for (int64_t k = 0; k < p.k4; ++k) {
        for (int64_t c = 0; c < kGroupCols; ++c) {
          for (int64_t kk = 0; kk < kKStep; ++kk) {
            const int8_t w = static_cast<int8_t>(b[k * kGroupBytesPerK4 + c * kKStep + kk] ^ 0x80);
            acc[c] += static_cast<int32_t>(a[k * kKStep + kk]) * w;
          }
        }
      }
      const int64_t n0 = g * kGroupCols;
      for (int64_t c = 0; c < kGroupCols && n0 + c < p.n; ++c) {
        const int64_t n = n0 + c;
        if (p.out_kind == OutKind::kInt32) {
          static_cast<int32_t*>(p.out)[m * p.ldo + n] = acc[c];
          continue;
        }
        float v = static_cast<float>(acc[c]) * p.a_scale[m] * p.b_scale[n];
        if (p.bias) v += p.bias[n];
        if (p.lora.t) v += lora_term(p.lora, m, n);
        store_float(p.out, p.out_kind, m * p.ldo + n, activate(p.act, v));
      }
    }
  }
}

void scalar_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  const int64_t n_end = g1 * kGroupCols < p.n ? g1 * kGroupCols : p.n;
  for (int64_t m = m0; m < m1; ++m) {
    for (int64_t n = g0 * kGroupCols; n < n_end; ++n) {
      float acc = 0.f;
      for (int64_t k = 0; k < p.k4 * kKStep; ++k) {
        acc += load_as_float(p.x, p.x_kind, m * p.ldx + k) *
               static_cast<float>(packed_weight(p.b, p.k4, n, k));
      }
      float v = acc * p.b_scale[n];
      if (p.bias) v += p.bias[n];
      if (p.lora.t) v += lora_term(p.lora, m, n);
      store_float(p.out, p.out_kind, m * p.ldo + n, activate(p.act, v));
    }
  }
}

void scalar_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1) {
  const float qmax = static_cast<float>(p.qmax);
  for (int64_t m = m0; m < m1; ++m) {
    float absmax = 0.f;
    bool nonfinite = false;
    for (int64_t k = 0; k < p.k; ++k) {
      const float a = std::fabs(load_as_float(p.x, p.x_kind, m * p.ldx + k));
      nonfinite |= !(a <= __FLT_MAX__);  // NaN compares false
      absmax = std::fmax(absmax, a);
    }
    const float scale = row_scale(absmax, nonfinite, p.qmax);
    int32_t sum = 0;
    int8_t* q = p.q + m * p.ldq;
    for (int64_t k = 0; k < p.k; ++k) {
      // nearbyint rounds half to even under the default rounding mode, as torch.round.
      float r = std::nearbyint(load_as_float(p.x, p.x_kind, m * p.ldx + k) / scale);
      r = std::fmin(std::fmax(r, -qmax), qmax);
      q[k] = nonfinite ? 0 : static_cast<int8_t>(r);
      sum += q[k];
    }
    for (int64_t k = p.k; k < p.ldq; ++k) q[k] = 0;
    p.scale[m] = scale;
    if (p.rowsum) p.rowsum[m] = sum;
  }
}

int scalar_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1) {
  int widest = 0;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* row = p.a + m * p.lda;
    int32_t sum = 0;
    for (int64_t k = 0; k < p.k; ++k) {
      sum += row[k];
      widest = std::max(widest, std::abs(static_cast<int>(row[k])));
    }
    p.rowsum[m] = sum;
  }
  return widest;
}

}  // namespace qkernels::cpu
