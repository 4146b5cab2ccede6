"""The CUDA backend choice (set_backend / QKERNELS_BACKEND) and what torch.compile
sees of the CUDA ops; none of it needs a GPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qkernels
from qkernels import _backend

SCRIPT = Path(__file__).parent / "scripts" / "trace_cuda_graph.py"
TOOLS = Path(__file__).parents[1] / "tools"


@pytest.fixture(autouse=True)
def _fresh_choice(monkeypatch):
    monkeypatch.setattr(_backend, "_chosen", {})
    monkeypatch.delenv(_backend.ENV, raising=False)


def test_default_is_triton_and_env_and_set_backend_choose():
    assert {qkernels.get_backend(op) for op in _backend.CUDA_OPS} == {"triton"}
    qkernels.set_backend("triton", "int_mm")
    assert qkernels.get_backend("int_mm") == "triton"


def test_env_forms_parse(monkeypatch):
    monkeypatch.setenv(_backend.ENV, "triton")
    assert qkernels.get_backend("lowrank_mm") == "triton"
    monkeypatch.setenv(_backend.ENV, " int_mm = triton , linear_w8a16=triton ")
    assert qkernels.get_backend("linear_w8a16") == "triton"


@pytest.mark.parametrize(
    "value,message",
    [
        ("cutlass", r"QKERNELS_BACKEND='cutlass': backend must be one of triton, cuda"),
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
    with pytest.raises(ValueError, match=r"set_backend: no CUDA C\+\+ kernel for int_mm"):
        qkernels.set_backend("cuda", ["int_mm"])
    with pytest.raises(ValueError, match=r"set_backend: unknown op 'pack_weight'"):
        qkernels.set_backend("triton", "pack_weight")
    with pytest.raises(ValueError, match=r"get_backend: unknown op 'matmul'"):
        qkernels.get_backend("matmul")
    assert _backend._chosen == {}  # a rejected call changes nothing


def test_info_shows_the_backend(monkeypatch):
    from qkernels.cli import info

    text = info()
    assert "cuda backends: triton, cuda" in text
    assert any(
        line.startswith("linear_w8a16 ") and line.endswith("triton") for line in text.splitlines()
    )


def test_compile_sees_the_triton_kernels_on_cuda_and_the_op_on_cpu():
    """Functionalized fake-tensor tracing (AOTAutograd's view, what Inductor gets):
    on CUDA each op becomes its Triton launches; on CPU it stays one op."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    graphs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert graphs["cuda"] == {
        "linear_w8a8": {"kernels": ["_int8_gemm_kernel"], "ops": []},
        "linear_w8a16": {"kernels": ["_w8a16_kernel"], "ops": []},
        "lowrank_mm": {"kernels": ["_lowrank_kernel"], "ops": []},
        "lowrank_mm_backward": {
            "kernels": [
                "_lowrank_backward_rows_kernel",
                "_reduce_rows_kernel",
                "_reduce_rows_kernel",
            ],
            "ops": [],
        },
    }
    for op, contents in graphs["cpu"].items():
        assert contents == {"kernels": [], "ops": [f"qkernels.{op}.default"]}


def test_every_kernel_compiles_for_sm80_and_sm90(tmp_path):
    """Triton's compiler and ptxas need no GPU: every kernel (GEMMs with the first
    configuration of their table, fake-quant, the LSTM step) compiles for both archs,
    fits shared memory, spills nothing, and the GEMMs use the matrix instructions of
    their arch (warpgroup MMA on sm_90 for the large tiles)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "compile.json"
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "compile_check.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
