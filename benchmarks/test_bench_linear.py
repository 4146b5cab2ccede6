"""pytest-benchmark suite: Linear layers, qkernels against peers, same process.

CI runs the small shape (QKERNELS_BENCH=ci, the default) so the suite cannot
rot; QKERNELS_BENCH=full runs the issue's grid. `qkernels bench` prints the
same comparison as a table with ratios and writes JSON.
"""

import os

import pytest
import torch

from qkernels.bench.linear import CI_SHAPES, FULL_SHAPES, default_impls

SHAPES = FULL_SHAPES if os.environ.get("QKERNELS_BENCH") == "full" else CI_SHAPES


@pytest.mark.parametrize("impl", default_impls(), ids=lambda i: i.name.replace(" ", "_"))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear(benchmark, impl, shape):
    m, k, n = shape
    module = impl.build(torch.nn.Linear(k, n))
    x = torch.randn(m, k, dtype=impl.x_dtype)
    benchmark.group = f"linear M={m} K={k} N={n}"
    with torch.no_grad():
        out = benchmark(module, x)
    assert out.shape == (m, n)
