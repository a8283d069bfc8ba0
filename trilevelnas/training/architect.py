"""The architecture optimiser of the search and its step (as ``darts/cnn/architect.py`` does)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..complexity import arch_cost
from .config import Config
from .distributed import DistContext, all_reduce_grads
from .losses import Objective, flops_penalty, flops_target_penalty


class Architect:
    """Owns the Adam optimiser of the supernet's architecture parameters α, β, γ
    (``search.arch_lr``, ``search.arch_betas``, ``search.arch_weight_decay``) and its step."""

    def __init__(self, supernet: nn.Module, cfg: Config, objective: Objective, ctx: DistContext,
                 check_finite: Callable[[dict], None]):
        self.supernet, self.objective, self.ctx, self.check_finite = supernet, objective, ctx, check_finite
        self.flops_weight = cfg.loss.flops_weight
        self.flops_target = cfg.loss.flops_target
        self.flops_target_weight = cfg.loss.flops_target_weight
        # H's gradient reaches the cells' α and γ unless the target's penalty moves the path alone
        self.cells_in_cost = self.flops_target is None or cfg.loss.flops_target_levels == "all"
        self.params = list(supernet.arch_parameters().values())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.search.arch_lr, betas=tuple(cfg.search.arch_betas),
                                          weight_decay=cfg.search.arch_weight_decay)

    def step(self, lq: torch.Tensor, target: torch.Tensor) -> dict:
        """One update of α, β, γ on a validation batch (χ2): minimise the architecture loss
        ``d + order + λ_f·H`` (the distance to ``target``, the tree's ordering term, the expected
        GFLOPs when ``loss.flops_weight`` > 0), with the gradients averaged over the ranks. With
        ``loss.flops_target`` the target's two-sided penalty, weighted by ``loss.flops_target_weight``,
        replaces λ_f·H (:func:`flops_target_penalty`; weight 0: no cost term, the derivation meets the target;
        ``loss.flops_target_levels = "path"``: the penalty's gradient reaches β alone).

        Returns the loss and its parts as floats: ``arch_loss``, ``arch_d``, ``order``, ``gflops``
        and, with a target, ``derived_gflops`` (the plain derivation before the step).
        A non-finite loss stops the run (``check_finite``) before anything is updated. The step
        leaves gradients on the supernet's weights; the caller clears them.
        """
        sn = self.supernet
        self.optimizer.zero_grad(set_to_none=True)
        # The unwrapped supernet: only the architecture gradients are wanted, averaged over the
        # ranks below (DDP would all-reduce the weight gradients too).
        d, _ = self.objective(sn(lq), target)
        gflops = sn.expected_flops(cells=self.cells_in_cost)
        order = sn.order_loss(task_loss=d).to(d.dtype)
        arch_loss = d + order
        extra = {}
        if self.flops_target is not None:
            extra = {"derived_gflops": arch_cost(sn.derive())["gflops"]}
            if self.flops_target_weight > 0:
                arch_loss = arch_loss + flops_target_penalty(gflops, self.flops_target,
                                                             weight=self.flops_target_weight).to(d.dtype)
        elif self.flops_weight > 0:
            arch_loss = arch_loss + flops_penalty(gflops, self.flops_weight)
        self.check_finite({"arch_loss": arch_loss})
        arch_loss.backward()
        all_reduce_grads(self.params, self.ctx)
        self.optimizer.step()
        return {"arch_loss": float(arch_loss.detach()), "arch_d": float(d.detach()),
                "order": float(order.detach()), "gflops": float(gflops.detach()), **extra}

    def state_dict(self) -> dict:
        """The optimiser's state (a checkpoint's ``optimizers["arch"]``)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`."""
        self.optimizer.load_state_dict(state)
