"""LoRA family: fake kernels (also the argument checks the Triton kernels run), the
autograd of lora_w8a8 / lora_w8a16 (which calls the lora_backward op) and the Python
kernel of lora_backward.

The base (wq, w_scale, bias) is frozen: x, a and b get gradients; asking for
w_scale's is an error, never a silent None (as for linear_w8a8)."""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

from qkernels._common import FLOAT_DTYPES, check, check_same_device, describe
from qkernels._library import lib
from qkernels.meta.int8_gemm import linear_fake

_ops = torch.ops.qkernels


def check_adapter(op: str, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, n: int) -> None:
    k = x.shape[-1]
    for name, t in (("a", a), ("b", b)):
        check(
            t.dtype in FLOAT_DTYPES,
            op,
            lambda name=name, t=t: (
                f"{name} must be float32, bfloat16 or float16, got {describe(t)}"
            ),
        )
    check(
        a.dim() == 2 and a.shape[0] >= 1 and a.shape[1] == k,
        op,
        lambda: f"a must be [r, K] with r >= 1 and K == x.shape[-1] (={k}), got {describe(a)}",
    )
    r = a.shape[0]
    check(
        b.dim() == 2 and tuple(b.shape) == (n, r),
        op,
        lambda: f"b must be [N, r] = [{n}, {r}] (N from w_scale, r from a), got {describe(b)}",
    )
    check_same_device(op, x, a=a, b=b)


def lora_fake(op: str, x, wq, w_scale, bias, a, b) -> torch.Tensor:
    out = linear_fake(op, x, wq, w_scale, bias)
    check_adapter(op, x, a, b, w_scale.numel())
    return out


@torch.library.register_fake("qkernels::lora_w8a8")
def lora_w8a8_fake(x, wq, w_scale, bias, a, b, scaling):
    return lora_fake("lora_w8a8", x, wq, w_scale, bias, a, b)


@torch.library.register_fake("qkernels::lora_w8a16")
def lora_w8a16_fake(x, wq, w_scale, bias, a, b, scaling):
    return lora_fake("lora_w8a16", x, wq, w_scale, bias, a, b)


@torch.library.register_fake("qkernels::lora_backward")
def lora_backward_fake(grad, x, wq, w_scale, a, b, scaling):
    op = "lora_backward"
    lora_fake(op, x, wq, w_scale, None, a, b)
    n = w_scale.numel()
    check(
        tuple(grad.shape) == (*x.shape[:-1], n) and grad.dtype in FLOAT_DTYPES,
        op,
        lambda: (
            f"grad must be float of shape {[*x.shape[:-1], n]} (the output's), got {describe(grad)}"
        ),
    )
    check_same_device(op, x, grad=grad)
    # dx in grad's dtype (the op's output dtype, so x's): x may be the bf16 copy that
    # the autograd keeps of a float32 input (`saved_input`)
    dx = torch.empty(x.shape, dtype=grad.dtype, device=x.device)
    return dx, torch.empty_like(a), torch.empty_like(b)


def dx_in_bf16() -> bool:
    """The CPU lora_backward's base GEMM runs in bf16 where linear_w8a16 does: on the
    AVX512-BF16 kernels (not when QKERNELS_CPU_ISA forces another ISA)."""
    from qkernels import _C

    return _C.cpu_kernel("linear_w8a16") == "avx512_bf16"


def lora_backward_by_matmuls(grad, x, wq, w_scale, a, b, scaling: float):
    """(dx, da, db) in BLAS GEMMs: with gb = grad @ b,
    dx = grad @ dequant(W) + scaling * gb @ a (the adapter's share accumulated into the
    base's result by addmm_), da = scaling * gb^T x, db = scaling * grad^T (x a^T).
    The base's share of dx (the one large GEMM) is (grad * w_scale) @ W: in float32, or in
    bf16 on AVX512-BF16 CPUs (`dx_in_bf16`; DESIGN.md, "LoRA on an int8 base")."""
    n, k = w_scale.numel(), x.shape[-1]
    if wq.dtype == torch.uint8:  # the CPU packed layout
        wq = _ops.unpack_weight.default(wq, n, k)
    g2d = grad.reshape(-1, n).float()
    gb, da, db = _adapter_grads(g2d, x, a, b, scaling)
    if grad.device.type == "cpu" and dx_in_bf16():
        # int8 W is exact in bf16; grad * scale rounds (2^-9), well under the int8 base's
        # own error; oneDNN's bf16 GEMM runs ~4.5x its fp32 one on such CPUs.
        gs = (g2d * w_scale.reshape(1, -1)).to(torch.bfloat16)
        dx = (gs @ wq.to(torch.bfloat16)).float()
    else:
        dx = g2d @ wq.float().mul_(w_scale.reshape(-1, 1))
    dx.addmm_(gb, a.float(), alpha=scaling)
    return dx.reshape(x.shape).to(grad.dtype), da, db


# Rows of a reduced-precision x converted to float32 at a time (~2 MB): the backward
# starts while every activation is still held, so a whole float32 copy of x (12.6 MB for
# BERT-base's FFN down at 1024 tokens) would add to the training step's peak.
_FLOAT_BLOCK = 1 << 19


def _adapter_grads(g2d, x, a, b, scaling: float):
    """(gb, da, db): gb = grad @ b [M, r], da = scaling * gb^T x, db = scaling * grad^T
    (x a^T), in float32, da / db in the adapter's dtypes."""
    k = x.shape[-1]
    x2d, af = x.reshape(-1, k), a.float()
    gb = g2d @ b.float()
    if x2d.dtype == torch.float32:
        da, t = gb.T @ x2d, x2d @ af.T
    else:
        da = torch.zeros(af.shape, device=x.device)
        t = torch.empty(x2d.shape[0], af.shape[0], device=x.device)
        step = max(1, _FLOAT_BLOCK // k)
        for i in range(0, x2d.shape[0], step):
            block = x2d[i : i + step].float()
            da.addmm_(gb[i : i + step].T, block)
            torch.mm(block, af.T, out=t[i : i + step])
    da.mul_(scaling)
    db = scaling * (g2d.T @ t)
    return gb, da.to(a.dtype), db.to(b.dtype)


def _lora_backward_kernel(grad, x, wq, w_scale, a, b, scaling):
    lora_backward_fake(grad, x, wq, w_scale, a, b, scaling)
    return lora_backward_by_matmuls(grad, x, wq, w_scale, a, b, scaling)


lib.impl("lora_backward", _lora_backward_kernel, "CPU")


def adapter_in_bf16(x: torch.Tensor) -> bool:
    """The forward's adapter reads x rounded to bf16: float32 x on a CPU whose LoRA
    kernels run the adapter in bf16 pairs (`dx_in_bf16`'s condition)."""
    return x.dtype == torch.float32 and x.device.type == "cpu" and dx_in_bf16()


# One bf16 copy per input, shared by the ops that read it (BERT's Q, K and V): keyed
# weakly on the input, so a copy lives while its input or a backward holding it does;
# the version guards against an in-place write between two of those ops (a write that
# bypasses it, through `.data`, escapes this check as it escapes autograd's own check of
# saved tensors).
_bf16_copies = WeakIdKeyDictionary()


def saved_input(x: torch.Tensor) -> torch.Tensor:
    """x as the backward keeps it: only da and db read it (dx needs none of x's values).
    Where the forward's adapter rounded x to bf16, the bf16 copy — half the bytes, and
    the very operand whose gradient da is — else x itself."""
    if not adapter_in_bf16(x):
        return x
    if x.is_inference():  # made under inference_mode: no version counter, no sharing
        return x.detach().to(torch.bfloat16)
    cached = _bf16_copies.get(x)
    if cached is not None and cached[0] == x._version:
        return cached[1]
    copy = x.detach().to(torch.bfloat16)
    _bf16_copies[x] = (x._version, copy)
    return copy


def _setup(ctx, inputs, output):
    x, wq, w_scale, bias, a, b, scaling = inputs
    ctx.save_for_backward(saved_input(x), wq, w_scale, a, b)
    ctx.scaling = scaling
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(op: str):
    def backward(ctx, grad):
        x, wq, w_scale, a, b = ctx.saved_tensors
        needs = ctx.needs_input_grad
        check(
            not needs[2],
            op,
            "w_scale gets no gradient (the int8 base is frozen); train the adapter (a, b), "
            "or detach the scale",
        )
        dx = da = db = None
        if needs[0]:
            dx, da, db = _ops.lora_backward.default(
                grad.contiguous(), x, wq, w_scale, a, b, ctx.scaling
            )
        elif needs[4] or needs[5]:
            # x needs no gradient (the first adapted layers after frozen embeddings): the
            # adapter's rank-r products only, not the [M, N] x [N, K] GEMM of dx
            g2d = grad.reshape(-1, w_scale.numel()).float()
            _, da, db = _adapter_grads(g2d, x, a, b, ctx.scaling)
        dbias = None
        if ctx.bias_dtype is not None and needs[3]:
            dbias = grad.reshape(-1, w_scale.numel()).float().sum(0).to(ctx.bias_dtype)
        return (
            dx if needs[0] else None,
            None,
            None,
            dbias,
            da if needs[4] else None,
            db if needs[5] else None,
            None,
        )

    return backward


for _op in ("lora_w8a8", "lora_w8a16"):
    torch.library.register_autograd(f"qkernels::{_op}", _backward(_op), setup_context=_setup)
