"""Build the ``trilevelnas._C`` extension.

CPU kernels in ``csrc/*.cpp`` are always compiled (with ``kernels/`` on the include path for
the torch-free ``kernels/common.cuh``). When the installed torch has CUDA and nvcc is
found, the CUDA glue in ``csrc/cuda/*.cu`` (which includes the torch-free device code in
``kernels/``) is compiled too. Set ``TRILEVELNAS_NO_CUDA=1`` to force a CPU-only build.
"""
import glob
import os

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

here = os.path.dirname(os.path.abspath(__file__))


def _sources(pattern):
    return sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, pattern)))


def extensions():
    cpp = _sources("csrc/*.cpp")
    cxx = ["-O3", "-fopenmp", "-std=c++17"]
    with_cuda = (
        torch.version.cuda is not None
        and CUDA_HOME is not None
        and os.environ.get("TRILEVELNAS_NO_CUDA", "0") != "1"
    )
    if with_cuda:
        return [
            CUDAExtension(
                "trilevelnas._C",
                cpp + _sources("csrc/cuda/*.cu"),
                include_dirs=[os.path.join(here, "kernels"), os.path.join(here, "csrc")],
                define_macros=[("TRILEVELNAS_WITH_CUDA", "1")],
                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--use_fast_math", "-std=c++17"]},
                extra_link_args=["-fopenmp"],
            )
        ]
    return [
        CppExtension(
            "trilevelnas._C",
            cpp,
            include_dirs=[os.path.join(here, "kernels"), os.path.join(here, "csrc")],
            extra_compile_args={"cxx": cxx},
            extra_link_args=["-fopenmp"],
        )
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)})
