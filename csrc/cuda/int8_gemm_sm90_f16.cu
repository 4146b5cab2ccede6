#include "int8_gemm_sm90.cuh"
QK_DEFINE_INT8_GEMM_SM90(f16, cutlass::half_t)
