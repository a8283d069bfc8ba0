"""The trellis supernet (Auto-DeepLab style; the paper's AGD + AutoDeepLab baseline, Fig. 2 left).

Nodes (a, b), 0 ≤ a ≤ n_rir, 0 ≤ b ≤ n_up: the feature map after a RiR cells and b ups. Node
(0, 0) is ``conv_first``'s output. Node (a, b) receives a RiR edge from (a-1, b) and an up edge
from (a, b-1) (those that exist); a node with both merges them with relaxed edge weights
``e = FN(β_node)`` (a group of 2; order [RiR, up]). The output is the head applied to the end node
(n_rir, n_up), so every derived path has exactly n_rir RiR cells and n_up ups.

Sharing: ``"ordinal"``: the RiR edge into (a, ·) runs cell a-1 and the up edge into (·, b) runs up
b-1; ``"none"``: every edge has its own module. With ordinal sharing and backbone B, the RiR edges
into one column share a cell and one resolution, so they run as one batched call.

Sparse execution: the end node is live; a live node's edges with non-zero weight are computed and
make their sources live.

Derivation: the path of largest product of edge weights from (0, 0) to the end (Viterbi; at a
node whose two inputs tie, the RiR edge).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from ..errors import UserError
from .relax import PackedRelaxation


class TrellisTopology:
    """Structure, execution, expected FLOPs and derivation of the trellis supernet."""

    name = "trellis"

    def __init__(self, cfg):
        self.cfg = cfg
        R, U = cfg.n_rir, cfg.n_up
        self.nodes = [(a, b) for a in range(R + 1) for b in range(U + 1)]
        self.two = [(a, b) for a, b in self.nodes if a >= 1 and b >= 1]
        self.two_index = {ab: i for i, ab in enumerate(self.two)}
        ordinal = cfg.share == "ordinal"
        self.n_cells = R if ordinal else R * (U + 1)
        self.n_ups = U if ordinal else (R + 1) * U
        self.beta_shape = (len(self.two), 2) if self.two else None
        self.end = (R, U)

    def dense_counts(self) -> Counter:
        """What one dense forward pass runs, by (kind, level = ups before it): RiR cell calls
        ``("cell", b)``, up calls ``("up", b)``, two-input merges ``("merge", b)`` and, on
        backbone A, ``conv_hr`` calls ``("hr", b)``."""
        counts = Counter()
        for a, b in self.nodes:
            for kind, runs in (("cell", a >= 1), ("up", b >= 1), ("merge", a >= 1 and b >= 1)):
                counts[kind, b] += runs
        if self.cfg.backbone == "A":
            counts["hr", self.cfg.n_up] = 1
        return +counts

    def rir_module(self, a: int, b: int) -> int:
        return a - 1 if self.cfg.share == "ordinal" else (a - 1) * (self.cfg.n_up + 1) + b

    def up_module(self, a: int, b: int) -> int:
        return b - 1 if self.cfg.share == "ordinal" else a * self.cfg.n_up + b - 1

    def make_relaxation(self, cfg):
        if not self.two:
            return None
        return PackedRelaxation(cfg.relaxations["edge"], [2] * len(self.two))

    # -------------------------------------------------------------------------------- weights
    def _edge(self, w, a: int, b: int):
        """(RiR-edge weight, up-edge weight) of node (a, b) from ``w`` ([n_two, 2] tensor or
        array); None where the edge does not exist, 1 where it is the only input."""
        if a >= 1 and b >= 1:
            i = self.two_index[(a, b)]
            return w[i, 0], w[i, 1]
        return (1.0 if a >= 1 else None), (1.0 if b >= 1 else None)

    def _live(self, ctx):
        """Live nodes and edges (set of (node, kind)) given the host edge weights."""
        host = np.zeros((0, 2)) if ctx.net_host is None else ctx.net_host.reshape(-1, 2)
        live_nodes, live_edges = {self.end}, set()
        for a, b in reversed(self.nodes):
            if (a, b) not in live_nodes or (a, b) == (0, 0):
                continue
            wr, wu = self._edge(host, a, b)
            for kind, w, src in ((0, wr, (a - 1, b)), (1, wu, (a, b - 1))):
                if w is None or (ctx.sparse and float(w) <= 0.0):
                    continue
                live_edges.add(((a, b), kind))
                live_nodes.add(src)
        return live_nodes, live_edges

    # ------------------------------------------------------------------------------ execution
    def forward(self, net, x0: torch.Tensor, ctx) -> torch.Tensor:
        live_nodes, live_edges = self._live(ctx)
        e = ctx.net_w.view(-1, 2) if ctx.net_w is not None else None
        val = {(0, 0): x0}
        R, U = self.cfg.n_rir, self.cfg.n_up
        for a in range(R + 1):
            rir_out = {}
            if a >= 1:
                bs = [b for b in range(U + 1) if ((a, b), 0) in live_edges]
                batch_ok = self.cfg.share == "ordinal" and self.cfg.backbone == "B"
                chunks = [bs] if batch_ok and bs else [[b] for b in bs]
                for chunk in chunks:
                    x = torch.cat([val[(a - 1, b)] for b in chunk]) if len(chunk) > 1 else val[(a - 1, chunk[0])]
                    y = net.run_cell(self.rir_module(a, chunk[0]), x, ctx)
                    for b, yb in zip(chunk, y.chunk(len(chunk)) if len(chunk) > 1 else [y]):
                        rir_out[b] = yb
            for b in range(U + 1):
                if (a, b) == (0, 0) or (a, b) not in live_nodes:
                    continue
                wr, wu = self._edge(e, a, b)
                terms = []
                if ((a, b), 0) in live_edges:
                    terms.append((wr, rir_out[b]))
                if ((a, b), 1) in live_edges:
                    terms.append((wu, net.run_up(self.up_module(a, b), val[(a, b - 1)])))
                if wr is not None and wu is not None:
                    v = terms[0][0] * terms[0][1]
                    for w, t in terms[1:]:
                        v = v + w * t
                else:
                    v = terms[0][1]
                val[(a, b)] = v
        out = val[self.end]
        if self.cfg.backbone == "A":
            out = net.run_hr(out)
        return net.run_last(out)

    # ---------------------------------------------------------------------------------- FLOPs
    def _path_flops(self, cell_costs: torch.Tensor, costs, combine):
        """FLOPs of the paths to the end node, node by node: ``combine(options)`` merges a node's
        ``[(edge weight or None, cost through that edge)]`` (an expectation, a min or a max)."""
        E = {(0, 0): cell_costs.new_tensor(costs.stem * costs.res(0))}
        for a, b in self.nodes[1:]:
            options = []
            if a >= 1:
                options.append((0, E[(a - 1, b)] + cell_costs[self.rir_module(a, b)] * costs.res(b)))
            if b >= 1:
                options.append((1, E[(a, b - 1)] + costs.up * costs.res(b)))
            E[(a, b)] = combine((a, b), options)
        return E[self.end] + costs.head * costs.res(self.cfg.n_up if self.cfg.backbone == "A" else 0)

    def expected_flops(self, ctx, cell_costs: torch.Tensor, costs) -> torch.Tensor:
        """Expected FLOPs of the path drawn backwards from the end node with the edge weights."""
        e = ctx.net_w.to(torch.float64).view(-1, 2) if ctx.net_w is not None else None

        def expectation(node, options):
            weights = self._edge(e, *node)
            total = 0.0
            for kind, cost in options:
                total = total + weights[kind] * cost
            return total
        return self._path_flops(cell_costs, costs, expectation)

    def flops_range(self, cell_low: torch.Tensor, cell_high: torch.Tensor, costs) -> tuple[float, float]:
        """The least and the largest FLOPs of any trellis path, given every cell's least and largest."""
        def pick(f):
            return lambda node, options: f(cost for _, cost in options)
        return (float(self._path_flops(cell_low, costs, pick(min))),
                float(self._path_flops(cell_high, costs, pick(max))))

    # ------------------------------------------------------------------------------ derivation
    def derive_path(self, ctx) -> list[int]:
        host = ctx.net_host.reshape(-1, 2) if ctx.net_host is not None else np.zeros((0, 2))
        best = {(0, 0): (0.0, None)}
        for a, b in self.nodes[1:]:
            wr, wu = self._edge(host, a, b)
            options = []
            if wr is not None:
                options.append((best[(a - 1, b)][0] + (math.log(wr) if wr > 0 else -math.inf), 0))
            if wu is not None:
                options.append((best[(a, b - 1)][0] + (math.log(wu) if wu > 0 else -math.inf), 1))
            score, step = max(options, key=lambda o: (o[0], -o[1]))
            best[(a, b)] = (score, step)
        path, node = [], self.end
        while node != (0, 0):
            step = best[node][1]
            path.append(step)
            node = (node[0] - 1, node[1]) if step == 0 else (node[0], node[1] - 1)
        return path[::-1]

    def route(self, path: list[int]) -> list[tuple[int, int]]:
        R, U = self.cfg.n_rir, self.cfg.n_up
        if path.count(0) != R or path.count(1) != U or len(path) != R + U:
            raise UserError(f"path {list(path)} is not a trellis path: it must hold exactly {R} RiR "
                            f"cells (0) and {U} ups (1)")
        a = b = 0
        out = []
        for step in path:
            if step == 0:
                a += 1
                out.append((0, self.rir_module(a, b)))
            else:
                b += 1
                out.append((1, self.up_module(a, b)))
        return out


__all__ = ["TrellisTopology"]
