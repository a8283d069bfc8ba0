"""Relaxation of one level's architecture logits, all groups of the level in ONE packed op call.

Groups are ragged and packed in a 1-D tensor with int64 ``offsets`` [G+1] (the layout of
:func:`trilevelnas.ops.sparsestmax_packed`). The radius is given as ρ ∈ [0, 1], a fraction of each
group's circumradius ``sqrt(1 - 1/K)``; the absolute radius per group is computed here.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .. import ops


class PackedRelaxation(nn.Module):
    """``kind`` ∈ softmax | sparsemax | sparsestmax | sorted_sparsestmax over groups of ``sizes``.

    ``parents`` (sorted sparsestmax only): per element, the parent's index within its own group,
    -1 for a root. ``lam``: λ of sorted sparsestmax (the same for every group).
    """

    SPARSE = ("sparsemax", "sparsestmax", "sorted_sparsestmax")

    def __init__(self, kind: str, sizes: Sequence[int], parents: Sequence[int] | None = None,
                 lam: float = 0.0):
        super().__init__()
        if kind not in ("softmax",) + self.SPARSE:
            raise ValueError(f"unknown relaxation {kind!r}")
        if kind == "sorted_sparsestmax" and parents is None:
            raise ValueError("sorted_sparsestmax needs parents")
        self.kind = kind
        sizes = [int(s) for s in sizes]
        offsets = torch.zeros(len(sizes) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(torch.tensor(sizes, dtype=torch.long), 0)
        self.register_buffer("offsets", offsets, persistent=False)
        k = torch.tensor(sizes, dtype=torch.float64)
        self.register_buffer("circumradius", torch.sqrt(1.0 - 1.0 / k), persistent=False)
        if parents is not None:
            self.register_buffer("parents", torch.tensor(list(parents), dtype=torch.long),
                                 persistent=False)
        self.register_buffer("lam", torch.full((len(sizes),), float(lam), dtype=torch.float64),
                             persistent=False)

    @property
    def is_sparse(self) -> bool:
        """True when the relaxation can output exact zeros (sparse execution applies)."""
        return self.kind in self.SPARSE

    def forward(self, values: torch.Tensor, rho: float) -> torch.Tensor:
        """Relaxed weights of the packed logits ``values`` (1-D), same layout."""
        if self.kind == "softmax":
            return ops.softmax_packed(values, self.offsets)
        if self.kind == "sparsemax":
            return ops.sparsemax_packed(values, self.offsets)
        # ρ = 1 must land in the one-hot regime (r² + 1/K ≥ 1) despite rounding of sqrt.
        r = (rho * (1.0 + 1e-6 if rho >= 1.0 else 1.0) * self.circumradius).to(values.dtype)
        if self.kind == "sparsestmax":
            return ops.sparsestmax_packed(values, self.offsets, r)
        return ops.sorted_sparsestmax_packed(values, self.offsets, self.parents, r,
                                             self.lam.to(values.dtype))
