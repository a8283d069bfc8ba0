"""Relaxation of one level's architecture logits, all groups of the level in ONE packed op call.

Groups are ragged and packed in a 1-D tensor with int64 ``offsets`` [G+1] (the layout of
:func:`trilevelnas.ops.sparsestmax_packed`). The radius is given as ρ ∈ [0, 1], a fraction of each
group's circumradius ``sqrt(1 - 1/K)``; the absolute radius per group is computed here.

A level with a forest structure (the tree's nodes: ``parents``) also has an ordering term
``λ·Σ_edges max(0, q_child − q_parent)`` (docs/ops.md), which the architecture loss adds; it works
with every relaxation. ``sorted_sparsestmax`` names sparsestmax used with that term.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import ops


class PackedRelaxation(nn.Module):
    """``kind`` ∈ softmax | sparsemax | sparsestmax | sorted_sparsestmax over groups of ``sizes``.

    ``parents``: per element, the parent's index within its own group, -1 for a root (a forest per
    group); needed by ``sorted_sparsestmax`` and by any ``lam > 0``. ``lam``: λ of the ordering
    term (the same for every group).
    """

    SPARSE = ("sparsemax", "sparsestmax", "sorted_sparsestmax")

    def __init__(self, kind: str, sizes: Sequence[int], parents: Sequence[int] | None = None,
                 lam: float = 0.0):
        super().__init__()
        if kind not in ("softmax",) + self.SPARSE:
            raise ValueError(f"unknown relaxation {kind!r}")
        if (kind == "sorted_sparsestmax" or lam > 0) and parents is None:
            raise ValueError(f"{kind} with an ordering term (λ = {lam}) needs parents")
        self.kind = kind
        self.lam = float(lam)
        sizes = [int(s) for s in sizes]
        offsets = torch.zeros(len(sizes) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.long), 0)
        self.register_buffer("offsets", offsets, persistent=False)
        k = torch.tensor(sizes, dtype=torch.float64)
        self.register_buffer("circumradius", torch.sqrt(1.0 - 1.0 / k), persistent=False)
        self.register_buffer("parents", None if parents is None else
                             torch.tensor(list(parents), dtype=torch.long), persistent=False)

    @property
    def is_sparse(self) -> bool:
        """True when the relaxation can output exact zeros (sparse execution applies)."""
        return self.kind in self.SPARSE

    @property
    def ordered(self) -> bool:
        """True when the level has an ordering term (λ > 0)."""
        return self.lam > 0

    def forward(self, values: torch.Tensor, rho: float) -> torch.Tensor:
        """Relaxed weights of the packed logits ``values`` (1-D), same layout."""
        if self.kind == "softmax":
            return ops.softmax_packed(values, self.offsets)
        if self.kind == "sparsemax":
            return ops.sparsemax_packed(values, self.offsets)
        # ρ = 1 must land in the one-hot regime (r² + 1/K ≥ 1) despite rounding of sqrt.
        r = (rho * (1.0 + 1e-6 if rho >= 1.0 else 1.0) * self.circumradius).to(values.dtype)
        return ops.sparsestmax_packed(values, self.offsets, r)

    def order_penalty(self, q: torch.Tensor) -> torch.Tensor:
        """``λ·Σ_groups Σ_edges max(0, q_child − q_parent)`` of relaxed weights ``q`` (0-dim; 0 if λ = 0)."""
        if not self.ordered:
            return q.new_zeros(())
        return self.lam * ops.order_penalty_packed(q, self.offsets, self.parents).sum()
