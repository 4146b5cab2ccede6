"""Builds qkernels._C: the C++ CPU kernels always, CUDA sources when enabled.

QKERNELS_CUDA=1 forces the CUDA build, QKERNELS_CUDA=0 disables it; unset, it
is on when a CUDA toolkit and a CUDA build of torch are both present and there
are CUDA sources (csrc/cuda/*.cu). TORCH_CUDA_ARCH_LIST picks the archs.
QKERNELS_NO_EXT=1 installs the Python package alone: `make` does that for the editable
install, then builds the extension once, in place and incrementally (build_ext --inplace).
QKERNELS_SANITIZE=1 builds with AddressSanitizer + UndefinedBehaviorSanitizer (`make
sanitize` puts that build in build/sanitize and runs the op tests against it).
"""

import glob
import os

from setuptools import setup
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda(cuda_sources: list[str]) -> bool:
    flag = os.environ.get("QKERNELS_CUDA", "").strip()
    if flag == "0":
        return False
    have_toolkit = cpp_extension.CUDA_HOME is not None
    have_torch_cuda = cpp_extension.torch.version.cuda is not None
    if flag == "1":
        if not (have_toolkit and have_torch_cuda):
            raise RuntimeError(
                "QKERNELS_CUDA=1 but no CUDA toolkit (CUDA_HOME) or a CPU-only torch build"
            )
        return bool(cuda_sources)
    return have_toolkit and have_torch_cuda and bool(cuda_sources)


def _extension():
    cpu_sources = sorted(glob.glob("csrc/cpu/*.cpp")) + ["csrc/extension.cpp"]
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu"))
    # -ffp-contract=off: keep mul/add as written so epilogues round like reference.py.
    cxx = ["-O3", "-fopenmp", "-ffp-contract=off", "-fvisibility=hidden"]
    link = ["-fopenmp"]
    if os.environ.get("QKERNELS_SANITIZE") == "1":
        # float-cast-overflow (a NaN or huge float cast to an integer) is not part of
        # GCC's -fsanitize=undefined; -fno-wrapv undoes Python's -fwrapv so that signed
        # overflow is checked; every finding is fatal.
        sanitize = "-fsanitize=address,undefined,float-cast-overflow"
        cxx = ["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv", sanitize]
        cxx += ["-fno-sanitize-recover=all"]
        cxx += ["-fopenmp", "-ffp-contract=off", "-fvisibility=hidden"]
        link += [sanitize]
    if _want_cuda(cuda_sources):
        return cpp_extension.CUDAExtension(
            "qkernels._C",
            cpu_sources + cuda_sources,
            extra_compile_args={
                "cxx": cxx + ["-DQKERNELS_WITH_CUDA"],
                "nvcc": ["-O3", "-DQKERNELS_WITH_CUDA"],
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
