// Portable LSTM gate epilogue: sigmoid/tanh and the cell update over the step's
// exact int32 GEMM result (which any ISA's int8 GEMM computed).
#include <cmath>

#include "lstm_kernels.h"

namespace qkernels::cpu {

// `acc` is the step's exact int32 GEMM [rows, 4 * H16] (compensation applied).
void scalar_lstm_epilogue(const LstmStepArgs& p, const int32_t* acc, int64_t m0, int64_t m1,
                          int64_t hb0, int64_t hb1) {
  const Int8GemmArgs& q = p.gemm;
  auto sigmoid = [](float z) { return 1.f / (1.f + std::exp(-z)); };
  for (int64_t row = m0; row < m1; ++row) {
    for (int64_t u = hb0 * 16; u < hb1 * 16 && u < p.hidden; ++u) {
      float z[4];
      for (int gate = 0; gate < 4; ++gate) {
        const int64_t col = (u / 16) * 64 + gate * 16 + u % 16;  // acc: exact int32 GEMM
        z[gate] = static_cast<float>(acc[row * q.n + col]) * q.a_scale[row] * q.b_scale[col] +
                  p.gx[row * q.n + col];
      }
      float& c = p.c[row * p.ld_state + u];
      c = sigmoid(z[1]) * c + sigmoid(z[0]) * std::tanh(z[2]);
      p.h[row * p.ld_state + u] = sigmoid(z[3]) * std::tanh(c);
    }
  }
}

}  // namespace qkernels::cpu
