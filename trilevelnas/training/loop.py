"""The training loop shared by the search and the train programs.

:class:`Loop` runs named phases step by step. A phase is a step function (one optimisation step,
returning scalars for the log) plus its step count; the loop adds what every phase needs:

- per-step seeding: before step t of phase p the Python/NumPy/torch generators are seeded from
  (run seed, p, t, rank) to draw the batch, then from (run seed, p, t) for the step's own noise
  (Gumbel widths), so a resumed run replays exactly what an uninterrupted one draws;
- a non-finite loss stops the run with :class:`NonFiniteLoss` and the last good checkpoint kept
  (a checkpoint is only written when every weight is finite);
- periodic atomic checkpoints, the CSV log, a progress bar, periodic validation.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..errors import Interrupted, UserError
from . import checkpoint as ckpt
from .distributed import DistContext, all_reduce_mean, any_flag, barrier

PHASE_IDS = {"pretrain": 1, "search": 2, "train": 3, "finetune": 4}
_DATA_STREAM, _NOISE_STREAM = 11, 12


class NonFiniteLoss(UserError):
    """A loss became NaN or infinite; the run stops and the last good checkpoint is kept."""


def collate(items: Sequence[dict], device: torch.device) -> dict:
    """Stack dataset items ``{"lq", "gt", "name"}`` into a batch on ``device``."""
    return {
        "lq": torch.stack([it["lq"] for it in items]).to(device, non_blocking=True),
        "gt": torch.stack([it["gt"] for it in items]).to(device, non_blocking=True),
        "name": [it["name"] for it in items],
    }


def sample_batch(dataset, batch_size: int, device: torch.device) -> dict:
    """``batch_size`` items drawn uniformly with replacement, using the (seeded) global generators."""
    idx = torch.randint(len(dataset), (batch_size,)).tolist()
    return collate([dataset[i] for i in idx], device)


def params_finite(modules: Sequence[torch.nn.Module]) -> bool:
    """Whether every parameter and buffer of ``modules`` is finite."""
    for m in modules:
        for t in list(m.parameters()) + list(m.buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return False
    return True


@dataclass
class LoopState:
    """Where the run stands: the current phase, steps done in it, and the finished phases."""

    phase: str = ""
    step: int = 0
    global_step: int = 0
    done: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)  # seconds spent per phase


class Loop:
    """Drives phases; the owner supplies ``checkpoint_fn(path)`` that writes the full state."""

    def __init__(self, seed: int, ctx: DistContext, device: torch.device, out_dir: str,
                 log, checkpoint_every: int, log_every: int,
                 checkpoint_fn: Callable[[], dict], finite_modules: Callable[[], Sequence[torch.nn.Module]],
                 progress: bool | None = None):
        self.seed = seed
        self.ctx = ctx
        self.device = device
        self.out_dir = out_dir
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.checkpoint_fn = checkpoint_fn
        self.finite_modules = finite_modules
        self.progress = progress
        self.state = LoopState()
        #: The step values gathered since the last log row (checkpointed: a resumed run's next
        #: row averages exactly what an uninterrupted run's does).
        self.running: dict[str, list[float]] = {}
        self.last_checkpoint_step: tuple[str, int] | None = None
        self.interrupted = False
        #: What to tell the user on Ctrl-C (the command that resumes the run).
        self.resume_hint = "rerun with --resume"

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.out_dir, "checkpoint.pt")

    def seed_data(self, phase: str, step: int, stream: int = 0) -> None:
        """Seed the generators for drawing the batch of ``step`` (rank-dependent)."""
        ckpt.seed_all(ckpt.step_seed(self.seed, PHASE_IDS[phase], step, _DATA_STREAM + stream, self.ctx.rank))

    def seed_noise(self, phase: str, step: int, stream: int = 0) -> None:
        """Seed the generators for the step's noise (the same on every rank)."""
        ckpt.seed_all(ckpt.step_seed(self.seed, PHASE_IDS[phase], step, _NOISE_STREAM + stream))

    def save_checkpoint(self) -> None:
        """Write the owner's state atomically (rank 0), unless some weight is no longer finite."""
        if not params_finite(self.finite_modules()):
            self._stop_non_finite("network weight", "nan or inf")
        if self.ctx.is_main:
            state = self.checkpoint_fn()
            state["loop"] = {"phase": self.state.phase, "step": self.state.step,
                             "global_step": self.state.global_step, "done": list(self.state.done),
                             "timing": dict(self.state.timing),
                             "running": {k: list(v) for k, v in self.running.items()},
                             "log": self.log.state() if self.log is not None else None}
            state["rng"] = ckpt.rng_state()
            ckpt.save_atomic(state, self.checkpoint_path)
        self.last_checkpoint_step = (self.state.phase, self.state.step)
        barrier(self.ctx)

    def restore(self, loop_state: dict) -> None:
        """Continue from a checkpoint's ``loop`` entry."""
        self.state = LoopState(loop_state["phase"], loop_state["step"], loop_state["global_step"],
                               list(loop_state["done"]), dict(loop_state["timing"]))
        running = loop_state.get("running") or {}
        self.running = {str(k): [float(x) for x in v] for k, v in running.items()}
        self.last_checkpoint_step = (self.state.phase, self.state.step)

    def _stop_non_finite(self, what: str, value: str) -> None:
        where = f"{self.state.phase} step {self.state.step + 1}"
        if self.last_checkpoint_step is not None and os.path.isfile(self.checkpoint_path):
            kept = (f"the last good checkpoint {self.checkpoint_path} "
                    f"({self.last_checkpoint_step[0]} step {self.last_checkpoint_step[1]}) is kept")
        else:
            kept = "no checkpoint had been written yet"
        raise NonFiniteLoss(f"non-finite {what} ({value}) at {where}; the run stopped and {kept}; "
                            "lower the learning rate (--set <phase>.lr=...) or enable grad_clip")

    @contextmanager
    def _sigint_deferred(self):
        """Turn the first SIGINT or SIGTERM (what schedulers such as SLURM send before a kill) into
        ``self.interrupted = True`` (acted on between steps: the state is saved); a second one
        interrupts at once. Only in the main thread (signal handlers cannot be set elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop_interrupted(self, name: str) -> None:
        """Save the state after the last finished step and stop with :class:`Interrupted`."""
        self.save_checkpoint()
        raise Interrupted(f"stopped after {name} step {self.state.step}; the state is saved in "
                          f"{self.checkpoint_path}; {self.resume_hint}")

    def check_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Stop (on every rank) when any of the step's losses is NaN or infinite."""
        bad = [k for k, v in losses.items() if not bool(torch.isfinite(v.detach()).all())]
        if any_flag(bool(bad), self.ctx, self.device):
            value = str(float(losses[bad[0]].detach())) if bad else "on another rank"
            self._stop_non_finite(f"loss {bad[0]!r}" if bad else "loss", value)

    def run_phase(self, name: str, total: int, step_fn: Callable[[int], dict],
                  extra_fn: Callable[[], dict] | None = None, extra_every: int = 0,
                  on_end: Callable[[], None] | None = None) -> None:
        """Run steps ``state.step .. total-1`` of phase ``name`` (all of them unless resuming in it).

        ``step_fn(t)`` performs step t and returns the scalars to log; every ``extra_every`` steps
        (0: never) ``extra_fn()`` adds scalars (validation) to that step's log row. ``on_end`` runs
        once the last step is done, before the phase's final checkpoint. Ctrl-C lets the current
        step finish, writes a checkpoint and raises :class:`~trilevelnas.errors.Interrupted`.
        """
        if name in self.state.done:
            return
        if self.state.phase != name:
            self.state.phase, self.state.step = name, 0
            self.running = {}
        start_time = time.time()
        spent_before = self.state.timing.get(name, 0.0)
        bar = tqdm(total=total, initial=self.state.step, desc=name, unit="step", dynamic_ncols=True,
                   disable=(self.progress is False or not self.ctx.is_main
                            or (self.progress is None and not sys.stderr.isatty())),
                   file=sys.stderr)
        lines = ProgressLines(name, total, self.state.step, spent_before,
                              enabled=self.ctx.is_main and self.progress is not False and not sys.stdout.isatty())
        running = self.running
        with self._sigint_deferred():
            try:
                while self.state.step < total:
                    t = self.state.step
                    values = step_fn(t)
                    self.state.step += 1
                    self.state.global_step += 1
                    for k, v in values.items():
                        running.setdefault(k, []).append(float(v))
                    extra = None
                    if extra_fn is not None and extra_every and self.state.step % extra_every == 0:
                        extra = extra_fn()
                    if self.state.step % self.log_every == 0 or self.state.step == total or extra is not None:
                        row = {k: all_reduce_mean(float(np.mean(v)), self.ctx, self.device)
                               for k, v in running.items()}
                        row.update(extra or {})
                        row["time"] = spent_before + time.time() - start_time
                        if self.ctx.is_main:
                            self.log.log(self.state.global_step, name, self.state.step, row)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                                         if k in ("loss", "l1", "arch_loss", "gflops", "radius")})
                        lines.values.update(row)
                        running.clear()
                    bar.update(1)
                    lines.step(self.state.step)
                    self.state.timing[name] = spent_before + time.time() - start_time
                    if any_flag(self.interrupted, self.ctx, self.device):
                        self._stop_interrupted(name)
                    if self.state.step % self.checkpoint_every == 0 and self.state.step < total:
                        self.save_checkpoint()
            finally:
                bar.close()
        lines.done(self.state.step)
        if on_end is not None:
            on_end()
        self.state.timing[name] = spent_before + time.time() - start_time
        self.state.done.append(name)
        self.save_checkpoint()


class ProgressLines:
    """Plain progress lines on stdout (when it is not a terminal): at the phase's start, at least
    every ``every`` seconds, and at its end — phase, step/total, loss, ρ, expected GFLOPs, elapsed, ETA."""

    KEYS = (("loss", "loss"), ("arch_loss", "arch loss"), ("radius", "rho"), ("gflops", "GFLOPs"),
            ("psnr_y", "val PSNR-Y"))

    def __init__(self, phase: str, total: int, start_step: int, spent_before: float, enabled: bool,
                 every: float = 15.0):
        self.phase, self.total, self.enabled, self.every = phase, total, enabled, every
        self.start_step, self.spent_before = start_step, spent_before
        self.t0 = self.last = time.time()
        self.values: dict = {}
        if enabled and start_step < total:
            print(f"{phase}: start at step {start_step}/{total}", flush=True)

    @staticmethod
    def _clock(seconds: float) -> str:
        seconds = int(round(seconds))
        return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"

    def _line(self, step: int) -> str:
        now = time.time()
        done = step - self.start_step
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        parts = [f"{self.phase} {step}/{self.total}"]
        for key, label in self.KEYS:
            v = self.values.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                parts.append(f"{label} {v:.4g}")
        parts.append(f"elapsed {self._clock(self.spent_before + now - self.t0)}")
        parts.append(f"ETA {self._clock(eta) if math.isfinite(eta) else '?'}")
        return ", ".join(parts)

    def step(self, step: int) -> None:
        if self.enabled and time.time() - self.last >= self.every:
            self.last = time.time()
            print(self._line(step), flush=True)

    def done(self, step: int) -> None:
        if self.enabled and step > self.start_step:
            print(self._line(step) + " (done)", flush=True)


def linear_radius(step: int, total: int, start: float, end: float, warmup: float = 0.0) -> float:
    """ρ at search step ``step`` (0-based) of ``total``: held at ``start`` for the warm-up fraction,
    then raised linearly so that the last step uses exactly ``end``."""
    if total <= 1:
        return end
    first = int(math.floor(warmup * total))
    if step < first:
        return start
    span = max(total - 1 - first, 1)
    return start + (end - start) * min(1.0, (step - first) / span)
