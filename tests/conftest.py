"""Shared test setup.

Without a GPU, Triton kernels run through Triton's interpreter on CPU tensors. Triton reads
``TRITON_INTERPRET`` when a kernel is defined, so it is set here, before any test imports a kernel
module (``trilevelnas.ops.triton.*`` is imported lazily by the package).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
