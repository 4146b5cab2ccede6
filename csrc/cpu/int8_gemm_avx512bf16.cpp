// AVX512-BF16 weight-only kernel: int8 weights are widened to bf16 in
// registers (exact: every int8 is a bf16) and multiplied with bf16
// activations by vdpbf16ps, accumulating in fp32.
#include <cstdint>
#include <cstring>
#include <utility>

#include "int8_gemm_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")
#include <immintrin.h>

#include "activation_avx512.h"
#include "avx512_io.h"
#include "lora_avx512.h"
#include "unroll.h"

namespace qkernels::cpu {
namespace {

// The byte of k-offset `kk` of each 32-bit lane, sign-extended and made float.
template <int kk>
inline __m512 byte_to_f32(__m512i v) {
  if constexpr (kk == 3) return _mm512_cvtepi32_ps(_mm512_srai_epi32(v, 24));
  return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * kk), 24));
}

// bf16 pair (lo = k even, hi = k odd) in each lane. An int8 converted to fp32
// has zero low 16 bits, so the high half of `hi` is already its bf16.
inline __m512i pair_bf16(__m512 lo, __m512 hi) {
  return _mm512_or_si512(_mm512_castps_si512(hi),
                         _mm512_srli_epi32(_mm512_castps_si512(lo), 16));
}

// Scale, bias and store of one rows x 16 tile; out of line for the reason in unroll.h.
// `lora`: the tile's adapter values (lora_tile), read only when p.lora.t is set.
__attribute__((noinline)) void w8a16_epilogue(const W8A16Args& p, int64_t m, int64_t g, int rows,
                                              const float* tile, const float* lora) {
  const int64_t n0 = g * kGroupCols;
  const __mmask16 mask = tail_mask(p.n - n0);
  const __m512 scale = _mm512_maskz_loadu_ps(mask, p.b_scale + n0);
  const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + n0) : _mm512_setzero_ps();
  for (int i = 0; i < rows; ++i) {
    __m512 f = _mm512_mul_ps(_mm512_load_ps(tile + i * 16), scale);
    if (p.bias) f = _mm512_add_ps(f, bias);
    if (p.lora.t) f = _mm512_add_ps(f, _mm512_load_ps(lora + i * 16));
    store_f32x16(p.out, p.out_kind, (m + i) * p.ldo + n0, activate16(p.act, f), mask);
  }
}

// MR rows (up to 16) x one group of 16 columns: the conversion of each weight
// is shared by all MR rows, which is what makes decode-sized M cheap.
template <int MR>
void w8a16_micro(const W8A16Args& p, int64_t m, int64_t g) {
  __m512 acc[MR];
  unroll<MR>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
  const uint8_t* bp = p.b + g * p.k4 * kGroupBytesPerK4;
  const uint16_t* xp = static_cast<const uint16_t*>(p.x) + m * p.ldx;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  for (int64_t k = 0; k < p.k4; ++k) {
    const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(bp + k * kGroupBytesPerK4), flip);
    const __m512bh w01 = reinterpret_cast<__m512bh>(pair_bf16(byte_to_f32<0>(v), byte_to_f32<1>(v)));
    const __m512bh w23 = reinterpret_cast<__m512bh>(pair_bf16(byte_to_f32<2>(v), byte_to_f32<3>(v)));
    unroll<MR>([&](auto i) {
      const uint16_t* xr = xp + i * p.ldx + k * kKStep;
      const __m512bh x01 = reinterpret_cast<__m512bh>(_mm512_set1_epi32(load_i32(xr)));
      const __m512bh x23 = reinterpret_cast<__m512bh>(_mm512_set1_epi32(load_i32(xr + 2)));
      acc[i] = _mm512_dpbf16_ps(acc[i], w01, x01);
      acc[i] = _mm512_dpbf16_ps(acc[i], w23, x23);
    });
  }
  alignas(64) float tile[MR * 16];
  alignas(64) float lora[MR * 16];
  unroll<MR>([&](auto i) { _mm512_store_ps(tile + i * 16, acc[i]); });
  if (p.lora.t) lora_tile<MR>(p.lora, m, g * kGroupCols, 1, lora);
  w8a16_epilogue(p, m, g, MR, tile, lora);
}

template <int... MRs>
void w8a16_rows(const W8A16Args& p, int64_t m, int64_t g, int64_t rows,
                std::integer_sequence<int, MRs...>) {
  // Expands to: if (rows == 1) w8a16_micro<1>(...); if (rows == 2) ...
  ((rows == MRs + 1 ? w8a16_micro<MRs + 1>(p, m, g) : void()), ...);
}

constexpr int64_t kMaxRows = 16;

}  // namespace

void avx512bf16_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t m = m0; m < m1; m += kMaxRows) {
      const int64_t rows = m1 - m < kMaxRows ? m1 - m : kMaxRows;
      w8a16_rows(p, m, g, rows, std::make_integer_sequence<int, kMaxRows>{});
    }
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
