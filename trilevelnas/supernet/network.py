"""The hierarchical supernet: network level (tree / trellis / fixed path), cell level (α over the
four candidates of every op slot) and kernel level (γ over the width set of every inner slot).

One forward step:

1. relax α of ALL slots in one packed call, the network level (β) in one packed call, and sample
   the widths of ALL slots from one Gumbel tensor (:func:`~trilevelnas.space.sample_widths`);
2. copy what decides the work to the host in ONE transfer (op weights, width indices, network
   weights): the widths become slice sizes, and in sparse execution the zero weights say which
   candidates, nodes and edges are skipped;
3. run the topology (shared modules batched), then the head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..space import N_SLOTS, RESIDUAL_SCALE, RiRCell, sample_widths, width_set
from ..space.widths import WIDTH_MODES
from ..arch import OP_NAMES
from ..errors import UserError
from .config import SupernetConfig
from .fixed import FixedTopology
from .flops import FixedCosts, cell_costs, op_tables
from .relax import PackedRelaxation
from .trellis import TrellisTopology
from .tree import TreeTopology

ARCH_INIT_STD = 1e-3
TOPOLOGY_CLASSES = {"tree": TreeTopology, "trellis": TrellisTopology, "fixed": FixedTopology}
_ALL_OPS = [list(range(len(OP_NAMES)))] * N_SLOTS


@dataclass
class StepContext:
    """What one forward step decided: relaxed weights (tensors, differentiable) and their host copy."""

    op_w: torch.Tensor          # [n_cells, 5, 4] relaxed α
    coeffs: torch.Tensor        # [n_cells, 5, 4] α · width coefficient (· 0.2 in the last slot)
    width_index: torch.Tensor   # [n_cells, 4] int64
    widths: list                # per cell: 4 inner widths (ints)
    live_ops: list              # per cell: 5 lists of candidate indices to run
    net_w: Any                  # network-level weights (tree: q [n_nodes]; trellis: e [n_two·2]) or None
    net_host: Any               # numpy copy of net_w or None
    sparse: bool


class Supernet(nn.Module):
    """``Supernet(SupernetConfig(...))``: input LR [N, 3, H, W] → SR [N, 3, sH, sW].

    Architecture parameters (``arch_parameters()``): ``alpha`` [n_cells, 5, 4], ``gamma``
    [n_cells, 4, W] and, for tree / trellis, ``beta`` (tree: [n_nodes]; trellis: [n_merge, 2]).
    They start as N(0, 1e-3²) noise: near-uniform relaxed weights, with ties broken at random
    rather than by index. Network weights: everything else (``weight_parameters()``).
    """

    def __init__(self, config: SupernetConfig | None = None):
        super().__init__()
        cfg = config if config is not None else SupernetConfig()
        if not isinstance(cfg, SupernetConfig):
            raise UserError(f"Supernet expects a SupernetConfig, got {type(cfg).__name__}")
        self.config = cfg
        C = cfg.channels
        self.widths = width_set(C)
        self.topology = TOPOLOGY_CLASSES[cfg.topology](cfg)
        topo = self.topology
        self.conv_first = nn.Conv2d(3, C, 3, padding=1)
        self.cells = nn.ModuleList(RiRCell(C) for _ in range(topo.n_cells))
        self.ups = nn.ModuleList(nn.Conv2d(C, C, 3, padding=1) for _ in range(topo.n_ups))
        self.conv_hr = nn.Conv2d(C, C, 3, padding=1) if cfg.backbone == "A" else None
        out = 3 if cfg.backbone == "A" else 3 * cfg.scale ** 2
        self.conv_last = nn.Conv2d(C, out, 3, padding=1)
        self.shuffle = nn.PixelShuffle(cfg.scale) if cfg.backbone == "B" else None
        n = topo.n_cells
        self.alpha = nn.Parameter(ARCH_INIT_STD * torch.randn(n, N_SLOTS, len(OP_NAMES)))
        self.gamma = nn.Parameter(ARCH_INIT_STD * torch.randn(n, N_SLOTS - 1, len(self.widths)))
        self.beta = (nn.Parameter(ARCH_INIT_STD * torch.randn(*topo.beta_shape))
                     if topo.beta_shape is not None else None)
        self.op_relax = PackedRelaxation(cfg.relaxations["op"], [len(OP_NAMES)] * (n * N_SLOTS))
        self.net_relax = topo.make_relaxation(cfg)
        self.register_buffer("_op_tables", op_tables(self.widths), persistent=False)
        self.rho = 0.0
        self.width_mode: str | None = None

    # ------------------------------------------------------------------------ parameters, knobs
    def arch_parameters(self) -> dict[str, nn.Parameter]:
        """``{"alpha", "gamma"[, "beta"]}`` → Parameter (the architecture optimiser's)."""
        d = {"alpha": self.alpha, "gamma": self.gamma}
        if self.beta is not None:
            d["beta"] = self.beta
        return d

    def weight_parameters(self) -> list[nn.Parameter]:
        """All network weights (everything that is not an architecture parameter)."""
        arch = {id(p) for p in self.arch_parameters().values()}
        return [p for p in self.parameters() if id(p) not in arch]

    def set_radius(self, rho: float) -> None:
        """Sparsestmax radius as a fraction ρ ∈ [0, 1] of each group's circumradius (1: one-hot)."""
        rho = float(rho)
        if not 0.0 <= rho <= 1.0:
            raise UserError(f"radius {rho}: expected a fraction in [0, 1]")
        self.rho = rho

    def set_width_mode(self, mode: str | None) -> None:
        """Force the widths: ``"max"``, ``"min"``, ``"random"`` (sandwich rule), ``"gumbel"``,
        ``"argmax"``; None (default): Gumbel sampling in training mode, argmax in eval mode."""
        if mode is not None and mode not in WIDTH_MODES:
            raise UserError(f"width mode {mode!r}: expected one of {', '.join(WIDTH_MODES)} or None")
        self.width_mode = mode

    # ------------------------------------------------------------------------------ one step
    def _relax_levels(self):
        n = self.topology.n_cells
        op_w = (self.op_relax(self.alpha.reshape(-1), self.rho).view(n, N_SLOTS, len(OP_NAMES))
                if n else self.alpha)
        net_w = None
        if self.net_relax is not None:
            net_w = self.net_relax(self.beta.reshape(-1), self.rho)
        return op_w, net_w

    def step_context(self) -> StepContext:
        """Relax all levels, sample the widths, and decide the work (one host transfer)."""
        op_w, net_w = self._relax_levels()
        n, W = self.topology.n_cells, len(self.widths)
        mode = self.width_mode or ("gumbel" if self.training else "argmax")
        idx, wcoeff = sample_widths(self.gamma.reshape(-1, W), mode, self.config.gumbel_tau)
        idx = idx.view(n, N_SLOTS - 1)
        factor = torch.cat([wcoeff.view(n, N_SLOTS - 1).to(op_w.dtype),
                            op_w.new_full((n, 1), RESIDUAL_SCALE)], 1)
        coeffs = op_w * factor[..., None]
        parts = [op_w.detach().reshape(-1), idx.reshape(-1).to(op_w.dtype)]
        if net_w is not None:
            parts.append(net_w.detach().reshape(-1).to(op_w.dtype))
        host = torch.cat(parts).cpu().numpy()
        n_op = n * N_SLOTS * len(OP_NAMES)
        op_host = host[:n_op].reshape(n, N_SLOTS, len(OP_NAMES))
        idx_host = host[n_op:n_op + n * (N_SLOTS - 1)].astype(np.int64).reshape(n, N_SLOTS - 1)
        net_host = host[n_op + n * (N_SLOTS - 1):] if net_w is not None else None
        sparse = bool(self.config.sparse_execution)
        widths = [[self.widths[i] for i in row] for row in idx_host.tolist()]
        if sparse:
            live = [[np.flatnonzero(s > 0).tolist() for s in cell] for cell in op_host]
        else:
            live = [_ALL_OPS] * n
        return StepContext(op_w, coeffs, idx, widths, live, net_w, net_host, sparse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise UserError(f"Supernet input must be [N, 3, H, W], got {list(x.shape)}")
        ctx = self.step_context()
        return self.topology.forward(self, self.conv_first(x), ctx)

    # ---------------------------------------------------------------- modules the topologies run
    def run_cell(self, m: int, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        args = (x, ctx.widths[m], ctx.coeffs[m], ctx.live_ops[m])
        if self.config.checkpoint and torch.is_grad_enabled():
            rows = self.config.checkpoint_rows
            outs = [checkpoint(self.cells[m], xc, *args[1:], use_reentrant=False)
                    for xc in x.split(rows)]
            return outs[0] if len(outs) == 1 else torch.cat(outs)
        return self.cells[m](*args)

    def run_up(self, m: int, x: torch.Tensor) -> torch.Tensor:
        if self.config.backbone == "A":
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.leaky_relu(self.ups[m](x), 0.2)

    def run_hr(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv_hr(x), 0.2)

    def run_last(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(x)
        return self.shuffle(x) if self.shuffle is not None else x

    def relaxed_weights(self) -> dict[str, torch.Tensor]:
        """The architecture weights as the forward sees them at the current radius (detached):
        relaxed ``alpha`` [n_cells, 5, 4], ``gamma`` as softmax(γ) and, when present, relaxed
        ``beta`` (tree: q [n_nodes]; trellis: e [n_merge, 2])."""
        with torch.no_grad():
            op_w, net_w = self._relax_levels()
            out = {"alpha": op_w.detach().clone(), "gamma": torch.softmax(self.gamma.detach(), -1)}
            if net_w is not None:
                out["beta"] = net_w.detach().view_as(self.beta).clone()
        return out

    def order_loss(self, task_loss: torch.Tensor | None = None) -> torch.Tensor:
        """The tree's ordering term ``λ·Σ_edges max(0, q_child − q_parent)`` at the current radius
        (0-dim, differentiable in β; zero without a tree or at λ = 0; docs/supernet.md).

        With ``task_loss`` (a loss computed from this supernet's forward) the term is multiplied by
        ``s = mean |∂task_loss/∂β|`` (detached): λ is then measured in units of the task's pull on β,
        so its effect does not depend on the loss's scale. This is what the search adds to the
        architecture loss.
        """
        if self.net_relax is None or not getattr(self.net_relax, "ordered", False):
            return self.alpha.new_zeros(())
        q = self.net_relax(self.beta.reshape(-1), self.rho)
        term = self.net_relax.order_penalty(q)
        if task_loss is None:
            return term
        (g,) = torch.autograd.grad(task_loss, self.beta, retain_graph=True, allow_unused=True)
        if g is None:
            return term * 0
        return g.abs().mean().detach().to(term.dtype) * term

    # ---------------------------------------------------------------------------------- FLOPs
    def expected_flops(self, lr_size=(256, 256), cells: bool = True) -> torch.Tensor:
        """Differentiable expected GFLOPs H(α, β, γ) at an LR input of ``lr_size`` (float64).
        ``cells=False``: the cells' expected costs enter as constants, so H's gradient reaches β
        alone (its value is the same)."""
        op_w, net_w = self._relax_levels()
        ctx = StepContext(op_w, None, None, None, None, net_w, None, False)
        costs = FixedCosts.of(self.config.backbone, self.config.channels, self.config.scale, lr_size)
        cc = cell_costs(op_w, self.gamma, self._op_tables)
        if not cells:
            cc = cc.detach()
        return self.topology.expected_flops(ctx, cc, costs) / 1e9

    # ----------------------------------------------------------------------- derive, extract
    def derive(self):
        """The derived :class:`~trilevelnas.arch.Architecture` (node* = argmax q, shallower on
        ties; ops = argmax α; widths = argmax γ; trellis: the max-product path)."""
        from .extract import derive
        return derive(self)

    def extract(self, arch) -> nn.Module:
        """The derived network of ``arch`` (``models.build``) with this supernet's weights sliced
        in; at ρ = 1 in eval mode it computes exactly the supernet's function."""
        from .extract import extract
        return extract(self, arch)

    def extra_repr(self) -> str:
        c = self.config
        return (f"backbone={c.backbone}, topology={c.topology}, channels={c.channels}, "
                f"n_rir={c.n_rir}, n_up={c.n_up}, share={c.share}, cells={self.topology.n_cells}")
