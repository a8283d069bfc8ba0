"""The paper's Algorithm 1 with "train from search": pretrain → search → derive → train (→ finetune).

- **pretrain** (weights only, on χ1): for each batch, the sandwich rule runs the supernet at
  [max, min, random, random] widths with one Adam update each, content loss only;
- **search**: each step, a weight update on a χ1 batch (Gumbel-sampled widths), then an
  architecture update on a χ2 batch: Adam (lr 3e-4, betas (0.5, 0.999)) on α, β, γ minimising
  d + λ_f·H; the radius ρ of every relaxation rises linearly from ``radius_start`` to ``radius_end``;
- **derive**: ``supernet.derive()`` → ``arch.json``;
- **train**: the derived network, with the supernet's weights inherited (``supernet.extract``) or
  freshly initialised (from scratch), on all training images; **finetune** adds the perceptual
  loss (visual objective).

One :class:`Pipeline` drives either program: ``search`` (all phases) or ``train`` (the last two,
from an architecture file and optionally an ``--init`` checkpoint).
"""
from __future__ import annotations

import copy
import json
import math
import os

import torch
import torch.nn as nn

from ..arch import Architecture
from ..errors import UserError
from ..devices import available_cores
from ..fileio import write_json
from . import checkpoint as ckpt
from . import components as comp
from .config import Config
from .distributed import DistContext, all_reduce_grads, barrier, broadcast_module, unwrap, wrap
from .logging import RunLog
from .loop import Loop, linear_radius, sample_batch
from .losses import flops_penalty
from ..supernet.decisions import OneHotTracker, decision_report, logit_margins

SANDWICH = ("max", "min", "random", "random")


def _adam(params, lr, betas, weight_decay):
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def _multistep(opt, milestones, gamma):
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=gamma)


def _clip(params, max_norm: float) -> None:
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)


class Pipeline:
    """One run of the search or train program, writing into ``out_dir``.

    ``program``: "search" or "train". For "train", ``arch`` is the Architecture to train and
    ``init`` (optional) a search checkpoint or saved model to inherit weights from.
    """

    def __init__(self, cfg: Config, out_dir: str, program: str, ctx: DistContext, device: torch.device,
                 resume: dict | None = None, arch: Architecture | None = None, init: str | None = None,
                 progress: bool | None = None):
        self.cfg, self.out_dir, self.program, self.ctx, self.device = cfg, out_dir, program, ctx, device
        torch.set_num_threads(cfg.run.threads or available_cores())
        self.arch: Architecture | None = arch
        self.init = init
        self.supernet: nn.Module | None = None
        self.supernet_cfg: dict | None = None
        self.supernet_state: dict | None = None  # the supernet at the end of the search
        self.arch_tensors: dict = {}
        self.model: nn.Module | None = None
        self.net: nn.Module | None = None  # what the current phase runs (maybe DDP-wrapped)
        self.opt_w = self.sched_w = self.opt_a = None
        self.history: list[dict] = []
        self.last_val: dict = {}
        self.one_hot = OneHotTracker()
        self.best_val: dict | None = None  # the best validation during training (model_best.pt)
        self.decisions: dict | None = None  # decision_report at the end of the search
        self._pending_optim: dict | None = None

        self.train_full = comp.training_set(cfg)
        self.val_set = comp.validation_set(cfg)
        self.teacher = comp.load_teacher(cfg, device)
        # the teacher cache: one teacher pass per training image, the steps read its crops (teacher None)
        self.train_full, self.teacher = comp.distillation_set(cfg, out_dir, self.train_full, self.teacher,
                                                              ctx, progress)
        if program == "search":
            self.half1, self.half2 = comp.split_halves(self.train_full)
        self.content_only = comp.build_objective(cfg, device, perceptual=False)
        self.full_objective = comp.build_objective(cfg, device, perceptual=True)

        self.log = RunLog(out_dir, resume_step=resume["loop"]["global_step"] if resume else None) \
            if ctx.is_main else None
        self.loop = Loop(cfg.run.seed, ctx, device, out_dir, self.log, cfg.run.checkpoint_every,
                         cfg.run.log_every, self._checkpoint_state, self._live_modules, progress)
        if program == "search":
            self.supernet_cfg = comp.supernet_config_dict(cfg)
            ckpt.seed_all(ckpt.step_seed(cfg.run.seed, 0))
            self.supernet = comp.build_supernet(cfg).to(device)
        if resume is not None:
            self._restore(resume)
        elif program == "train":
            self._init_train_model()

    # -- state ------------------------------------------------------------------------------
    def _live_modules(self):
        return [m for m in (self.supernet, self.model) if m is not None]

    def _arch_params(self) -> dict:
        return dict(self.supernet.arch_parameters()) if self.supernet is not None else {}

    def _checkpoint_state(self) -> dict:
        if self.supernet is not None:
            self.arch_tensors = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        optim = {}
        for key, obj in (("weights", self.opt_w), ("weights_sched", self.sched_w), ("arch", self.opt_a)):
            if obj is not None:
                optim[key] = obj.state_dict()
        return {
            "version": 1,
            "program": self.program,
            "config": self.cfg.to_dict(),
            "supernet_config": self.supernet_cfg,
            "supernet": (self.supernet.state_dict() if self.supernet is not None else self.supernet_state),
            "arch": self.arch_tensors,
            "architecture": self.arch.to_dict() if self.arch is not None else None,
            "model": self.model.state_dict() if self.model is not None else None,
            "optimizers": optim,
            "optimizer_phase": self.loop.state.phase,
            "history": self.history,
            "val": self.last_val,
            "one_hot": self.one_hot.state(),
            "best_val": self.best_val,
            "decisions": self.decisions,
        }

    def _restore(self, state: dict) -> None:
        self.loop.restore(state["loop"])
        self.supernet_cfg = state.get("supernet_config")
        self.history = list(state.get("history", []))
        self.last_val = dict(state.get("val", {}))
        self.one_hot.load(state.get("one_hot"))
        self.best_val = state.get("best_val")
        self.decisions = state.get("decisions")
        self.arch_tensors = dict(state.get("arch", {}))
        if state.get("architecture") is not None:
            self.arch = Architecture.from_dict(state["architecture"])
        if state.get("supernet") is not None:
            if self.supernet is None:
                self.supernet = comp.supernet_from_dict(self.supernet_cfg).to(self.device)
            self.supernet.load_state_dict(state["supernet"])
            if "search" in self.loop.state.done:
                self.supernet_state = state["supernet"]
                self.supernet = None
        if state.get("model") is not None:
            from ..models import build

            self.model = build(self.arch).to(self.device)
            self.model.load_state_dict(state["model"])
        if self.loop.state.phase not in self.loop.state.done:
            self._pending_optim = state.get("optimizers")
        ckpt.set_rng_state(state["rng"])

    # -- model construction -----------------------------------------------------------------
    def _extract(self, supernet_state: dict, supernet_cfg: dict) -> nn.Module:
        net = comp.supernet_from_dict(supernet_cfg)
        net.load_state_dict(supernet_state)
        net.set_radius(1.0)
        net.eval()
        return net.extract(self.arch)

    def _init_train_model(self) -> None:
        """The network the train phase starts from: inherited (train from search) or fresh."""
        from ..models import build, load_model
        from ..models.io import model_architecture

        if self.program == "train" and self.init is not None and self.cfg.train.init == "scratch":
            raise UserError(f"--init {self.init!r} asks to inherit weights but the config says "
                            "train.init = 'scratch'; drop one of them")
        if self.cfg.train.init == "scratch" or (self.program == "train" and self.init is None):
            ckpt.seed_all(ckpt.step_seed(self.cfg.run.seed, 99))
            self.model = build(self.arch).to(self.device)
            return
        if self.program == "search":
            self.model = self._extract(self.supernet_state, self.supernet_cfg).to(self.device)
            return
        state = ckpt.load(self.init, "--init file", required=())
        if "supernet" in state and state.get("supernet") is not None and state.get("supernet_config"):
            self.supernet_cfg = state["supernet_config"]
            self.arch_tensors = dict(state.get("arch", {}))
            if self.arch.scale != self.supernet_cfg.get("scale", self.arch.scale) or \
                    self.arch.channels != self.supernet_cfg.get("channels", self.arch.channels) or \
                    self.arch.backbone != self.supernet_cfg.get("backbone", self.arch.backbone):
                raise UserError(f"--arch (backbone {self.arch.backbone}, {self.arch.channels} channels, "
                                f"x{self.arch.scale}) does not fit the supernet of --init {self.init}")
            self.model = self._extract(state["supernet"], self.supernet_cfg).to(self.device)
            return
        try:
            model = load_model(self.init)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else means it is not one of our files
            raise UserError(f"--init {self.init!r} is neither a search checkpoint nor a saved model "
                            f"({type(exc).__name__})") from None
        init_arch = model_architecture(model)
        if init_arch is None:
            raise UserError(f"--init {self.init!r} holds a {type(model).__name__}, not a derived "
                            "network or a search checkpoint (a teacher goes to --teacher)")
        if init_arch.to_dict() != self.arch.to_dict():
            raise UserError(f"--init {self.init!r} holds a different architecture than --arch")
        self.model = model.to(self.device)

    # -- phases -----------------------------------------------------------------------------
    def _weight_params(self, module: nn.Module) -> list[nn.Parameter]:
        if module is self.supernet:
            return list(module.weight_parameters())
        return [p for p in module.parameters() if p.requires_grad]

    def _setup_phase(self, name: str) -> None:
        cfg = self.cfg
        section = {"pretrain": cfg.pretrain, "search": cfg.search, "train": cfg.train,
                   "finetune": cfg.train}[name]
        milestones = cfg.train.finetune_milestones if name == "finetune" else section.milestones
        module = self.supernet if name in ("pretrain", "search") else self.model
        module.train()
        if module is self.supernet:  # gradients averaged by _sync_weights, not by DDP
            broadcast_module(module, self.ctx)
            self.net = module
        else:
            self.net = wrap(module, self.ctx, self.device)
        self.opt_w = _adam(self._weight_params(module), section.lr, section.betas, section.weight_decay)
        self.sched_w = _multistep(self.opt_w, milestones, section.lr_decay)
        self.opt_a = None
        if name == "search":
            self.opt_a = _adam(list(self._arch_params().values()), cfg.search.arch_lr,
                               cfg.search.arch_betas, cfg.search.arch_weight_decay)
        pending, self._pending_optim = self._pending_optim, None
        if pending and self.loop.state.phase == name:
            self.opt_w.load_state_dict(pending["weights"])
            self.sched_w.load_state_dict(pending["weights_sched"])
            if self.opt_a is not None:
                self.opt_a.load_state_dict(pending["arch"])

    def _weight_step(self, batch_set, phase: str, t: int, objective, stream: int = 0) -> dict:
        loop = self.loop
        loop.seed_data(phase, t, stream)
        batch = sample_batch(batch_set, self._batch_size(phase), self.device)
        target = comp.targets(batch, self.teacher)
        loop.seed_noise(phase, t, stream)
        self.opt_w.zero_grad(set_to_none=True)
        loss, parts = objective(self.net(batch["lq"]), target)
        loop.check_finite({"loss": loss})
        loss.backward()
        self._sync_weights()
        _clip(self.opt_w.param_groups[0]["params"], self._section(phase).grad_clip)
        self.opt_w.step()
        return {"loss": float(loss.detach()), **parts}

    def _sync_weights(self) -> None:
        """Average the supernet's weight gradients over the ranks (the derived network uses DDP)."""
        if self.net is self.supernet:
            all_reduce_grads(self.opt_w.param_groups[0]["params"], self.ctx)

    def _batch_size(self, phase: str) -> int:
        return self._section(phase).batch_size or self.cfg.data.batch_size

    def _section(self, phase: str):
        return {"pretrain": self.cfg.pretrain, "search": self.cfg.search}.get(phase, self.cfg.train)

    def _pretrain_step(self, t: int) -> dict:
        loop = self.loop
        loop.seed_data("pretrain", t)
        batch = sample_batch(self.half1, self._batch_size("pretrain"), self.device)
        target = comp.targets(batch, self.teacher)
        loop.seed_noise("pretrain", t)
        total = 0.0
        for mode in SANDWICH:
            self.supernet.set_width_mode(mode)
            self.opt_w.zero_grad(set_to_none=True)
            loss, _ = self.content_only(self.net(batch["lq"]), target)
            loop.check_finite({"loss": loss})
            loss.backward()
            self._sync_weights()
            _clip(self.opt_w.param_groups[0]["params"], self.cfg.pretrain.grad_clip)
            self.opt_w.step()
            total += float(loss.detach())
        self.supernet.set_width_mode(None)
        self.sched_w.step()
        return {"loss": total / len(SANDWICH), "lr": self.opt_w.param_groups[0]["lr"]}

    def _search_step(self, t: int) -> dict:
        cfg, loop, sn = self.cfg, self.loop, self.supernet
        rho = linear_radius(t, cfg.search.steps, cfg.search.radius_start, cfg.search.radius_end,
                            cfg.search.radius_warmup)
        sn.set_radius(rho)
        objective = self.full_objective if cfg.loss.perceptual_in_search else self.content_only
        out = self._weight_step(self.half1, "search", t, objective, stream=0)
        self.sched_w.step()
        loop.seed_data("search", t, 1)
        batch = sample_batch(self.half2, self._batch_size("search"), self.device)
        target = comp.targets(batch, self.teacher)
        loop.seed_noise("search", t, 1)
        self.opt_a.zero_grad(set_to_none=True)
        # The unwrapped supernet: only the architecture gradients are wanted, averaged over the
        # ranks below (DDP would all-reduce the weight gradients too).
        d, _ = objective(sn(batch["lq"]), target)
        gflops = sn.expected_flops()
        order = sn.order_loss(task_loss=d).to(d.dtype)
        arch_loss = d + order
        if cfg.loss.flops_weight > 0:
            arch_loss = arch_loss + flops_penalty(gflops, cfg.loss.flops_weight)
        loop.check_finite({"arch_loss": arch_loss})
        arch_loss.backward()
        all_reduce_grads(list(self._arch_params().values()), self.ctx)
        self.opt_a.step()
        self.opt_w.zero_grad(set_to_none=True)  # the arch step's weight gradients are not used
        margins = logit_margins(sn)
        self.one_hot.update(sn, t + 1, margins)
        out.update({"arch_loss": float(arch_loss.detach()), "arch_d": float(d.detach()),
                    "order": float(order.detach()),
                    "gflops": float(gflops.detach()), "radius": rho,
                    "margin_alpha_min": float(margins["alpha"].min()) if margins["alpha"].numel() else 0.0,
                    "margin_gamma_min": float(margins["gamma"].min()) if margins["gamma"].numel() else 0.0})
        if "node" in margins:
            out["margin_node"] = float(margins["node"])
        if (t + 1) % cfg.run.log_every == 0 or t + 1 == cfg.search.steps:
            self._record_history(t + 1, rho, float(gflops.detach()))
        return out

    def _record_history(self, step: int, rho: float, gflops: float) -> None:
        entry = {"step": step, "radius": rho, "gflops": gflops}
        entry["params"] = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        entry["weights"] = {k: v.cpu() for k, v in self.supernet.relaxed_weights().items()}
        self.history.append(entry)

    def _train_step(self, phase: str):
        objective = self.full_objective if phase == "finetune" else self.content_only

        def step(t: int) -> dict:
            out = self._weight_step(self.train_full, phase, t, objective)
            self.sched_w.step()
            out["lr"] = self.opt_w.param_groups[0]["lr"]
            return out
        return step

    def _validate(self) -> dict:
        if not self.ctx.is_main:
            return {}
        self.last_val = comp.validate(unwrap(self.net), self.val_set, self.cfg.data.scale, self.device)
        psnr = self.last_val.get("psnr_y")
        if psnr is not None and math.isfinite(psnr) and (self.best_val is None or psnr > self.best_val["psnr_y"]):
            from ..models import save_model

            self.best_val = {"psnr_y": float(psnr), "phase": self.loop.state.phase, "step": self.loop.state.step}
            save_model(unwrap(self.net), os.path.join(self.out_dir, "model_best.pt"), meta=dict(self.best_val))
        return dict(self.last_val)

    def _end_search(self) -> None:
        sn = self.supernet
        sn.set_radius(self.cfg.search.radius_end)
        sn.eval()
        self.arch = sn.derive()
        self.decisions = decision_report(sn, self.arch, self.one_hot)
        self.arch_tensors = {k: v.detach().cpu().clone() for k, v in self._arch_params().items()}
        if self.ctx.is_main:
            write_json_atomic(self.arch.to_dict(), os.path.join(self.out_dir, "arch.json"))

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> dict:
        """Run the remaining phases and return the summary."""
        cfg, loop = self.cfg, self.loop
        if self.program == "search":
            for name, total, step in (("pretrain", cfg.pretrain.steps, self._pretrain_step),
                                      ("search", cfg.search.steps, self._search_step)):
                if name in loop.state.done:
                    continue
                self._setup_phase(name)
                loop.run_phase(name, total, step, on_end=self._end_search if name == "search" else None)
            if self.supernet is not None:
                self.supernet_state = copy.deepcopy(self.supernet.state_dict())
                self.supernet = None
            if self.model is None:
                self._init_train_model()
            do_train = cfg.run.train_after_search
        else:
            do_train = True
        phases = [("train", cfg.train.steps)]
        if cfg.loss.objective == "visual":
            phases.append(("finetune", cfg.train.finetune_steps))
        trained = False
        for name, total in phases:
            if not do_train or total == 0 or name in loop.state.done:
                trained = trained or name in loop.state.done
                continue
            self._setup_phase(name)
            loop.run_phase(name, total, self._train_step(name), extra_fn=self._validate,
                           extra_every=cfg.run.val_every, on_end=None)
            trained = True
        self.net = self.model
        summary = self._summary(trained)
        barrier(self.ctx)
        return summary

    def _summary(self, trained: bool) -> dict:
        from .. import profile

        model = self.model.eval()
        val = comp.validate(model, self.val_set, self.cfg.data.scale, self.device) if self.ctx.is_main else {}
        prof = profile(model) if self.ctx.is_main else {}
        timing = self.loop.state.timing
        summary = {
            "program": self.program,
            "preset": self.cfg.preset,
            "architecture": self.arch.to_dict(),
            "params": prof.get("params"),
            "gflops": prof.get("gflops"),
            "psnr_y": val.get("psnr_y"),
            "bicubic_psnr_y": val.get("bicubic_psnr_y"),
            "val_images": len(self.val_set),
            "validation_images": comp.validation_names(self.val_set),
            "validation_held_out": comp.held_out(self.train_full, self.val_set),
            "search_seconds": timing.get("pretrain", 0.0) + timing.get("search", 0.0),
            "train_seconds": timing.get("train", 0.0) + timing.get("finetune", 0.0),
            "trained": trained,
            "train_init": self.cfg.train.init if self.program == "search" else
            ("inherited" if self.init and self.cfg.train.init == "search" else "scratch"),
        }
        if self.decisions is not None:
            summary["decisions"] = self.decisions
        if self.best_val is not None:
            summary["best_val"] = self.best_val
        if self.ctx.is_main:
            if trained or self.program == "train":
                from ..models import save_model

                save_model(model, os.path.join(self.out_dir, "model.pt"))
            write_json_atomic(summary, os.path.join(self.out_dir, "summary.json"))
            self._plots()
            self.log.close()
        return summary

    def _plots(self) -> None:
        from . import plots

        plots.write_all(self.out_dir, self.history, self.arch)


def write_json_atomic(obj, path: str) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (:func:`trilevelnas.fileio.write_json`)."""
    write_json(obj, path)


def _decisions_line(dec: dict) -> str:
    parts = [f"{dec['undecided']} of {dec['used']} undecided (margin < {dec['threshold']:.0e})"]
    if dec.get("min_margin") is not None:
        parts.append(f"min margin {dec['min_margin']:.3g}")
    if "node" in dec:
        node = dec["node"]
        at = node.get("at_one_hot")
        parts.append(f"node margin {node['end']:.3g}" + (f" ({at:.3g} at one-hot)" if at is not None else ""))
    return ", ".join(parts)


def format_summary(summary: dict) -> str:
    """The final summary as a small text table."""
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    arch = summary["architecture"]
    rows = [
        ("architecture", f"backbone {arch['backbone']}, path {arch['path']}, {arch['channels']} ch, x{arch['scale']}"),
        ("params", fmt(summary["params"], ",d")),
        ("GFLOPs (256x256 LR)", fmt(summary["gflops"], ".3f")),
        (f"PSNR-Y ({summary['val_images']} {'held-out ' if summary.get('validation_held_out') else ''}"
         "val images)", fmt(summary["psnr_y"], ".2f") + " dB"
         + ("" if summary["psnr_y"] is None or summary["bicubic_psnr_y"] is None else
            f" ({summary['psnr_y'] - summary['bicubic_psnr_y']:+.2f} dB over bicubic)")),
        ("bicubic PSNR-Y", fmt(summary["bicubic_psnr_y"], ".2f") + " dB"),
        *([("decisions", _decisions_line(summary["decisions"]))] if summary.get("decisions") else []),
        ("search time", f"{summary['search_seconds']:.0f} s"),
        ("train time", f"{summary['train_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 3 + max(len(v) for _, v in rows))
    return "\n".join([line] + [f"{k.ljust(width)} | {v}" for k, v in rows] + [line])
