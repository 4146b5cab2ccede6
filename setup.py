"""Builds qkernels._C: the C++ CPU kernels always, the CUDA C++ kernels when enabled.

QKERNELS_CUDA=1 forces the CUDA build, QKERNELS_CUDA=0 disables it; unset, it is on when
a CUDA toolkit and a CUDA build of torch are both present. TORCH_CUDA_ARCH_LIST picks the
archs (default 8.0;9.0a: the sm_80 CUTLASS 2.x GEMMs and the sm_90a WGMMA ones).
QKERNELS_CUDA_KERNELS=all (default) builds every int8 GEMM instantiation (csrc/cuda/
int8_gemm_<arch>_<out>.cu); =reduced only the bfloat16-output ones, with one tile for
every M bucket (CI: each unit is minutes of nvcc; the other out dtypes run on Triton).
CUTLASS headers come from the pinned nvidia-cutlass PyPI package (`pip install -e
".[cuda]"`); CUTLASS_DIR overrides.
QKERNELS_NO_EXT=1 installs the Python package alone: `make` does that for the editable
install, then builds the extension once, in place and incrementally (build_ext --inplace).
QKERNELS_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer (`make
sanitize` puts that build in build/sanitize and runs the op tests against it).
"""

import glob
import importlib.util
import os
import shutil
import subprocess

from setuptools import setup


def _find_cuda_home() -> None:
    """torch takes CUDA_HOME from the nvcc on PATH, which can be a wrapper script
    (/usr/local/bin/nvcc here) far from the toolkit's include/: ask nvcc where it lives."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not shutil.which("nvcc"):
        return
    probe = subprocess.run(
        ["nvcc", "--dryrun", "-E", "-x", "cu", os.devnull], capture_output=True, text=True
    )
    for line in (probe.stdout + probe.stderr).splitlines():
        if line.startswith("#$ TOP="):
            top = os.path.realpath(line.split("=", 1)[1].strip())
            if os.path.isfile(os.path.join(top, "include", "cuda_runtime_api.h")):
                os.environ["CUDA_HOME"] = top
            return


_find_cuda_home()
from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME on import)

ROOT = os.path.dirname(os.path.abspath(__file__))


DEFAULT_ARCHS = "8.0;9.0a"
REDUCED_OUTS = ("bf16",)  # QKERNELS_CUDA_KERNELS=reduced


def _want_cuda() -> bool:
    flag = os.environ.get("QKERNELS_CUDA", "").strip()
    if flag == "0":
        return False
    have_toolkit = cpp_extension.CUDA_HOME is not None
    have_torch_cuda = cpp_extension.torch.version.cuda is not None
    if flag == "1" and not (have_toolkit and have_torch_cuda):
        raise RuntimeError(
            "QKERNELS_CUDA=1 but no CUDA toolkit (CUDA_HOME) or a CPU-only torch build"
        )
    return have_toolkit and have_torch_cuda


def _cutlass_include() -> str:
    path = os.environ.get("CUTLASS_DIR")
    if path:
        include = os.path.join(path, "include")
    else:
        spec = importlib.util.find_spec("cutlass_library")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError(
                'the CUDA build needs the CUTLASS headers: pip install -e ".[cuda]" '
                "(the pinned nvidia-cutlass package), set CUTLASS_DIR to a CUTLASS checkout, "
                "or build without CUDA (QKERNELS_CUDA=0)"
            )
        include = os.path.join(spec.submodule_search_locations[0], "source", "include")
    if not os.path.isfile(os.path.join(include, "cutlass", "cutlass.h")):
        raise RuntimeError(f"no CUTLASS headers under {include} (CUTLASS_DIR?)")
    return include


def _cuda_sources() -> tuple[list[str], list[str]]:
    """The CUDA sources to build and the QK_HAVE_INT8_GEMM_<ARCH>_<OUT> macros that tell
    csrc/cuda/ops.cpp which GEMM units they include."""
    kernels = os.environ.get("QKERNELS_CUDA_KERNELS", "all")
    if kernels not in ("all", "reduced"):
        raise RuntimeError(f"QKERNELS_CUDA_KERNELS must be all or reduced, got {kernels!r}")
    sources, macros = [], []
    for path in sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")):
        stem = os.path.basename(path).rsplit(".", 1)[0]
        if stem.startswith("int8_gemm_sm"):
            if kernels == "reduced" and stem.rsplit("_", 1)[1] not in REDUCED_OUTS:
                continue
            macros.append(f"-DQK_HAVE_{stem.upper()}")
        sources.append(path)
    return sources, macros


def _extension():
    cpu_sources = sorted(glob.glob("csrc/cpu/*.cpp")) + ["csrc/extension.cpp"]
    # -ffp-contract=off: keep mul/add as written so epilogues round like reference.py.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fvisibility=hidden"]
    link = ["-fopenmp"]
    if os.environ.get("QKERNELS_SANITIZE") == "1":
        # float-cast-overflow (a NaN or huge float cast to an integer) is not part of
        # GCC's -fsanitize=undefined; -fno-wrapv undoes Python's -fwrapv so that signed
        # overflow is checked; every finding is fatal.
        sanitize = "-fsanitize=address,undefined,float-cast-overflow"
        # -g1: line tables (file:line in reports) at a fraction of -g's compile time
        cxx = ["-O1", "-g1", "-fno-omit-frame-pointer", "-fno-wrapv", sanitize]
        cxx += ["-fno-sanitize-recover=all"]
        cxx += ["-fopenmp", "-ffp-contract=off", "-fvisibility=hidden"]
        link += [sanitize]
    if _want_cuda():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
        cuda_sources, macros = _cuda_sources()
        # -fmad=false: the epilogues and quantization round like reference.py (no FMA
        # contraction of a*b+c); the GEMM mainloops are integer and unaffected.
        # -DNDEBUG: torch adds it for the host compiler only; CUTLASS's device asserts
        # are calls, and a call between wgmma instructions serializes them (ptxas C7510).
        nvcc = ["-O3", "-DNDEBUG", "-std=c++17", "--expt-relaxed-constexpr", "-fmad=false"]
        if os.environ.get("QKERNELS_CUDA_KERNELS") == "reduced":
            nvcc.append("-DQK_REDUCED_TILES")
        return cpp_extension.CUDAExtension(
            "qkernels._C",
            cpu_sources + cuda_sources,
            include_dirs=[_cutlass_include()],
            extra_compile_args={
                "cxx": cxx + ["-DQKERNELS_WITH_CUDA", *macros],
                "nvcc": nvcc + ["-DQKERNELS_WITH_CUDA"],
            },
            extra_link_args=link,
        )
    return cpp_extension.CppExtension(
        "qkernels._C", cpu_sources, extra_compile_args=cxx, extra_link_args=link
    )


setup(
    ext_modules=[] if os.environ.get("QKERNELS_NO_EXT") == "1" else [_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
