#include "int8_gemm_sm90.cuh"
QK_DEFINE_INT8_GEMM_SM90(bf16, cutlass::bfloat16_t)
