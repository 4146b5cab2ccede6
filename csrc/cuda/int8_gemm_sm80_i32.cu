#include "int8_gemm_sm80.cuh"
QK_DEFINE_INT8_GEMM_SM80(i32, int32_t)
