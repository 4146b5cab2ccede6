"""The op table: one declaration per qkernels op, from which everything else is derived.

The torch.library definitions (`_library`), the CUDA registrations and backend choice
(`_backend`), the Triton export list (`qkernels.triton`), `qkernels info`, the
registration check (`check_registrations`) and the op tests' parametrisation all read
this table. Adding an op = one entry here + its family's files, which share the family's
stem in every layer:

    qkernels/meta/<family>.py        fake (meta) kernels, autograd, Python CPU kernels
    qkernels/reference/<family>.py   the pure-PyTorch truth
    qkernels/triton/<family>.py      the Triton (CUDA) kernels
    csrc/cpu/<family>.cpp            the C++ CPU op (+ <family>_<isa>.cpp kernels)
    tests/ops/test_<family>.py       tests, parametrised by backend

Leaf module: imports nothing from qkernels.
"""

from __future__ import annotations

from dataclasses import dataclass

FAMILIES = ("int8_gemm", "fake_quant", "lowrank", "lora", "lstm")
# The CUDA backends: Triton, CUDA C++ (qkernels._C), a few torch calls (cuBLAS; only for
# ops where that was measured faster than their kernels: qkernels/torch_kernels.py).
BACKENDS = ("triton", "cuda", "torch")


@dataclass(frozen=True)
class OpDef:
    """One op. `cpu`: where its CPU kernel comes from, "cpp" (qkernels._C, registered by
    csrc/cpu/<family>.cpp) or "python" (torch ops, in qkernels/meta/<family>.py).
    `cuda`: the CUDA backends that implement it (empty: a CPU-only op, such as a CPU
    weight layout). `traceable`: torch.compile decomposes it into its Triton launches
    (else it stays one opaque op in the graph). `grad`: an autograd formula is registered."""

    name: str
    family: str
    schema: str  # arguments and returns, without the name
    cpu: str = "cpp"
    cuda: tuple[str, ...] = ("triton",)
    traceable: bool = False
    grad: bool = False

    @property
    def qualname(self) -> str:
        return f"qkernels::{self.name}"


_LINEAR_ARGS = "(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias=None) -> Tensor"
_LINEAR_ACT_ARGS = "(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias, str activation) -> Tensor"
_LORA_ARGS = (
    "(Tensor x, Tensor wq, Tensor w_scale, Tensor? bias, Tensor a, Tensor b, float scaling) "
    "-> Tensor"
)
_BOTH = ("triton", "cuda")  # a Triton kernel and a CUDA C++ one (csrc/cuda)
_TRITON_TORCH = ("triton", "torch")  # a Triton kernel and a torch composition
_FQ_CHANNEL = "Tensor scale, Tensor zero_point, int axis, int qmin, int qmax"
_FQ_GROUP = "Tensor scale, Tensor zero_point, int group_size, int qmin, int qmax"

OPS: tuple[OpDef, ...] = (
    # int8 GEMM family
    OpDef("pack_weight", "int8_gemm", "(Tensor wq) -> Tensor", cuda=()),
    OpDef("unpack_weight", "int8_gemm", "(Tensor packed, int n, int k) -> Tensor", cuda=()),
    OpDef(
        "quantize_rowwise",
        "int8_gemm",
        "(Tensor x, int bits=8) -> (Tensor, Tensor)",
        cuda=_BOTH,
        traceable=True,
    ),
    # LayerNorm / RMSNorm + the per-token quantization above, feeding int8_mm directly
    OpDef(
        "norm_quantize",
        "int8_gemm",
        "(Tensor x, Tensor? weight, Tensor? bias, float eps, bool rms=False, int bits=8) "
        "-> (Tensor, Tensor, Tensor)",
        cuda=(),
    ),
    OpDef("int_mm", "int8_gemm", "(Tensor a, Tensor b) -> Tensor", cuda=_BOTH, traceable=True),
    OpDef(
        "int8_mm",
        "int8_gemm",
        "(Tensor a, Tensor b, Tensor a_scale, Tensor b_scale, Tensor? bias=None, "
        "ScalarType? out_dtype=None) -> Tensor",
        cuda=_BOTH,
        traceable=True,
    ),
    # grad: for x (dequantized-weight GEMM) and bias; the int8 weight is frozen
    OpDef("linear_w8a8", "int8_gemm", _LINEAR_ARGS, cuda=_BOTH, traceable=True, grad=True),
    OpDef("linear_w8a16", "int8_gemm", _LINEAR_ARGS, cuda=_BOTH, traceable=True, grad=True),
    # the same with an activation (qkernels._common.ACTIVATIONS) fused into the epilogue
    OpDef("linear_w8a8_act", "int8_gemm", _LINEAR_ACT_ARGS, traceable=True, grad=True),
    OpDef("linear_w8a16_act", "int8_gemm", _LINEAR_ACT_ARGS, traceable=True, grad=True),
    # fake-quant family: elementwise, one opaque op each under torch.compile
    OpDef(
        "fake_quant", "fake_quant", f"(Tensor x, {_FQ_CHANNEL}) -> Tensor", grad=True, cuda=_BOTH
    ),
    OpDef(
        "fake_quant_backward",
        "fake_quant",
        f"(Tensor grad, Tensor x, {_FQ_CHANNEL}) -> Tensor",
        cuda=_BOTH,
    ),
    OpDef(
        "fake_quant_group",
        "fake_quant",
        f"(Tensor x, {_FQ_GROUP}) -> Tensor",
        grad=True,
        cuda=_BOTH,
    ),
    OpDef(
        "fake_quant_group_backward",
        "fake_quant",
        f"(Tensor grad, Tensor x, {_FQ_GROUP}) -> Tensor",
        cuda=_BOTH,
    ),
    OpDef(
        "fake_quant_lsq",
        "fake_quant",
        f"(Tensor x, {_FQ_CHANNEL}, float grad_factor) -> Tensor",
        cuda=_BOTH,
        grad=True,
    ),
    OpDef(
        "fake_quant_lsq_backward",
        "fake_quant",
        f"(Tensor grad, Tensor x, {_FQ_CHANNEL}, float grad_factor) -> (Tensor, Tensor, Tensor)",
        cuda=_BOTH,
    ),
    # low-rank family
    OpDef(
        "lowrank_mm",
        "lowrank",
        "(Tensor x, Tensor a, Tensor b, Tensor? bias=None) -> Tensor",
        cuda=_TRITON_TORCH,
        traceable=True,
        grad=True,
    ),
    OpDef(
        "lowrank_mm_backward",
        "lowrank",
        "(Tensor grad, Tensor x, Tensor a, Tensor b) -> (Tensor, Tensor, Tensor)",
        cpu="python",
        cuda=_TRITON_TORCH,
        traceable=True,
    ),
    # LoRA family: a frozen int8 base plus a trainable low-rank adapter
    OpDef("lora_w8a8", "lora", _LORA_ARGS, traceable=True, grad=True),
    OpDef("lora_w8a16", "lora", _LORA_ARGS, traceable=True, grad=True),
    OpDef(
        "lora_backward",
        "lora",
        "(Tensor grad, Tensor x, Tensor wq, Tensor w_scale, Tensor a, Tensor b, float scaling) "
        "-> (Tensor, Tensor, Tensor)",
        cpu="python",
    ),
    # LSTM family: the per-step launch loop stays one opaque op
    OpDef("pack_lstm_weight", "lstm", "(Tensor w) -> Tensor", cuda=()),
    OpDef(
        "lstm_w8a8",
        "lstm",
        "(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_ih_scale, Tensor w_hh, "
        "Tensor w_hh_scale, Tensor? b_ih, Tensor? b_hh, bool reverse, Tensor? w_hr=None, "
        "Tensor? w_hr_scale=None, Tensor? batch_sizes=None) -> (Tensor, Tensor, Tensor)",
    ),
)

BY_NAME: dict[str, OpDef] = {op.name: op for op in OPS}


def op(name: str) -> OpDef:
    """The table entry of `name`; a KeyError listing the known ops otherwise."""
    if name not in BY_NAME:
        raise KeyError(f"qkernels: unknown op {name!r}; ops: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def ops_of(family: str) -> tuple[OpDef, ...]:
    return tuple(o for o in OPS if o.family == family)


def cuda_ops() -> tuple[str, ...]:
    """Every op with a CUDA kernel."""
    return tuple(o.name for o in OPS if o.cuda)


def _check_table() -> None:
    for o in OPS:
        assert o.family in FAMILIES, f"{o.name}: unknown family {o.family!r}"
        assert o.cpu in ("cpp", "python"), f"{o.name}: cpu must be 'cpp' or 'python'"
        assert set(o.cuda) <= set(BACKENDS), f"{o.name}: unknown CUDA backend in {o.cuda}"
        assert not o.traceable or "triton" in o.cuda, f"{o.name}: traceable needs a Triton kernel"
    assert len(BY_NAME) == len(OPS), "duplicate op names in the table"


_check_table()
