"""Checks a CUDA build of qkernels._C without a GPU (`make cuda-check`): it imports on a
CPU-only machine with its CUDA C++ ops listed, and its device code is what we meant:

  - the int8 GEMMs run on tensor cores: IMMA instructions in the sm_80 cubin, int8
    WGMMA (IGMMA) in the sm_90a cubin;
  - no qkernels kernel spills to local memory (cuobjdump -res-usage: LOCAL:0);
  - no function call in the sm_90a GEMMs (a call between wgmma instructions serializes
    the warpgroup MMA pipeline: ptxas C7510; CUTLASS's device asserts are such calls
    unless NDEBUG is defined for nvcc);
  - each GEMM's shared memory fits its arch (sm_80: 163 KiB, sm_90: 227 KiB per block);
  - the vectorized elementwise kernels (fake-quant, LSQ backward, quantize_rowwise) and
    the w8a16 decode kernel read global memory with 16-byte loads (LDG.E.128).

Usage: python tools/cuda_check.py [path/to/_C.so]  (default: the imported qkernels._C).
Exit status 0 when every check passes; the failures are listed otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SMEM_LIMIT = {"sm80": 163 * 1024, "sm90": 227 * 1024}
TENSOR_CORE_OP = {"sm_80": "IMMA", "sm_90a": "IGMMA"}


def cuobjdump() -> str:
    """cuobjdump from PATH, the CUDA toolkit, or the copy Triton ships."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if os.path.isfile(f"{home}/bin/cuobjdump"):
        return f"{home}/bin/cuobjdump"
    spec = importlib.util.find_spec("triton")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if bundled.is_file():
            return str(bundled)
    raise SystemExit("cuda_check: no cuobjdump (CUDA toolkit or Triton's copy) found")


def load(path: str | None):
    if path is None:
        from qkernels import _C

        return _C
    import torch  # noqa: F401  (loads libc10 and libtorch, which the module links)

    spec = importlib.util.spec_from_file_location("qkernels._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sass_by_arch(tool: str, so: str) -> dict[str, dict[str, str]]:
    """SASS text per arch ("sm_80", "sm_90a") and kernel name, of the kernels in `so`."""
    text = subprocess.run([tool, "-sass", so], capture_output=True, text=True, check=True).stdout
    out: dict[str, dict[str, list[str]]] = {}
    arch, name = None, ""
    for line in text.splitlines():
        m = re.search(r"arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
            continue
        m = re.search(r"Function : (\S+)", line)
        if m:
            name = m.group(1)
        if arch:
            out.setdefault(arch, {}).setdefault(name, []).append(line)
    return {a: {n: "\n".join(lines) for n, lines in fns.items()} for a, fns in out.items()}


def spills(tool: str, so: str) -> tuple[int, list[str]]:
    """How many qkernels kernels (per arch) the build holds, and those with local
    memory (spills or stack arrays)."""
    text = subprocess.run(
        [tool, "-res-usage", so], capture_output=True, text=True, check=True
    ).stdout
    bad, name, seen = [], "", 0
    for line in text.splitlines():
        m = re.search(r"Function (\S+):", line)
        if m:
            name = m.group(1)
        m = re.search(r"LOCAL:(\d+)", line)
        if m and "qkernels" in name:
            seen += 1
            if int(m.group(1)) > 0:
                bad.append(f"{name[:120]}... LOCAL:{m.group(1)}")
    return seen, bad


# Kernels instantiated for 16-byte packs: the element type, then the pack width.
VECTORIZED = re.compile(
    r"(forward_kernel|backward_kernel|lsq_backward_segments|quantize_rows_kernel)"
    r"I(f|6__half|13__nv_bfloat16)Li(4|8)E|w8a16_decode_kernel"
)


def without_vector_loads(sass: dict[str, dict[str, str]]) -> tuple[int, list[str]]:
    """How many vectorized kernels (all archs) the build holds, and those with no
    16-byte global load."""
    names = [
        f"{arch}:{name}"
        for arch, fns in sass.items()
        for name, text in fns.items()
        if VECTORIZED.search(name) and "LDG.E.128" not in text
    ]
    seen = sum(bool(VECTORIZED.search(n)) for fns in sass.values() for n in fns)
    return seen, names


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else None
    c = load(path)
    so = path or c.__file__
    failures = []
    if not c.built_with_cuda():
        print(f"cuda_check: {so} was built without CUDA")
        return 1
    kernels = c.cuda_gemm_kernels()
    print(f"cuda_check: {so}\n  CUDA C++ ops: {', '.join(c.cuda_ops())}")
    print(f"  CUTLASS GEMMs: {', '.join(kernels) or 'none'}")
    if not kernels:
        failures.append("no CUTLASS GEMM in the build")

    tool = cuobjdump()
    sass = sass_by_arch(tool, so)
    archs = {k.split(":")[0] for k in kernels}
    for arch, op in TENSOR_CORE_OP.items():
        if arch.replace("_", "").rstrip("a") not in archs:
            continue
        count = len(re.findall(rf"\b{op}\b", "\n".join(sass.get(arch, {}).values())))
        print(f"  {arch}: {count} {op} instructions")
        if count == 0:
            failures.append(f"{arch}: no {op} (int8 tensor-core) instruction in the GEMMs")

    gemms = {n: t for n, t in sass.get("sm_90a", {}).items() if "cutlass" in n}
    calls = sum(len(re.findall(r"\bCALL\b", t)) for t in gemms.values())
    print(f"  sm_90a: {calls} CALL instructions in {len(gemms)} CUTLASS kernels")
    if calls:
        failures.append(f"sm_90a: {calls} calls in the GEMMs (wgmma serialized; NDEBUG?)")

    seen, scalar = without_vector_loads(sass)
    print(f"  {seen} vectorized kernels checked for 16-byte loads, {len(scalar)} lack them")
    if not seen:
        failures.append("no vectorized elementwise kernel found in the SASS")
    failures += [f"no 16-byte load in {name[:120]}" for name in scalar]

    seen, spilled = spills(tool, so)
    print(f"  {seen} kernels checked for local memory, {len(spilled)} use it")
    if not seen:
        failures.append("cuobjdump -res-usage listed no qkernels kernel")
    failures += [f"local memory in {name}" for name in spilled]
    for kernel, per_tile in c.cuda_gemm_smem().items():
        limit = SMEM_LIMIT[kernel.split(":")[0]]
        print(f"  {kernel}: shared memory per tile {per_tile} (limit {limit})")
        failures += [
            f"{kernel} tile {t}: {b} B > {limit} B" for t, b in enumerate(per_tile) if b > limit
        ]

    for f in failures:
        print(f"FAIL {f}")
    print("cuda_check: " + ("ok" if not failures else f"{len(failures)} failures"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
