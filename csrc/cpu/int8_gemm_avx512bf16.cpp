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

// MR rows x NB groups of 16 columns: the conversion of each weight is shared by all MR
// rows. Trap: one group alone leaves one accumulator per row, and each k step adds two
// dependent vdpbf16ps to it, so one row ran at the instruction's latency (~22 GB/s of
// weight on Zen 5, half the DRAM rate); at decode sizes NB groups give the core NB
// independent chains (MR x NB accumulators, <= 16). Each group's stream is prefetched
// kPrefetchBytes ahead (kernel_args.h).
template <int MR, int NB>
void w8a16_micro(const W8A16Args& p, int64_t m, int64_t g) {
  __m512 acc[MR][NB];
  unroll<MR>([&](auto i) { unroll<NB>([&](auto j) { acc[i][j] = _mm512_setzero_ps(); }); });
  const int64_t gstride = p.k4 * kGroupBytesPerK4;
  const uint8_t* bp = p.b + g * gstride;
  const uint16_t* xp = static_cast<const uint16_t*>(p.x) + m * p.ldx;
  const __m512i flip = _mm512_set1_epi32(static_cast<int32_t>(0x80808080u));
  for (int64_t k = 0; k < p.k4; ++k) {
    __m512bh w01[NB], w23[NB];
    unroll<NB>([&](auto j) {
      const uint8_t* w = bp + j * gstride + k * kGroupBytesPerK4;
      _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes), _MM_HINT_T0);
      const __m512i v = _mm512_xor_si512(_mm512_loadu_si512(w), flip);
      w01[j] = reinterpret_cast<__m512bh>(pair_bf16(byte_to_f32<0>(v), byte_to_f32<1>(v)));
      w23[j] = reinterpret_cast<__m512bh>(pair_bf16(byte_to_f32<2>(v), byte_to_f32<3>(v)));
    });
    unroll<MR>([&](auto i) {
      const uint16_t* xr = xp + i * p.ldx + k * kKStep;
      const __m512bh x01 = reinterpret_cast<__m512bh>(_mm512_set1_epi32(load_i32(xr)));
      const __m512bh x23 = reinterpret_cast<__m512bh>(_mm512_set1_epi32(load_i32(xr + 2)));
      unroll<NB>([&](auto j) {
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], w01[j], x01);
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], w23[j], x23);
      });
    });
  }
  alignas(64) float tile[MR * 16];
  alignas(64) float lora[MR * 16];
  unroll<NB>([&](auto j) {
    unroll<MR>([&](auto i) { _mm512_store_ps(tile + i * 16, acc[i][j]); });
    if (p.lora.t) lora_tile<MR>(p.lora, m, (g + j) * kGroupCols, 1, lora);
    w8a16_epilogue(p, m, g + j, MR, tile, lora);
  });
}

// Groups [g0, g1) of MR rows, NB at a time, then the remainder one by one.
template <int MR, int NB>
void w8a16_groups(const W8A16Args& p, int64_t m, int64_t g0, int64_t g1) {
  int64_t g = g0;
  for (; g + NB <= g1; g += NB) w8a16_micro<MR, NB>(p, m, g);
  for (; g < g1; ++g) w8a16_micro<MR, 1>(p, m, g);
}

// Up to 4 rows: 4 groups at a time; 5-8 rows: 2 (<= 16 accumulators); more: one group,
// whose conversion the most rows then share (prefill sizes).
template <int... MRs>
void w8a16_rows(const W8A16Args& p, int64_t m, int64_t rows, int64_t g0, int64_t g1,
                std::integer_sequence<int, MRs...>) {
  // Expands to: if (rows == 1) w8a16_groups<1, 4>(...); if (rows == 2) ...
  ((rows == MRs + 1 ? w8a16_groups<MRs + 1, (MRs < 4 ? 4 : MRs < 8 ? 2 : 1)>(p, m, g0, g1)
                    : void()),
   ...);
}

constexpr int64_t kMaxRows = 16;

}  // namespace

void avx512bf16_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1) {
  for (int64_t m = m0; m < m1; m += kMaxRows) {
    const int64_t rows = m1 - m < kMaxRows ? m1 - m : kMaxRows;
    w8a16_rows(p, m, rows, g0, g1, std::make_integer_sequence<int, kMaxRows>{});
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
