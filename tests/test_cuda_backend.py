"""The CUDA backend choice (set_backend / QKERNELS_BACKEND) and what torch.compile
sees of the CUDA ops; none of it needs a GPU."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qkernels
from qkernels import _backend, cuda_kernels

SCRIPT = Path(__file__).parent / "scripts" / "trace_cuda_graph.py"
TOOLS = Path(__file__).parents[1] / "tools"


def compiled_run(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python *args` with Triton compiling for real (no interpreter: the kernels are
    compiled for a GPU target, which needs no GPU); fails the test on a non-zero exit."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch):
    monkeypatch.setattr(_backend, "_chosen", {})
    monkeypatch.delenv(_backend.ENV, raising=False)


def test_default_is_auto_and_env_and_set_backend_choose():
    assert {qkernels.get_backend(op) for op in _backend.CUDA_OPS} == {"auto"}
    qkernels.set_backend("triton", "int_mm")
    assert qkernels.get_backend("int_mm") == "triton"


def test_env_forms_parse(monkeypatch):
    monkeypatch.setenv(_backend.ENV, "triton")
    assert qkernels.get_backend("lowrank_mm") == "triton"
    monkeypatch.setenv(_backend.ENV, " int_mm = triton , linear_w8a16=auto ")
    assert qkernels.get_backend("linear_w8a16") == "auto"
    assert qkernels.get_backend("int_mm") == "triton"


@pytest.mark.parametrize(
    "value,message",
    [
        (
            "cutlass",
            r"QKERNELS_BACKEND='cutlass': backend must be one of auto, triton, cuda, torch",
        ),
        ("int_mm=triton,nope=triton", r"unknown op 'nope'"),
        ("int_mm", r"backend must be one of"),
        ("int_mm=triton;linear_w8a8", r"backend must be one of"),
    ],
)
def test_bad_env_is_a_clear_error(monkeypatch, value, message):
    monkeypatch.setenv(_backend.ENV, value)
    with pytest.raises(ValueError, match=message):
        qkernels.get_backend("int_mm")


def test_set_backend_rejects_what_is_not_built():
    # lowrank_mm has no CUDA C++ kernel in any build
    with pytest.raises(ValueError, match=r"set_backend: no CUDA C\+\+ kernel for lowrank_mm"):
        qkernels.set_backend("cuda", ["lowrank_mm"])
    with pytest.raises(ValueError, match=r"set_backend: unknown op 'pack_weight'"):
        qkernels.set_backend("triton", "pack_weight")
    with pytest.raises(ValueError, match=r"get_backend: unknown op 'matmul'"):
        qkernels.get_backend("matmul")
    assert _backend._chosen == {}  # a rejected call changes nothing
    built = set(_backend.cuda_cpp_ops())
    if "int_mm" in built:
        qkernels.set_backend("cuda", "int_mm")
        assert qkernels.get_backend("int_mm") == "cuda"
    else:
        with pytest.raises(ValueError, match=r"no CUDA C\+\+ kernel for int_mm"):
            qkernels.set_backend("cuda", "int_mm")


def test_auto_picks_what_the_h200_measured_fastest(monkeypatch):
    built = ("quantize_rowwise", "int_mm", "linear_w8a16")
    monkeypatch.setattr(cuda_kernels, "built_ops", lambda: built)
    assert _backend.auto_backend("int_mm", (9, 0)) == "cuda"
    assert _backend.auto_backend("int_mm", (8, 6)) == "cuda"  # the sm_80 cubins run on 8.x
    assert _backend.auto_backend("int_mm", (10, 0)) == "triton"  # no sm_100 GEMM built
    assert _backend.auto_backend("int_mm", None) == "triton"  # tracing without a GPU
    assert _backend.auto_backend("quantize_rowwise", (8, 0)) == "cuda"
    assert _backend.auto_backend("quantize_rowwise", (10, 0)) == "triton"  # no sm_100 cubin
    # cuBLAS's two matmuls beat the fused low-rank kernels on Hopper; sm_80 unmeasured
    assert _backend.auto_backend("lowrank_mm", (9, 0)) == "torch"
    assert _backend.auto_backend("lowrank_mm_backward", (10, 0)) == "torch"
    assert _backend.auto_backend("lowrank_mm", (8, 0)) == "triton"
    assert _backend.auto_backend("lowrank_mm", None) == "triton"
    # linear_w8a16: the C++ decode kernel at one row, Triton from 2 to 1024, C++ above
    picks = {m: _backend.auto_backend("linear_w8a16", (9, 0), m) for m in (1, 2, 1024, 1025)}
    assert picks == {1: "cuda", 2: "triton", 1024: "triton", 1025: "cuda"}
    assert _backend.auto_backend("linear_w8a16", (9, 0)) == "cuda"  # rows unknown
    assert _backend.auto_backend("linear_w8a16", (10, 0), 1) == "triton"  # no sm_100 cubin


def test_torch_backend_only_for_ops_with_a_composition():
    qkernels.set_backend("torch", ["lowrank_mm", "lowrank_mm_backward"])
    assert qkernels.get_backend("lowrank_mm") == "torch"
    with pytest.raises(ValueError, match=r"set_backend: no torch composition for int_mm"):
        qkernels.set_backend("torch", "int_mm")


def test_torch_compositions_match_the_reference_and_autograd():
    from qkernels import reference, torch_kernels

    x = torch.randn(3, 7, 64, dtype=torch.float64).transpose(0, 1)  # non-contiguous
    a, b = torch.randn(8, 64, dtype=torch.float64), torch.randn(48, 8, dtype=torch.float64)
    bias, g = torch.randn(48, dtype=torch.float64), torch.randn(7, 3, 48, dtype=torch.float64)
    y = torch_kernels.lowrank_mm(x, a, b, bias)
    assert torch.equal(y, reference.lowrank_mm(x, a, b, bias))
    xr, ar, br = (t.clone().requires_grad_() for t in (x, a, b))
    reference.lowrank_mm(xr, ar, br).backward(g)
    for got, want in zip(torch_kernels.lowrank_mm_backward(g, x, a, b), (xr, ar, br), strict=True):
        torch.testing.assert_close(got, want.grad)
    with pytest.raises(ValueError, match=r"qkernels.lowrank_mm: a must be \[rank, K\]"):
        torch_kernels.lowrank_mm(x, a[:, :32], b)


KERNELS = frozenset({"sm80:bfloat16", "sm90:bfloat16", "sm90:int32"})


@pytest.mark.parametrize(
    "n,k,dtype,cap,why",
    [
        (4096, 4096, torch.bfloat16, (9, 0), None),
        (4096, 4096, torch.bfloat16, (8, 9), None),
        (16, 16, torch.int32, (9, 0), None),
        (4096, 4100, torch.bfloat16, (9, 0), "K=4100 and N=4096 must be positive multiples"),
        (4105, 4096, torch.bfloat16, (9, 0), "N=4105 must be positive multiples of 16"),
        (64, 0, torch.bfloat16, (9, 0), "positive multiples"),
        (64, 2**17, torch.bfloat16, (9, 0), "int32 sums could overflow"),
        (64, 64, torch.bfloat16, (12, 0), "no CUDA C\\+\\+ GEMM for sm_120"),
        (64, 64, torch.float32, (9, 0), "no sm90 GEMM with float32 output"),
        (64, 64, torch.int32, (8, 0), "no sm80 GEMM with int32 output"),
    ],
)
def test_which_problems_the_cutlass_gemms_take(n, k, dtype, cap, why):
    """The rule in DESIGN.md ("CUDA C++ backend"): everything else runs on Triton."""
    reason = cuda_kernels.gemm_route(n, k, dtype, cap, KERNELS)
    if why is None:
        assert reason is None
    else:
        assert reason is not None and re.search(why, reason), reason


def test_info_shows_the_backend(monkeypatch):
    from qkernels.cli import info

    text = info()
    assert "cuda backends: auto, triton, cuda, torch" in text
    line = next(line for line in text.splitlines() if line.startswith("linear_w8a16 "))
    if torch.cuda.is_available():  # what auto resolves to, per rows of x
        assert "auto -> " in line, line
    else:
        assert line.split()[-1] == "auto", line


def test_compile_sees_the_triton_kernels_on_cuda_and_the_op_on_cpu():
    """Functionalized fake-tensor tracing (AOTAutograd's view, what Inductor gets):
    on CUDA each op becomes its Triton launches; on CPU it stays one op."""
    proc = compiled_run(str(SCRIPT), timeout=300)
    graphs = json.loads(proc.stdout.strip().splitlines()[-1])
    w8a8 = ["_int8_gemm_kernel"]  # without a GPU, and on sm_80 at 5 rows: quantize on load
    if not graphs["w8a8 quantizes on load"]:  # a separate pass first (sm_90)
        w8a8.insert(0, "_quantize_rows_kernel")
    assert graphs["cuda"] == {
        "linear_w8a8": {"kernels": w8a8, "ops": [], "matmuls": 0},
        "linear_w8a16": {"kernels": ["_w8a16_kernel"], "ops": [], "matmuls": 0},
        "lowrank_mm": {"kernels": ["_lowrank_kernel"], "ops": [], "matmuls": 0},
        "lowrank_mm_backward": {
            "kernels": [
                "_lowrank_backward_rows_kernel",
                "_reduce_rows_kernel",
                "_reduce_rows_kernel",
            ],
            "ops": [],
            "matmuls": 0,
        },
    }
    for op, contents in graphs["cpu"].items():
        assert contents == {"kernels": [], "ops": [f"qkernels.{op}.default"], "matmuls": 0}
    # the torch backend: Inductor gets the matmuls themselves
    assert graphs["cuda, torch backend"] == {
        "lowrank_mm": {"kernels": [], "ops": [], "matmuls": 2},
        "lowrank_mm_backward": {"kernels": [], "ops": [], "matmuls": 5},
    }


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    """Triton's compiler and ptxas need no GPU: every kernel (GEMMs with the first
    configuration of their table, fake-quant, the LSTM step) compiles for both archs,
    fits shared memory, spills nothing, and the GEMMs use the matrix instructions of
    their arch (warpgroup MMA on sm_90 for the large tiles)."""
    out = tmp_path / "compile.json"
    compiled_run(str(TOOLS / "compile_check.py"), "--quick", "--json", str(out), timeout=900)
    results = json.loads(out.read_text())["results"]
    assert len(results) == 2 * len({r["variant"] for r in results})
    for r in results:
        assert r["ok"] and r["stack_bytes"] == 0, r
        if not r["variant"].startswith("fake_quant"):  # elementwise: no matrix product
            assert r["mma"], r  # every GEMM kernel runs on the tensor cores
    hopper = [
        r for r in results if r["arch"] == "sm_90" and r["variant"].startswith("int_mm/M<=1024")
    ]
    assert hopper and "IGMMA" in hopper[0]["mma"]


def test_float_epilogues_are_not_fused_into_fmas():
    """On a GPU Triton compiles with FP fusion on: `acc * scale + bias` became one FMA
    (one rounding) where the reference and the C++ kernels round the product and the
    sum apart, so the H200 run found linear_w8a8 off by an ulp of bf16 here and there.
    The dequant epilogues (and fake-quant's float zero point) multiply through
    `mul_rn`, an explicitly rounded PTX multiply that is never fused (the interpreter
    cannot show this: numpy never fuses)."""
    variants = (
        "linear_w8a8 bf16 (quantize on load)/M<=16",
        "linear_w8a8 bf16 (separate pass)/M<=1024",
        "linear_w8a16 bf16/M<=64",
        "fake_quant fp32 along the last dim",
    )
    code = (
        f"import sys; sys.path.insert(0, {str(TOOLS)!r}); from compile_check import ptx_of\n"
        f"for name in {variants!r}:\n"
        "    ptx = ptx_of(name)\n"
        "    print(name, '|', ptx.count('mul.rn.f32'), ptx.count('fma.rn.f32'))\n"
    )
    proc = compiled_run("-c", code, timeout=600)
    counts = dict(line.split(" | ") for line in proc.stdout.splitlines())
    assert set(counts) == set(variants), proc.stdout
    for name, (muls, fmas) in ((k, map(int, v.split())) for k, v in counts.items()):
        assert muls > 0 and fmas == 0, (name, muls, fmas)


def test_quantize_kernel_compiles_with_a_float64_qmax():
    """torch.compile (Inductor) passes a wrapped Triton kernel's Python float arguments
    as fp64 where Triton's own launcher passes fp32; the H200 run found the per-token
    quantize kernel failing to compile that way (div_rn takes fp32 only)."""
    code = (
        "from triton.backends.compiler import GPUTarget\n"
        "from triton.compiler import ASTSource, compile\n"
        "from qkernels.triton.int8_gemm import _quantize_rows_kernel as kernel\n"
        "for qmax in ('fp32', 'fp64'):\n"
        "    sig = {'x_ptr': '*bf16', 'q_ptr': '*i8', 's_ptr': '*fp32', 'm': 'i32', 'k': 'i32',\n"
        "           'qmax': qmax, 'BLOCK_M': 'constexpr', 'BLOCK_K': 'constexpr'}\n"
        "    src = ASTSource(kernel, sig, {'BLOCK_M': 4, 'BLOCK_K': 1024})\n"
        "    compile(src, target=GPUTarget('cuda', 90, 32))\n"
        "    print(qmax, 'ok')\n"
    )
    proc = compiled_run("-c", code, timeout=300)
    assert proc.stdout.split() == ["fp32", "ok", "fp64", "ok"]
