"""Real-ESRGAN's SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3) and its strict loader.

The network is a plain VGG-style stack at the LR resolution, ``body.{i}`` in BasicSR's names::

    body.0 conv(in_ch → nf), body.1 act, then n_conv × (conv(nf → nf), act),
    body.{2 n_conv + 2} conv(nf → out_ch · upscale²)

followed by a pixel shuffle by ``upscale`` and the nearest-upsampled input added to the result
(so the body learns a residual). ``act`` is ``"prelu"`` (one slope per channel, ``body.{odd}.weight``,
what every released model uses), ``"relu"`` or ``"leakyrelu"`` (slope 0.1).

The ncnn builds of realesr-animevideov3 add one more step: a bicubic resize of the x4 output by
``scale / upscale`` (0.5 or 0.75), which makes x2 and x3 models of the same weights. ``scale``
is that final factor (``upscale`` when there is no resize).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .weights import check_state_dict

ACTIVATIONS = ("prelu", "relu", "leakyrelu")
_KEY = re.compile(r"body\.(\d+)\.(weight|bias)$")


class SRVGGNetCompact(nn.Module):
    """SRVGGNetCompact: ``n_conv`` hidden 3x3 convs of width ``nf`` at the LR resolution, a pixel
    shuffle by ``upscale`` and the nearest-upsampled input as a skip; optionally a final bicubic
    resize to ``scale`` (a smaller factor than ``upscale``)."""

    def __init__(self, nf: int = 64, n_conv: int = 16, upscale: int = 4, act: str = "prelu",
                 scale: int | None = None, channels: int = 3):
        super().__init__()
        for name, value, low in (("nf", nf, 1), ("n_conv", n_conv, 0), ("upscale", upscale, 1),
                                 ("channels", channels, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"SRVGGNetCompact {name} must be an integer >= {low}, got {value!r}")
        if act not in ACTIVATIONS:
            raise UserError(f"SRVGGNetCompact act must be one of {ACTIVATIONS}, got {act!r}")
        scale = upscale if scale is None else scale
        if not isinstance(scale, int) or not 1 <= scale <= upscale:
            raise UserError(f"SRVGGNetCompact scale must be an integer in [1, upscale={upscale}], "
                            f"got {scale!r}")
        self.nf, self.n_conv, self.upscale, self.act, self.scale = nf, n_conv, upscale, act, scale
        self.channels = channels
        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 3, padding=1), self._act()]
        for _ in range(n_conv):
            layers += [nn.Conv2d(nf, nf, 3, padding=1), self._act()]
        layers.append(nn.Conv2d(nf, channels * upscale ** 2, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def _act(self) -> nn.Module:
        if self.act == "prelu":
            return nn.PReLU(num_parameters=self.nf)
        return nn.ReLU() if self.act == "relu" else nn.LeakyReLU(0.1)

    def config(self) -> dict:
        """The constructor arguments (what :func:`trilevelnas.models.save_model` stores)."""
        return {"nf": self.nf, "n_conv": self.n_conv, "upscale": self.upscale, "act": self.act,
                "scale": self.scale, "channels": self.channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.upsampler(self.body(x))
        out = out + F.interpolate(x, scale_factor=float(self.upscale), mode="nearest")
        if self.scale != self.upscale:
            out = F.interpolate(out, scale_factor=self.scale / self.upscale, mode="bicubic",
                                align_corners=False)
        return out


def is_srvgg_state(keys) -> bool:
    """Whether a (unwrapped) state dict's keys are all ``body.N.weight|bias`` (SRVGGNetCompact's),
    with ``body.0`` and at least one more layer."""
    keys = list(keys)
    return bool(keys) and all(_KEY.match(k) for k in keys) and "body.0.weight" in keys and len(keys) > 2


def srvgg_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "weights",
                          scale: int | None = None, act: str | None = None) -> SRVGGNetCompact:
    """An :class:`SRVGGNetCompact` with nf / n_conv / upscale read from ``state`` (BasicSR's
    ``body.N`` keys), loaded strictly. ``act`` defaults to ``"prelu"``, which needs the slopes
    ``body.{odd}.weight``; ``"relu"`` / ``"leakyrelu"`` (no weights, so never inferred) must be
    given. ``scale`` adds the final bicubic resize (ncnn's x2 / x3 builds). Raises
    :class:`UserError` naming ``source`` and the culprit key."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = _KEY.match(k)
        if m is None:
            raise UserError(f"{source}: unexpected key {k!r} for SRVGGNetCompact (body.N.weight|bias)")
        layers.setdefault(int(m[1]), {})[m[2]] = v
    convs = sorted(i for i, p in layers.items() if p.get("weight") is not None and p["weight"].dim() == 4)
    slopes = sorted(i for i, p in layers.items() if p.get("weight") is not None and p["weight"].dim() == 1)
    if not convs or convs[0] != 0 or len(convs) < 2:
        raise UserError(f"{source}: SRVGGNetCompact needs convs body.0 ... body.2N+2; found convs at "
                        f"{convs[:6]}")
    n_conv = len(convs) - 2
    if convs != list(range(0, 2 * n_conv + 3, 2)):
        raise UserError(f"{source}: SRVGGNetCompact convs must be body.0, body.2, ..., found "
                        f"body.{convs[:8]}")
    act = act or "prelu"
    if act == "prelu" and slopes != list(range(1, 2 * n_conv + 2, 2)):
        if not slopes:
            raise UserError(f"{source}: SRVGGNetCompact weights without PReLU slopes: the activation "
                            f"(relu or leakyrelu) is not recorded in the file")
        raise UserError(f"{source}: SRVGGNetCompact PReLU slopes must be body.1, body.3, ..., found "
                        f"body.{slopes[:8]}")
    first, last = layers[0]["weight"], layers[convs[-1]]["weight"]
    nf, channels = int(first.shape[0]), int(first.shape[1])
    upscale_sq, rest = divmod(int(last.shape[0]), channels)
    upscale = int(round(upscale_sq ** 0.5))
    if rest or upscale * upscale != upscale_sq:
        raise UserError(f"{source}: last conv body.{convs[-1]}.weight has {last.shape[0]} outputs, "
                        f"not {channels} x upscale²")
    try:
        model = SRVGGNetCompact(nf=nf, n_conv=n_conv, upscale=upscale, act=act, scale=scale,
                                channels=channels)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    _load_strict(model, state, source)
    return model


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    check_state_dict(model.state_dict(), state, source, _describe(model))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def _describe(model: SRVGGNetCompact) -> str:
    c = model.config()
    return f"SRVGGNetCompact(nf={c['nf']}, n_conv={c['n_conv']}, upscale={c['upscale']})"


__all__ = ["SRVGGNetCompact", "srvgg_from_state_dict", "is_srvgg_state", "ACTIVATIONS"]
