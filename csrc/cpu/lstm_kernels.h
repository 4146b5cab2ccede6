// The LSTM family's ISA kernels: the fused step's arguments, declarations and the
// kernel table read by the op and by `qkernels info`.
#pragma once

#include <cstdint>

#include "isa.h"
#include "int8_gemm_kernels.h"

namespace qkernels::cpu {

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

// LSTM step over rows [m0, m1) and hidden blocks [hb0, hb1): the VNNI GEMM and the
// gate epilogue per micro-tile.
void avx512_lstm_step_block(const LstmStepArgs& p, int64_t m0, int64_t m1, int64_t hb0,
                            int64_t hb1);
// Gates and cell update over the step's exact int32 GEMM result `acc` (any ISA's GEMM).
void scalar_lstm_epilogue(const LstmStepArgs& p, const int32_t* acc, int64_t m0, int64_t m1,
                          int64_t hb0, int64_t hb1);

// `fused_step` set: one fused GEMM + gates kernel per step; null: the ISA's int8 GEMM
// (int8_gemm_kernels) into an int32 buffer, then `epilogue`.
struct LstmKernels {
  const char* name;
  void (*fused_step)(const LstmStepArgs&, int64_t, int64_t, int64_t, int64_t);
  void (*epilogue)(const LstmStepArgs&, const int32_t*, int64_t, int64_t, int64_t, int64_t);
};

const LstmKernels& lstm_kernels(Isa isa);

}  // namespace qkernels::cpu
