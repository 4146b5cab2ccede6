// AVX2 kernels, for x86 CPUs without AVX-512 VNNI.
//
// Int8 GEMM, exact for every input, by what the activations may hold (ActRange):
// - |a| <= 64 (7-bit): vpmaddubsw of the packed bytes (w + 128) with a, as the VNNI
//   kernel does: pair sums reach 2 * 255 * 64 < 2^15.
// - |a| <= 127 (every 8-bit per-token quantization): vpmaddubsw of |w| with a given w's
//   sign (vpsignb): pair sums reach 2 * 128 * 127 < 2^15, and no +128 compensation.
// - any int8 (a = -128 can occur in int8_mm's inputs): both operands widened to int16
//   and multiplied by vpmaddwd.
// vpmaddubsw's pairs are widened and summed by vpmaddwd with ones (DESIGN.md, "The AVX2
// ceiling": same multiply-pipe work per product, fewer instructions).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "int8_gemm_kernels.h"
#include "scalar_convert.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>

#include "activation_avx2.h"
#include "unroll.h"

namespace qkernels::cpu {
namespace {

// The adapter's 16 columns n0.. of MR rows m..: out[i][c] = sum_j t[m + i, j] * bt[j, n0 + c],
// summed in j order (one FMA chain per output, as before). Trap: one row at a time is
// bound by the FMA latency of its two chains (~4 cycles per j); MR rows give 2 * MR
// independent chains and share each bt load.
template <int MR>
inline void lora_rows(const LoraEpilogue& l, int64_t m, int64_t n0, float (*out)[16]) {
  __m256 lo[MR], hi[MR];
  unroll<MR>([&](auto i) { lo[i] = hi[i] = _mm256_setzero_ps(); });
  const float* bt = static_cast<const float*>(l.bt);
  const float* tr = static_cast<const float*>(l.t);
  for (int64_t j = 0; j < l.r; ++j) {
    const float* b = bt + j * l.ldbt + n0;
    const __m256 b_lo = _mm256_loadu_ps(b), b_hi = _mm256_loadu_ps(b + 8);
    unroll<MR>([&](auto i) {
      const __m256 t = _mm256_set1_ps(tr[(m + i) * l.r + j]);
      lo[i] = _mm256_fmadd_ps(t, b_lo, lo[i]);
      hi[i] = _mm256_fmadd_ps(t, b_hi, hi[i]);
    });
  }
  unroll<MR>([&](auto i) {
    _mm256_storeu_ps(out[i], lo[i]);
    _mm256_storeu_ps(out[i] + 8, hi[i]);
  });
}

// Trap: the activations' code is large; inlined into each micro-kernel instantiation it
// pushed the whole epilogue out of line (a call per row, ~2x the epilogue's time at
// small K). Out of line, it costs a call per 8 values only where an activation is set.
__attribute__((noinline)) __m256 activate8_call(Activation act, __m256 x) {
  return activate8(act, x);
}

inline __m256 maybe_activate8(Activation act, __m256 x) {
  return act == Activation::kNone ? x : activate8_call(act, x);
}

// Stores 8 floats at out[i..i+8) as fp32, bf16 or fp16, rounding as store_float does
// (RNE; NaN as bf16's canonical quiet NaN).
inline void store_f32x8(void* out, OutKind kind, int64_t i, __m256 f) {
  switch (kind) {
    case OutKind::kFloat32: _mm256_storeu_ps(static_cast<float*>(out) + i, f); return;
    case OutKind::kFloat16:
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                       _mm256_cvtps_ph(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      return;
    case OutKind::kBFloat16: {
      const __m256i bits = _mm256_castps_si256(f);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
      __m256i r = _mm256_srli_epi32(
          _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
      r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0),
                             _mm256_castps_si256(_mm256_cmp_ps(f, f, _CMP_UNORD_Q)));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(out) + i),
                       _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
      return;
    }
    case OutKind::kInt32: return;  // int32 output never goes through floats
  }
}

// Writes 16 int32 column sums of one row through the shared epilogue. `comp` is
// subtracted from each sum first: 128 * rowsum where the kernel multiplied by w + 128.
// Same operation order as reference.int8_mm: (acc * a_scale) * b_scale + bias, + adapter.
// `lora`: the adapter's 16 values of the row (lora_rows), read only when p.lora.t is set.
inline void epilogue_row(const Int8GemmArgs& p, int64_t row, int64_t n0, const int32_t* acc,
                         uint32_t comp, const float* lora) {
  if (p.n - n0 >= kGroupCols) {
    const __m256i c = _mm256_set1_epi32(static_cast<int32_t>(comp));
    unroll<2>([&](auto h) {
      const int64_t col = n0 + 8 * h;
      const __m256i v =
          _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + 8 * h)), c);
      if (p.out_kind == OutKind::kInt32) {
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(static_cast<int32_t*>(p.out) + row * p.ldo + col), v);
        return;
      }
      __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(p.a_scale[row]));
      f = _mm256_mul_ps(f, _mm256_loadu_ps(p.b_scale + col));
      if (p.bias) f = _mm256_add_ps(f, _mm256_loadu_ps(p.bias + col));
      if (p.lora.t) f = _mm256_add_ps(f, _mm256_loadu_ps(lora + 8 * h));
      store_f32x8(p.out, p.out_kind, row * p.ldo + col, maybe_activate8(p.act, f));
    });
    return;
  }
  for (int64_t c = 0; c < p.n - n0; ++c) {  // the last, partial column group
    const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc[c]) - comp);
    if (p.out_kind == OutKind::kInt32) {
      static_cast<int32_t*>(p.out)[row * p.ldo + n0 + c] = v;
      continue;
    }
    float f = static_cast<float>(v) * p.a_scale[row] * p.b_scale[n0 + c];
    if (p.bias) f += p.bias[n0 + c];
    if (p.lora.t) f += lora[c];
    store_float(p.out, p.out_kind, row * p.ldo + n0 + c, activate(p.act, f));
  }
}

inline uint32_t plus128_comp(const Int8GemmArgs& p, int64_t row) {
  return static_cast<uint32_t>(p.a_rowsum[row]) * 128u;
}

// Any int8 a: MR rows x one group of 16 columns. Each 16-byte quarter of a packed k4
// slice holds 4 columns x 4 k; widened to int16 and multiplied with the row's 4
// activations repeated, vpmaddwd leaves two partial sums per column.
template <int MR>
void widening_micro(const Int8GemmArgs& p, int64_t m, int64_t g) {
  __m256i acc[MR][4];
  unroll<MR>([&](auto i) { unroll<4>([&](auto q) { acc[i][q] = _mm256_setzero_si256(); }); });
  const uint8_t* bp = p.b + g * p.b_group_stride;
  const int8_t* ap = p.a + m * p.lda;
  for (int64_t k = 0; k < p.k4; ++k) {
    __m256i bw[4];
    unroll<4>([&](auto q) {
      bw[q] = _mm256_cvtepu8_epi16(_mm_loadu_si128(
          reinterpret_cast<const __m128i*>(bp + k * kGroupBytesPerK4 + q * 16)));
    });
    unroll<MR>([&](auto i) {
      const __m128i a4 =
          _mm_cvtepi8_epi16(_mm_cvtsi32_si128(load_i32(ap + i * p.lda + k * kKStep)));
      const __m256i av = _mm256_broadcastq_epi64(a4);
      unroll<4>([&](auto q) {
        acc[i][q] = _mm256_add_epi32(acc[i][q], _mm256_madd_epi16(bw[q], av));
      });
    });
  }
  alignas(32) float lora[MR][16];
  if (p.lora.t) lora_rows<MR>(p.lora, m, g * kGroupCols, lora);
  unroll<MR>([&](auto i) {
    alignas(32) int32_t lanes[32];
    unroll<4>([&](auto q) {
      _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8 * q), acc[i][q]);
    });
    int32_t sums[16];
    for (int c = 0; c < 16; ++c)
      sums[c] = static_cast<int32_t>(static_cast<uint32_t>(lanes[2 * c]) +
                                     static_cast<uint32_t>(lanes[2 * c + 1]));
    epilogue_row(p, m + i, g * kGroupCols, sums, plus128_comp(p, m + i), lora[i]);
  });
}

// |a| <= 127 (kSevenBit false) or <= 64 (true): MR rows x 16 columns, each half of a
// packed k4 slice (8 columns x 4 k) multiplied with the row's 4 bytes broadcast;
// vpmaddwd by ones then sums each column's two pairs, in column order.
template <int MR, bool kSevenBit>
void byte_pair_micro(const Int8GemmArgs& p, int64_t m, int64_t g) {
  __m256i acc[MR][2];
  unroll<MR>([&](auto i) { acc[i][0] = acc[i][1] = _mm256_setzero_si256(); });
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const uint8_t* bp = p.b + g * p.b_group_stride;
  const int8_t* ap = p.a + m * p.lda;
  for (int64_t k = 0; k < p.k4; ++k) {
    __m256i w[2], u[2];  // seven-bit: u = w + 128; else w signed and u = |w|
    unroll<2>([&](auto h) {
      const __m256i packed = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(bp + k * kGroupBytesPerK4 + 32 * h));
      if constexpr (kSevenBit) {
        u[h] = packed;
      } else {
        w[h] = _mm256_xor_si256(packed, flip);
        u[h] = _mm256_abs_epi8(w[h]);
      }
    });
    unroll<MR>([&](auto i) {
      const __m256i av = _mm256_set1_epi32(load_i32(ap + i * p.lda + k * kKStep));
      unroll<2>([&](auto h) {
        const __m256i s = kSevenBit ? av : _mm256_sign_epi8(av, w[h]);
        const __m256i pairs = _mm256_maddubs_epi16(u[h], s);
        acc[i][h] = _mm256_add_epi32(acc[i][h], _mm256_madd_epi16(pairs, ones));
      });
    });
  }
  alignas(32) float lora[MR][16];
  if (p.lora.t) lora_rows<MR>(p.lora, m, g * kGroupCols, lora);
  unroll<MR>([&](auto i) {
    alignas(32) int32_t sums[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), acc[i][0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8), acc[i][1]);
    epilogue_row(p, m + i, g * kGroupCols, sums, kSevenBit ? plus128_comp(p, m + i) : 0u,
                 lora[i]);
  });
}

template <int kk>
inline __m256 byte_to_f32(__m256i v) {
  if constexpr (kk == 3) return _mm256_cvtepi32_ps(_mm256_srai_epi32(v, 24));
  return _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 24 - 8 * kk), 24));
}

// Weight-only: MR rows x 16 columns in fp32 FMA; x is fp32 here.
template <int MR>
void w8a16_micro(const W8A16Args& p, int64_t m, int64_t g) {
  __m256 acc[MR][2];
  unroll<MR>([&](auto i) { acc[i][0] = acc[i][1] = _mm256_setzero_ps(); });
  const uint8_t* bp = p.b + g * p.k4 * kGroupBytesPerK4;
  const float* xp = static_cast<const float*>(p.x) + m * p.ldx;
  const __m256i flip = _mm256_set1_epi32(static_cast<int32_t>(0x80808080u));
  for (int64_t k = 0; k < p.k4; ++k) {
    unroll<2>([&](auto h) {
      const __m256i v = _mm256_xor_si256(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + k * kGroupBytesPerK4 + 32 * h)),
          flip);
      const __m256 w[4] = {byte_to_f32<0>(v), byte_to_f32<1>(v), byte_to_f32<2>(v),
                           byte_to_f32<3>(v)};
      unroll<MR>([&](auto i) {
        const float* xr = xp + i * p.ldx + k * kKStep;
        unroll<4>([&](auto kk) {
          acc[i][h] = _mm256_fmadd_ps(w[kk], _mm256_broadcast_ss(xr + kk), acc[i][h]);
        });
      });
    });
  }
  const int64_t n0 = g * kGroupCols;
  const int64_t valid = p.n - n0 < kGroupCols ? p.n - n0 : kGroupCols;
  alignas(32) float lora[MR][16];
  if (p.lora.t) lora_rows<MR>(p.lora, m, n0, lora);
  unroll<MR>([&](auto i) {
    if (valid == kGroupCols) {
      unroll<2>([&](auto h) {
        __m256 f = _mm256_mul_ps(acc[i][h], _mm256_loadu_ps(p.b_scale + n0 + 8 * h));
        if (p.bias) f = _mm256_add_ps(f, _mm256_loadu_ps(p.bias + n0 + 8 * h));
        if (p.lora.t) f = _mm256_add_ps(f, _mm256_load_ps(lora[i] + 8 * h));
        store_f32x8(p.out, p.out_kind, (m + i) * p.ldo + n0 + 8 * h, maybe_activate8(p.act, f));
      });
      return;
    }
    alignas(32) float lanes[16];
    _mm256_store_ps(lanes, acc[i][0]);
    _mm256_store_ps(lanes + 8, acc[i][1]);
    for (int64_t c = 0; c < valid; ++c) {
      float f = lanes[c] * p.b_scale[n0 + c];
      if (p.bias) f += p.bias[n0 + c];
      if (p.lora.t) f += lora[i][c];
      store_float(p.out, p.out_kind, (m + i) * p.ldo + n0 + c, activate(p.act, f));
    }
  });
}

constexpr int kWideningMR = 2;
constexpr int kBytePairMR = 4;
constexpr int kW8A16MR = 4;

template <bool kSevenBit>
void byte_pair_rows(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g) {
  for (int64_t m = m0; m < m1; m += kBytePairMR) {
    switch (m1 - m < kBytePairMR ? m1 - m : kBytePairMR) {
      case 4: byte_pair_micro<4, kSevenBit>(p, m, g); break;
      case 3: byte_pair_micro<3, kSevenBit>(p, m, g); break;
      case 2: byte_pair_micro<2, kSevenBit>(p, m, g); break;
      default: byte_pair_micro<1, kSevenBit>(p, m, g); break;
    }
  }
}

}  // namespace

void avx2_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                          int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    switch (p.a_range) {
      case ActRange::kSevenBit: byte_pair_rows<true>(p, m0, m1, g); break;
      case ActRange::kSymmetric: byte_pair_rows<false>(p, m0, m1, g); break;
      case ActRange::kFull:
        for (int64_t m = m0; m < m1; m += kWideningMR) {
          if (m1 - m >= 2) widening_micro<2>(p, m, g);
          else widening_micro<1>(p, m, g);
        }
        break;
    }
  }
}

void avx2_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1) {
  for (int64_t g = g0; g < g1; ++g) {
    for (int64_t m = m0; m < m1; m += kW8A16MR) {
      switch (m1 - m < kW8A16MR ? m1 - m : kW8A16MR) {
        case 4: w8a16_micro<4>(p, m, g); break;
        case 3: w8a16_micro<3>(p, m, g); break;
        case 2: w8a16_micro<2>(p, m, g); break;
        default: w8a16_micro<1>(p, m, g); break;
      }
    }
  }
}

void avx2_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1) {
  if (p.x_kind != InKind::kFloat32) {
    // Half-precision inputs are rare on AVX2-only machines; keep them scalar.
    scalar_quantize_rows(p, m0, m1);
    return;
  }
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 flt_max = _mm256_set1_ps(__FLT_MAX__);
  const __m256i qmax_i = _mm256_set1_epi32(p.qmax);
  const __m256i qmin_i = _mm256_set1_epi32(-p.qmax);
  const int64_t kv = p.k / 8 * 8;
  for (int64_t m = m0; m < m1; ++m) {
    const float* x = static_cast<const float*>(p.x) + m * p.ldx;
    // Trap: max_ps drops a NaN depending on its position, so NaN and Inf are tracked
    // in their own mask (|x| <= FLT_MAX fails for both).
    __m256 vmax = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
    for (int64_t k = 0; k < kv; k += 8) {
      const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k));
      vmax = _mm256_max_ps(vmax, a);
      vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(a, flt_max, _CMP_NLE_UQ));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float absmax = 0.f;
    for (float l : lanes) absmax = std::fmax(absmax, l);
    bool nonfinite = _mm256_movemask_ps(vbad) != 0;
    for (int64_t k = kv; k < p.k; ++k) {
      const float a = std::fabs(x[k]);
      nonfinite |= !(a <= __FLT_MAX__);
      absmax = std::fmax(absmax, a);
    }
    const float scale = row_scale(absmax, nonfinite, p.qmax);
    if (nonfinite) {
      std::memset(p.q + m * p.ldq, 0, static_cast<size_t>(p.ldq));
      p.scale[m] = scale;
      if (p.rowsum) p.rowsum[m] = 0;
      continue;
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    int8_t* q = p.q + m * p.ldq;
    __m256i vsum = _mm256_setzero_si256();
    for (int64_t k = 0; k < kv; k += 8) {
      __m256i qi = _mm256_cvtps_epi32(_mm256_div_ps(_mm256_loadu_ps(x + k), vscale));
      qi = _mm256_min_epi32(_mm256_max_epi32(qi, qmin_i), qmax_i);
      vsum = _mm256_add_epi32(vsum, qi);
      // |qi| <= qmax <= 127: the saturating packs are plain narrowings here.
      const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(q16, q16));
    }
    alignas(32) int32_t sums[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(sums), vsum);
    int32_t sum = 0;
    for (int32_t s : sums) sum += s;
    const float qmax = static_cast<float>(p.qmax);
    for (int64_t k = kv; k < p.k; ++k) {
      const float r = std::fmin(std::fmax(std::nearbyint(x[k] / scale), -qmax), qmax);
      q[k] = static_cast<int8_t>(r);
      sum += q[k];
    }
    for (int64_t k = p.k; k < p.ldq; ++k) q[k] = 0;
    p.scale[m] = scale;
    if (p.rowsum) p.rowsum[m] = sum;
  }
}

int avx2_row_stats(const RowStatsArgs& p, int64_t m0, int64_t m1) {
  const __m256i bias = _mm256_set1_epi8(static_cast<char>(0x80));
  const int64_t kv = p.k / 32 * 32;
  __m256i widest = _mm256_setzero_si256();
  int tail_widest = 0;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* row = p.a + m * p.lda;
    // sad against 0 of a ^ 0x80 = a + 128 (unsigned): 8-byte sums, exact in 64 bits.
    __m256i sum = _mm256_setzero_si256();
    for (int64_t k = 0; k < kv; k += 32) {
      const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + k));
      widest = _mm256_max_epu8(widest, _mm256_abs_epi8(a));  // abs(-128): 0x80 = 128 unsigned
      sum = _mm256_add_epi64(sum, _mm256_sad_epu8(_mm256_xor_si256(a, bias), _mm256_setzero_si256()));
    }
    alignas(32) int64_t parts[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(parts), sum);
    int64_t total = parts[0] + parts[1] + parts[2] + parts[3] - 128 * kv;
    for (int64_t k = kv; k < p.k; ++k) {
      total += row[k];
      const int v = row[k] < 0 ? -row[k] : row[k];
      tail_widest = tail_widest > v ? tail_widest : v;
    }
    p.rowsum[m] = static_cast<int32_t>(total);
  }
  alignas(32) uint8_t lanes[32];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), widest);
  for (uint8_t l : lanes) tail_widest = tail_widest > l ? tail_widest : l;
  return tail_widest;
}

}  // namespace qkernels::cpu

#pragma GCC pop_options
