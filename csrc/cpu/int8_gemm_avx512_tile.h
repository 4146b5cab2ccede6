// The AVX-512 VNNI GEMM tile, shared by the int8 GEMM and the fused LSTM step.
//
// Trap: include this only after `#pragma GCC target("...avx512vnni...")` and inside
// nothing but the ISA files: everything here has internal linkage (anonymous
// namespace), so no AVX-512 instantiation can be merged with another file's copy.
#pragma once

// Needs (before the pragma) int8_gemm_kernels.h, and (after it) <immintrin.h>,
// avx512_io.h and unroll.h.

namespace qkernels::cpu {
namespace {

constexpr int kMR = 6;  // rows of the micro-tile

// MR rows x NB groups of 16 columns, the whole K in registers; the int32
// sums land in `tile` [MR][NB][16] for an out-of-line epilogue. kStream: the weight is
// read once (decode sizes), so prefetch it; larger M reuses the panel from L2.
template <int MR, int NB, bool kStream = false>
void gemm_tile(const Int8GemmArgs& p, int64_t m, int64_t g, int32_t* tile) {
  __m512i acc[MR][NB];
  unroll<MR>([&](auto i) { unroll<NB>([&](auto j) { acc[i][j] = _mm512_setzero_si512(); }); });

  const int64_t bstride = p.b_group_stride;
  const uint8_t* bp = p.b + g * bstride;
  const int8_t* ap = p.a + m * p.lda;
  for (int64_t k = 0; k < p.k4; ++k) {
    __m512i bv[NB];
    unroll<NB>([&](auto j) {
      const uint8_t* w = bp + j * bstride + k * kGroupBytesPerK4;
      if constexpr (kStream) {
        _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes), _MM_HINT_T0);
      }
      bv[j] = _mm512_loadu_si512(w);
    });
    unroll<MR>([&](auto i) {
      const __m512i av = _mm512_set1_epi32(load_i32(ap + i * p.lda + k * kKStep));
      unroll<NB>([&](auto j) { acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], bv[j], av); });
    });
  }
  unroll<MR>([&](auto i) {
    unroll<NB>([&](auto j) { _mm512_store_si512(tile + (i * NB + j) * 16, acc[i][j]); });
  });
}

}  // namespace
}  // namespace qkernels::cpu
