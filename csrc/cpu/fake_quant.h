// CPU fake-quantization ops (contract in DESIGN.md).
#pragma once

#include <tuple>

#include <ATen/ATen.h>

namespace qkernels::cpu {

at::Tensor fake_quant(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point,
                      int64_t axis, int64_t qmin, int64_t qmax);
at::Tensor fake_quant_backward(const at::Tensor& grad, const at::Tensor& x,
                               const at::Tensor& scale, const at::Tensor& zero_point,
                               int64_t axis, int64_t qmin, int64_t qmax);
at::Tensor fake_quant_group(const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& zero_point, int64_t group_size, int64_t qmin,
                            int64_t qmax);
at::Tensor fake_quant_group_backward(const at::Tensor& grad, const at::Tensor& x,
                                     const at::Tensor& scale, const at::Tensor& zero_point,
                                     int64_t group_size, int64_t qmin, int64_t qmax);
at::Tensor fake_quant_lsq(const at::Tensor& x, const at::Tensor& scale,
                          const at::Tensor& zero_point, int64_t axis, int64_t qmin, int64_t qmax,
                          double grad_factor);
std::tuple<at::Tensor, at::Tensor, at::Tensor> fake_quant_lsq_backward(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& zero_point, int64_t axis, int64_t qmin, int64_t qmax, double grad_factor);

}  // namespace qkernels::cpu
