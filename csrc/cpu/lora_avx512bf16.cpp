// AVX512-BF16 kernels of the LoRA adapter (lora_kernels.h): the projection t = x a^T and
// the epilogue's t (scaling b^T), both on bf16 pairs with vdpbf16ps (two multiply-adds per
// fp32 lane and instruction, exact products, fp32 sums; denormals flush to zero). The
// dispatcher only calls in here when the CPU has AVX512-BF16. Headers come before the
// target pragma and everything after it has internal linkage (see kernel_args.h).
#include <cstdint>

#include "int8_gemm_kernels.h"
#include "lora_kernels.h"

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")
#include <immintrin.h>

#include "avx512_io.h"
#include "unroll.h"

namespace qkernels::cpu {
namespace {

// Trap: vdpbf16ps has a longer latency than an FMA, and a chain per accumulator: the
// kernels keep 16 (projection) or up to 24 (epilogue) chains in flight.
inline __m512bh as_pairs(__m512i v) { return reinterpret_cast<__m512bh>(v); }

inline __m512bh broadcast_pair(const uint32_t* p) {
  return as_pairs(_mm512_set1_epi32(static_cast<int>(*p)));
}

inline __mmask16 words_mask(int64_t valid) { return tail_mask(valid > 0 ? valid : 0); }

// Rows m.. of x as bf16 pairs, zero past K, 32 values a step (vcvtne2ps2bf16: round to
// nearest even, as torch, except that it flushes denormals, as vdpbf16ps would).
template <int MR, InKind kKind>
void rows_to_pairs(const LoraProjectArgs& p, int64_t m, int64_t pairs) {
  const int64_t k = p.k, whole = k / 32 * 32;
  for (int i = 0; i < MR; ++i) {
    const int64_t row = (m + i) * p.ldx;
    uint32_t* out = p.x_pairs + i * pairs;
    for (int64_t c = 0; c < whole; c += 32) {
      const __m512 lo = load_f32x16(p.x, kKind, row + c, 0xFFFF);
      const __m512 hi = load_f32x16(p.x, kKind, row + c + 16, 0xFFFF);
      _mm512_storeu_si512(out + c / 2, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    }
    if (whole < k) {  // zero past K, odd K's last pair included
      const __m512 lo = load_f32x16(p.x, kKind, row + whole, words_mask(k - whole));
      const __m512 hi = load_f32x16(p.x, kKind, row + whole + 16, words_mask(k - whole - 16));
      _mm512_mask_storeu_epi32(out + whole / 2, words_mask(pairs - whole / 2),
                               reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    }
  }
}

// MR rows from m, all panels: each pair of k broadcasts one word per row against one
// 16-wide panel row of a^T; t is stored as bf16, zero in its padding column.
template <int MR, InKind kKind>
void project_rows(const LoraProjectArgs& p, int64_t m) {
  const int64_t pairs = (p.k + 1) / 2, panels = (p.r + 15) / 16, t_len = 2 * ((p.r + 1) / 2);
  rows_to_pairs<MR, kKind>(p, m, pairs);
  const uint32_t* a = static_cast<const uint32_t*>(p.a_panels);
  const uint32_t* x = p.x_pairs;
  uint16_t* t = static_cast<uint16_t*>(p.t);
  for (int64_t jb = 0; jb < panels; ++jb) {
    const uint32_t* ap = a + jb * pairs * 16;
    __m512 acc[MR];
    unroll<MR>([&](auto i) { acc[i] = _mm512_setzero_ps(); });
    for (int64_t kp = 0; kp < pairs; ++kp) {
      const __m512bh w = as_pairs(_mm512_loadu_si512(ap + kp * 16));
      unroll<MR>([&](auto i) {
        acc[i] = _mm512_dpbf16_ps(acc[i], broadcast_pair(x + i * pairs + kp), w);
      });
    }
    const __mmask16 mask = words_mask(t_len - jb * 16);
    unroll<MR>([&](auto i) {
      _mm256_mask_storeu_epi16(t + (m + i) * t_len + jb * 16, mask, f32_to_bf16(acc[i]));
    });
  }
}

template <InKind kKind>
void project(const LoraProjectArgs& p, int64_t m0, int64_t m1) {
  int64_t m = m0;
  for (; m + kLoraProjectRows <= m1; m += kLoraProjectRows) {
    project_rows<kLoraProjectRows, kKind>(p, m);
  }
  for (; m + 4 <= m1; m += 4) project_rows<4, kKind>(p, m);
  switch (m1 - m) {  // the last rows
    case 3: return project_rows<3, kKind>(p, m);
    case 2: return project_rows<2, kKind>(p, m);
    case 1: return project_rows<1, kKind>(p, m);
    default: return;
  }
}

// In-register transpose of a 16 x 16 matrix of 32-bit words: w[i] lane j -> w[j] lane i.
inline void transpose16(__m512i w[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // lane l of t[i], t[i + 1]: rows i, i + 1 interleaved
    t[i] = _mm512_unpacklo_epi32(w[i], w[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(w[i], w[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // lane l of u[i + q]: column 4 l + q, rows i..i + 3
    u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int q = 0; q < 4; ++q) {  // the 128-bit lanes of u[q], u[4 + q], ... transposed
    const __m512i v0 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x44);
    const __m512i v1 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x44);
    const __m512i v3 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xEE);
    w[q] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    w[4 + q] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    w[8 + q] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    w[12 + q] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// MR rows x NB groups of 16 columns: each t pair is broadcast once for NB column groups.
template <int MR, int NB>
void tile(const LoraEpilogue& l, int64_t m, int64_t n0, float* out, int64_t stride) {
  __m512 acc[MR][NB];
  unroll<MR>([&](auto i) { unroll<NB>([&](auto c) { acc[i][c] = _mm512_setzero_ps(); }); });
  const uint32_t* bt = static_cast<const uint32_t*>(l.bt) + n0;
  const uint32_t* t = static_cast<const uint32_t*>(l.t) + m * l.r;
  for (int64_t j = 0; j < l.r; ++j) {
    __m512bh b[NB];
    unroll<NB>([&](auto c) { b[c] = as_pairs(_mm512_loadu_si512(bt + j * l.ldbt + c * 16)); });
    unroll<MR>([&](auto i) {
      const __m512bh tp = broadcast_pair(t + i * l.r + j);
      unroll<NB>([&](auto c) { acc[i][c] = _mm512_dpbf16_ps(acc[i][c], tp, b[c]); });
    });
  }
  unroll<MR>([&](auto i) {
    unroll<NB>([&](auto c) { _mm512_storeu_ps(out + i * stride + c * 16, acc[i][c]); });
  });
}

// Rows in blocks of up to 24 / NB (the accumulators), the last block MR = rows left.
template <int NB>
void tile_rows(const LoraEpilogue& l, int rows, int64_t m, int64_t n0, float* out) {
  constexpr int kBlock = 24 / NB > 8 ? 8 : 24 / NB;
  const int64_t stride = NB * 16;
  for (int i = 0; i < rows; i += kBlock) {
    float* o = out + i * stride;
    switch (rows - i < kBlock ? rows - i : kBlock) {
      case 8: tile<(kBlock < 8 ? kBlock : 8), NB>(l, m + i, n0, o, stride); break;
      case 7: tile<(kBlock < 7 ? kBlock : 7), NB>(l, m + i, n0, o, stride); break;
      case 6: tile<6, NB>(l, m + i, n0, o, stride); break;
      case 5: tile<5, NB>(l, m + i, n0, o, stride); break;
      case 4: tile<4, NB>(l, m + i, n0, o, stride); break;
      case 3: tile<3, NB>(l, m + i, n0, o, stride); break;
      case 2: tile<2, NB>(l, m + i, n0, o, stride); break;
      default: tile<1, NB>(l, m + i, n0, o, stride); break;
    }
  }
}

}  // namespace

void avx512bf16_pack_pairs(const PackPairsArgs& p, int64_t b0, int64_t b1) {
  const int64_t pairs = (p.cols + 1) / 2, chunks = (pairs + 15) / 16;
  const __m512 scale = _mm512_set1_ps(p.scale);
  for (int64_t blk = b0; blk < b1; ++blk) {
    const int64_t g = blk / chunks, p0 = blk % chunks * 16, valid = p.rows - g * 16;
    if (blk + 1 < b1) {  // a and b arrive cold: ask for the next block's lines now
      const int64_t gn = (blk + 1) / chunks, pn = (blk + 1) % chunks * 32;
      const int64_t rows_n = p.rows - gn * 16 < 16 ? p.rows - gn * 16 : 16;
      for (int64_t i = 0; i < rows_n; ++i) {
        const char* row = reinterpret_cast<const char*>(p.s + (gn * 16 + i) * p.ld + pn);
        _mm_prefetch(row, _MM_HINT_T0);
        if (p.cols - pn > 16) _mm_prefetch(row + 64, _MM_HINT_T0);
      }
    }
    // 16 rows x 16 pair-words (32 values of each row, contiguous), then transposed
    __m512i w[16];
    for (int i = 0; i < 16; ++i) {
      if (i >= valid) {
        w[i] = _mm512_setzero_si512();
        continue;
      }
      const float* row = p.s + (g * 16 + i) * p.ld + 2 * p0;
      const int64_t left = p.cols - 2 * p0;
      const __m512 lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(words_mask(left), row), scale);
      const __m512 hi =
          _mm512_mul_ps(_mm512_maskz_loadu_ps(words_mask(left - 16), row + 16), scale);
      w[i] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
    }
    transpose16(w);
    for (int64_t q = 0; q < 16 && p0 + q < pairs; ++q) {
      _mm512_storeu_si512(p.out + g * p.g_stride + (p0 + q) * p.p_stride, w[q]);
    }
  }
}

void avx512bf16_lora_project(const LoraProjectArgs& p, int64_t m0, int64_t m1) {
  switch (p.x_kind) {
    case InKind::kFloat32: return project<InKind::kFloat32>(p, m0, m1);
    case InKind::kBFloat16: return project<InKind::kBFloat16>(p, m0, m1);
    case InKind::kFloat16: return project<InKind::kFloat16>(p, m0, m1);
  }
}

void avx512bf16_lora_tile(const LoraEpilogue& l, int rows, int groups, int64_t m, int64_t n0,
                          float* out) {
  switch (groups) {
    case 4: return tile_rows<4>(l, rows, m, n0, out);
    case 3: return tile_rows<3>(l, rows, m, n0, out);
    case 2: return tile_rows<2>(l, rows, m, n0, out);
    default: return tile_rows<1>(l, rows, m, n0, out);
  }
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
