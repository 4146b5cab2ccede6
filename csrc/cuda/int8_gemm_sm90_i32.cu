#include "int8_gemm_sm90.cuh"
QK_DEFINE_INT8_GEMM_SM90(i32, int32_t)
