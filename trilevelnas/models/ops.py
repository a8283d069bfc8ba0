"""The four candidate operations and the RiR cell of a derived network, as plain ``nn.Conv2d`` modules.

docs/architectures.md "Derived network", candidate operations (no bias, no BN, ReLU):

- ``conv1x1`` / ``conv3x3``: ``conv`` (1x1 / 3x3, pad 1) → ReLU;
- ``resblock``: ``conv1`` 3x3 in→out → ReLU → ``conv2`` 3x3 out→out, plus the shortcut
  (``shortcut``: 1x1 in→out when in ≠ out, else identity), → ReLU;
- ``dwsblock``: ``expand`` 1x1 in→4·in → ReLU → ``dw`` depthwise 3x3 (4·in groups) → ReLU →
  ``project`` 1x1 4·in→out, plus the same shortcut, → ReLU.

A :class:`RiRCell` chains five ops ``C→w1→w2→w3→w4→C`` (submodules ``ops.0`` … ``ops.4``) and returns
``0.2·out + x``.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DWS_EXPANSION = 4
RIR_RESIDUAL_SCALE = 0.2


class ConvOp(nn.Module):
    """``conv1x1`` or ``conv3x3``: a bias-free convolution followed by ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class ResBlock(nn.Module):
    """``resblock``: conv3x3 → ReLU → conv3x3, plus a (1x1 when widths differ) shortcut, → ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + skip)


class DwsBlock(nn.Module):
    """``dwsblock``: 1x1 expand (x4) → ReLU → depthwise 3x3 → ReLU → 1x1 project, plus shortcut, → ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        hidden = DWS_EXPANSION * c_in
        self.expand = nn.Conv2d(c_in, hidden, 1, bias=False)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False)
        self.project = nn.Conv2d(hidden, c_out, 1, bias=False)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = F.relu(self.dw(F.relu(self.expand(x))))
        return F.relu(self.project(y) + skip)


def make_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """The candidate operation ``name`` (one of ``OP_NAMES``) mapping ``c_in`` to ``c_out`` channels."""
    if name == "conv1x1":
        return ConvOp(c_in, c_out, 1)
    if name == "conv3x3":
        return ConvOp(c_in, c_out, 3)
    if name == "resblock":
        return ResBlock(c_in, c_out)
    if name == "dwsblock":
        return DwsBlock(c_in, c_out)
    raise ValueError(f"unknown operation {name!r}")


class RiRCell(nn.Module):
    """Five chained operations ``C→w1→…→w4→C``; returns ``0.2·out + x``."""

    def __init__(self, channels: int, cell: Sequence[tuple[str, int]]):
        super().__init__()
        widths = [channels] + [w for _, w in cell]
        if widths[-1] != channels:
            raise ValueError(f"a RiR cell must end at {channels} channels, got {widths[-1]}")
        self.ops = nn.ModuleList(make_op(op, widths[j], widths[j + 1]) for j, (op, _) in enumerate(cell))
        self.residual_scale: float = RIR_RESIDUAL_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for op in self.ops:
            out = op(out)
        return self.residual_scale * out + x


class UpStep(nn.Module):
    """Backbone A's ``1``: nearest x2 → ``conv`` 3x3 C→C (bias) → LeakyReLU(0.2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.leaky_relu(self.conv(x), 0.2)


class ConvStep(nn.Module):
    """Backbone B's ``1``: ``conv`` 3x3 C→C (bias) → LeakyReLU(0.2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(x), 0.2)


__all__ = ["ConvOp", "ResBlock", "DwsBlock", "RiRCell", "UpStep", "ConvStep", "make_op",
           "DWS_EXPANSION", "RIR_RESIDUAL_SCALE"]
