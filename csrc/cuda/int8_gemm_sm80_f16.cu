#include "int8_gemm_sm80.cuh"
QK_DEFINE_INT8_GEMM_SM80(f16, cutlass::half_t)
