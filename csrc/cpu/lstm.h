// CPU int8 LSTM layer (contract in DESIGN.md).
#pragma once

#include <optional>
#include <tuple>

#include <ATen/ATen.h>

namespace qkernels::cpu {

// int8 [4H, K] gate weight -> the gate-interleaved packed layout lstm_w8a8 reads.
at::Tensor pack_lstm_weight(const at::Tensor& w);

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_w8a8(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_ih_scale, const at::Tensor& w_hh, const at::Tensor& w_hh_scale,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh, bool reverse,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& w_hr_scale,
    const std::optional<at::Tensor>& batch_sizes);

}  // namespace qkernels::cpu
