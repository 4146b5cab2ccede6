"""LoRA family on CUDA. lora_w8a8 / lora_w8a16: the int8 GEMM / the w8a16 kernel of
qkernels.triton.int8_gemm with the adapter term added in its epilogue (t = scaling *
x a^T is one small cuBLAS GEMM; the tile then adds t[rows] @ b[cols]^T before the single
store; with split-K, the program that stores the finished sum adds it). lora_backward:
float32 cuBLAS GEMMs, base and adapter of dx in one (meta.lora.lora_backward_by_matmuls)
— no Triton kernel of its own yet."""

from __future__ import annotations

import torch

from qkernels.meta.lora import lora_backward_by_matmuls, lora_backward_fake, lora_fake
from qkernels.triton.int8_gemm import w8a8_gemm, w8a16_gemm


def _adapter_t(x: torch.Tensor, a: torch.Tensor, scaling: float) -> torch.Tensor:
    return (x.reshape(-1, x.shape[-1]).float() @ a.float().T).mul_(scaling)


def lora_w8a8(x, wq, w_scale, bias, a, b, scaling: float):
    lora_fake("lora_w8a8", x, wq, w_scale, bias, a, b)
    lora = (_adapter_t(x, a, scaling), b.float().T.contiguous())
    return w8a8_gemm(x, wq, w_scale, bias, lora=lora)


def lora_w8a16(x, wq, w_scale, bias, a, b, scaling: float):
    lora_fake("lora_w8a16", x, wq, w_scale, bias, a, b)
    lora = (_adapter_t(x, a, scaling), b.float().T.contiguous())
    return w8a16_gemm(x, wq, w_scale, bias, lora=lora)


def lora_backward(grad, x, wq, w_scale, a, b, scaling: float):
    lora_backward_fake(grad, x, wq, w_scale, a, b, scaling)
    return lora_backward_by_matmuls(grad, x, wq, w_scale, a, b, scaling)
