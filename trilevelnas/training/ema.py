"""The exponential moving average of a network's weights (BasicSR's ``net_g_ema``, Real-ESRGAN's
``ema_decay: 0.999``): the network a train run validates, scores and saves when ``train.ema`` > 0.

After every optimiser step each parameter of the average moves towards the trained one,
``avg ← decay·avg + (1 − decay)·w``, and buffers are copied. The average starts as a copy of the
network at the start of the train phase. At this package's demo budget it scores 0.26 dB higher
than the last iterate and halves the spread over training seeds (docs/pipeline.md, "Weight average").
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn


class WeightAverage:
    """The running average of ``model``'s weights with ``decay`` (0 < decay < 1); :attr:`module`
    is a copy of ``model`` (same layout and memory format) holding the average, in eval mode and
    without gradients. The average follows ``model``'s own parameter objects, gathered once
    (walking the module tree costs more than the update)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1), not {decay}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._params = (list(self.module.parameters()), list(model.parameters()))
        self._buffers = (list(self.module.buffers()), list(model.buffers()))

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the network's current weights."""
        torch._foreach_lerp_(self._params[0], self._params[1], 1.0 - self.decay)
        for b_avg, b in zip(*self._buffers):
            b_avg.copy_(b)
