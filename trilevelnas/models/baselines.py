"""Textbook SR networks to compare a searched network with at equal cost (docs/architectures.md, "Baselines").

- :class:`ESPCN` (Shi et al., CVPR 2016): conv 5x5 → n1, tanh, conv 3x3 → n2, tanh, conv 3x3 →
  3·s², PixelShuffle(s); the paper's (5, 64), (3, 32), 3 on RGB.
- :class:`FSRCNN` (Dong et al., ECCV 2016), FSRCNN(d, s, m): conv 5x5 → d, PReLU; shrink 1x1 → s,
  PReLU; m × (conv 3x3 s → s, PReLU); expand 1x1 → d, PReLU; deconvolution 9x9, stride = scale,
  → 3. The paper's FSRCNN(56, 12, 4) on RGB.
- :class:`PlainSR`: ``n_convs`` conv 3x3 with C outputs (the first from RGB), ReLU after each, then
  conv 3x3 → 3·s², PixelShuffle(s): what a user would build without a search.

Each network keeps its sizes: ``config()`` is ``{"name", "scale", size parameters}``, the
``arch`` entry of a model file of kind ``"baseline"`` (:mod:`trilevelnas.models.io`), and
:func:`build_baseline` rebuilds it from that.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import UserError


class ESPCN(nn.Module):
    """ESPCN for ``scale`` (any integer ≥ 2): ``n1``, ``n2`` feature maps, tanh."""

    name = "espcn"

    def __init__(self, scale: int = 4, n1: int = 64, n2: int = 32):
        super().__init__()
        self.scale, self.n1, self.n2 = scale, n1, n2
        self.conv1 = nn.Conv2d(3, n1, 5, padding=2)
        self.conv2 = nn.Conv2d(n1, n2, 3, padding=1)
        self.conv3 = nn.Conv2d(n2, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.shuffle(self.conv3(x))

    def config(self) -> dict:
        return {"name": self.name, "scale": self.scale, "n1": self.n1, "n2": self.n2}


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m) for ``scale``: PReLU per channel, a 9x9 deconvolution as the last layer.

    Initialisation as the paper's: convolutions Gaussian with std sqrt(2 / (out · k²)) (He), the
    deconvolution with std 0.001, biases 0.
    """

    name = "fsrcnn"

    def __init__(self, scale: int = 4, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        self.scale, self.d, self.s, self.m = scale, d, s, m
        layers = [nn.Conv2d(3, d, 5, padding=2), nn.PReLU(d), nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)
        for conv in self.body:
            if isinstance(conv, nn.Conv2d):
                k = conv.kernel_size[0]
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (conv.out_channels * k * k)))
                nn.init.zeros_(conv.bias)
        nn.init.normal_(self.deconv.weight, 0.0, 0.001)
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(x))

    def config(self) -> dict:
        return {"name": self.name, "scale": self.scale, "d": self.d, "s": self.s, "m": self.m}


class PlainSR(nn.Module):
    """A plain stack: ``n_convs`` conv 3x3 with ``channels`` outputs (the first from RGB), ReLU
    after each, then conv 3x3 → 3·s², PixelShuffle(s)."""

    name = "plain"

    def __init__(self, scale: int = 4, channels: int = 32, n_convs: int = 6):
        super().__init__()
        self.scale, self.channels, self.n_convs = scale, channels, n_convs
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n_convs - 1))
        self.conv_last = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_first(x))
        for conv in self.body:
            x = torch.relu(conv(x))
        return self.shuffle(self.conv_last(x))

    def config(self) -> dict:
        return {"name": self.name, "scale": self.scale, "channels": self.channels, "n_convs": self.n_convs}


#: name → class; each class's constructor takes ``scale`` and its size parameters.
BASELINES: dict[str, type] = {cls.name: cls for cls in (ESPCN, FSRCNN, PlainSR)}
#: The size parameters of each baseline, with their (paper) defaults.
BASELINE_SIZES = {"espcn": {"n1": 64, "n2": 32}, "fsrcnn": {"d": 56, "s": 12, "m": 4},
                  "plain": {"channels": 32, "n_convs": 6}}
BASELINE_TYPES = tuple(BASELINES.values())


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline to train: its ``name`` and ``scale`` at the papers' sizes. It stands where a
    training run holds an :class:`~trilevelnas.arch.Architecture` (``scale``, ``to_dict()``)."""

    name: str
    scale: int

    def to_dict(self) -> dict:
        """The baseline's ``config()``: ``{"name", "scale", size parameters}``."""
        return {"name": self.name, "scale": self.scale, **BASELINE_SIZES[self.name]}

    def build(self) -> nn.Module:
        """A freshly initialised network."""
        return build_baseline(self.to_dict())


def build_baseline(config: Mapping[str, Any] | str, scale: int | None = None) -> nn.Module:
    """A freshly initialised baseline: from a ``config()`` dict, or from a name and ``scale``
    (the papers' sizes). An unknown name, a missing or unknown field or a size that is not a
    positive integer raises :class:`~trilevelnas.errors.UserError` naming it."""
    if isinstance(config, str):
        config = {"name": config, "scale": scale, **BASELINE_SIZES.get(config, {})}
    if not isinstance(config, Mapping):
        raise UserError(f"baseline config must be a dict, got {type(config).__name__}")
    name = config.get("name")
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    fields = {"scale", *BASELINE_SIZES[name]}
    given = {k: v for k, v in config.items() if k != "name"}
    if set(given) != fields:
        raise UserError(f"baseline {name!r} takes the fields {sorted(fields)}, got {sorted(given)}")
    for key, value in given.items():
        least = {"scale": 2, "m": 0}.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise UserError(f"baseline {name!r}: {key} = {value!r} must be an integer ≥ {least}")
    return BASELINES[name](**given)


__all__ = ["ESPCN", "FSRCNN", "PlainSR", "BASELINES", "BASELINE_SIZES", "BASELINE_TYPES", "BaselineSpec",
           "build_baseline"]
