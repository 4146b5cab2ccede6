// AVX-512 VNNI LSTM step: the recurrent int8 GEMM (the shared VNNI tile) with the
// gates and the cell update fused into its epilogue. Requires AVX512F/BW/VL/VNNI at
// run time; lstm.cpp only calls in here through lstm_kernels() when the CPU has them.
//
// All headers come before the target pragma and everything after it has
// internal linkage, so no AVX-512 code can leak into another file's inlines.
#include <cstdint>

#include "lstm_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
#include <immintrin.h>

#include "avx512_io.h"
#include "unroll.h"
#include "int8_gemm_avx512_tile.h"

namespace qkernels::cpu {
namespace {

// exp(x) to ~1e-7 relative: x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-6
// Taylor polynomial, times 2^n with vscalefps (which also handles overflow).
inline __m512 exp16(__m512 x) {
  // Trap: max_ps/min_ps return their second operand when either is NaN; x goes
  // second so a NaN gate (a NaN row, DESIGN.md) stays NaN instead of clamping.
  x = _mm512_min_ps(_mm512_set1_ps(88.f), _mm512_max_ps(_mm512_set1_ps(-88.f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2 high part
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);     // ln2 low part
  __m512 poly = _mm512_set1_ps(1.f / 720);
  for (float c : {1.f / 120, 1.f / 24, 1.f / 6, 0.5f, 1.f, 1.f})
    poly = _mm512_fmadd_ps(poly, r, _mm512_set1_ps(c));
  return _mm512_scalef_ps(poly, n);
}

inline __m512 sigmoid16(__m512 z) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

inline __m512 tanh16(__m512 z) {  // 2 sigmoid(2z) - 1
  const __m512 two = _mm512_set1_ps(2.f);
  return _mm512_sub_ps(_mm512_mul_ps(two, sigmoid16(_mm512_mul_ps(two, z))), _mm512_set1_ps(1.f));
}

// Gates and cell update of one rows x (16 units x 4 gates) tile of int32 sums.
__attribute__((noinline)) void lstm_epilogue(const LstmStepArgs& p, int64_t m, int rows,
                                             int64_t hb, const int32_t* tile) {
  const Int8GemmArgs& q = p.gemm;
  const __mmask16 mask = tail_mask(p.hidden - hb * 16);
  for (int i = 0; i < rows; ++i) {
    const int64_t row = m + i;
    const __m512i comp = _mm512_set1_epi32(
        static_cast<int32_t>(static_cast<uint32_t>(q.a_rowsum[row]) * 128u));
    const __m512 a_scale = _mm512_set1_ps(q.a_scale[row]);
    __m512 z[4];
    for (int gate = 0; gate < 4; ++gate) {
      const int64_t col = hb * 64 + gate * 16;
      const __m512i v = _mm512_sub_epi32(_mm512_load_si512(tile + (i * 4 + gate) * 16), comp);
      const __m512 dq = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(v), a_scale),
                                      _mm512_loadu_ps(q.b_scale + col));
      z[gate] = _mm512_add_ps(dq, _mm512_loadu_ps(p.gx + row * q.n + col));
    }
    float* c = p.c + row * p.ld_state + hb * 16;
    const __m512 c_new = _mm512_fmadd_ps(sigmoid16(z[1]), _mm512_loadu_ps(c),
                                         _mm512_mul_ps(sigmoid16(z[0]), tanh16(z[2])));
    _mm512_mask_storeu_ps(c, mask, c_new);
    _mm512_mask_storeu_ps(p.h + row * p.ld_state + hb * 16, mask,
                          _mm512_mul_ps(sigmoid16(z[3]), tanh16(c_new)));
  }
}

template <int MR>
void lstm_micro(const LstmStepArgs& p, int64_t m, int64_t hb) {
  alignas(64) int32_t tile[MR * 4 * 16];
  gemm_tile<MR, 4>(p.gemm, m, hb * 4, tile);
  lstm_epilogue(p, m, MR, hb, tile);
}

}  // namespace

void avx512_lstm_step_block(const LstmStepArgs& p, int64_t m0, int64_t m1, int64_t hb0,
                            int64_t hb1) {
  for (int64_t hb = hb0; hb < hb1; ++hb) {
    for (int64_t m = m0; m < m1; m += kMR) {
      switch (m1 - m < kMR ? m1 - m : kMR) {
        case 6: lstm_micro<6>(p, m, hb); break;
        case 5: lstm_micro<5>(p, m, hb); break;
        case 4: lstm_micro<4>(p, m, hb); break;
        case 3: lstm_micro<3>(p, m, hb); break;
        case 2: lstm_micro<2>(p, m, hb); break;
        default: lstm_micro<1>(p, m, hb); break;
      }
    }
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
