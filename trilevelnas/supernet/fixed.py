"""The fixed-path supernet (the bilevel baseline): the network level is not searched; only α and γ.

The path is ``config.fixed_path`` or, by default, the full backbone ``[0]*n_rir + [1]*n_up``
(AGD's layout: all cells at low resolution, then the ups/convs). The k-th 0 runs cell k, the m-th
1 runs up m; backbone A completes a short path with the remaining ups at the end.
"""
from __future__ import annotations

from collections import Counter

import torch

from ..errors import UserError


class FixedTopology:
    """Structure, execution, expected FLOPs and derivation of the fixed-path supernet."""

    name = "fixed"

    def __init__(self, cfg):
        self.cfg = cfg
        self.path = cfg.path
        full = list(self.path)
        if cfg.backbone == "A":
            full += [1] * (cfg.n_up - full.count(1))
        self.full = full
        self.n_cells = full.count(0)
        self.n_ups = full.count(1)
        self.beta_shape = None
        steps, k, m = [], 0, 0
        for s in full:
            steps.append((0, k) if s == 0 else (1, m))
            k += s == 0
            m += s == 1
        self.steps = steps

    def dense_counts(self) -> Counter:
        """What one forward pass runs, by (kind, level = ups before it): RiR cell calls
        ``("cell", b)``, up calls ``("up", b)`` and, on backbone A, the ``conv_hr`` call ``("hr", b)``."""
        counts, b = Counter(), 0
        for step, _ in self.steps:
            b += step
            counts[("cell", "up")[step], b] += 1
        if self.cfg.backbone == "A":
            counts["hr", b] = 1
        return counts

    def make_relaxation(self, cfg):
        return None

    def forward(self, net, x0: torch.Tensor, ctx) -> torch.Tensor:
        x = x0
        for step, module in self.steps:
            x = net.run_cell(module, x, ctx) if step == 0 else net.run_up(module, x)
        if self.cfg.backbone == "A":
            x = net.run_hr(x)
        return net.run_last(x)

    def expected_flops(self, ctx, cell_costs: torch.Tensor, costs) -> torch.Tensor:
        total = cell_costs.new_tensor(costs.stem * costs.res(0))
        b = 0
        for step, module in self.steps:
            if step == 0:
                total = total + cell_costs[module] * costs.res(b)
            else:
                b += 1
                total = total + costs.up * costs.res(b)
        return total + costs.head * costs.res(b if self.cfg.backbone == "A" else 0)

    def flops_range(self, cell_low: torch.Tensor, cell_high: torch.Tensor, costs) -> tuple[float, float]:
        """The least and the largest FLOPs of the path, given every cell's least and largest."""
        return (float(self.expected_flops(None, cell_low, costs)),
                float(self.expected_flops(None, cell_high, costs)))

    def derive_path(self, ctx) -> list[int]:
        return list(self.path)

    def route(self, path: list[int]) -> list[tuple[int, int]]:
        if list(path) != list(self.path):
            raise UserError(f"path {list(path)} differs from the fixed supernet's path {self.path}")
        return list(self.steps)


__all__ = ["FixedTopology"]
