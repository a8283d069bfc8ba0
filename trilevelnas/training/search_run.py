"""The search program's run: the paper's Algorithm 1 with "train from search".

- **pretrain** (weights only, on χ1): for each batch, the sandwich rule runs the supernet at
  [max, min, random, random] widths with one Adam update each, content loss only;
- **search**: each step, a weight update on a χ1 batch (Gumbel-sampled widths), then an
  architecture update on a χ2 batch (:class:`~trilevelnas.training.architect.Architect`: Adam,
  lr 3e-4, betas (0.5, 0.999), on α, β, γ minimising d + λ_f·H); the radius ρ of every relaxation
  rises linearly from ``radius_start`` to ``radius_end``;
- **derive**: ``supernet.derive()`` → ``arch.json``; with ``loss.flops_target``, the derivation
  within the budget (:func:`~trilevelnas.supernet.budget.derive_within`);
- **train**: the derived network, with the supernet's weights inherited (``supernet.extract``) or
  freshly initialised (from scratch), on all training images; **finetune** adds the perceptual
  loss (visual objective). These phases are :class:`~trilevelnas.training.run.Run`'s.
"""
from __future__ import annotations

import copy
import os
from dataclasses import replace

import torch
import torch.nn as nn

from ..fileio import write_json
from ..complexity import arch_cost
from ..space import SANDWICH
from ..supernet.budget import FLOPS_TOLERANCE, check_flops_target, derive_within
from ..supernet.decisions import OneHotTracker, decision_report, logit_margins
from . import checkpoint as ckpt
from . import components as comp
from .architect import Architect
from .config import Config, supernet_config
from .distributed import DistContext, all_reduce_grads, broadcast_module
from .loop import linear_radius
from .run import Run, clip_gradients, load_weights


class SearchRun(Run):
    """pretrain → search → derive on the supernet, then (``run.train_after_search``) the derived
    network's train phases, starting from the supernet's weights (``train.init = search``) or
    from scratch.

    The search state is this run's: the supernet (its weights as a state dict once the search is
    over), the architecture tensors, their logged history, the one-hot tracker and the decision
    report; checkpoints keep it in their :class:`~trilevelnas.training.checkpoint.SearchState`.
    """

    program = "search"

    def __init__(self, cfg: Config, out_dir: str, ctx: DistContext, device: torch.device,
                 resume: ckpt.Checkpoint | None = None, progress: bool | None = None):
        self.flops_range = None  # (least, largest) GFLOPs of the space, with a FLOPs target
        if cfg.loss.flops_target is not None:  # before any data is read
            self.flops_range = check_flops_target(supernet_config(cfg), cfg.loss.flops_target)
        super().__init__(cfg, out_dir, ctx, device, resume=resume, progress=progress)
        self.half1, self.half2 = comp.split_halves(self.train_full)
        #: the supernet's settings at the run's scale, as checkpoints store them (SupernetConfig.from_dict)
        self.supernet_record = {**cfg.to_dict()["supernet"], "scale": cfg.data.scale}
        self.supernet_state: dict | None = None  # the supernet at the end of the search
        self.architect: Architect | None = None  # during the search phase
        self.arch_tensors: dict = {}  # α, β, γ at the last checkpoint or at the derivation
        self.history: list[dict] = []  # α, β, γ and their relaxed weights every log_every search steps
        self.one_hot = OneHotTracker()
        self.decisions: dict | None = None  # decision_report at the end of the search
        ckpt.seed_all(ckpt.step_seed(cfg.run.seed, 0))
        self.supernet: nn.Module | None = comp.build_supernet(cfg).to(device)
        if resume is not None:
            self._restore(resume)

    # -- state ------------------------------------------------------------------------------
    def _live_modules(self) -> list[nn.Module]:
        return [m for m in (self.supernet, self.model) if m is not None]

    def _arch_params(self) -> dict:
        return dict(self.supernet.arch_parameters()) if self.supernet is not None else {}

    def _optimizer_states(self) -> dict:
        states = super()._optimizer_states()
        if self.architect is not None:
            states["arch"] = self.architect.state_dict()
        return states

    def _checkpoint(self) -> ckpt.Checkpoint:
        if self.supernet is not None:
            self.arch_tensors = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        supernet = self.supernet.state_dict() if self.supernet is not None else self.supernet_state
        return replace(super()._checkpoint(), search=ckpt.SearchState(
            self.supernet_record, supernet, self.arch_tensors, self.history, self.one_hot.state(), self.decisions))

    def _restore(self, state: ckpt.Checkpoint) -> None:
        """Continue from a search checkpoint: :meth:`Run._restore
        <trilevelnas.training.run.Run._restore>`, then the search state; after the search the
        supernet is kept as a state dict only."""
        super()._restore(state)
        s = state.search
        self.arch_tensors, self.history, self.decisions = dict(s.arch), list(s.history), s.decisions
        self.one_hot.load(s.one_hot)
        if s.supernet is None:
            return
        load_weights(self.supernet, s.supernet, os.path.join(self.out_dir, "checkpoint.pt"), "supernet")
        if "search" in self.loop.state.done:
            self.supernet_state = s.supernet
            self.supernet = None

    # -- the supernet's phases --------------------------------------------------------------
    def _search_objective(self):
        return self.full_objective if self.cfg.loss.perceptual_in_search else self.content_only

    def _setup_supernet_phase(self, name: str) -> None:
        """Pretrain or search: Adam on the supernet's weights (gradients averaged by
        :meth:`_sync_weights`, not by DDP) and, for the search, the :class:`Architect`."""
        sn = self.supernet
        section = self._section(name)
        sn.train()
        broadcast_module(sn, self.ctx)
        self.net = sn
        self._new_weight_optimizer(list(sn.weight_parameters()), section, section.milestones)
        self.architect = None
        if name == "search":
            self.architect = Architect(sn, self.cfg, self._search_objective(), self.ctx, self.loop.check_finite)
        pending = self._load_pending_optim(name)
        if pending and self.architect is not None:
            load_weights(self.architect, pending.get("arch"), os.path.join(self.out_dir, "checkpoint.pt"),
                         "optimizers arch")

    def _sync_weights(self) -> None:
        """Average the supernet's weight gradients over the ranks (the derived network uses DDP)."""
        if self.net is self.supernet:
            all_reduce_grads(self.opt_w.param_groups[0]["params"], self.ctx)

    def _pretrain_step(self, t: int) -> dict:
        """One χ1 batch, one weight update per sandwich width, content loss only."""
        loop = self.loop
        loop.seed_data("pretrain", t)
        batch, target = self.targets.sample(self.half1, self._batch_size("pretrain"), self.device)
        loop.seed_noise("pretrain", t)
        total = 0.0
        for mode in SANDWICH:
            self.supernet.set_width_mode(mode)
            self.opt_w.zero_grad(set_to_none=True)
            loss, _ = self.content_only(self.net(batch["lq"]), target)
            loop.check_finite({"loss": loss})
            loss.backward()
            self._sync_weights()
            clip_gradients(self.opt_w.param_groups[0]["params"], self.cfg.pretrain.grad_clip)
            self.opt_w.step()
            total += float(loss.detach())
        self.supernet.set_width_mode(None)
        self.sched_w.step()
        return {"loss": total / len(SANDWICH), "lr": self.opt_w.param_groups[0]["lr"]}

    def _search_step(self, t: int) -> dict:
        """A weight update on a χ1 batch, then the architecture update on a χ2 batch, at radius ρ(t)."""
        cfg, loop, sn = self.cfg, self.loop, self.supernet
        rho = linear_radius(t, cfg.search.steps, cfg.search.radius_start, cfg.search.radius_end,
                            cfg.search.radius_warmup)
        sn.set_radius(rho)
        out = self._weight_step(self.half1, "search", t, self._search_objective(), stream=0)
        self.sched_w.step()
        loop.seed_data("search", t, 1)
        batch, target = self.targets.sample(self.half2, self._batch_size("search"), self.device)
        loop.seed_noise("search", t, 1)
        out.update(self.architect.step(batch["lq"], target))
        self.opt_w.zero_grad(set_to_none=True)  # the arch step's weight gradients are not used
        margins = logit_margins(sn)
        self.one_hot.update(sn, t + 1, margins)
        out.update({"radius": rho,
                    "margin_alpha_min": float(margins["alpha"].min()) if margins["alpha"].numel() else 0.0,
                    "margin_gamma_min": float(margins["gamma"].min()) if margins["gamma"].numel() else 0.0})
        if "node" in margins:
            out["margin_node"] = float(margins["node"])
        if (t + 1) % cfg.run.log_every == 0 or t + 1 == cfg.search.steps:
            self._record_history(t + 1, rho, out["gflops"])
        return out

    def _record_history(self, step: int, rho: float, gflops: float) -> None:
        entry = {"step": step, "radius": rho, "gflops": gflops}
        entry["params"] = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        entry["weights"] = {k: v.cpu() for k, v in self.supernet.relaxed_weights().items()}
        self.history.append(entry)

    def _end_search(self) -> None:
        """Derive the architecture at ρ = ``radius_end`` (within the FLOPs target's band when there
        is one) and write ``arch.json``."""
        sn = self.supernet
        sn.set_radius(self.cfg.search.radius_end)
        sn.eval()
        target = self.cfg.loss.flops_target
        self.arch = sn.derive() if target is None else derive_within(sn, target)
        self.decisions = decision_report(sn, self.arch, self.one_hot)
        if target is not None:
            self.decisions["flops_target"] = {"target": target, "argmax_gflops": arch_cost(sn.derive())["gflops"],
                                              "range": list(self.flops_range)}
        self.arch_tensors = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        if self.ctx.is_main:
            write_json(self.arch.to_dict(), os.path.join(self.out_dir, "arch.json"))

    def _init_model(self) -> None:
        """The derived network the train phase starts from: the supernet's weights (train from
        search) or a fresh initialisation (``train.init = scratch``)."""
        if self.cfg.train.init == "scratch":
            self.model = self._fresh_model()
        else:
            self.model = comp.extract_network(self.supernet_state, self.supernet_record, self.arch).to(self.device)

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> dict:
        """Run the remaining phases and return the summary."""
        cfg, loop = self.cfg, self.loop
        for name, total, step in (("pretrain", cfg.pretrain.steps, self._pretrain_step),
                                  ("search", cfg.search.steps, self._search_step)):
            if name in loop.state.done:
                continue
            self._setup_supernet_phase(name)
            self._run_phase(name, total, step, on_end=self._end_search if name == "search" else None)
        if self.supernet is not None:  # the architect goes with the supernet it optimises
            self.supernet_state = copy.deepcopy(self.supernet.state_dict())
            self.supernet = self.architect = None
        if self.model is None:
            self._init_model()
        trained = self._train_phases(do_train=cfg.run.train_after_search)
        return self._finish(trained)

    def _train_init(self) -> str:
        return self.cfg.train.init

    def _saves_model(self, trained: bool) -> bool:
        """``model.pt`` only when the derived network was trained."""
        return trained

    def _summary(self, trained: bool) -> dict:
        """The run's summary with the decision report (``decisions``); with a FLOPs target also
        ``flops_target``: the target, the derived network's GFLOPs and their ratio, whether it lies
        within ±10%, the plain (argmax) derivation's GFLOPs and the space's range."""
        summary = super()._summary(trained, {"decisions": self.decisions} if self.decisions is not None else None,
                                   self.history)
        budget = (self.decisions or {}).get("flops_target")
        if budget is None or summary.get("gflops") is None:
            return summary
        ratio = summary["gflops"] / budget["target"]
        summary["flops_target"] = {**budget, "gflops": summary["gflops"], "ratio": ratio,
                                   "within_tolerance": abs(ratio - 1.0) <= FLOPS_TOLERANCE}
        if self.ctx.is_main:
            write_json(summary, os.path.join(self.out_dir, "summary.json"))
        return summary
