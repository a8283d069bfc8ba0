"""The objective of the paper's Eq. 5: distance d(G, G0) plus λ_f times the expected FLOPs.

- content: L1 between the output and the target (the teacher's output, or the HR image);
- perceptual: L1 between VGG19 ``conv5_4`` (pre-activation) features of output and target;
- flops: λ_f · H, H the supernet's differentiable expected GFLOPs, or, with a FLOPs target, a
  two-sided penalty on H beyond a band around it (:func:`flops_target_penalty`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def content_loss(sr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (L1) between the output and the target, both NCHW in [0, 1]."""
    return F.l1_loss(sr, target)


class PerceptualLoss(nn.Module):
    """L1 distance of VGG19 features (``vgg``: a module mapping NCHW [0, 1] images to features).

    The feature network is frozen; gradients flow to the compared image only.
    """

    def __init__(self, vgg: nn.Module):
        super().__init__()
        self.vgg = vgg.eval()
        for p in self.vgg.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):  # the feature network stays in eval mode
        super().train(mode)
        self.vgg.eval()
        return self

    def forward(self, sr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self.vgg(target)
        return F.l1_loss(self.vgg(sr), t)


@dataclass
class Objective:
    """d(G, G0) = content_weight·L1 + perceptual_weight·VGG-L1 (the latter only when enabled)."""

    content_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual: PerceptualLoss | None = None

    def __call__(self, sr: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The total distance and its parts as floats (for the log)."""
        lc = content_loss(sr, target)
        total = self.content_weight * lc
        parts = {"l1": float(lc.detach())}
        if self.perceptual is not None and self.perceptual_weight > 0:
            lp = self.perceptual(sr, target)
            total = total + self.perceptual_weight * lp
            parts["perceptual"] = float(lp.detach())
        return total, parts


def flops_penalty(expected_gflops: torch.Tensor, weight: float) -> torch.Tensor:
    """λ_f · H: the efficiency term of the architecture loss (H in GFLOPs at a 256×256 LR input)."""
    return weight * expected_gflops


#: The FLOPs target's dead band: expected GFLOPs within ±5% of the target cost nothing.
FLOPS_TARGET_BAND = 0.05
#: The weight of the FLOPs target's penalty (measured on the smoke preset, docs/supernet.md).
FLOPS_TARGET_WEIGHT = 5.0


def flops_target_penalty(expected_gflops: torch.Tensor, target: float, band: float = FLOPS_TARGET_BAND,
                         weight: float = FLOPS_TARGET_WEIGHT) -> torch.Tensor:
    """The FLOPs target's term of the architecture loss: ``weight/2 · e²``, ``e`` the relative
    excess of the expected GFLOPs H beyond the dead band (``v = H/target − 1`` minus its clamp to
    ±``band``). Two-sided: it pulls toward cheaper choices above the band, costlier ones below it,
    and leaves the task alone inside it. Its gradient is that of a Lagrangian term ``μ·H/target``
    whose multiplier ``μ = weight·e`` follows the excess (docs/supernet.md, "FLOPs target")."""
    v = expected_gflops / target - 1.0
    excess = v - v.detach().clamp(-band, band)
    return 0.5 * weight * excess.square()
