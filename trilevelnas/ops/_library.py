"""Registration helpers shared by the op modules (docs/ops.md "Add a kernel").

Every schema is defined once, in C++ (``TORCH_LIBRARY_FRAGMENT`` in ``csrc/<op>.cpp``), and C++
registers the CPU and CUDA kernels. A kernel written in Python for another backend (Triton) is an
op of its own, ``trilevelnas::<op>_<backend>``, whose schema is either defined in C++ from the same
argument list (superconv2d, whose autograd formula is in C++ for speed) or copied here from the
dispatcher's schema of ``trilevelnas::<op>`` (:func:`define_variant`; never from a string), so
that both always take the same arguments and share one fake kernel and one autograd formula
(:func:`register`).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

_lib: torch.library.Library | None = None


def variant(op: str, backend: str | None) -> str:
    """The name of ``op``'s variant for ``backend`` (``op`` itself for the C++ kernels)."""
    return op if backend is None else f"{op}_{backend}"


def handle(op: str, backend: str | None = None):
    """The dispatcher overload ``torch.ops.trilevelnas.<variant>.default``."""
    return getattr(torch.ops.trilevelnas, variant(op, backend)).default


def _library() -> torch.library.Library:
    global _lib
    if _lib is None:
        _lib = torch.library.Library("trilevelnas", "FRAGMENT")
    return _lib


def impl_variant(op: str, backend: str, kernel: Callable, keys=("CPU", "CUDA")) -> str:
    """Register ``kernel`` for the dispatch ``keys`` of ``trilevelnas::<op>_<backend>``, whose
    schema exists already (CPU too: Triton runs there under ``TRITON_INTERPRET=1``)."""
    name = variant(op, backend)
    for key in keys:
        _library().impl(name, kernel, key)
    return name


def define_variant(op: str, backend: str, kernel: Callable, keys=("CPU", "CUDA")) -> str:
    """Define ``trilevelnas::<op>_<backend>`` with the schema of the C++ op ``op``, then
    :func:`impl_variant` ``kernel`` for it."""
    schema = str(handle(op)._schema)  # "trilevelnas::op(Tensor x, ...) -> (...)"
    _library().define(variant(op, backend) + schema[schema.index("("):])
    return impl_variant(op, backend, kernel, keys)


def register(op: str, backend: str | None, fake: Callable, backward: Callable | None = None,
             setup_context: Callable | None = None) -> None:
    """Register the fake kernel and (when given) the autograd formula of ``op``'s variant."""
    name = f"trilevelnas::{variant(op, backend)}"
    torch.library.register_fake(name, fake)
    if backward is not None:
        torch.library.register_autograd(name, backward, setup_context=setup_context)
