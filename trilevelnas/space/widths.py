"""Kernel level: the width set and the Gumbel straight-through width sampler.

Every searchable conv slot has logits γ over the width set. :func:`sample_widths` turns the logits
of ALL slots into one chosen width index per slot plus a coefficient that the slot's output is
multiplied by:

- ``"gumbel"`` (training): one Gumbel noise tensor for all slots, ``y = softmax((γ + g) / τ)``,
  index = argmax y, coefficient = ``y_idx + (1 - y_idx).detach()`` (value 1, gradient of y_idx:
  the straight-through estimator);
- ``"argmax"`` (evaluation): index = argmax γ (first on ties), coefficient 1;
- ``"max"`` / ``"min"`` / ``"random"`` (sandwich-rule pretraining): the widest / narrowest /
  a uniformly random width per slot, coefficient 1 (γ gets no gradient).
"""
from __future__ import annotations

import torch

from ..arch import width_set as _arch_width_set
from ..errors import UserError

WIDTH_MODES = ("gumbel", "argmax", "max", "min", "random")
SANDWICH = ("max", "min", "random", "random")


def width_set(channels: int) -> list[int]:
    """The searchable widths of a ``channels``-wide superkernel: :func:`trilevelnas.arch.width_set`
    (ratios [1/3, 1/2, 2/3, 5/6, 1] rounded to multiples of 8, distinct; C = 64 gives
    [24, 32, 40, 56, 64])."""
    return _arch_width_set(channels)


def sample_widths(gamma: torch.Tensor, mode: str, tau: float = 1.0,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one width index per slot from logits ``gamma`` [S, W].

    Returns ``(index, coeff)``: int64 [S] and a [S] tensor of ones carrying γ's straight-through
    gradient in ``"gumbel"`` mode (see the module docstring). All random numbers of one call are
    drawn as one tensor, so the sample never depends on which slots are later executed.
    """
    if mode not in WIDTH_MODES:
        raise UserError(f"width mode {mode!r}: expected one of {', '.join(WIDTH_MODES)}")
    S, W = gamma.shape
    ones = torch.ones(S, dtype=gamma.dtype, device=gamma.device)
    if mode == "gumbel":
        u = torch.rand(S, W, dtype=gamma.dtype, device=gamma.device, generator=generator)
        g = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        y = torch.softmax((gamma + g) / tau, dim=-1)
        index = torch.argmax(y, dim=-1)
        y_sel = y.gather(1, index[:, None])[:, 0]
        return index, y_sel + (1.0 - y_sel).detach()
    if mode == "argmax":
        return torch.argmax(gamma.detach(), dim=-1), ones
    if mode == "max":
        return torch.full((S,), W - 1, dtype=torch.long, device=gamma.device), ones
    if mode == "min":
        return torch.zeros(S, dtype=torch.long, device=gamma.device), ones
    index = torch.randint(0, W, (S,), device=gamma.device, generator=generator)
    return index, ones
