// CPU int8 GEMM family (contract in DESIGN.md).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/ATen.h>

namespace qkernels::cpu {

at::Tensor pack_int8_weight(const at::Tensor& w);
at::Tensor unpack_int8_weight(const at::Tensor& packed, int64_t n, int64_t k);
std::tuple<at::Tensor, at::Tensor> quantize_rowwise(const at::Tensor& x, int64_t bits);
at::Tensor int_mm(const at::Tensor& a, const at::Tensor& b);
at::Tensor int8_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& a_scale,
                   const at::Tensor& b_scale, const std::optional<at::Tensor>& bias,
                   std::optional<at::ScalarType> out_dtype);
at::Tensor linear_w8a8(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                       const std::optional<at::Tensor>& bias);
at::Tensor linear_w8a16(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                        const std::optional<at::Tensor>& bias);
// The same with an activation applied in the epilogue, in fp32 before the output rounding.
at::Tensor linear_w8a8_act(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                           const std::optional<at::Tensor>& bias, c10::string_view activation);
at::Tensor linear_w8a16_act(const at::Tensor& x, const at::Tensor& wq, const at::Tensor& w_scale,
                            const std::optional<at::Tensor>& bias, c10::string_view activation);

}  // namespace qkernels::cpu
