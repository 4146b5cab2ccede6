// Plain-old-data arguments shared by the ISA-specific kernel files.
//
// Trap: the ISA files are compiled with `#pragma GCC target(...)` so that one
// binary carries AVX-512, AVX2 and scalar code. They must not include torch or
// STL headers: an inline template instantiated there with AVX-512 enabled can
// be merged by the linker with the generic copy and then crash an older CPU.
// So kernels see raw pointers only; allocation and threading live in the
// generic translation units.
#pragma once

#include <cstdint>

namespace qkernels::cpu {

// Packed int8 weight layout (see DESIGN.md, "CPU packed weights"):
// columns are grouped by 16; group g holds [K4][16][4] bytes, i.e. for every
// 4-deep slice of K the 4 consecutive k of each of the 16 columns. Bytes are
// stored as w + 128 (w ^ 0x80) so they can be the unsigned operand of
// vpdpbusd; padding columns and padding k are stored as 128 (w = 0).
constexpr int64_t kGroupCols = 16;
constexpr int64_t kKStep = 4;
constexpr int64_t kGroupBytesPerK4 = kGroupCols * kKStep;  // 64

enum class OutKind : int { kInt32 = 0, kFloat32 = 1, kBFloat16 = 2, kFloat16 = 3 };
enum class InKind : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// C[m, n] = sum_k a[m, k] * w[n, k], with a signed int8 and w packed.
// The kernel computes sum_k a * (w + 128) and subtracts 128 * a_rowsum[m].
struct Int8GemmArgs {
  const int8_t* a;          // [M, lda], zero beyond K
  int64_t lda;
  const int32_t* a_rowsum;  // [M]
  const uint8_t* b;         // packed weight
  int64_t k4;               // padded K / 4
  int64_t n;                // real N (stores are masked beyond it)
  const float* a_scale;     // [M]; unused for int32 output
  const float* b_scale;     // [N]; unused for int32 output
  const float* bias;        // [N] or nullptr
  void* out;                // [M, ldo] of out_kind
  int64_t ldo;
  OutKind out_kind;
};

// out[m, n] = (sum_k x[m, k] * w[n, k]) * b_scale[n] + bias[n]
struct W8A16Args {
  const void* x;            // [M, ldx] activations, zero beyond K
  int64_t ldx;
  InKind x_kind;            // bf16 for the AVX512-BF16 kernel, fp32 otherwise
  const uint8_t* b;         // packed weight
  int64_t k4;
  int64_t n;
  const float* b_scale;
  const float* bias;
  void* out;
  int64_t ldo;
  OutKind out_kind;
};

// Symmetric per-row quantization: scale = absmax / qmax (1 for an all-zero
// row), q = clamp(round_half_even(x / scale), -qmax, qmax).
struct QuantizeArgs {
  const void* x;            // [M, ldx]
  int64_t ldx;
  InKind x_kind;
  int64_t k;
  int qmax;
  int8_t* q;                // [M, ldq], zero-filled in [k, ldq)
  int64_t ldq;
  float* scale;             // [M]
  int32_t* rowsum;          // [M] sum of q, or nullptr
};

// Elementwise affine fake-quantization over "segments" of contiguous
// elements. Per-segment mode: segment s uses params[s % n_params] (per tensor:
// n_params = 1; per channel with inner stride > 1; per group). Channel-last
// mode (`params_along_segment`): element j of every segment uses params[j].
//   r = round(x * inv_scale) + zp          (integer zero point, torch's formula)
//   r = round(zp + x * inv_scale)          (`zp_in_rounding`: float zero point)
//   y = (clamp(r, qmin, qmax) - zp) * scale, gradient passes where qmin <= r <= qmax.
struct FakeQuantArgs {
  const void* x;
  InKind kind;              // of x, dy and out
  const void* dy;           // backward only
  void* out;                // y (forward) or dx (backward)
  int64_t numel;
  int64_t seg_len;
  int64_t n_params;
  bool params_along_segment;
  const float* scale;
  const float* inv_scale;   // 1.0f / scale, computed once as torch does
  const float* zero_point;  // integer-valued unless zp_in_rounding
  bool zp_in_rounding;
  float qmin, qmax;
  // Learned step size backward: d(scale), d(zero_point) summed per param into
  // these float64 accumulators (one set per thread).
  float grad_factor;
  double* dscale;
  double* dzero_point;
};

// One LSTM time step, fused: gates = int8 GEMM(h_prev, w_hh) dequantized +
// gx (input projection with both biases), then sigmoid/tanh and the cell
// update. Weights and gx use the gate-interleaved order: hidden block hb (16
// units) owns columns [hb*64, hb*64 + 64) as gates i, f, g, o of 16 each, so
// one 64-wide micro-tile holds all four gates of its 16 units.
struct LstmStepArgs {
  Int8GemmArgs gemm;        // a = quantized h_prev, b = packed interleaved w_hh, n = 4 * H16;
                            // out / out_kind unused
  const float* gx;          // [B, 4 * H16] this step's input projection (+ b_ih + b_hh)
  float* c;                 // [B, H16] cell state, updated in place
  float* h;                 // [B, H16] new hidden (pre-projection) state, fp32
  int64_t hidden;           // real H (stores beyond it are masked)
  int64_t ld_state;         // H16
};

// Kernels per ISA. Rows [m0, m1), column groups [g0, g1).
void scalar_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);
void avx2_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                          int64_t g1);
void avx512_int8_gemm_block(const Int8GemmArgs& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);

void scalar_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
void avx2_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0, int64_t g1);
// x must be bf16 here.
void avx512bf16_w8a16_block(const W8A16Args& p, int64_t m0, int64_t m1, int64_t g0,
                            int64_t g1);

void scalar_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);

// Segments [s0, s1). Forward writes y, backward dx, lsq_backward dx + sums.
void scalar_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void scalar_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void scalar_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx512_fake_quant_forward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx512_fake_quant_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx512_lsq_backward(const FakeQuantArgs& p, int64_t s0, int64_t s1);
void avx2_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);
void avx512_quantize_rows(const QuantizeArgs& p, int64_t m0, int64_t m1);

// LSTM step over rows [m0, m1) and hidden blocks [hb0, hb1). The AVX-512 one
// runs the VNNI GEMM and the gate epilogue per micro-tile; the scalar
// epilogue takes the step's int32 GEMM result (any ISA computed it).
void avx512_lstm_step_block(const LstmStepArgs& p, int64_t m0, int64_t m1, int64_t hb0,
                            int64_t hb1);
void scalar_lstm_epilogue(const LstmStepArgs& p, const int32_t* acc, int64_t m0, int64_t m1,
                          int64_t hb0, int64_t hb1);

}  // namespace qkernels::cpu
