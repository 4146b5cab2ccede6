// AVX-512 VNNI kernels of the int8 GEMM family: the GEMM (vpdpbusd) with the dequant
// epilogue fused, and per-row int8 quantization. Requires AVX512F/BW/VL/VNNI at run time; the
// dispatcher (isa.cpp) only calls in here when the CPU has them.
//
// All headers come before the target pragma and everything after it has
// internal linkage, so no AVX-512 code can leak into another file's inlines.
#include <cstdint>
#include <cstring>

#include "int8_gemm_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
#include <immintrin.h>

#include "activation_avx512.h"
#include "avx512_io.h"
#include "unroll.h"
#include "int8_gemm_avx512_tile.h"
#include "lora_avx512.h"

namespace qkernels::cpu {
namespace {

// Dequant epilogue of one MR x (NB * 16) tile of int32 sums.
// Kept out of line: with it inlined into the k loop's function, GCC 12 keeps
// the accumulators in memory (see unroll.h).
// `lora`: the tile's adapter values (lora_tile), read only when p.lora.t is set.
__attribute__((noinline)) void gemm_epilogue(const Int8GemmArgs& p, int64_t m, int64_t g,
                                             int rows, int groups, const int32_t* tile,
                                             const float* lora) {
  for (int i = 0; i < rows; ++i) {
    const int64_t row = m + i;
    // Weights entered as w + 128: remove 128 * sum(a). uint32 math wraps like int32 GEMMs.
    const __m512i comp = _mm512_set1_epi32(
        static_cast<int32_t>(static_cast<uint32_t>(p.a_rowsum[row]) * 128u));
    for (int j = 0; j < groups; ++j) {
      const int64_t n0 = (g + j) * kGroupCols;
      const __mmask16 mask = tail_mask(p.n - n0);
      const __m512i v = _mm512_sub_epi32(_mm512_load_si512(tile + (i * groups + j) * 16), comp);
      if (p.out_kind == OutKind::kInt32) {
        _mm512_mask_storeu_epi32(static_cast<int32_t*>(p.out) + row * p.ldo + n0, mask, v);
        continue;
      }
      // Same operation order as reference.int8_mm: (acc * a_scale) * b_scale + bias.
      __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(p.a_scale[row]));
      f = _mm512_mul_ps(f, _mm512_maskz_loadu_ps(mask, p.b_scale + n0));
      if (p.bias) f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(mask, p.bias + n0));
      if (p.lora.t) f = _mm512_add_ps(f, _mm512_load_ps(lora + (i * groups + j) * 16));
      store_f32x16(p.out, p.out_kind, row * p.ldo + n0, activate16(p.act, f), mask);
    }
  }
}

template <int MR, int NB>
void gemm_micro(const Int8GemmArgs& p, int64_t m, int64_t g, bool stream) {
  alignas(64) int32_t tile[MR * NB * 16];
  alignas(64) float lora[MR * NB * 16];
  if (stream) {
    gemm_tile<MR, NB, true>(p, m, g, tile);
  } else {
    gemm_tile<MR, NB>(p, m, g, tile);
  }
  if (p.lora.t) lora_tile<MR>(p.lora, m, g * kGroupCols, NB, lora);
  gemm_epilogue(p, m, g, MR, NB, tile, lora);
}

template <int MR>
void gemm_micro_rows(const Int8GemmArgs& p, int64_t m, int64_t g, int64_t ng, bool stream) {
  switch (ng) {
    case 4: gemm_micro<MR, 4>(p, m, g, stream); break;
    case 3: gemm_micro<MR, 3>(p, m, g, stream); break;
    case 2: gemm_micro<MR, 2>(p, m, g, stream); break;
    default: gemm_micro<MR, 1>(p, m, g, stream); break;
  }
}

constexpr int64_t kNB = 4;
// A task of at most this many rows reads each weight panel about once: it prefetches.
constexpr int64_t kStreamRows = 16;

}  // namespace

void avx512_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1) {
  const bool stream = m1 - m0 <= kStreamRows;
  for (int64_t g = g0; g < g1; g += kNB) {
    const int64_t ng = g1 - g < kNB ? g1 - g : kNB;
    for (int64_t m = m0; m < m1; m += kMR) {
      switch (m1 - m < kMR ? m1 - m : kMR) {
        case 6: gemm_micro_rows<6>(p, m, g, ng, stream); break;
        case 5: gemm_micro_rows<5>(p, m, g, ng, stream); break;
        case 4: gemm_micro_rows<4>(p, m, g, ng, stream); break;
        case 3: gemm_micro_rows<3>(p, m, g, ng, stream); break;
        case 2: gemm_micro_rows<2>(p, m, g, ng, stream); break;
        default: gemm_micro_rows<1>(p, m, g, ng, stream); break;
      }
    }
  }
}

namespace {

// One kind of input per instantiation, and the arguments in locals: the int8 stores
// may alias anything, so GCC reloaded every field of `p` (and switched on the input
// kind) in every iteration otherwise.
template <InKind kKind>
void quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1) {
  const __m512i qmax_i = _mm512_set1_epi32(p.qmax);
  const __m512i qmin_i = _mm512_set1_epi32(-p.qmax);
  const __m512 flt_max = _mm512_set1_ps(__FLT_MAX__);
  const size_t elem = kKind == InKind::kFloat32 ? 4 : 2;
  const int64_t k = p.k, ldq = p.ldq;
  const int qmax = p.qmax;
  for (int64_t m = m0; m < m1; ++m) {
    const void* x = static_cast<const char*>(p.x) + m * p.ldx * elem;
    int8_t* q = p.q + m * ldq;
    // Trap: max_ps drops a NaN depending on its position, so NaN and Inf are tracked
    // in their own mask (|x| <= FLT_MAX fails for both; masked-off lanes load 0).
    __m512 vmax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t i = 0; i < k; i += 16) {
      const __m512 a = _mm512_abs_ps(load_f32x16(x, kKind, i, tail_mask(k - i)));
      vmax = _mm512_max_ps(vmax, a);
      bad |= _mm512_cmp_ps_mask(a, flt_max, _CMP_NLE_UQ);
    }
    const float scale = row_scale(_mm512_reduce_max_ps(vmax), bad != 0, qmax);
    p.scale[m] = scale;
    if (bad != 0) {
      for (int64_t i = 0; i < ldq; ++i) q[i] = 0;
      if (p.rowsum) p.rowsum[m] = 0;
      continue;
    }
    const __m512 vscale = _mm512_set1_ps(scale);
    __m512i vsum = _mm512_setzero_si512();
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 mask = tail_mask(k - i);
      // Division, not a reciprocal multiply: bit-exact with reference.quantize_rowwise.
      // cvtps_epi32 rounds half to even under the default MXCSR, as torch.round.
      __m512i qi = _mm512_cvtps_epi32(_mm512_div_ps(load_f32x16(x, kKind, i, mask), vscale));
      qi = _mm512_min_epi32(_mm512_max_epi32(qi, qmin_i), qmax_i);
      qi = _mm512_maskz_mov_epi32(mask, qi);
      vsum = _mm512_add_epi32(vsum, qi);
      _mm_mask_storeu_epi8(q + i, mask, _mm512_cvtepi32_epi8(qi));
    }
    for (int64_t i = k; i < ldq; ++i) q[i] = 0;
    if (p.rowsum) p.rowsum[m] = _mm512_reduce_add_epi32(vsum);
  }
}

}  // namespace

int avx512_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1) {
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i widest = _mm512_setzero_si512();
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* row = p.a + m * p.lda;
    // sad against 0 of a ^ 0x80 = a + 128 (unsigned): 8-byte sums, exact in 64 bits.
    __m512i sum = _mm512_setzero_si512();
    for (int64_t k = 0; k < p.k; k += 64) {
      const __mmask64 mask = p.k - k >= 64 ? ~0ULL : (1ULL << (p.k - k)) - 1;
      const __m512i a = _mm512_maskz_loadu_epi8(mask, row + k);
      // abs(-128) is 0x80: 128 when compared as unsigned.
      widest = _mm512_max_epu8(widest, _mm512_abs_epi8(a));
      const __m512i plus128 = _mm512_maskz_mov_epi8(mask, _mm512_xor_si512(a, bias));
      sum = _mm512_add_epi64(sum, _mm512_sad_epu8(plus128, _mm512_setzero_si512()));
    }
    p.rowsum[m] = static_cast<int32_t>(_mm512_reduce_add_epi64(sum) - 128 * p.k);
  }
  alignas(64) uint8_t lanes[64];
  _mm512_store_si512(lanes, widest);
  int out = 0;
  for (uint8_t l : lanes) out = out > l ? out : l;
  return out;
}

void avx512_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1) {
  switch (p.x_kind) {
    case InKind::kFloat32: return quantize_rows<InKind::kFloat32>(p, m0, m1);
    case InKind::kBFloat16: return quantize_rows<InKind::kBFloat16>(p, m0, m1);
    case InKind::kFloat16: return quantize_rows<InKind::kFloat16>(p, m0, m1);
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
