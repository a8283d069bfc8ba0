"""Relaxation ops: sparsestmax (paper Eq. 2), sorted sparsestmax (Eq. 3), sparsemax, packed softmax,
and the forest ordering penalty of sorted sparsestmax.

Public functions (docs/ops.md); gradients flow to the values (or ``q``) only:

- ``sparsestmax(x, r, dim=-1)`` / ``sparsemax(x, dim=-1)``: over one dimension of a dense tensor;
  ``r`` is a float or a tensor broadcast over the groups (the other dimensions).
- ``sparsestmax_packed(values, offsets, r)`` / ``sparsemax_packed`` / ``softmax_packed``: ragged groups
  ``values[offsets[g]:offsets[g+1]]`` of a 1-D tensor, one kernel launch for all groups.
- ``order_penalty_packed(q, offsets, parent)``: each group is a forest (``parent`` index within the
  group, -1 for a root); per group the hinge ``sum over edges of max(0, q_child - q_parent)``, for
  the output of any relaxation;
- ``sorted_sparsestmax_packed(values, offsets, parent, r, lam)``: ``(q, penalty)`` with ``q`` the
  sparsestmax of each group and ``penalty = lam * order_penalty_packed(q, offsets, parent)`` per
  group, the ordering term the caller adds to the architecture loss.

``r`` is the absolute radius of Eq. 2 (``r >= sqrt(1 - 1/K)`` gives one-hot). The work is done by the
dispatcher ops ``torch.ops.trilevelnas.*`` (C++ on CPU, CUDA kernels on GPU; on CUDA tensors with
``gpu_backend() == "triton"`` their Triton variants ``trilevelnas::<op>_triton``), declared with
their fake kernels and autograd in :mod:`trilevelnas.ops.op_table`.
Bad arguments raise ``ValueError``: from the ops' own checks (``csrc/relax_checks.h``, alike for
every kernel; the Triton variants run them through the check ops ``<op>_check``), and as
:class:`~trilevelnas.errors.OpArgumentError` from the few checks of this module (Python types,
``dim``, broadcasting ``r``, ``lam``).
The sparsestmax forward ops also return a per-group ``gain`` (1/Z when the circle constraint is
active, else 0) which, with the output, is all the backward needs.
"""
from __future__ import annotations

import math
import numbers

import torch

from ..errors import OpArgumentError
from . import _library
from ._backend import gpu_backend, require_extension

__all__ = [  # alphabetical
    "order_penalty_packed", "softmax_packed", "sorted_sparsestmax_packed", "sparsemax", "sparsemax_packed",
    "sparsestmax", "sparsestmax_packed",
]


def _gain_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# Argument checks. The dispatcher ops check their own arguments (csrc/relax_checks.h, ValueError;
# the Triton variants through the check ops <op>_check) and, in the CPU kernels, the values of
# offsets, parent and a per-group radius. What is left here is what no op sees: Python types read
# by this module, broadcasting a float-or-tensor parameter, ``dim``, and ``lam``.


def _require_tensors(op: str, **tensors) -> None:
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise OpArgumentError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _per_group(op: str, name: str, v, groups: int):
    """Split a float-or-tensor parameter into (tensor of ``groups`` entries, a single entry
    expanded; or None; scalar) for the dispatcher ops, which check the tensor's device and the
    scalar's range (``lam``, which reaches no op, is checked by its caller)."""
    if isinstance(v, torch.Tensor):
        if groups >= 0 and v.numel() != groups and v.numel() != 1:
            raise OpArgumentError(f"{op}: {name} must be a float or hold one entry per group ({groups}), "
                                  f"got shape {tuple(v.shape)}")
        v = v.detach().reshape(-1)
        if not v.dtype.is_floating_point:
            v = v.to(torch.float64)
        return (v.expand(groups) if v.numel() == 1 and groups >= 0 else v), 0.0
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise OpArgumentError(f"{op}: {name} must be a float or a tensor, got {type(v).__name__}")
    return None, float(v)


def _op(name: str, t: torch.Tensor):
    """The dispatcher op ``name`` for tensors like ``t``: its Triton variant for CUDA tensors when
    ``gpu_backend() == "triton"``, else the C++ op (CPU or CUDA kernel by the tensors' device)."""
    require_extension()
    return _library.handle(name, "triton" if t.is_cuda and gpu_backend() == "triton" else None)


# ---------------------------------------------------------------------------------------------
# Public functions


def sparsestmax_packed(values: torch.Tensor, offsets: torch.Tensor, r) -> torch.Tensor:
    """Sparsestmax of every group ``values[offsets[g]:offsets[g+1]]`` with radius ``r`` (float or [G])."""
    op = "sparsestmax_packed"
    _require_tensors(op, values=values, offsets=offsets)
    radius, radius_scalar = _per_group(op, "r", r, offsets.numel() - 1)
    return _op(op, values)(values, offsets, radius, radius_scalar)[0]


def sparsemax_packed(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Sparsemax (Euclidean projection onto the simplex) of every packed group."""
    return sparsestmax_packed(values, offsets, 0.0)


def order_penalty_packed(q: torch.Tensor, offsets: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Ordering penalty of every packed forest group: a [G] tensor of ``q``'s dtype (docs/ops.md).

    ``out[g] = sum over the non-root i of group g of max(0, q[i] - q[parent(i)])``; 0 iff the weights
    do not increase along any edge (empty groups and groups of roots give 0). ``q`` is 1-D (e.g.
    the output of any packed relaxation), ``parent`` (int64, shaped like ``q``) holds each element's
    parent index within its own group (smaller than its own index), -1 for a root. Differentiable
    in ``q``: an edge with ``q_child > q_parent`` adds +1 to the child's and -1 to the parent's
    derivative, a tie adds 0. Accumulates in float64 on CPU, float32 (float64 for float64) on GPU.
    """
    _require_tensors("order_penalty_packed", q=q)
    return _op("order_penalty_packed", q)(q, offsets, parent)


def sorted_sparsestmax_packed(values: torch.Tensor, offsets: torch.Tensor, parent: torch.Tensor, r,
                              lam) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted sparsestmax of every packed forest group: ``(q, penalty)`` (docs/ops.md).

    ``q = sparsestmax_packed(values, offsets, r)`` exactly (``lam`` does not change it) and
    ``penalty = lam_g * order_penalty_packed(q, offsets, parent)`` per group ([G], ``values``'s
    dtype), the ordering term to add to the architecture loss. ``parent`` (int64, shaped like
    ``values``) holds each element's parent index within its own group (smaller than its own
    index), -1 for a root; ``lam`` (float or [G] tensor, finite and >= 0) weighs the term per group,
    so ``lam = 0`` gives plain sparsestmax and a zero penalty. Gradients flow to ``values``
    through both outputs.
    """
    op = "sorted_sparsestmax_packed"
    _require_tensors(op, values=values, offsets=offsets)
    lam_t, lam_scalar = _per_group(op, "lam", lam, offsets.numel() - 1)
    # lam reaches no kernel, so it is checked here: a float always; a per-group tensor's device
    # always, its values on the CPU in eager mode (on a GPU, or while torch.compile traces, that
    # would need a host synchronisation, a graph break).
    if lam_t is None and not (math.isfinite(lam_scalar) and lam_scalar >= 0):
        raise OpArgumentError(f"{op}: lam must be finite and >= 0, got {lam_scalar}")
    if lam_t is not None:
        if lam_t.device != values.device:
            raise OpArgumentError(f"{op}: lam is on {lam_t.device} but values on {values.device}")
        if not lam_t.is_cuda and not torch.compiler.is_compiling():
            bad = ~(torch.isfinite(lam_t) & (lam_t >= 0))
            if bool(bad.any()):
                g = int(bad.nonzero()[0])
                raise OpArgumentError(f"{op}: lam[{g}] must be finite and >= 0, got {float(lam_t[g])}")
    q = sparsestmax_packed(values, offsets, r)
    penalty = order_penalty_packed(q, offsets, parent)
    return q, penalty * (lam_scalar if lam_t is None else lam_t.to(penalty.dtype))


def softmax_packed(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Softmax of every packed group (same layout as :func:`sparsestmax_packed`)."""
    _require_tensors("softmax_packed", values=values)
    return _op("softmax_packed", values)(values, offsets)


def sparsestmax(x: torch.Tensor, r, dim: int = -1) -> torch.Tensor:
    """Sparsestmax along ``dim``; ``r`` is a float or a tensor broadcast over the other dimensions."""
    op = "sparsestmax"
    _require_tensors(op, x=x)
    nd = x.dim()
    if not -nd <= dim < nd:
        raise OpArgumentError(f"{op}: dim {dim} is out of range for a {nd}-D tensor")
    last = dim in (-1, nd - 1)
    xm = x if last else x.movedim(dim, -1)
    if isinstance(r, torch.Tensor):
        gshape = xm.shape[:-1]
        try:
            ok = torch.broadcast_shapes(r.shape, gshape) == gshape
        except RuntimeError:
            ok = False
        if not ok:
            raise OpArgumentError(f"{op}: r of shape {tuple(r.shape)} does not broadcast over the groups "
                                  f"{tuple(gshape)} (x without dim {dim})")
        radius, radius_scalar = r.detach().to(_gain_dtype(x)).expand(gshape).reshape(-1), 0.0
    else:
        radius, radius_scalar = _per_group(op, "r", r, 0)
    out = _op("sparsestmax_rows", xm)(xm, radius, radius_scalar)[0]
    return out if last else out.movedim(-1, dim)


def sparsemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Sparsemax (projection onto the simplex) along ``dim``."""
    return sparsestmax(x, 0.0, dim)
