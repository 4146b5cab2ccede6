"""pytest-benchmark: fake-quant fwd+bwd (qkernels, torch, plain multiply) and a
QATLinear training step. Small shapes unless QKERNELS_BENCH=full."""

import os

import pytest
import torch

from qkernels.bench.qat import fake_quant_cases

SIZE = 4096 if os.environ.get("QKERNELS_BENCH") == "full" else 256
CASES = [
    (case, impl, fn, inputs)
    for case, impls in fake_quant_cases(SIZE, SIZE)
    for impl, (fn, inputs) in impls.items()
]


@pytest.mark.parametrize(
    "case,impl,fn,inputs", CASES, ids=[f"{c}-{i}".replace(" ", "_") for c, i, _, _ in CASES]
)
def test_fake_quant_fwd_bwd(benchmark, case, impl, fn, inputs):
    grad = torch.randn(SIZE, SIZE)
    benchmark.group = case
    grads = benchmark(lambda: torch.autograd.grad(fn(), inputs, grad))
    assert grads[0].shape == (SIZE, SIZE)


@pytest.mark.parametrize("act", ["dynamic", "lsq"])
def test_qat_linear_step(benchmark, act):
    from qkernels.nn import QATLinear

    module = QATLinear(SIZE // 4, SIZE // 4, act=act)
    x = torch.randn(SIZE // 2, SIZE // 4)
    benchmark.group = "QATLinear step"
    grads = benchmark(lambda: torch.autograd.grad(module(x).sum(), list(module.parameters())))
    assert grads[0].shape == module.weight.shape
