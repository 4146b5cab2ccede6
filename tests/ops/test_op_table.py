"""The op table (qkernels/op_table.py) is the one list of ops: every registration, the
Triton exports, `qkernels info` and each family's files follow from it."""

import importlib
from pathlib import Path

import pytest
import torch
from backends import triton_ops, triton_runs
from torch._library.simple_registry import singleton as simple_registry

import qkernels
from qkernels import _C, cli, reference
from qkernels.op_table import FAMILIES, OPS, op

ROOT = Path(__file__).resolve().parents[2]
has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key


def test_cpp_kernels_are_exactly_the_table_cpp_ops():
    assert sorted(_C.cpu_ops()) == sorted(o.name for o in OPS if o.cpu == "cpp")


@pytest.mark.parametrize("o", OPS, ids=lambda o: o.name)
def test_registrations_follow_the_table(o):
    assert o.qualname in torch._C._dispatch_get_all_op_names()
    assert has_kernel(o.qualname, "CPU")
    assert has_kernel(o.qualname, "CUDA") == bool(o.cuda)
    entry = simple_registry.find(o.qualname)
    assert entry.fake_impl.kernel is not None, "no fake kernel"
    assert has_kernel(o.qualname, "Autograd") == o.grad
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    assert (FunctionalTensorMode in entry.torch_dispatch_rules._data) == o.traceable


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_has_its_file_in_every_layer(family):
    for path in (
        f"qkernels/meta/{family}.py",
        f"qkernels/reference/{family}.py",
        f"qkernels/triton/{family}.py",
        f"csrc/cpu/{family}.cpp",
        f"tests/ops/test_{family}.py",
    ):
        assert (ROOT / path).is_file(), path


@pytest.mark.parametrize("o", [o for o in OPS if o.cuda and not o.name.endswith("_backward")])
def test_every_computing_op_has_a_reference(o):
    family_ref = importlib.import_module(f"qkernels.reference.{o.family}")
    assert callable(getattr(family_ref, o.name)) and getattr(reference, o.name)


@pytest.mark.skipif(not triton_runs(), reason="needs the Triton interpreter or a GPU")
def test_triton_exports_are_the_table_triton_ops():
    assert sorted(triton_ops.__all__) == sorted(o.name for o in OPS if "triton" in o.cuda)
    for name in triton_ops.__all__:
        module = importlib.import_module(f"qkernels.triton.{op(name).family}")
        assert getattr(triton_ops, name) is getattr(module, name)


def test_info_reports_every_op_from_the_kernel_tables(monkeypatch):
    from conftest import available_isas

    text = cli.info()
    for o in OPS:
        assert f"\n{o.name} " in text
    w8a8 = {"avx512_vnni": "avx512_vnni", "avx2": "avx2", "scalar": "scalar"}
    fq = {"avx512_vnni": "avx512", "avx2": "scalar", "scalar": "scalar"}
    for isa in available_isas():
        monkeypatch.setenv("QKERNELS_CPU_ISA", isa)
        assert _C.cpu_kernel("linear_w8a8") == w8a8[isa]
        assert _C.cpu_kernel("fake_quant_lsq") == fq[isa]
        assert _C.cpu_kernel("lowrank_mm") == "blas"
        w8a16 = _C.cpu_kernel("linear_w8a16")
        assert w8a16 == (
            "avx512_bf16"
            if isa == "avx512_vnni" and "avx512_bf16" in _C.cpu_features()
            else "scalar"
            if isa == "scalar"
            else "avx2_fma"
        )
    with pytest.raises(ValueError, match=r"no C\+\+ CPU kernel for op 'lowrank_mm_backward'"):
        _C.cpu_kernel("lowrank_mm_backward")


def test_star_import_and_public_names():
    namespace: dict = {}
    exec("from qkernels import *", namespace)
    for name in qkernels.__all__:
        assert name in namespace
