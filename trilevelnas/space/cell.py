"""The RiR cell of the supernet: five mixed op slots C→w1→w2→w3→w4→C, returning ``0.2·out + x``.

A slot's output is ``Σ_k coeff_k · op_k(x)`` over the candidates it runs, with
``coeff_k = α_k · c_γ`` (α: the slot's relaxed op weights, c_γ: the width sampler's
straight-through coefficient, value 1). The residual ``0.2·out + x`` is fused: the last slot
starts accumulating from ``x`` and its coefficients carry the factor 0.2.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .candidates import make_candidates

N_SLOTS = 5
RESIDUAL_SCALE = 0.2


class MixedSlot(nn.Module):
    """One op slot: the four candidate superkernel modules."""

    def __init__(self, channels: int):
        super().__init__()
        self.candidates = make_candidates(channels)

    def forward(self, x, in_w: int, out_w: int, coeffs: torch.Tensor, live: Sequence[int], acc=None):
        """``acc + Σ_{k in live} coeffs[k] · op_k(x)``; ``live`` must not be empty."""
        for k in live:
            acc = self.candidates[k](x, in_w, out_w, coeffs[k], acc)
        return acc


class RiRCell(nn.Module):
    """Residual-in-residual cell with searchable ops (α) and widths (γ)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.slots = nn.ModuleList([MixedSlot(channels) for _ in range(N_SLOTS)])

    @staticmethod
    def slot_coefficients(op_weights: torch.Tensor, width_coeff: torch.Tensor) -> torch.Tensor:
        """Coefficients [5, 4] from op weights α [5, 4] and width coefficients c_γ [4] (slots 1–4)."""
        factor = torch.cat([width_coeff, width_coeff.new_full((1,), RESIDUAL_SCALE)])
        return op_weights * factor[:, None]

    def forward(self, x, widths: Sequence[int], coeffs: torch.Tensor,
                live: Sequence[Sequence[int]]):
        """``widths``: the 4 sampled inner widths; ``coeffs`` [5, 4]: see :meth:`slot_coefficients`;
        ``live[i]``: the candidate indices slot ``i`` runs (the rest have coefficient 0)."""
        C = self.channels
        h, in_w = x, C
        for i, slot in enumerate(self.slots):
            last = i == N_SLOTS - 1
            out_w = C if last else widths[i]
            h = slot(h, in_w, out_w, coeffs[i], live[i], acc=x if last else None)
            in_w = out_w
        return h
