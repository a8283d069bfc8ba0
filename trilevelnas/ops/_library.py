"""The registrar: registers the ops of the op table (:mod:`.op_table`) with the dispatcher
(docs/ops.md "Registration"), and finds them again (:func:`handle`).

For each row it defines the op's schema and, from it, the schemas of its companions
``<op>_check`` and ``<op>_triton``; registers the fake kernel and the Python autograd formula for
the op and its Triton variant, and the Triton variant's kernel (the check op, then the launcher).
The C++ kernels, the check ops' kernels and the C++ autograd register themselves when
``trilevelnas._C`` loads.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

#: ``Op.autograd`` of an op whose formula is a C++ ``torch::autograd::Function`` (csrc/).
CPP_AUTOGRAD = "c++"


@dataclass(frozen=True)
class Autograd:
    """A Python autograd formula: ``torch.library.register_autograd``'s ``setup_context`` and a
    ``backward(backward_op, ctx, *grads)`` that receives the backward op of the same variant."""

    setup_context: Callable
    backward: Callable
    backward_op: str


@dataclass(frozen=True)
class Op:
    """One op: ``schema`` as ``m.def`` takes it (``"name(Tensor x, ...) -> Tensor"``); ``fake``
    its fake kernel; ``autograd`` an :class:`Autograd`, :data:`CPP_AUTOGRAD` or None (not
    differentiable); ``cpp`` the dispatch keys that csrc/ registers C++ kernels for; ``triton``
    the launcher ``"module.function"`` in trilevelnas/ops/triton/ of the variant ``<op>_triton``
    (None: no variant); ``check`` whether csrc/ registers the check op ``<op>_check``."""

    schema: str
    fake: Callable
    autograd: Autograd | str | None = None
    cpp: tuple[str, ...] = ()
    triton: str | None = None
    check: bool = False

    @property
    def name(self) -> str:
        return self.schema[:self.schema.index("(")]

    def variants(self) -> tuple[str | None, ...]:
        """The backends with an op of their own: None (the op itself) and ``"triton"`` if any."""
        return (None, "triton") if self.triton else (None,)


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


@functools.cache
def _launcher(path: str) -> Callable:
    module, function = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"trilevelnas.ops.triton.{module}"), function)


def _triton_kernel(op: Op) -> Callable:
    """The kernel of ``<op>_triton``: the C++ argument checks (the check op, when the op has one),
    then the launcher, imported on first use so that importing trilevelnas never compiles Triton
    code."""
    check = handle(op.name + "_check") if op.check else None

    def kernel(*args):
        if check is not None:
            check(*args)
        return _launcher(op.triton)(*args)

    return kernel


def _define(op: Op) -> None:
    lib = _library()
    lib.define(op.schema)
    if op.check:
        lib.define(op.name + "_check" + op.schema[len(op.name):op.schema.index(" -> ")] + " -> ()")
    if op.triton:
        lib.define(variant(op.name, "triton") + op.schema[len(op.name):])
        for key in ("CPU", "CUDA"):  # CPU: Triton's interpreter (TRITON_INTERPRET=1)
            lib.impl(variant(op.name, "triton"), _triton_kernel(op), key)


def _register_fake_and_autograd(op: Op) -> None:
    for backend in op.variants():
        name = f"trilevelnas::{variant(op.name, backend)}"
        torch.library.register_fake(name, op.fake)
        if isinstance(op.autograd, Autograd):
            backward = functools.partial(op.autograd.backward, handle(op.autograd.backward_op, backend))
            torch.library.register_autograd(name, backward, setup_context=op.autograd.setup_context)


def register(table) -> None:
    """Register every op of ``table`` (rows :class:`Op`); once, after ``trilevelnas._C`` loaded."""
    for op in table:
        _define(op)
    for op in table:  # the autograd formulas look up backward ops defined by the first pass
        _register_fake_and_autograd(op)
