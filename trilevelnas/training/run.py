"""What the search and the train runs share: their data, objectives, log and loop, the training
phases of the derived network (train, finetune), validation, checkpoints and the summary.

:class:`Run` is the base of :class:`~trilevelnas.training.search_run.SearchRun` (Algorithm 1:
pretrain, search, derive, then train from search) and
:class:`~trilevelnas.training.train_run.TrainRun` (an architecture file, optionally with the
weights of ``--init``). docs/pipeline.md describes the phases and the checkpoint.
"""
from __future__ import annotations

import math
import os
from contextlib import closing

import torch
import torch.nn as nn

from ..arch import Architecture
from ..devices import available_cores
from ..errors import InputFileError
from ..fileio import write_json
from . import checkpoint as ckpt
from . import components as comp
from .config import Config, PhaseConfig
from .distributed import DistContext, barrier, unwrap, wrap
from .ema import WeightAverage
from .logging import RunLog
from .loop import Loop


def adam(params, section, fused: bool = False) -> torch.optim.Adam:
    """Adam on ``params`` with the ``lr``, ``betas`` and ``weight_decay`` of a phase ``section``;
    ``fused``: PyTorch's fused kernel (one pass over all parameters; the same update to float
    rounding) where every parameter lives on a CPU or CUDA device."""
    params = list(params)
    fused = fused and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=section.lr, betas=tuple(section.betas), weight_decay=section.weight_decay,
                            fused=fused or None)


class Run:
    """One run of a program, writing into ``out_dir``; ``resume``: the checkpoint to continue from.

    Subclasses say which program they are (:attr:`program`, stored in the checkpoint and the
    summary) and add their phases; this class trains the derived network :attr:`model`.
    """

    program: str = ""
    arch: Architecture | None = None  # the derived architecture (a TrainRun is given it)

    def __init__(self, cfg: Config, out_dir: str, ctx: DistContext, device: torch.device,
                 resume: ckpt.Checkpoint | None = None, progress: bool | None = None):
        self.cfg, self.out_dir, self.ctx, self.device = cfg, out_dir, ctx, device
        torch.set_num_threads(min(cfg.run.threads or available_cores(), available_cores()))
        self.model: nn.Module | None = None
        self.net: nn.Module | None = None  # what the current phase runs (maybe DDP-wrapped)
        #: the weight average of :attr:`model` (``train.ema`` > 0, from the train phase on): what
        #: is validated, scored and saved
        self.ema: WeightAverage | None = None
        self._pending_ema: dict | None = None  # the checkpoint's average, loaded in _setup_phase
        self.opt_w = self.sched_w = None
        self.last_val: dict = {}
        self.best_val: dict | None = None  # the best validation during training (model_best.pt)
        self._pending_optim: dict | None = None
        self._input_format = torch.contiguous_format  # of the batches :attr:`net` is given

        self.train_full = comp.training_set(cfg)
        self.val_set = comp.validation_set(cfg)
        self.data_digests = comp.data_digests(self.train_full, self.val_set)
        if resume is not None:
            comp.check_data_unchanged(resume.meta.data, self.data_digests, cfg.run.allow_data_change,
                                      os.path.join(out_dir, "checkpoint.pt"))
        self.targets = comp.target_source(cfg, self.train_full, device, ctx, progress)
        self.train_full = self.targets.train_set
        self.content_only = comp.build_objective(cfg, device, perceptual=False)
        self.full_objective = comp.build_objective(cfg, device, perceptual=True)

        self.log = RunLog(out_dir, resume_step=resume.schedule.global_step if resume else None,
                          resume=resume.schedule.log if resume else None) if ctx.is_main else None
        self.loop = Loop(cfg.run, ctx, device, out_dir, self.log, progress)

    # -- state ------------------------------------------------------------------------------
    def _live_modules(self) -> list[nn.Module]:
        """The networks whose weights must be finite for a checkpoint to be written."""
        return [m for m in (self.model, self.ema.module if self.ema else None) if m is not None]

    def _optimizer_states(self) -> dict:
        """The optimisers' states of the current phase, by checkpoint key."""
        return {key: obj.state_dict() for key, obj in (("weights", self.opt_w), ("weights_sched", self.sched_w))
                if obj is not None}

    def _checkpoint(self) -> ckpt.Checkpoint:
        """The run's state, everything :meth:`_restore` needs to continue exactly (the loop adds
        its schedule and the generator state when it saves; docs/pipeline.md, "Checkpoints")."""
        return ckpt.Checkpoint(
            meta=ckpt.Meta(self.program, self.cfg.to_dict(), self.data_digests, self.last_val, self.best_val),
            weights=ckpt.Weights(self.arch.to_dict() if self.arch is not None else None,
                                 self.model.state_dict() if self.model is not None else None,
                                 self.ema.module.state_dict() if self.ema is not None else None),
            optimizers=ckpt.Optimizers(self._optimizer_states(), self.loop.state.phase))

    def _save_checkpoint(self) -> None:
        """Write the run's checkpoint (:meth:`Loop.save <trilevelnas.training.loop.Loop.save>`)."""
        self.loop.save(self._checkpoint() if self.ctx.is_main else None, self._live_modules())

    def _restore(self, state: ckpt.Checkpoint) -> None:
        """Continue from a checkpoint of this program: the loop position, the network, the
        pending optimiser states of an unfinished phase, and last the RNG states. A position past
        its phase's steps, or weights that do not fit the network, are a one-line InputFileError."""
        path = os.path.join(self.out_dir, "checkpoint.pt")
        at = state.schedule
        if at.phase and at.step > self._phase_steps(at.phase):
            raise InputFileError(f"checkpoint {path!r}: its loop is at {at.phase} step {at.step}, past "
                                 f"the phase's {self._phase_steps(at.phase)} steps")
        self.loop.restore(at)
        self.last_val = dict(state.meta.val)
        self.best_val = state.meta.best_val
        if state.weights.architecture is not None:
            self.arch = Architecture.from_dict(state.weights.architecture)
        if state.weights.model is not None:
            from ..models import build

            if self.arch is None:
                raise InputFileError(f"checkpoint {path!r} holds a network's weights but no 'architecture'")
            self.model = build(self.arch).to(self.device)
            load_weights(self.model, state.weights.model, path, "model")
        self._pending_ema = state.weights.ema
        if at.phase not in at.done:
            self._pending_optim = state.optimizers.states
        ckpt.set_rng_state(state.rng)

    def _phase_steps(self, phase: str) -> int:
        """The number of steps of ``phase`` in this run's configuration."""
        return {"pretrain": self.cfg.pretrain.steps, "search": self.cfg.search.steps,
                "train": self.cfg.train.steps, "finetune": self.cfg.train.finetune_steps}[phase]

    # -- the phases of the derived network --------------------------------------------------
    def _setup_phase(self, name: str) -> None:
        """Train or finetune the derived network (DDP-wrapped): a fresh Adam and step schedule,
        or the checkpoint's when the phase is resumed."""
        cfg = self.cfg
        milestones = cfg.train.finetune_milestones if name == "finetune" else cfg.train.milestones
        self.model.train()
        if cfg.run.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self._input_format = torch.channels_last
        self.net = wrap(self.model, self.ctx, self.device)
        self._setup_average()
        self._new_weight_optimizer([p for p in self.model.parameters() if p.requires_grad], cfg.train, milestones,
                                   fused=True)
        self._load_pending_optim(name)

    def _setup_average(self) -> None:
        """Start the weight average (``train.ema`` > 0) as a copy of :attr:`model`, or continue the
        checkpoint's; it carries on through the finetune phase."""
        pending, self._pending_ema = self._pending_ema, None
        if self.cfg.train.ema <= 0 or self.ema is not None:
            return
        self.ema = WeightAverage(self.model, self.cfg.train.ema)
        if pending is not None:
            load_weights(self.ema.module, pending, os.path.join(self.out_dir, "checkpoint.pt"), "model_ema")

    def delivered(self) -> nn.Module:
        """The network the run validates, scores and saves: the weight average when there is one,
        else the trained network."""
        return self.ema.module if self.ema is not None else unwrap(self.net if self.net is not None else self.model)

    def _new_weight_optimizer(self, params: list, section: PhaseConfig, milestones, fused: bool = False) -> None:
        """:attr:`opt_w` (Adam, ``fused`` as :func:`adam` says) and :attr:`sched_w` (step decay at
        ``milestones``) for ``params``. The derived network's phases use the fused Adam: 0.08 ms
        against 0.29 ms per update at 48 K parameters on 2 CPU cores (docs/pipeline.md)."""
        self.opt_w = adam(params, section, fused)
        self.sched_w = torch.optim.lr_scheduler.MultiStepLR(self.opt_w, milestones=list(milestones),
                                                            gamma=section.lr_decay)

    def _load_pending_optim(self, name: str) -> dict | None:
        """Load the checkpoint's optimiser states into phase ``name`` when it is the resumed phase
        (once); returns them for the optimisers a subclass adds, else None."""
        pending, self._pending_optim = self._pending_optim, None
        if not (pending and self.loop.state.phase == name):
            return None
        path = os.path.join(self.out_dir, "checkpoint.pt")
        load_weights(self.opt_w, pending.get("weights"), path, "optimizers weights")
        load_weights(self.sched_w, pending.get("weights_sched"), path, "optimizers weights_sched")
        return pending

    def _fresh_model(self) -> nn.Module:
        """The derived network :attr:`arch`, freshly initialised from the run seed (from scratch)."""
        from ..models import build

        ckpt.seed_all(ckpt.step_seed(self.cfg.run.seed, 99))
        return build(self.arch).to(self.device)

    def _section(self, phase: str) -> PhaseConfig:
        """The config section of ``phase`` (finetune shares train's)."""
        return {"pretrain": self.cfg.pretrain, "search": self.cfg.search}.get(phase, self.cfg.train)

    def _batch_size(self, phase: str) -> int:
        return self._section(phase).batch_size or self.cfg.data.batch_size

    def _sync_weights(self) -> None:
        """Average the weight gradients over the ranks where DDP does not (the derived network uses DDP)."""

    def _weight_step(self, batch_set, phase: str, t: int, objective, stream: int = 0) -> dict:
        """One Adam update of the current phase's weights on a batch of ``batch_set``."""
        loop = self.loop
        loop.seed_data(phase, t, stream)
        batch, target = self.targets.sample(batch_set, self._batch_size(phase), self.device)
        loop.seed_noise(phase, t, stream)
        self.opt_w.zero_grad(set_to_none=True)
        loss, parts = objective(self.net(batch["lq"].contiguous(memory_format=self._input_format)), target)
        loop.check_finite({"loss": loss})
        loss.backward()
        self._sync_weights()
        clip_gradients(self.opt_w.param_groups[0]["params"], self._section(phase).grad_clip)
        self.opt_w.step()
        return {"loss": float(loss.detach()), **parts}

    def _train_step(self, phase: str):
        """The step function of the train or finetune phase (the perceptual loss in finetune)."""
        objective = self.full_objective if phase == "finetune" else self.content_only

        def step(t: int) -> dict:
            out = self._weight_step(self.train_full, phase, t, objective)
            self.sched_w.step()
            if self.ema is not None:
                self.ema.update()
            out["lr"] = self.opt_w.param_groups[0]["lr"]
            return out
        return step

    def _validate(self) -> dict:
        """Validate the network being trained; a new best PSNR-Y is saved as ``model_best.pt``."""
        if not self.ctx.is_main:
            return {}
        self.last_val = comp.validate(self.delivered(), self.val_set, self.cfg.data.scale, self.device)
        psnr = self.last_val.get("psnr_y")
        if psnr is not None and math.isfinite(psnr) and (self.best_val is None or psnr > self.best_val["psnr_y"]):
            from ..models import save_model

            self.best_val = {"psnr_y": float(psnr), "phase": self.loop.state.phase, "step": self.loop.state.step}
            save_model(self.delivered(), os.path.join(self.out_dir, "model_best.pt"), meta=dict(self.best_val))
        return dict(self.last_val)

    def _train_phases(self, do_train: bool) -> bool:
        """Run the remaining train (and, for the visual objective, finetune) phases when
        ``do_train``; whether the derived network has been trained."""
        cfg, loop = self.cfg, self.loop
        phases = [("train", cfg.train.steps)]
        if cfg.loss.objective == "visual":
            phases.append(("finetune", cfg.train.finetune_steps))
        trained = False
        for name, total in phases:
            if not do_train or total == 0 or name in loop.state.done:
                trained = trained or name in loop.state.done
                continue
            self._setup_phase(name)
            self._run_phase(name, total, self._train_step(name), self._validate, cfg.run.val_every)
            trained = True
        return trained

    def _run_phase(self, name: str, total: int, step_fn, extra_fn=None, extra_every: int = 0,
                   on_end=None) -> None:
        """Run phase ``name`` unless it is done (:meth:`Loop.run_phase
        <trilevelnas.training.loop.Loop.run_phase>`: ``step_fn``, ``extra_fn``, ``extra_every``),
        writing a checkpoint whenever one is due; ``on_end`` runs once its last step is done,
        before the phase's last checkpoint."""
        if name in self.loop.state.done:
            return
        with closing(self.loop.run_phase(name, total, step_fn, extra_fn, extra_every)) as due:
            for _ in due:
                self._save_checkpoint()
        if on_end is not None:
            on_end()
        self.loop.end_phase(name)
        self._save_checkpoint()

    # -- driver -----------------------------------------------------------------------------
    def run(self) -> dict:
        """Run the remaining phases and return the summary."""
        trained = self._train_phases(do_train=True)
        return self._finish(trained)

    def _finish(self, trained: bool) -> dict:
        """Write the outputs (summary, model, plots), close the log and return the summary."""
        self.net = self.model
        summary = self._summary(trained)
        barrier(self.ctx)
        return summary

    def _train_init(self) -> str:
        """The summary's ``train_init``: where the trained network's weights started."""
        raise NotImplementedError

    def _saves_model(self, trained: bool) -> bool:
        """Whether ``model.pt`` is written: the train program always writes it."""
        return True

    def _summary(self, trained: bool, extra: dict | None = None, history: list[dict] | None = None) -> dict:
        """The summary (written to ``summary.json`` with the model and the plots); ``extra``: the
        program's own entries; ``history``: the architecture parameters to plot (the search's)."""
        from .. import profile

        model = self.delivered().eval()
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
            "train_init": self._train_init(),
        }
        if self.ema is not None and self.ctx.is_main:
            last = comp.validate(self.model.eval(), self.val_set, self.cfg.data.scale, self.device)
            summary["weight_average"] = {"decay": self.ema.decay, "last_iterate_psnr_y": last.get("psnr_y")}
        if self.targets.teacher is not None and self.ctx.is_main:
            summary["teacher"] = comp.teacher_fidelity(self.cfg, model, self.targets.teacher, self.val_set,
                                                       self.device, os.path.join(self.out_dir, "fidelity.png"))
            if self.ema is not None:
                summary["weight_average"]["last_iterate_vs_teacher_psnr_y"] = comp.teacher_fidelity(
                    self.cfg, self.model, self.targets.teacher, self.val_set, self.device)["student_vs_teacher"]["psnr_y"]
        summary.update(extra or {})
        if self.best_val is not None:
            summary["best_val"] = self.best_val
        if self.ctx.is_main:
            if self._saves_model(trained):
                from ..models import save_model

                save_model(model, os.path.join(self.out_dir, "model.pt"))
            write_json(summary, os.path.join(self.out_dir, "summary.json"))
            from . import plots

            plots.write_all(self.out_dir, history or [], self.arch)
            self.log.close()
        return summary


def load_weights(obj, state, path: str, key: str) -> None:
    """``obj.load_state_dict(state)`` (a module, optimiser or scheduler); a state that does not
    fit is a one-line InputFileError naming the checkpoint and its ``key``."""
    try:
        if not isinstance(state, dict):
            raise TypeError(f"not a dict but a {type(state).__name__}")
        obj.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputFileError(f"checkpoint {path!r}: its {key!r} does not fit the run ({first[:160]})") from None


def clip_gradients(params, max_norm: float) -> None:
    """Clip the gradients of ``params`` to norm ``max_norm``; 0: no clipping."""
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
