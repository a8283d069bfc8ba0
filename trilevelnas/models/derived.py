"""The derived network built from an :class:`~trilevelnas.arch.Architecture` (docs/architectures.md "Derived network").

Only plain ``nn.Conv2d``, ``F.relu``/``F.leaky_relu``, nearest interpolation and PixelShuffle, so
it exports to ONNX and TorchScript. Module names (what ``supernet.extract`` slices weights onto)::

    conv_first                      3x3, 3 → C, bias
    body.{i}                        one step of ``arch.full_path`` (i = 0, 1, ...):
      RiR cell (0):  body.{i}.ops.{j}            j = 0..4, the cell's five ops
                       conv1x1 / conv3x3:  .conv            (no bias)
                       resblock:           .conv1 .conv2 [.shortcut]
                       dwsblock:           .expand .dw .project [.shortcut]
                     (``shortcut`` exists only when the op's in and out widths differ)
      up step (A, 1):  body.{i}.conv             3x3, C → C, bias; after nearest x2
      conv step (B,1): body.{i}.conv             3x3, C → C, bias
    conv_hr                         (A only) 3x3, C → C, bias
    conv_last                       A: 3x3, C → 3;  B: 3x3, C → 3·s², then PixelShuffle(s)

For backbone A the ups that complete a short path are the last entries of ``body``
(indices ``len(arch.path)`` onwards). Every conv with bias is followed by LeakyReLU(0.2) except
``conv_first`` and ``conv_last``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..arch import Architecture
from .ops import ConvStep, RiRCell, UpStep


class DerivedNetwork(nn.Module):
    """A stand-alone SR network for ``arch``; input ``[N, 3, H, W]`` → ``[N, 3, sH, sW]``.

    The architecture is kept as ``self.arch`` (used by :func:`trilevelnas.models.save_model`).
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        if not isinstance(arch, Architecture):
            raise TypeError(f"arch must be an Architecture, got {type(arch).__name__}")
        self.arch = arch
        c = arch.channels
        self.conv_first = nn.Conv2d(3, c, 3, padding=1)
        steps: list[nn.Module] = []
        cells = iter(arch.cells)
        for step in arch.full_path:
            if step == 0:
                steps.append(RiRCell(c, next(cells)))
            elif arch.backbone == "A":
                steps.append(UpStep(c))
            else:
                steps.append(ConvStep(c))
        self.body = nn.ModuleList(steps)
        if arch.backbone == "A":
            self.conv_hr = nn.Conv2d(c, c, 3, padding=1)
            self.conv_last = nn.Conv2d(c, 3, 3, padding=1)
            self.shuffle = None
        else:
            self.conv_hr = None
            self.conv_last = nn.Conv2d(c, 3 * arch.scale ** 2, 3, padding=1)
            self.shuffle = nn.PixelShuffle(arch.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(x)
        for step in self.body:
            x = step(x)
        if self.conv_hr is not None:
            x = F.leaky_relu(self.conv_hr(x), 0.2)
        x = self.conv_last(x)
        if self.shuffle is not None:
            x = self.shuffle(x)
        return x

    def extra_repr(self) -> str:
        return f"backbone={self.arch.backbone}, path={list(self.arch.path)}, scale={self.arch.scale}"


def build(arch: Architecture | dict) -> DerivedNetwork:
    """A freshly initialised derived network for ``arch`` (an Architecture or its JSON dict)."""
    if isinstance(arch, dict):
        arch = Architecture.from_dict(arch)
    return DerivedNetwork(arch)


__all__ = ["DerivedNetwork", "build"]
