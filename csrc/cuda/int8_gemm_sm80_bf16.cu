#include "int8_gemm_sm80.cuh"
QK_DEFINE_INT8_GEMM_SM80(bf16, cutlass::bfloat16_t)
