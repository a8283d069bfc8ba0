"""The tree supernet (paper §3.1, Fig. 2 right): every path of ≤ n_rir RiR cells and ≤ n_up
ups/convs is a root-to-node path; every node's feature map feeds the output.

Nodes are the step sequences in breadth-first order (by depth, then lexicographic), so a parent
precedes its children and "shallower" means "smaller index". Node ``s`` is computed from its
parent by the step ``s[-1]``; with ``share="ordinal"`` that step runs the k-th RiR cell
(k = number of 0s in ``s``) or the m-th up (m = number of 1s), so all nodes of one group
(a 0s, b 1s) reached by the same step share one module and run as ONE batched call (their inputs
stacked along the batch axis). With ``share="none"`` each node has its own module.

Output. Backbone B: ``PixelShuffle(conv_last(Σ_n q_n f_n))`` (conv_last is affine and Σ q = 1, so
this equals Σ_n q_n · head(f_n)). Backbone A: node ``s`` with b ups is completed to ×2^n_up by the
remaining ups, i.e. by the path to node ``s·1…1``, which is itself a tree node; so the output is
``conv_last(Σ_m Q_m lrelu(conv_hr(f_m)))`` over the fully upsampled nodes m, with
``Q_m = Σ_{n completes to m} q_n``.

Sparse execution: a node is computed iff it or a descendant has a non-zero output weight
(q for B, Q for A); only nodes with non-zero weight enter the head.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from ..errors import UserError
from .relax import PackedRelaxation


def enumerate_tree(n_rir: int, n_up: int) -> list[tuple[int, ...]]:
    """All step sequences with ≤ n_rir zeros and ≤ n_up ones, breadth-first, lexicographic."""
    nodes, frontier = [()], [()]
    for _ in range(n_rir + n_up):
        nxt = []
        for s in frontier:
            if s.count(0) < n_rir:
                nxt.append(s + (0,))
            if s.count(1) < n_up:
                nxt.append(s + (1,))
        nodes += nxt
        frontier = nxt
    return nodes


def _rows(t: torch.Tensor, n: int, idx: list[int]) -> torch.Tensor:
    """Rows ``idx`` of a stack of ``n`` feature batches stored as [n·N, C, H, W]."""
    if idx == list(range(n)):
        return t
    v = t.view(n, -1, *t.shape[1:])
    return v[torch.tensor(idx, device=t.device)].reshape(-1, *t.shape[1:])


def _weighted_sum(w: torch.Tensor, t: torch.Tensor, n: int) -> torch.Tensor:
    """Σ_i w[i] · batch_i of a stack [n·N, C, H, W] → [N, C, H, W]."""
    v = t.view(n, -1, *t.shape[1:])
    return torch.tensordot(w, v, dims=([0], [0]))


class TreeTopology:
    """Structure, execution, expected FLOPs and derivation of the tree supernet."""

    name = "tree"

    def __init__(self, cfg):
        self.cfg = cfg
        self.seqs = enumerate_tree(cfg.n_rir, cfg.n_up)
        index = {s: i for i, s in enumerate(self.seqs)}
        self.index = index
        n = len(self.seqs)
        self.n_nodes = n
        self.parent = [-1] + [index[s[:-1]] for s in self.seqs[1:]]
        self.a = [s.count(0) for s in self.seqs]
        self.b = [s.count(1) for s in self.seqs]
        self.step = [-1] + [s[-1] for s in self.seqs[1:]]
        n_cells = n_ups = 0
        self.module = [-1]
        for i in range(1, n):
            if cfg.share == "ordinal":
                self.module.append(self.a[i] - 1 if self.step[i] == 0 else self.b[i] - 1)
            elif self.step[i] == 0:
                self.module.append(n_cells)
                n_cells += 1
            else:
                self.module.append(n_ups)
                n_ups += 1
        if cfg.share == "ordinal":
            n_cells, n_ups = cfg.n_rir, cfg.n_up
        self.n_cells, self.n_ups = n_cells, n_ups
        groups: dict[tuple[int, int], list[int]] = {}
        for i in range(n):
            groups.setdefault((self.a[i], self.b[i]), []).append(i)
        self.groups = groups
        self.group_order = sorted(groups, key=lambda ab: (ab[0] + ab[1], ab[0]))
        # desc[i, j]: j is i or a descendant of i
        desc = np.zeros((n, n), dtype=bool)
        for j in range(n):
            i = j
            while i >= 0:
                desc[i, j] = True
                i = self.parent[i]
        self.desc = desc
        self.complete = [index[s + (1,) * (cfg.n_up - s.count(1))] for s in self.seqs]
        self.beta_shape = (n,)

    def dense_counts(self) -> Counter:
        """What one dense forward pass runs, by (kind, level = ups before it): RiR cell calls
        ``("cell", b)``, up calls ``("up", b)`` and, on backbone A, ``conv_hr`` calls ``("hr", b)``."""
        counts = Counter((("cell", "up")[self.step[i]], self.b[i]) for i in range(1, self.n_nodes))
        if self.cfg.backbone == "A":
            counts["hr", self.cfg.n_up] = self.b.count(self.cfg.n_up)
        return counts

    # ------------------------------------------------------------------------------ relaxation
    def make_relaxation(self, cfg) -> PackedRelaxation:
        return PackedRelaxation(cfg.relaxations["node"], [self.n_nodes], parents=self.parent,
                                lam=cfg.order_lambda)

    def output_weights(self, q: torch.Tensor) -> torch.Tensor:
        """Weights of the nodes that enter the head: q (B) or Q (A, summed onto completions)."""
        if self.cfg.backbone == "B":
            return q
        idx = torch.tensor(self.complete, device=q.device)
        return torch.zeros_like(q).index_add(0, idx, q)

    def _output_weights_host(self, q_host: np.ndarray) -> np.ndarray:
        if self.cfg.backbone == "B":
            return q_host
        return np.bincount(np.asarray(self.complete), weights=q_host, minlength=self.n_nodes)

    def computed_nodes(self, q_host: np.ndarray) -> np.ndarray:
        """Sparse execution's node mask for node weights ``q_host``: a node is computed iff it or
        a descendant has non-zero output weight."""
        w_host = self._output_weights_host(q_host)
        return (self.desc & (w_host > 0)[None, :]).any(axis=1)

    # ------------------------------------------------------------------------------- execution
    def forward(self, net, x0: torch.Tensor, ctx) -> torch.Tensor:
        w_out = self.output_weights(ctx.net_w)
        w_host = self._output_weights_host(ctx.net_host)
        if ctx.sparse:
            need = self.computed_nodes(ctx.net_host)
            head_ok = w_host > 0
        else:
            need = np.ones(self.n_nodes, dtype=bool)
            head_ok = need
        feats = {(0, 0): x0}
        rows = {(0, 0): [0]}
        for g in self.group_order[1:]:
            children = [i for i in self.groups[g] if need[i]]
            if not children:
                continue
            a, b = g
            ys, ids = [], []
            for step, src in ((0, (a - 1, b)), (1, (a, b - 1))):
                kids = [i for i in children if self.step[i] == step]
                if not kids:
                    continue
                pos = {node: r for r, node in enumerate(rows[src])}
                by_module: dict[int, list[int]] = {}
                for i in kids:
                    by_module.setdefault(self.module[i], []).append(i)
                for m, ns in by_module.items():
                    x = _rows(feats[src], len(rows[src]), [pos[self.parent[i]] for i in ns])
                    ys.append(net.run_cell(m, x, ctx) if step == 0 else net.run_up(m, x))
                    ids += ns
            feats[g] = ys[0] if len(ys) == 1 else torch.cat(ys)
            rows[g] = ids
        agg = None
        for g, ids in rows.items():
            if self.cfg.backbone == "A" and g[1] != self.cfg.n_up:
                continue
            sel = [r for r, i in enumerate(ids) if head_ok[i]]
            if not sel:
                continue
            t = _rows(feats[g], len(ids), sel)
            if self.cfg.backbone == "A":
                t = net.run_hr(t)
            w = w_out[torch.tensor([ids[r] for r in sel], device=t.device)]
            s = _weighted_sum(w, t, len(sel))
            agg = s if agg is None else agg + s
        return net.run_last(agg)

    # ------------------------------------------------------------------------------- FLOPs
    def node_flops(self, cell_costs: torch.Tensor, costs) -> torch.Tensor:
        """[n_nodes] float64: FLOPs of the network that ends at each node (stem + path to the
        node + completion + head), given every cell's per-pixel FLOPs ``cell_costs``."""
        A = self.cfg.backbone == "A"
        device = cell_costs.device
        res = np.array([costs.res(b) for b in self.b], dtype=np.float64)
        is_rir = np.array(self.step) == 0
        is_up = np.array(self.step) == 1
        edge = torch.as_tensor(np.where(is_up, costs.up * res, 0.0), device=device)
        if self.n_cells:
            mod = torch.as_tensor(np.where(is_rir, self.module, 0), device=device)
            rir = torch.as_tensor(np.where(is_rir, res, 0.0), device=device)
            edge = edge + cell_costs[mod] * rir
        path = torch.as_tensor(self.desc.T, dtype=torch.float64, device=device) @ edge
        const = costs.stem * costs.res(0) + costs.head * costs.res(self.cfg.n_up if A else 0)
        fixed = np.full(self.n_nodes, const, dtype=np.float64)
        if A:
            for i in range(self.n_nodes):
                fixed[i] += sum(costs.up * costs.res(bb) for bb in range(self.b[i] + 1, self.cfg.n_up + 1))
        return path + torch.as_tensor(fixed, device=device)

    def expected_flops(self, ctx, cell_costs: torch.Tensor, costs) -> torch.Tensor:
        """Σ_n q_n · FLOPs(stem + path to n + completion + head) (see :mod:`.flops`)."""
        q = ctx.net_w.to(torch.float64)
        return (q * self.node_flops(cell_costs, costs)).sum()

    def flops_range(self, cell_low: torch.Tensor, cell_high: torch.Tensor, costs) -> tuple[float, float]:
        """The least and the largest FLOPs of any network of the tree, given every cell's least
        and largest per-pixel FLOPs (a node's cost grows with its cells')."""
        return float(self.node_flops(cell_low, costs).min()), float(self.node_flops(cell_high, costs).max())

    # ------------------------------------------------------------------------------ derivation
    def derive_path(self, ctx) -> list[int]:
        """The path to node* = argmax q (first, i.e. shallowest, on ties)."""
        return list(self.seqs[int(np.argmax(ctx.net_host))])

    def route(self, path: list[int]) -> list[tuple[int, int]]:
        """(step, module index) of each step of the full path (A: completed with ups)."""
        s = tuple(path)
        if s not in self.index:
            raise UserError(f"path {list(path)} is not in the tree supernet (at most "
                            f"{self.cfg.n_rir} RiR cells and {self.cfg.n_up} ups)")
        if self.cfg.backbone == "A":
            s = s + (1,) * (self.cfg.n_up - s.count(1))
        return [(s[k], self.module[self.index[s[:k + 1]]]) for k in range(len(s))]


__all__ = ["TreeTopology", "enumerate_tree"]
