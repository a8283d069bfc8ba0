"""The differentiable expected-FLOPs model H(α, β, γ) (docs/supernet.md "Expected FLOPs", docs/architectures.md "FLOPs convention").

``H = Σ_nodes q_n · FLOPs(path to n)``; a cell's FLOPs are ``Σ_slots Σ_k α_k · E[F_k(w_in, w_out)]``
with ``w_in``, ``w_out`` independent under softmax(γ) of the neighbouring slots (the cell's input
and last output are C). ``F_k`` and the fixed layers' costs come from
:mod:`trilevelnas.complexity` (the same formulas as ``profile()``: conv MACs + bias adds +
LeakyReLU elements), so at one-hot α, β, γ, ``H`` equals ``profile(extract(derive()))``. All in
float64; per-pixel costs are multiplied by the pixel count at each resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arch import OP_NAMES
from ..complexity import conv_cost, leaky_relu_cost, op_cost


@dataclass(frozen=True)
class FixedCosts:
    """Per-pixel FLOPs of the non-searched layers, and the LR pixel count."""

    backbone: str
    pixels: int
    stem: float
    up: float
    head: float

    def res(self, b: int) -> float:
        """Pixels of a feature map after ``b`` ups (backbone A doubles each side per up)."""
        return float(self.pixels * (4 ** b if self.backbone == "A" else 1))

    @classmethod
    def of(cls, backbone: str, channels: int, scale: int, lr_size=(256, 256)) -> "FixedCosts":
        c = channels
        stem = conv_cost(3, c, 3, 1, 1)
        up = conv_cost(c, c, 3, 1, 1) + leaky_relu_cost(c, 1, 1)
        if backbone == "A":
            head = conv_cost(c, c, 3, 1, 1) + leaky_relu_cost(c, 1, 1) + conv_cost(c, 3, 3, 1, 1)
        else:
            head = conv_cost(c, 3 * scale * scale, 3, 1, 1)
        return cls(backbone, int(lr_size[0]) * int(lr_size[1]), float(stem), float(up), float(head))


def op_tables(widths: list[int]) -> torch.Tensor:
    """[4, W, W] float64: per-pixel FLOPs of each candidate from width i to width j."""
    t = torch.zeros(len(OP_NAMES), len(widths), len(widths), dtype=torch.float64)
    for k, name in enumerate(OP_NAMES):
        for i, wi in enumerate(widths):
            for j, wj in enumerate(widths):
                t[k, i, j] = float(op_cost(name, wi, wj, 1, 1)["flops"])
    return t


def cell_costs(op_w: torch.Tensor, gamma: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Expected per-pixel FLOPs of every cell: op_w [n, 5, 4], gamma [n, 4, W] → [n] float64."""
    n = op_w.shape[0]
    if n == 0:
        return tables.new_zeros(0)
    p = torch.softmax(gamma.to(torch.float64), dim=-1)
    full = torch.zeros(n, 1, p.shape[-1], dtype=torch.float64, device=p.device)
    full[..., -1] = 1.0
    p_in = torch.cat([full, p], 1)
    p_out = torch.cat([p, full], 1)
    e = torch.einsum("csi,kij,csj->csk", p_in, tables.to(p.device), p_out)
    return (op_w.to(torch.float64) * e).sum(dim=(1, 2))


def cell_cost_range(tables: torch.Tensor) -> tuple[float, float]:
    """The least and the largest per-pixel FLOPs of one cell over every choice of its five ops and
    four inner widths (``tables`` from :func:`op_tables`; the cell's ends are the last width, C):
    a min-plus (max-plus) product along the chain of slots."""
    out = []
    for reduce in (torch.amin, torch.amax):
        step = reduce(tables, dim=0)              # [W, W]: the best op from width i to width j
        v = step[-1]                              # slot 1, from C
        for _ in range(3):                        # slots 2–4
            v = reduce(v[:, None] + step, dim=0)
        out.append(float(reduce(v + step[:, -1], dim=0)))  # slot 5, back to C
    return out[0], out[1]


__all__ = ["FixedCosts", "op_tables", "cell_costs", "cell_cost_range"]
