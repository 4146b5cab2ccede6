"""Compile every Triton GEMM kernel for sm_80 and sm_90 with every configuration its
table offers, without a GPU (Triton's compiler and ptxas need no driver), and
report what the hardware would get: registers, spilled stack bytes, shared memory
against the arch's limit, the matrix instructions in the SASS (IGMMA / HGMMA:
Hopper warpgroup MMA; IMMA / HMMA: Ampere mma.sync) and how many global loads move
16 bytes per thread (LDG / LDGSTS .128).

    python tools/compile_check.py [--quick] [--json PATH]

Static evidence only — it says a configuration is legal and how heavy it is,
not how fast it runs. Run it without TRITON_INTERPRET.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ARCHS = {"sm_80": 80, "sm_90": 90}
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}  # per block, opt-in maximum
MMA_PREFIXES = ("IGMMA", "HGMMA", "IMMA", "HMMA")
# Size arguments specialized as multiples of 16, as real layers' are (M, tokens, is any).
ALIGNED_SIZES = ("n", "k", "r", "p", "q", "hidden", "numel", "seg_len")


@dataclass
class Variant:
    """One kernel specialization: its argument types and fixed constexprs."""

    name: str
    kernel: str  # attribute path in qkernels.triton
    signature: dict[str, str]
    constants: dict[str, object]
    configs: str  # config function in _configs
    config_args: tuple  # after arch


@dataclass
class Result:
    variant: str
    arch: str
    config: str
    ok: bool
    error: str = ""
    registers: int = 0
    stack_bytes: int = 0
    shared_bytes: int = 0
    shared_limit: int = 0
    mma: str = ""
    loads_16B: str = ""  # global load instructions moving 16 bytes per thread / all of them
    seconds: float = 0.0


def _gemm_sig(a: str, out: str, a_scale: bool, b_scale: bool, lora: bool = False) -> dict[str, str]:
    return {
        "a_ptr": a,
        "b_ptr": "*i8",
        "a_scale_ptr": "*fp32" if a_scale else "constexpr",
        "b_scale_ptr": "*fp32" if b_scale else "constexpr",
        "bias_ptr": "*bf16",
        "t_ptr": "*fp32" if lora else "constexpr",
        "bt_ptr": "*fp32" if lora else "constexpr",
        "out_ptr": out,
        "m": "i32",
        "n": "i32",
        "k": "i32",
        "r": "i32",
    }


NO_LORA = {"t_ptr": None, "bt_ptr": None, "HAS_LORA": False}


def variants() -> list[Variant]:
    from qkernels._common import ACTIVATIONS
    from qkernels.triton import _configs

    none = None
    out = []
    for bucket in (16, 64, 256, 1024, 1 << 30):
        out += [
            Variant(
                f"int_mm/M<={bucket}",
                "int8_gemm._int8_gemm_kernel",
                _gemm_sig("*i8", "*i32", False, False),
                {
                    "a_scale_ptr": none,
                    "b_scale_ptr": none,
                    "bias_ptr": none,
                    **NO_LORA,
                    "QUANTIZE_A": False,
                    "DEQUANT": False,
                    "HAS_BIAS": False,
                    "ACT": 0,
                    "GROUP_M": 8,
                },
                "int8_gemm_configs",
                (bucket,),
            ),
        ]
        for lora in (False, True):
            out.append(
                Variant(
                    f"{'lora' if lora else 'linear'}_w8a16 bf16/M<={bucket}",
                    "int8_gemm._w8a16_kernel",
                    {
                        "x_ptr": "*bf16",
                        "w_ptr": "*i8",
                        "w_scale_ptr": "*fp32",
                        "bias_ptr": "constexpr",
                        "t_ptr": "*fp32" if lora else "constexpr",
                        "bt_ptr": "*fp32" if lora else "constexpr",
                        "out_ptr": "*bf16",
                        "partial_ptr": "*fp32",
                        "m": "i32",
                        "n": "i32",
                        "k": "i32",
                        "r": "i32",
                    },
                    {
                        "bias_ptr": none,
                        **({"HAS_LORA": True} if lora else NO_LORA),
                        "HAS_BIAS": False,
                        "ACT": 0,
                        "UPCAST": False,
                    },
                    "w8a16_configs",
                    (bucket,),
                )
            )
        # linear_w8a8 (and int8_mm, linear_w8a8_act) after the separate quantize pass:
        # int8 x with its scales; the fused activations at the largest bucket
        for act in (0, 2, 3) if bucket == 1 << 30 else (0,):
            out.append(
                Variant(
                    f"linear_w8a8{f'_act {ACTIVATIONS[act]}' if act else ''} bf16 "
                    f"(separate pass)/M<={bucket}",
                    "int8_gemm._int8_gemm_kernel",
                    _gemm_sig("*i8", "*bf16", True, True),
                    {
                        **NO_LORA,
                        "QUANTIZE_A": False,
                        "DEQUANT": True,
                        "HAS_BIAS": True,
                        "ACT": act,
                        "GROUP_M": 8,
                    },
                    "int8_gemm_configs",
                    (bucket, act >= 2),
                )
            )
        # quantize on load: only where linear_w8a8 uses it (sm_80, small M)
        if _configs.w8a8_quantize_in_prologue("sm_80", bucket):
            for lora in (False, True):
                out.append(
                    Variant(
                        f"{'lora' if lora else 'linear'}_w8a8 bf16 (quantize on load)/M<={bucket}",
                        "int8_gemm._int8_gemm_kernel",
                        _gemm_sig("*bf16", "*bf16", False, True, lora),
                        {
                            "a_scale_ptr": none,
                            **({"HAS_LORA": True} if lora else NO_LORA),
                            "QUANTIZE_A": True,
                            "DEQUANT": True,
                            "HAS_BIAS": True,
                            "ACT": 0,
                            "GROUP_M": 8,
                        },
                        "int8_gemm_configs",
                        (bucket, False, 2),
                    )
                )
    for rank in (16, 64, 256):
        for bucket in (16, 1 << 30):
            out.append(
                Variant(
                    f"lowrank_mm bf16 r={rank}/M<={bucket}",
                    "lowrank._lowrank_kernel",
                    {
                        "x_ptr": "*bf16",
                        "a_ptr": "*bf16",
                        "b_ptr": "*bf16",
                        "bias_ptr": "constexpr",
                        "out_ptr": "*bf16",
                        "m": "i32",
                        "n": "i32",
                        "k": "i32",
                        "r": "i32",
                    },
                    {"bias_ptr": none, "HAS_BIAS": False, "UPCAST": False, "BLOCK_R": rank},
                    "lowrank_configs",
                    (bucket, rank),
                )
            )
        out.append(
            Variant(
                f"lowrank_mm_backward rows bf16 r={rank}",
                "lowrank._lowrank_backward_rows_kernel",
                {
                    "g_ptr": "*bf16",
                    "x_ptr": "*bf16",
                    "a_ptr": "*bf16",
                    "b_ptr": "*bf16",
                    "dx_ptr": "*bf16",
                    "t_ptr": "*bf16",
                    "dt_ptr": "*bf16",
                    "m": "i32",
                    "n": "i32",
                    "k": "i32",
                    "r": "i32",
                },
                {"UPCAST": False, "BLOCK_R": rank},
                "lowrank_backward_configs",
                (rank,),
            )
        )
    out += _fixed_block_variants()
    out.append(
        Variant(
            "lowrank_mm_backward reduce bf16",
            "lowrank._reduce_rows_kernel",
            {
                "p_ptr": "*bf16",
                "q_ptr": "*bf16",
                "c_ptr": "*fp32",
                "m": "i32",
                "p": "i32",
                "q": "i32",
            },
            {"UPCAST": False},
            "reduce_rows_configs",
            (),
        )
    )
    return out


def _fixed_block_variants() -> list[Variant]:
    """Kernels launched with fixed block sizes (no table): fake-quant and the LSTM step."""
    # importlib: qkernels.triton.fake_quant is also the name of a function there.
    fake_quant = importlib.import_module("qkernels.triton.fake_quant")
    lstm = importlib.import_module("qkernels.triton.lstm")

    sizes = {"numel": "i32", "seg_len": "i32", "n_params": "i32", "qmin": "fp32", "qmax": "fp32"}
    out = []
    for x in ("*fp32", "*bf16"):
        for along in (False, True):
            tag = f"{x[1:]} {'along the last dim' if along else 'per segment'}"
            block, rows = fake_quant.tile(along, lsq=False)
            consts = {"ALONG": along, "ROWS": rows, "BLOCK": block}
            block, rows = fake_quant.tile(along, lsq=True)
            lsq_consts = {"ALONG": along, "ROWS": rows, "BLOCK": block}
            out += [
                Variant(
                    f"fake_quant {tag}",
                    "fake_quant._forward_kernel",
                    {
                        "x_ptr": x,
                        "y_ptr": x,
                        "scale_ptr": "*fp32",
                        "inv_ptr": "*fp32",
                        "zp_ptr": "*fp32",
                        **sizes,
                    },
                    {"ZP_IN_ROUND": along, **consts},
                    "fixed",
                    (),
                ),
                Variant(
                    f"fake_quant_backward {tag}",
                    "fake_quant._backward_kernel",
                    {
                        "dy_ptr": x,
                        "x_ptr": x,
                        "dx_ptr": x,
                        "inv_ptr": "*fp32",
                        "zp_ptr": "*fp32",
                        **sizes,
                    },
                    {"ZP_IN_ROUND": False, **consts},
                    "fixed",
                    (),
                ),
                Variant(
                    f"fake_quant_lsq_backward {tag}",
                    "fake_quant._lsq_backward_kernel",
                    {
                        "dy_ptr": x,
                        "x_ptr": x,
                        "dx_ptr": x,
                        "dscale_ptr": "*fp32",
                        "dzp_ptr": "*fp32",
                        "scale_ptr": "*fp32",
                        "inv_ptr": "*fp32",
                        "zp_ptr": "*fp32",
                        **sizes,
                        "grad_factor": "fp32",
                    },
                    lsq_consts,
                    "fixed",
                    (),
                ),
            ]
    out.append(
        Variant(
            "lstm_w8a8 step",
            "lstm._lstm_step_kernel",
            {
                "h_prev_ptr": "*fp32",
                "w_hh_ptr": "*i8",
                "w_hh_scale_ptr": "*fp32",
                "gx_ptr": "*fp32",
                "c_ptr": "*fp32",
                "h_out_ptr": "*fp32",
                "rows": "i32",
                "hidden": "i32",
                "k": "i32",
            },
            {"BLOCK_B": lstm.BLOCK_M, "BLOCK_H": lstm.BLOCK_N, "BLOCK_K": lstm.BLOCK_K},
            "fixed",
            (),
        )
    )
    return out


def _configs_of(variant: Variant, arch: str) -> list:
    from triton import Config

    from qkernels.triton import _configs

    if variant.configs == "fixed":  # the launch's own constants, Triton's default warps
        return [Config({}, num_warps=4, num_stages=3)]
    return getattr(_configs, variant.configs)(arch, *variant.config_args)


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _opcodes(sass: str) -> list[str]:
    """Opcodes of cuobjdump -sass lines (`/*0040*/  @P0 LDG.E.128 R4, ... ;`)."""
    ops = []
    for line in sass.splitlines():
        if "/*" not in line or "*/" not in line:
            continue
        words = line.split("*/", 1)[1].split()
        if words and words[0].startswith("@"):  # predicate
            words = words[1:]
        if words:
            ops.append(words[0])
    return ops


def _resources(cubin: bytes) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", f.name], capture_output=True, text=True
        ).stdout
        sass = subprocess.run(
            [_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True
        ).stdout
    fields = dict(
        item.split(":", 1) for line in usage.splitlines() if "REG:" in line for item in line.split()
    )
    ops = _opcodes(sass)
    mma = collections.Counter(op.split(".")[0] for op in ops if op.startswith(MMA_PREFIXES))
    # Global loads: plain (LDG) or asynchronous into shared memory (LDGSTS, cp.async).
    loads = [op for op in ops if op.startswith("LDG") and op != "LDGDEPBAR"]
    return {
        "registers": int(fields.get("REG", 0)),
        "stack_bytes": int(fields.get("STACK", 0)),
        "static_shared": int(fields.get("SHARED", 0)),
        "mma": " ".join(f"{k}x{v}" for k, v in sorted(mma.items())),
        "loads_16B": f"{sum(op.endswith('.128') for op in loads)}/{len(loads)}",
    }


def ptx_of(name: str, arch: str = "sm_90") -> str:
    """The PTX of variant `name` in its first configuration for `arch`."""
    variant = next(v for v in variants() if v.name == name)
    return _compile(variant, arch, _configs_of(variant, arch)[0]).asm["ptx"]


def _compile(variant: Variant, arch: str, config):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    module, attr = variant.kernel.split(".")
    kernel = getattr(importlib.import_module(f"qkernels.triton.{module}"), attr)
    consts = {**variant.constants, **config.kwargs}
    signature = {**variant.signature, **{name: "constexpr" for name in consts}}
    # As the launcher specializes them at run time: tensors 16-byte aligned (torch's
    # allocations are), and the sizes real layers have, N and K multiples of 16.
    aligned = [
        (kernel.arg_names.index(name),)
        for name, ty in variant.signature.items()
        if ty.startswith("*") or name in ALIGNED_SIZES
    ]
    attrs = {index: [["tt.divisibility", 16]] for index in aligned}
    return compile(
        ASTSource(kernel, signature, consts, attrs),
        target=GPUTarget("cuda", ARCHS[arch], 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages},
    )


def compile_one(variant: Variant, arch: str, config_index: int) -> Result:
    config = _configs_of(variant, arch)[config_index]
    result = Result(variant.name, arch, str(config), ok=False, shared_limit=SHARED_LIMIT[arch])
    start = time.time()
    try:
        compiled = _compile(variant, arch, config)
        res = _resources(compiled.asm["cubin"])
        result.registers, result.stack_bytes = res["registers"], res["stack_bytes"]
        result.mma, result.loads_16B = res["mma"], res["loads_16B"]
        result.shared_bytes = compiled.metadata.shared + res["static_shared"]
        result.ok = result.shared_bytes <= result.shared_limit
        if not result.ok:
            result.error = "shared memory over the limit"
    except Exception as e:  # noqa: BLE001 - a failed compile is a result to report
        result.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    result.seconds = round(time.time() - start, 2)
    return result


def jobs(quick: bool) -> list[tuple[Variant, str, int]]:

    out = []
    for variant in variants():
        for arch in ARCHS:
            count = len(_configs_of(variant, arch))
            out += [(variant, arch, i) for i in range(1 if quick else count)]
    return out


def format_results(results: list[Result]) -> str:
    header = (
        f"{'kernel variant':<46} {'arch':<6} {'regs':>4} {'stack':>6} {'smem KB':>8} "
        f"{'mma':<12} {'16B loads':>9} config"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.ok:
            lines.append(
                f"{r.variant:<46} {r.arch:<6} {r.registers:>4} {r.stack_bytes:>6} "
                f"{r.shared_bytes / 1024:>8.1f} {r.mma:<12} {r.loads_16B:>9} "
                f"{r.config.split(', num_ctas')[0]}"
            )
        else:
            lines.append(f"{r.variant:<46} {r.arch:<6} FAILED {r.error}  ({r.config})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/compile_check.py", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="first configuration of each table only"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="", help="variants whose name contains this")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    from tqdm import tqdm

    todo = [job for job in jobs(args.quick) if args.only in job[0].name]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(
            tqdm(pool.map(compile_one, *zip(*todo, strict=True)), total=len(todo), desc="compile")
        )
    print(format_results(results))
    if args.json:
        import triton

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "triton": triton.__version__,
                    "date": time.strftime("%Y-%m-%d"),
                    "results": [asdict(r) for r in results],
                },
                indent=1,
            )
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
